"""The policy decider (domain/remediation/reconcile.py): incident, ladder, guards and requeue, as tables.

These used to be decided inside the engine's ``_reconcile`` among API and AWS calls; here each case is a
few microseconds and names the one input it changes.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from vigil.api.v1alpha1.action import ActionPhase, SkipReason
from vigil.api.v1alpha1.policy import PolicyPhase, PolicyReason, RemediationPolicySpec, RemediationPolicyStatus
from vigil.domain import conditions
from vigil.domain.remediation import reconcile, tenancy
from vigil.domain.remediation.guards import ActionRecord
from vigil.domain.remediation.triggers import DetectorSignal, SeriesSignal

NOW = 1_800_000_000.0
ADMIN = tenancy.Tenancy()


def _t(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)


def spec(**overrides: Any) -> RemediationPolicySpec:
    body: dict[str, Any] = {
        "detectors": ["cpu"], "aws": {"region": "us-east-1"}, "cooldown": "10m",
        "trigger": {"for": "0s", "keepFiringFor": "5m"},
        "actions": [{"name": "one", "scaleAutoScalingGroup": {"name": "web", "by": 1, "min": 1, "max": 9}},
                    {"name": "two", "after": "2m",
                     "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 1, "max": 9}}],
    }
    body.update(overrides)
    return RemediationPolicySpec.model_validate(body)


def signal(anomalous: bool = True, last: float = NOW - 10, **overrides: Any) -> DetectorSignal:
    fields: dict[str, Any] = dict(
        name="cpu", ready=True, degraded=False, anomalous=anomalous, anomalous_since=NOW - 600 if anomalous else None,
        score=0.9 if anomalous else 0.1, threshold=0.7, last_evaluation=last, interval=60.0,
        series=(SeriesSignal({"instance_id": "i-0000000000000000a"}, 0.9, anomalous, "Anomalous"),), missing_series=0)
    fields.update(overrides)
    return DetectorSignal(**fields)


def record(name: str, phase: ActionPhase, incident: str = "inc", step: int = 0, created: float = NOW - 300,
           completed: float | None = None) -> ActionRecord:
    return ActionRecord(name, incident, step, phase, created, completed)


def state(policy: RemediationPolicySpec | None = None, written: RemediationPolicyStatus | None = None,
          detectors: tuple[DetectorSignal, ...] | None = None, records: tuple[ActionRecord, ...] = (),
          **overrides: Any) -> reconcile.PolicyState:
    fields: dict[str, Any] = dict(
        namespace="shop", uid="uid-1", generation=3, spec=policy or spec(),
        written=written or RemediationPolicyStatus(), detector_names=["cpu"],
        detectors=detectors if detectors is not None else (signal(),), alerts=(),
        alerts_unknown=None, records=records)
    fields.update(overrides)
    return reconcile.PolicyState(**fields)


def open_incident(since: float = NOW - 120, quiet_since: float | None = None) -> RemediationPolicyStatus:
    return RemediationPolicyStatus(incident="inc", incident_since=_t(since), escalation_step=0,
                                   quiet_since=_t(quiet_since) if quiet_since else None)


def test_a_firing_trigger_opens_an_incident_and_proposes_the_first_step() -> None:
    decision = reconcile.decide(state(), ADMIN, NOW)
    assert decision.status.incident and decision.status.escalation_step == 0
    assert decision.propose == reconcile.Propose(decision.status.incident, 0) and decision.skip is None
    assert conditions.get(decision.status.conditions, "Ready").reason == PolicyReason.VALID  # type: ignore[union-attr]


@pytest.mark.parametrize("case, kwargs, skip_reason", [
    ("paused", {"policy": spec(paused=True)}, SkipReason.PAUSED),
    ("stale detector", {"detectors": (signal(last=NOW - 3600),)}, SkipReason.DETECTOR_STALE),
    ("role not allowed", {"policy": spec(aws={"region": "us-east-1", "roleArn": "arn:aws:iam::123456789012:role/x"})},
     SkipReason.NOT_PERMITTED),
    ("cooldown", {"records": (record("old", ActionPhase.SUCCEEDED, incident="old", completed=NOW - 60),)},
     SkipReason.COOLDOWN_ACTIVE),
    ("rate limited", {"policy": spec(cooldown="0s", rateLimit={"maxActions": 1, "window": "1h"}),
                      "records": (record("old", ActionPhase.SUCCEEDED, incident="old", completed=NOW - 60),)},
     SkipReason.RATE_LIMITED),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_guard_records_the_step_as_skipped_instead_of_proposing(case: str, kwargs: dict[str, Any],
                                                                   skip_reason: SkipReason) -> None:
    decision = reconcile.decide(state(written=open_incident(), **kwargs), ADMIN, NOW)
    assert decision.propose is None, case
    assert decision.skip is not None and decision.skip.reason == skip_reason and decision.skip.step == 0, case


def test_waiting_for_approval_neither_proposes_nor_skips() -> None:
    decision = reconcile.decide(state(written=open_incident(),
                                      records=(record("a1", ActionPhase.PENDING_APPROVAL),)), ADMIN, NOW)
    assert decision.propose is None and decision.skip is None


def test_the_next_step_is_due_after_its_delay_and_requeues_for_it() -> None:
    done = record("a1", ActionPhase.SUCCEEDED, completed=NOW - 30)
    early = reconcile.decide(state(written=open_incident(), records=(done,)), ADMIN, NOW)
    assert early.propose is None and early.requeue_after == pytest.approx(NOW - 30 + 120)
    due = reconcile.decide(state(written=open_incident(), records=(done,)), ADMIN, NOW + 90)
    assert due.propose == reconcile.Propose("inc", 1)


def test_a_flicker_keeps_the_incident_and_a_quiet_spell_closes_it() -> None:
    quiet = (signal(anomalous=False),)
    first = reconcile.decide(state(written=open_incident(), detectors=quiet), ADMIN, NOW)
    assert first.status.incident == "inc" and first.closed is None
    assert first.requeue_after == pytest.approx(NOW + 300)  # the quiet spell's end
    later = reconcile.decide(state(written=first.status, detectors=(signal(anomalous=False, last=NOW + 300),)),
                             ADMIN, NOW + 301)
    assert later.status.incident is None and later.closed == "inc"
    again = reconcile.decide(state(written=first.status), ADMIN, NOW + 100)  # fires again within keepFiringFor
    assert again.status.incident == "inc" and again.status.quiet_since is None


def test_the_decider_requeues_when_the_detector_would_turn_stale() -> None:
    decision = reconcile.decide(state(written=open_incident(), records=(record("a1", ActionPhase.EXECUTING),)),
                                ADMIN, NOW)
    assert decision.requeue_after == pytest.approx(NOW - 10 + 180)  # 3 x interval after the last evaluation


def test_an_aws_backoff_holds_the_proposal_and_requeues_at_its_end() -> None:
    decision = reconcile.decide(state(written=open_incident(), aws_backoff_until=NOW + 20), ADMIN, NOW)
    assert decision.propose is None and decision.requeue_after == pytest.approx(NOW + 20)


@pytest.mark.parametrize("records, phase, allowed_reason", [
    ((), PolicyPhase.TRIGGERED, PolicyReason.ALLOWED),
    ((record("a1", ActionPhase.PENDING_APPROVAL),), PolicyPhase.AWAITING_APPROVAL, PolicyReason.AWAITING_APPROVAL),
    ((record("a1", ActionPhase.EXECUTING),), PolicyPhase.ACTING, PolicyReason.ALLOWED),
], ids=["triggered", "awaiting-approval", "acting"])
def test_summary_phase_and_action_allowed(records: tuple[ActionRecord, ...], phase: PolicyPhase,
                                          allowed_reason: PolicyReason) -> None:
    policy = state(written=open_incident(), records=records)
    decision = reconcile.decide(policy, ADMIN, NOW)
    summary = reconcile.summarize(policy, decision.status, decision.trigger, ADMIN, None, None, NOW)
    assert summary.status.phase == phase
    allowed = conditions.get(summary.status.conditions, "ActionAllowed")
    assert allowed is not None and allowed.reason == allowed_reason
    assert summary.status.in_flight == sum(r.phase.in_flight for r in records)


def test_summary_reports_cooldown_held_back_targets_and_aws_retrying() -> None:
    finished = record("a1", ActionPhase.SUCCEEDED, incident="old", completed=NOW - 60)
    idle = state(records=(finished,), detectors=(signal(anomalous=False),))
    decision = reconcile.decide(idle, ADMIN, NOW)
    summary = reconcile.summarize(idle, decision.status, decision.trigger, ADMIN, None, None, NOW)
    assert summary.status.phase == PolicyPhase.COOLDOWN and summary.requeue_after == pytest.approx(NOW + 540)
    assert summary.status.last_action is not None and summary.status.last_action.name == "a1"
    firing = state(written=open_incident())
    decision = reconcile.decide(firing, ADMIN, NOW)
    held = reconcile.summarize(firing, decision.status, decision.trigger, ADMIN, "blast radius: 1 of 2", "AWS x",
                               NOW)
    allowed = conditions.get(held.status.conditions, "ActionAllowed")
    degraded = conditions.get(held.status.conditions, "Degraded")
    assert allowed is not None and allowed.reason == PolicyReason.BLAST_RADIUS_EXCEEDED and not held.allowed
    assert degraded is not None and degraded.reason == PolicyReason.AWS_RETRYING
    assert held.status.recoverable_errors == 1


def test_an_invalid_spec_is_only_reported() -> None:
    status = reconcile.invalid(RemediationPolicyStatus(), "spec.actions: too short", 4, NOW)
    assert status.phase == PolicyPhase.INVALID and status.observed_generation == 4
    ready = conditions.get(status.conditions, "Ready")
    assert ready is not None and ready.reason == PolicyReason.INVALID_SPEC


def test_a_new_incident_never_reuses_the_id_of_one_just_closed() -> None:
    """A flicker shorter than a pass closed an incident and opened the next in the same millisecond: with the
    old id the ladder looked finished and the new incident was never acted on."""
    first = reconcile.decide(state(), ADMIN, NOW).status.incident
    assert first is not None
    done = record(f"web-{first}-s1", ActionPhase.SUCCEEDED, incident=first, completed=NOW)
    again = reconcile.decide(state(spec(cooldown="0s"), records=(done,)), ADMIN, NOW)
    assert again.status.incident not in (None, first) and again.propose is not None
