"""Scale back after the incident: when, to what, and when to give up (pure).

A ladder step that changes capacity may declare ``restore``. Once its incident
has closed and the trigger has been quiet for ``after``, the group returns
toward the desired capacity recorded before the incident's first change, by
``step`` instances every ``every``, never past the step's and the group's
bounds (``min`` / the group's current MinSize on the way down).

Each change is its own RemediationAction (``spec.restore``, label
``vigil.dev/direction=restore``), proposed through the same path as a ladder
step, so approval, the rate limit, provenance and the execution-time check
(:mod:`.preflight`) apply unchanged. Choices, and why:

* **Cooldown** is the pause between *incidents*; restore actions neither wait
  for it nor start it (a scale-back must not delay the answer to the next
  incident). Restore steps are paced by ``every`` instead.
* **Rate limit**: restore actions count, like every AWS change. While the
  limit is reached the restore waits, and ``status.restoring`` says so with
  the time it lifts: it never stalls silently.
* **Hands off**: before proposing and again right before the call, the
  group's desired capacity must be what Vigil last set. Anything else means a
  human (or another tool) changed it: the action ends Skipped
  (``ChangedOutsideVigil``) and the restore stops for that incident.
* A new incident of the policy stops the restore for good; its own ladder
  (and restore) starts from the capacity it finds.
* A failed, rejected or expired restore step, or one refused for a reason
  that will not pass on its own, stops it too; a refusal that does pass
  (rate limit, pause, stale data) is retried after ``every``, a bounded
  number of times.
* Only changes Vigil made count: a dry-run incident has nothing to restore.

The engine gathers the inputs (the policy's actions as :class:`CapacityRecord`,
the group as observed) and applies what comes back.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from vigil.api.v1alpha1.action import ActionPhase, SkipReason
from vigil.api.v1alpha1.policy import (
    RemediationPolicySpec,
    RestorePhase,
    RestoreReason,
    Restoring,
    Step,
)

#: Restore attempts refused for a reason that passes on its own, before the restore gives up.
MAX_RETRIES = 5
#: Refusals that pass on their own: the restore tries again after ``every``.
RETRYABLE = frozenset({SkipReason.RATE_LIMITED, SkipReason.PAUSED, SkipReason.DETECTOR_STALE,
                       SkipReason.MISSING_DATA, SkipReason.COOLDOWN_ACTIVE, SkipReason.BLAST_RADIUS_EXCEEDED})
_STOPPING = frozenset({ActionPhase.FAILED, ActionPhase.REJECTED, ActionPhase.EXPIRED})


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(round(epoch, 3), tz=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class CapacityRecord:
    """What the restore needs to know about one scale action of the policy."""

    name: str
    incident: str
    step_index: int
    phase: ActionPhase
    created: float
    completed: float | None
    group: str
    #: ``status.before.desiredCapacity``: the capacity observed before the call.
    before: int | None
    #: ``status.intent.parameters.DesiredCapacity``: the capacity the call set.
    set_to: int | None
    #: ``spec.restore.sequence``; 0 for a ladder step.
    restore: int = 0
    skip_reason: SkipReason | None = None


@dataclasses.dataclass(frozen=True)
class ProposeRestore:
    """Record restore attempt ``sequence`` of ``incident`` (the engine observes the group, then :func:`plan`)."""

    incident: str
    step: int
    sequence: int
    group: str
    baseline: int
    #: The desired capacity Vigil last set on the group.
    expected: int
    scale_action: str


@dataclasses.dataclass(frozen=True)
class Next:
    """What the restore does this pass: the new ``status.restoring``, at most one proposal, when to look again."""

    restoring: Restoring | None
    propose: ProposeRestore | None = None
    requeue_after: float | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    target: int


@dataclasses.dataclass(frozen=True)
class Refuse:
    reason: SkipReason
    message: str


def restore_step(spec: RemediationPolicySpec, index: int) -> Step | None:
    """The policy's step ``index`` if it is a scale step that declares restore."""
    if index >= len(spec.actions):
        return None
    step = spec.actions[index]
    return step if step.restore is not None and step.scale_auto_scaling_group is not None else None


