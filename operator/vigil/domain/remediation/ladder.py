"""The escalation ladder: which step of an incident, if any, is due now.

One incident = one stretch of time during which the trigger fires. The first
step is due at once; each next step is due when the previous one succeeded
(or was dry-run) and the trigger still fires ``after`` it completed. A failed,
rejected or expired step stops the ladder: it needs a human, and climbing on
past an error would stack changes nobody reviewed.

One kind of failure escalates instead: a remedy that ran and did not work. A
runCommand whose command failed or timed out on an instance (``errorCode``
CommandFailed or CommandTimedOut) was delivered and executed as reviewed; the
problem is still there, which is exactly what the next rung is for. It climbs
like a success (after the next step's ``after``, and only while the trigger
fires). Failures of the call itself (AccessDenied, a validation error, an
interrupted reboot) still stop the ladder.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Sequence

from vigil.api.v1alpha1.action import ESCALATING_ERROR_CODES, ActionPhase
from vigil.domain.remediation.guards import ActionRecord

_ADVANCE = frozenset({ActionPhase.SUCCEEDED, ActionPhase.DRY_RUN})
_STOP = frozenset({ActionPhase.FAILED, ActionPhase.REJECTED, ActionPhase.EXPIRED})


@dataclasses.dataclass(frozen=True)
class NextStep:
    index: int | None  # the step due now, or None
    wait_until: float | None  # when to look again, if a step will become due
    message: str


def escalates(record: ActionRecord) -> bool:
    """Whether the ladder climbs on after this (finished) step."""
    return record.phase in _ADVANCE or (record.phase == ActionPhase.FAILED
                                        and record.error_code in ESCALATING_ERROR_CODES)


def incident_id(policy_uid: str, started: float, taken: Collection[str] = ()) -> str:
    """A short, stable id for an incident (fits a label value and object names), never one in ``taken``.

    An incident can close and a new one open within the same second (a flicker shorter than a pass of the
    engine): hashing the second alone gave the new incident the id of the old one, whose ladder then
    looked finished. Milliseconds, and a salt on a collision with ``taken`` (the incidents the policy
    has recorded), keep ids distinct.
    """
    salt = 0
    while True:
        text = f"{policy_uid}/{started:.3f}" + (f"/{salt}" if salt else "")
        found = hashlib.sha256(text.encode()).hexdigest()[:10]
        if found not in taken:
            return found
        salt += 1


def next_step(records: Sequence[ActionRecord], afters: Sequence[float], now: float) -> NextStep:
    """``records``: this incident's actions, excluding Skipped ones. ``afters``: each step's delay."""
    if not records:
        return NextStep(0, None, "first step of the incident")
    last = max(records, key=lambda r: (r.step_index, r.created))
    if last.phase.in_flight:
        return NextStep(None, None, f"step {last.step_index + 1} ({last.name}) is {last.phase.value}")
    if last.phase in _STOP and not escalates(last):
        return NextStep(None, None, f"step {last.step_index + 1} ({last.name}) ended {last.phase.value}; "
                                    "the ladder stops until the incident ends")
    following = last.step_index + 1
    if following >= len(afters):
        return NextStep(None, None, "all steps of the ladder have run")
    due = (last.completed or now) + afters[following]
    if now < due:
        return NextStep(None, due, f"step {following + 1} is due in {due - now:.0f}s if still anomalous")
    how = f" failed ({last.error_code})" if last.phase == ActionPhase.FAILED else ""
    return NextStep(following, None, f"step {following + 1}: still anomalous {afters[following]:.0f}s after "
                                      f"step {last.step_index + 1}{how}")
