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
    old = get(conditions, type)
    transition = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(type=type, status=status, reason=reason, message=message, last_transition_time=transition,
                    observed_generation=observed_generation)
    if old is None:
        return [*conditions, new]
    return [new if condition.type == type else condition for condition in conditions]


def get(conditions: list[Condition], type: str) -> Condition | None:
    for condition in conditions:
        if condition.type == type:
            return condition
    return None


def is_true(conditions: list[Condition], type: str) -> bool:
    condition = get(conditions, type)
    return condition is not None and condition.status == ConditionStatus.TRUE