def begin(spec: RemediationPolicySpec, incident: str, quiet_since: float, records: Sequence[CapacityRecord],
          now: float) -> Restoring | None:
    """At the close of ``incident``: what to restore, or None when it changed no capacity with a restore step.

    The step is the lowest-index restore step that succeeded; the baseline is what the group's desired
    capacity was before the incident's first successful change of that group."""
    done = [r for r in records if r.incident == incident and r.restore == 0 and r.phase == ActionPhase.SUCCEEDED]
    steps = sorted(r.step_index for r in done if restore_step(spec, r.step_index) is not None)
    if not steps:
        return None
    step = restore_step(spec, steps[0])
    assert step is not None and step.restore is not None and step.scale_auto_scaling_group is not None
    group = step.scale_auto_scaling_group.name
    first = min((r for r in done if r.group == group and r.before is not None), key=lambda r: r.created,
                default=None)
    if first is None or first.before is None:
        return None
    due = max(quiet_since + step.restore.after_seconds, now)
    return Restoring(incident=incident, step=steps[0], group=group, baseline=first.before,
                     quiet_since=_utc(quiet_since), phase=RestorePhase.WAITING, next_at=_utc(due),
                     message=f"{group}: back toward {first.before} once quiet for {step.restore.after}")


def _stopped(restoring: Restoring, reason: RestoreReason, message: str) -> Restoring:
    return restoring.model_copy(update={"phase": RestorePhase.STOPPED, "reason": reason, "next_at": None,
                                        "target": None, "message": message[:1024]})


def stop_for_incident(restoring: Restoring | None, incident: str | None) -> Restoring | None:
    """Another incident of the policy opened: an active restore stops for good."""
    if restoring is None or not restoring.active or incident is None or incident == restoring.incident:
        return restoring
    return _stopped(restoring, RestoreReason.INCIDENT_OPENED,
                    f"incident {incident} opened before the scale-back of {restoring.incident} finished")


def goal(baseline: int, low: int, high: int) -> int:
    """Where the restore ends: the recorded capacity, within [low, high]."""
    return min(max(baseline, low), high)


def next_target(current: int, baseline: int, size: int, low: int, high: int) -> int:
    """One restore step from ``current``: at most ``size`` instances toward the goal, never past it."""
    end = goal(baseline, low, high)
    if current > end:
        return max(end, current - size)
    if current < end:
        return min(end, current + size)
    return current


def _last_set(records: Sequence[CapacityRecord], group: str) -> CapacityRecord | None:
    done = [r for r in records if r.group == group and r.phase == ActionPhase.SUCCEEDED and r.set_to is not None]
    return max(done, key=lambda r: (r.completed or r.created, r.created, r.restore), default=None)


