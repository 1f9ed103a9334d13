"""Guard rails: paused, cooldown, rate limit and blast radius, as pure checks.

Each check answers with the reason the API promises (ActionAllowed=False
reasons are fixed by the CRD contract), a message for humans, and, where it
applies, the time the guard lifts so the engine knows when to look again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from vigil.api.v1alpha1.action import ActionPhase
from vigil.api.v1alpha1.policy import PolicyReason

#: Phases that mean an action was taken (or is being taken): they count toward the rate limit.
_TAKEN = frozenset({
    ActionPhase.PENDING_APPROVAL, ActionPhase.APPROVED, ActionPhase.EXECUTING,
    ActionPhase.SUCCEEDED, ActionPhase.FAILED, ActionPhase.DRY_RUN,
})
#: Phases after which the cooldown runs.
_COMPLETED = frozenset({ActionPhase.SUCCEEDED, ActionPhase.FAILED, ActionPhase.DRY_RUN})


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    """What the guards need to know about one RemediationAction of the policy."""

    name: str
    incident: str
    step_index: int
    phase: ActionPhase
    created: float
    completed: float | None
    #: (instance id, Auto Scaling Group or None) for instance-level actions.
    instances: tuple[tuple[str, str | None], ...] = ()
    #: ``status.errorCode`` of a Failed action (the ladder climbs on after CommandFailed / CommandTimedOut).
    error_code: str | None = None
    #: ``spec.restore.sequence`` of an action that scales back after its incident; 0 for a ladder step.
    restore: int = 0


@dataclasses.dataclass(frozen=True)
class GuardVerdict:
    allowed: bool
    reason: PolicyReason
    message: str
    until: float | None = None


ALLOWED = GuardVerdict(True, PolicyReason.ALLOWED, "guard rails allow an action")


def cooldown(records: Sequence[ActionRecord], cooldown_seconds: float, now: float) -> GuardVerdict:
    """No new incident is acted on until ``cooldown`` after the last completed action.

    Restore actions (the scale-back after an incident) do not start a cooldown: they must not delay the
    answer to the next incident (domain/remediation/restore.py)."""
    completed = [r.completed for r in records
                 if r.phase in _COMPLETED and r.completed is not None and not r.restore]
    if not completed or cooldown_seconds <= 0:
        return ALLOWED
    until = max(completed) + cooldown_seconds
    if now < until:
        return GuardVerdict(False, PolicyReason.COOLDOWN_ACTIVE,
                            f"cooldown after the last action for another {until - now:.0f}s", until)
    return ALLOWED


def taken_in_window(records: Sequence[ActionRecord], window: float, now: float) -> list[ActionRecord]:
    return [r for r in records if r.phase in _TAKEN and now - r.created < window]


def rate_limit(records: Sequence[ActionRecord], max_actions: int, window: float, now: float) -> GuardVerdict:
    """At most ``max_actions`` taken per sliding ``window``; lifts when the oldest leaves it."""
    taken = taken_in_window(records, window, now)
    if len(taken) < max_actions:
        return ALLOWED
    oldest = min(r.created for r in taken)
    return GuardVerdict(False, PolicyReason.RATE_LIMITED,
                        f"{len(taken)} actions in the last {window:.0f}s (limit {max_actions})", oldest + window)


def in_flight(records: Sequence[ActionRecord]) -> list[ActionRecord]:
    return [r for r in records if r.phase.in_flight]


def blast_radius(
    wanted: Sequence[tuple[str, str | None]],
    records: Sequence[ActionRecord],
    group_sizes: Mapping[str, int],
    max_instances: int | None,
    max_percent: int | None,
) -> tuple[list[tuple[str, str | None]], GuardVerdict]:
    """Trim ``wanted`` so no group has more than the allowed instances acted on at once.

    Instances of in-flight actions count against their group. Instances outside any
    Auto Scaling Group form a group of their own per policy (key ``None``).
    Returns the instances that may be acted on now, and a verdict describing the cut.
    """
    busy: dict[str | None, set[str]] = {}
    for record in in_flight(records):
        for instance, group in record.instances:
            busy.setdefault(group, set()).add(instance)
    allowed: list[tuple[str, str | None]] = []
    refused: list[str] = []
    for instance, group in wanted:
        size = group_sizes.get(group, 0) if group is not None else len(wanted)
        limits = []
        if max_instances is not None:
            limits.append(max_instances)
        if max_percent is not None:
            limits.append(max(0, math.floor(size * max_percent / 100)))
        limit = min(limits) if limits else None
        taken = busy.setdefault(group, set())
        if instance in taken:
            refused.append(f"{instance} (already in flight)")
            continue
        if limit is not None and len(taken) + 1 > limit:
            refused.append(f"{instance} ({len(taken)} of {size} in group {group or '-'} in flight, limit {limit})")
            continue
        taken.add(instance)
        allowed.append((instance, group))
    if refused and not allowed:
        return allowed, GuardVerdict(False, PolicyReason.BLAST_RADIUS_EXCEEDED,
                                     "blast radius: " + "; ".join(refused))
    if refused:
        return allowed, GuardVerdict(True, PolicyReason.ALLOWED,
                                     "blast radius: acting on " + ", ".join(i for i, _ in allowed)
                                     + "; held back " + "; ".join(refused))
    return allowed, ALLOWED
