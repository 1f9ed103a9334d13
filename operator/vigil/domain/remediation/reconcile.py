"""What a RemediationPolicy's status should say, and which step to take, given everything known now (pure).

The engine gathers the inputs (the detectors' signals, the alerts, the policy's
actions, the admin's limits) and applies what comes back; it decides nothing
itself. Two calls per pass, because proposing a step needs AWS in between:

1. :func:`decide`: the trigger, the incident's hysteresis, the ladder's next
   step and the guard rails give the incident fields of the status and at most
   one thing to do: propose step *i* (the engine resolves its targets in AWS)
   or record that step *i* was skipped and why;
2. :func:`summarize`: with the actions as they are after that, the
   ``ActionAllowed`` condition, the phase and the counters.

Both return ``requeue_after``: the soonest time something changes on its own
(the next step's ``after``, the end of a cooldown, a rate-limit window, the
quiet spell that ends an incident, an approval's deadline), so the engine can
look again exactly then, like CAPI's ``needsRemediation`` returns ``nextCheck``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from vigil.api.v1alpha1.action import ActionPhase, SkipReason
from vigil.api.v1alpha1.common import ConditionStatus
from vigil.api.v1alpha1.policy import (
    LastAction,
    PolicyConditionType,
    PolicyPhase,
    PolicyReason,
    RemediationPolicySpec,
    RemediationPolicyStatus,
)
from vigil.domain import conditions
from vigil.domain.remediation import guards, ladder, restore, tenancy, triggers
from vigil.domain.remediation.guards import ActionRecord, GuardVerdict
from vigil.domain.remediation.triggers import TriggerResult, TriggerState

#: Guard reasons that are recorded as a Skipped action (once per incident, step and reason).
SKIP_FOR = {
    PolicyReason.PAUSED: SkipReason.PAUSED,
    PolicyReason.COOLDOWN_ACTIVE: SkipReason.COOLDOWN_ACTIVE,
    PolicyReason.RATE_LIMITED: SkipReason.RATE_LIMITED,
    PolicyReason.DETECTOR_STALE: SkipReason.DETECTOR_STALE,
    PolicyReason.NOT_PERMITTED: SkipReason.NOT_PERMITTED,
}


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(round(epoch, 3), tz=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class PolicyState:
    """One policy as the engine sees it this pass."""

    namespace: str
    uid: str
    generation: int | None
    spec: RemediationPolicySpec
    written: RemediationPolicyStatus
    #: Names of the AnomalyDetectors the policy matches, sorted.
    detector_names: Sequence[str]
    detectors: Sequence[triggers.DetectorSignal]
    alerts: Sequence[triggers.AlertSignal]
    #: Why the alert state is not known yet (just after a start), or None.
    alerts_unknown: str | None
    #: This policy's actions.
    records: Sequence[ActionRecord]
    #: Do not propose before this time (after a Recoverable AWS error while observing).
    aws_backoff_until: float = 0.0
    #: This policy's scale actions, for the scale-back after an incident (restore).
    capacity: Sequence[restore.CapacityRecord] = ()


@dataclasses.dataclass(frozen=True)
class Propose:
    incident: str
    step: int


@dataclasses.dataclass(frozen=True)
class Skip:
    incident: str
    step: int
    reason: SkipReason
    message: str


@dataclasses.dataclass(frozen=True)
class Decision:
    status: RemediationPolicyStatus
    trigger: TriggerResult
    #: At most one of these: the step to propose, or the step to record as skipped.
    propose: Propose | None = None
    skip: Skip | None = None
    #: The incident this pass closed (its per-incident bookkeeping can go), if any.
    closed: str | None = None
    requeue_after: float | None = None
    #: A scale-back step to propose (only when no incident is open, so never with ``propose`` or ``skip``).
    restore: restore.ProposeRestore | None = None


@dataclasses.dataclass(frozen=True)
class Summary:
    status: RemediationPolicyStatus
    allowed: bool
    in_flight: int
    requeue_after: float | None = None


def soonest(*times: float | None) -> float | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _put(status: RemediationPolicyStatus, kind: PolicyConditionType, value: ConditionStatus, reason: PolicyReason,
         message: str, now: float, generation: int | None) -> None:
    status.conditions = conditions.set_condition(status.conditions, kind, value, reason, message, _utc(now),
                                                 generation)


def invalid(written: RemediationPolicyStatus, error: str, generation: int | None,
            now: float) -> RemediationPolicyStatus:
    """The status of a policy whose spec does not parse: nothing else is decided."""
    status = written.model_copy(deep=True)
    _put(status, PolicyConditionType.READY, ConditionStatus.FALSE, PolicyReason.INVALID_SPEC, error, now, generation)
    status.phase = PolicyPhase.INVALID
    status.observed_generation = generation
    return status


def guard(policy: PolicyState, admin: tenancy.Tenancy, result: TriggerResult, records: Sequence[ActionRecord],
          incident_records: Sequence[ActionRecord], now: float) -> GuardVerdict:
    """The first guard rail that forbids a new step now, in the order the API documents, or ALLOWED."""
    spec = policy.spec
    if spec.paused:
        return GuardVerdict(False, PolicyReason.PAUSED, "spec.paused is true")
    forbidden = tenancy.policy_violations(admin, policy.namespace, spec)
    if forbidden:
        return GuardVerdict(False, PolicyReason.NOT_PERMITTED,
                            "not allowed by the operator's settings: " + "; ".join(forbidden)[:1000])
    if result.state == TriggerState.STALE:
        return GuardVerdict(False, PolicyReason.DETECTOR_STALE, result.message)
    pending = [r for r in records if r.phase == ActionPhase.PENDING_APPROVAL]
    if pending:
        return GuardVerdict(False, PolicyReason.AWAITING_APPROVAL, f"{pending[0].name} waits for approval")
    if not incident_records:
        verdict = guards.cooldown(records, spec.cooldown_seconds, now)
        if not verdict.allowed:
            return verdict
    if spec.rate_limit is not None:
        verdict = guards.rate_limit(records, spec.rate_limit.max_actions, spec.rate_limit.window_seconds,
                                    now)
        if not verdict.allowed:
            return verdict
    return guards.ALLOWED


def _incident_records(records: Sequence[ActionRecord], incident: str | None) -> list[ActionRecord]:
    return [r for r in records if incident and r.incident == incident and r.phase != ActionPhase.SKIPPED]


def decide(policy: PolicyState, admin: tenancy.Tenancy, now: float) -> Decision:
    """Step 1 of a pass: the trigger, the incident and the one step to take (or record as skipped)."""
    spec = policy.spec
    status = policy.written.model_copy(deep=True)
    gen = policy.generation
    status.matched_detectors = list(policy.detector_names)[:100]
    forbidden = tenancy.policy_violations(admin, policy.namespace, spec)
    if forbidden:
        _put(status, PolicyConditionType.READY, ConditionStatus.FALSE, PolicyReason.NOT_PERMITTED,
             "not allowed by the operator's settings: " + "; ".join(forbidden)[:1000], now, gen)
    elif not policy.detector_names and spec.alert_selector is None:
        _put(status, PolicyConditionType.READY, ConditionStatus.FALSE, PolicyReason.NO_DETECTORS,
             f"no AnomalyDetector in namespace {policy.namespace} matches the policy", now, gen)
    else:
        _put(status, PolicyConditionType.READY, ConditionStatus.TRUE, PolicyReason.VALID,
             f"watching {len(policy.detector_names)} detector(s)" + (" and alerts" if spec.alert_selector else ""),
             now, gen)

    max_staleness = spec.trigger.max_staleness_seconds
    result = triggers.evaluate(
        policy.detectors, policy.alerts, spec.trigger.for_seconds, spec.trigger.min_score, max_staleness,
        now, expect_detectors=bool(spec.detectors) or spec.detector_selector is not None,
        alerts_unknown=policy.alerts_unknown,
    )
    closed = None
    quiet_ends = None
    restoring = status.restoring
    if result.state == TriggerState.FIRING:
        status.quiet_since = None
        if not status.incident:
            status.incident = ladder.incident_id(policy.uid, now, {r.incident for r in policy.records})
            status.incident_since = _utc(now)
            status.escalation_step = 0
    elif result.state == TriggerState.QUIET and status.incident:
        # Hysteresis: a flicker around the threshold must not end the incident (and expire its approvals,
        # and restart the ladder); only a quiet spell of keepFiringFor does.
        quiet_since = status.quiet_since.timestamp() if status.quiet_since else now
        status.quiet_since = _utc(quiet_since)
        quiet_ends = quiet_since + spec.trigger.keep_firing_for_seconds
        if now >= quiet_ends:
            closed, quiet_ends = status.incident, None
            restoring = restore.begin(spec, closed, quiet_since, policy.capacity, now) or restoring
            status.incident = None
            status.incident_since = None
            status.quiet_since = None
            status.escalation_step = None

    incident_records = _incident_records(policy.records, status.incident)
    afters = [step.after_seconds for step in spec.actions]
    next_step = ladder.next_step(incident_records, afters, now) if status.incident else None
    verdict = guard(policy, admin, result, policy.records, incident_records, now)
    propose = skip = None
    if status.incident and next_step is not None and next_step.index is not None:
        status.escalation_step = next_step.index
        if not verdict.allowed:
            reason = SKIP_FOR.get(verdict.reason)
            if reason is not None:
                skip = Skip(status.incident, next_step.index, reason, verdict.message)
        elif result.state == TriggerState.FIRING and now >= policy.aws_backoff_until:
            propose = Propose(status.incident, next_step.index)
    # An open incident stops the scale-back of the one before, for good.
    restoring = restore.stop_for_incident(restoring, status.incident)
    restore_next = restore.advance(spec, restoring, bool(status.incident),
                                   result.state == TriggerState.QUIET and now >= policy.aws_backoff_until,
                                   _restore_hold(policy, admin, now), policy.capacity, now)
    status.restoring = restore_next.restoring
    backoff = policy.aws_backoff_until if policy.aws_backoff_until > now else None
    # Evidence ages on its own: a detector that stops evaluating turns stale, an alert expires.
    stale_at = [s.last_evaluation + triggers.freshness_limit(s, max_staleness) for s in policy.detectors
                if s.last_evaluation is not None]
    expiring = [a.ends_at for a in policy.alerts if a.ends_at is not None]
    return Decision(status, result, propose, skip, closed,
                    soonest(next_step.wait_until if next_step else None, verdict.until, quiet_ends, backoff,
                            restore_next.requeue_after, *[t for t in stale_at + expiring if t > now]),
                    restore=restore_next.propose)


def _restore_hold(policy: PolicyState, admin: tenancy.Tenancy, now: float) -> tuple[str, float | None] | None:
    """The guard rails a scale-back waits for (never the cooldown: restore.py says why), or None."""
    spec = policy.spec
    if spec.paused:
        return "spec.paused is true", None
    forbidden = tenancy.policy_violations(admin, policy.namespace, spec)
    if forbidden:
        return "not allowed by the operator's settings: " + "; ".join(forbidden)[:500], None
    pending = [r for r in policy.records if r.phase.in_flight]
    if pending:
        return f"{pending[0].name} is {pending[0].phase.value}", None
    if spec.rate_limit is not None:
        verdict = guards.rate_limit(policy.records, spec.rate_limit.max_actions, spec.rate_limit.window_seconds, now)
        if not verdict.allowed:
            return verdict.message, verdict.until
    return None


def summarize(policy: PolicyState, decided: RemediationPolicyStatus, result: TriggerResult, admin: tenancy.Tenancy,
              held_back: str | None, degraded: str | None, now: float) -> Summary:
    """Step 2: ``policy.records`` as they are after the proposal. ``held_back``: the blast-radius message of
    targets that wait for in-flight work; ``degraded``: a Recoverable AWS error while proposing."""
    spec = policy.spec
    status = decided.model_copy(deep=True)
    gen = policy.generation
    records = policy.records
    if degraded is not None:
        status.recoverable_errors += 1
        _put(status, PolicyConditionType.DEGRADED, ConditionStatus.TRUE, PolicyReason.AWS_RETRYING, degraded, now,
             gen)
    verdict = guard(policy, admin, result, records, _incident_records(records, status.incident), now)
    if verdict.allowed and held_back and status.incident:
        verdict = GuardVerdict(False, PolicyReason.BLAST_RADIUS_EXCEEDED, held_back)
    _put(status, PolicyConditionType.ACTION_ALLOWED, ConditionStatus.TRUE if verdict.allowed else ConditionStatus.FALSE,
         verdict.reason, verdict.message, now, gen)
    if not any(c.type == PolicyConditionType.DEGRADED for c in status.conditions):
        _put(status, PolicyConditionType.DEGRADED, ConditionStatus.FALSE, PolicyReason.AS_EXPECTED, "", now, gen)
    cooldown = guards.cooldown(records, spec.cooldown_seconds, now)
    status.cooldown_until = _utc(cooldown.until) if cooldown.until else None
    rate_until = None
    if spec.rate_limit is not None:
        window = spec.rate_limit.window_seconds
        taken = guards.taken_in_window(records, window, now)
        status.actions_in_window = len(taken)
        rate_until = min((r.created + window for r in taken), default=None)
    in_flight = [r for r in records if r.phase.in_flight]
    status.in_flight = len(in_flight)
    status.phase = phase(spec, status, in_flight, cooldown)
    status.observed_generation = gen
    latest = max(records, key=lambda r: r.created, default=None)
    if latest is not None:
        status.last_action = LastAction(name=latest.name, step=latest.step_index, phase=latest.phase.value,
                                        time=_utc(latest.created))
    return Summary(status, verdict.allowed, len(in_flight), soonest(cooldown.until, rate_until))


def phase(spec: RemediationPolicySpec, status: RemediationPolicyStatus, in_flight: Sequence[ActionRecord],
          cooldown: GuardVerdict) -> PolicyPhase:
    if spec.paused:
        return PolicyPhase.PAUSED
    if any(r.phase == ActionPhase.PENDING_APPROVAL for r in in_flight):
        return PolicyPhase.AWAITING_APPROVAL
    if in_flight:
        return PolicyPhase.ACTING
    if status.incident:
        return PolicyPhase.TRIGGERED
    if not cooldown.allowed:
        return PolicyPhase.COOLDOWN
    return PolicyPhase.IDLE