def advance(spec: RemediationPolicySpec, restoring: Restoring | None, incident_open: bool, trigger_quiet: bool,
            hold: tuple[str, float | None] | None, records: Sequence[CapacityRecord], now: float) -> Next:
    """The restore's next move this pass.

    ``incident_open``: an incident of the policy is open (nothing restores then). ``trigger_quiet``: the
    detectors have fresh data and none fires (never act on stale data). ``hold``: a guard rail that forbids
    any action now (paused, rate limit, an approval pending elsewhere), as (message, lifts at). ``records``:
    the policy's scale actions."""
    if restoring is None or not restoring.active or incident_open:
        return Next(restoring)
    step = restore_step(spec, restoring.step)
    if step is None or step.restore is None or step.scale_auto_scaling_group is None \
            or step.scale_auto_scaling_group.name != restoring.group:
        return Next(_stopped(restoring, RestoreReason.POLICY_CHANGED,
                             f"step {restoring.step + 1} no longer scales {restoring.group} with restore"))
    config = step.restore
    mine = [r for r in records if r.incident == restoring.incident]
    attempts = sorted((r for r in mine if r.restore > 0), key=lambda r: r.restore)
    sequence = (attempts[-1].restore if attempts else 0) + 1
    last = attempts[-1] if attempts else None
    due = restoring.quiet_since.timestamp() + config.after_seconds
    if last is not None:
        if last.phase.in_flight:
            return Next(restoring.model_copy(update={"phase": RestorePhase.RESTORING, "next_at": None,
                                                     "message": f"{last.name} is {last.phase.value}"}))
        if last.phase in _STOPPING:
            return Next(_stopped(restoring, RestoreReason.STEP_ENDED,
                                 f"{last.name} ended {last.phase.value}: the scale-back needs a human"))
        if last.phase == ActionPhase.SKIPPED and last.skip_reason == SkipReason.CHANGED_OUTSIDE_VIGIL:
            return Next(_stopped(restoring, RestoreReason.CHANGED_OUTSIDE_VIGIL,
                                 f"{restoring.group} was changed outside Vigil ({last.name}); not restoring"))
        if last.phase == ActionPhase.SKIPPED and last.skip_reason == SkipReason.AT_BOUND:
            return Next(restoring.model_copy(update={
                "phase": RestorePhase.DONE, "next_at": None, "target": None,
                "message": f"{restoring.group} is at its floor: nothing more to restore"}))
        if last.phase == ActionPhase.SKIPPED:
            retries = sum(1 for r in attempts if r.phase == ActionPhase.SKIPPED)
            if last.skip_reason not in RETRYABLE or retries > MAX_RETRIES:
                why = last.skip_reason.value if last.skip_reason else "Skipped"
                return Next(_stopped(restoring, RestoreReason.STEP_ENDED,
                                     f"{last.name} was skipped ({why}); "
                                     + ("giving up" if last.skip_reason in RETRYABLE else "the scale-back stops")))
        due = max(due, (last.completed or last.created) + config.every_seconds)
    previous = _last_set(mine, restoring.group)
    if previous is None or previous.set_to is None:
        return Next(_stopped(restoring, RestoreReason.STEP_ENDED,
                             "no record of the capacity Vigil set is left; not restoring"))
    if previous.restore > 0 and previous.set_to == restoring.baseline:
        return Next(restoring.model_copy(update={
            "phase": RestorePhase.DONE, "next_at": None, "target": None,
            "message": f"{restoring.group} is back at {restoring.baseline}"}))
    scale = step.scale_auto_scaling_group
    target = next_target(previous.set_to, restoring.baseline, config.step, scale.min, scale.max)
    if target == previous.set_to:  # the step's own bounds stop it short of the baseline
        return Next(restoring.model_copy(update={
            "phase": RestorePhase.DONE, "next_at": None, "target": None,
            "message": f"{restoring.group} is at {target}, the step's bound [{scale.min}, {scale.max}]"}))
    waiting = restoring.model_copy(update={"target": target, "next_at": _utc(due)})
    if now < due:
        return Next(waiting.model_copy(update={
            "message": f"{restoring.group}: {previous.set_to} → {target} at the next step"}), requeue_after=due)
    if not trigger_quiet:
        return Next(waiting.model_copy(update={
            "message": "waiting: the detectors' data is not fresh and quiet"}))
    if hold is not None:
        message, lifts = hold
        return Next(waiting.model_copy(update={"next_at": _utc(lifts) if lifts else None,
                                                "message": f"waiting: {message}"[:1024]}),
                    requeue_after=lifts)
    first = min((r for r in mine if r.restore == 0 and r.phase == ActionPhase.SUCCEEDED
                 and r.group == restoring.group), key=lambda r: r.created, default=previous)
    return Next(waiting.model_copy(update={"phase": RestorePhase.RESTORING,
                                            "message": f"{restoring.group}: {previous.set_to} → {target}"}),
                propose=ProposeRestore(restoring.incident, restoring.step, sequence, restoring.group,
                                       restoring.baseline, previous.set_to, first.name))


def plan(step: Step, baseline: int, expected: int, target: int | None, desired: int, group_min: int,
         group_max: int) -> Plan | Refuse:
    """The capacity to set now, from the group as observed just before (at proposal and again at the call).

    ``target``: the target recorded at proposal (None when proposing): it is only ever moved back toward
    the group's current bounds, never further than what was approved."""
    scale, config = step.scale_auto_scaling_group, step.restore
    assert scale is not None and config is not None
    if desired != expected:
        return Refuse(SkipReason.CHANGED_OUTSIDE_VIGIL,
                      f"desired capacity of {scale.name} is {desired}, Vigil last set {expected}: changed outside "
                      "Vigil; the scale-back stops")
    low, high = max(scale.min, group_min), min(scale.max, group_max)
    wanted = next_target(desired, baseline, config.step, low, high) if target is None else target
    chosen = min(max(wanted, low), high)
    if (chosen - desired) * (baseline - desired) <= 0:  # no move, or a move away from the baseline
        return Refuse(SkipReason.AT_BOUND, f"{scale.name} is at {desired}; within [{low}, {high}] there is no "
                                           f"step toward {baseline}")
    return Plan(chosen)


def approval_required(spec: RemediationPolicySpec, step_index: int) -> bool:
    """Whether a restore action of step ``step_index`` waits for a human (the policy's setting, unless the
    step says ``restore.approval: false``)."""
    step = restore_step(spec, step_index)
    if step is not None and step.restore is not None and not step.restore.approval:
        return False
    return spec.approval.required


def current(restoring: Restoring | None, incident_open: bool, incident: str) -> bool:
    """Whether a restore action of ``incident`` may still go ahead (its approval stays valid)."""
    return not incident_open and restoring is not None and restoring.active and restoring.incident == incident
