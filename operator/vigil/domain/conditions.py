"""One helper for conditions, so lastTransitionTime means the same everywhere.

Like cluster-api's ``conditions.Set``: the transition time moves only when the
``status`` changes. A new reason or message alone does not make a transition.
"""

from __future__ import annotations

import datetime

from vigil.api.v1alpha1.common import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime.datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return a new list with ``type`` set; other conditions keep their order."""
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type:
            result.append(condition)
            continue
        found = True
        transition = condition.last_transition_time if condition.status == status else now
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=transition,
                observed_generation=observed_generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=observed_generation,
            )
        )
    return result


def get(conditions: list[Condition], type: str) -> Condition | None:
    for condition in conditions:
        if condition.type == type:
            return condition
    return None


def is_true(conditions: list[Condition], type: str) -> bool:
    condition = get(conditions, type)
    return condition is not None and condition.status == ConditionStatus.TRUE
