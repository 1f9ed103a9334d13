"""The remediation deciders: triggers, guard rails, the ladder, plans and approvals."""

from __future__ import annotations

import pytest

from vigil.api.v1alpha1.action import (
    ACTOR_ANNOTATION,
    APPROVE_ANNOTATION,
    REJECT_ANNOTATION,
    ActionPhase,
    CommandInvocation,
    SkipReason,
)
from vigil.api.v1alpha1.detector import SeriesState
from vigil.api.v1alpha1.policy import InstanceTargets, PolicyReason, ScaleAutoScalingGroup
from vigil.domain.remediation import approvals, commands, guards, ladder, plans, triggers
from vigil.domain.remediation.guards import ActionRecord
from vigil.domain.remediation.triggers import DetectorSignal, SeriesSignal, TriggerState

NOW = 10_000.0
HOT = SeriesSignal({"instance_id": "i-0123456789abcdef0"}, 0.95, True, SeriesState.ANOMALOUS)


def signal(**overrides: object) -> DetectorSignal:
    base: dict[str, object] = dict(
        name="cpu", ready=True, degraded=False, anomalous=True, anomalous_since=NOW - 600, score=0.95,
        threshold=0.7, last_evaluation=NOW - 30, interval=60, series=(HOT,), missing_series=0,
    )
    base.update(overrides)
    return DetectorSignal(**base)  # type: ignore[arg-type]


def fire(*signals: DetectorSignal, alerts: tuple[triggers.AlertSignal, ...] = (), for_seconds: float = 300,
         min_score: float | None = None) -> triggers.TriggerResult:
    return triggers.evaluate(signals, alerts, for_seconds, min_score, None, NOW, expect_detectors=bool(signals))


def test_absence_of_evidence_is_stale_not_quiet() -> None:
    """QUIET closes an incident; an empty detector set or unknown alert state must not."""
    nothing = triggers.evaluate([], [], 0, None, None, NOW, expect_detectors=True)
    assert nothing.state == TriggerState.STALE and "no AnomalyDetector" in nothing.message
    unknown = triggers.evaluate([], [], 0, None, None, NOW, expect_detectors=False,
                                alerts_unknown="alert state unknown")
    assert unknown.state == TriggerState.STALE
    alert = triggers.AlertSignal({"alertname": "HighCPU"}, starts_at=NOW - 400, ends_at=None)
    assert triggers.evaluate([], [alert], 0, None, None, NOW, expect_detectors=False,
                             alerts_unknown="alert state unknown").state == TriggerState.FIRING
    quiet = signal(anomalous=False)
    assert triggers.evaluate([quiet], [], 0, None, None, NOW).state == TriggerState.QUIET


def test_fresh_anomalous_detector_fires_with_its_series() -> None:
    result = fire(signal())
    assert result.state == TriggerState.FIRING and result.evidence is not None
    assert result.evidence.series == ({"instance_id": "i-0123456789abcdef0"},) and result.evidence.complete


@pytest.mark.parametrize("overrides", [
    {"ready": False}, {"degraded": True}, {"last_evaluation": None}, {"last_evaluation": NOW - 181},
])
def test_stale_or_unready_detector_never_fires(overrides: dict[str, object]) -> None:
    assert fire(signal(**overrides)).state == TriggerState.STALE


def test_a_verdict_this_process_has_not_evaluated_yet_never_fires() -> None:
    """Issue 16: after a start the status is an older process' verdict, fresh and anomalous as it looks."""
    result = fire(signal(loading=True))
    assert result.state == TriggerState.STALE and "history is still loading" in result.message


def test_another_shards_detector_may_lag_by_its_heartbeat_and_no_more() -> None:
    """Another shard writes the status on a change and per heartbeat: that much extra age is expected."""
    assert fire(signal(last_evaluation=NOW - 181, lag=300)).state == TriggerState.FIRING
    stale = fire(signal(last_evaluation=NOW - 481, lag=300))
    assert stale.state == TriggerState.STALE and "300s for another shard's heartbeat" in stale.message


@pytest.mark.parametrize(("overrides", "kwargs"), [
    ({"anomalous": False}, {}),
    ({"anomalous_since": NOW - 100}, {}),  # not anomalous for long enough
    ({"score": 0.8}, {"min_score": 0.9}),
    ({"series": (SeriesSignal({"x": "1"}, None, True, SeriesState.MISSING),)}, {}),  # only missing data
    ({"anomalous": None}, {}),
])
def test_quiet_cases(overrides: dict[str, object], kwargs: dict[str, float]) -> None:
    assert fire(signal(**overrides), **kwargs).state == TriggerState.QUIET  # type: ignore[arg-type]


def test_missing_series_make_evidence_incomplete() -> None:
    result = fire(signal(missing_series=2))
    assert result.evidence is not None and not result.evidence.complete


def test_alerts_fire_until_they_expire() -> None:
    alert = triggers.AlertSignal({"alertname": "HighCPU"}, starts_at=NOW - 400, ends_at=NOW + 100)
    assert fire(alerts=(alert,)).state == TriggerState.FIRING
    expired = triggers.AlertSignal({"alertname": "HighCPU"}, starts_at=NOW - 400, ends_at=NOW - 1)
    assert fire(alerts=(expired,)).state == TriggerState.QUIET
    young = triggers.AlertSignal({"alertname": "HighCPU"}, starts_at=NOW - 10, ends_at=None)
    assert fire(alerts=(young,)).state == TriggerState.QUIET


def test_detector_evidence_preferred_over_alert() -> None:
    alert = triggers.AlertSignal({"alertname": "HighCPU"}, starts_at=NOW - 400, ends_at=None)
    result = fire(signal(), alerts=(alert,))
    assert result.evidence is not None and result.evidence.source == "detector"


def record(name: str, phase: ActionPhase, created: float, completed: float | None = None, step: int = 0,
           instances: tuple[tuple[str, str | None], ...] = (), error_code: str | None = None) -> ActionRecord:
    return ActionRecord(name, "inc", step, phase, created, completed, instances, error_code)


def test_cooldown_runs_from_the_last_completed_action() -> None:
    records = [record("a", ActionPhase.SUCCEEDED, NOW - 500, NOW - 200)]
    verdict = guards.cooldown(records, 600, NOW)
    assert not verdict.allowed and verdict.reason == PolicyReason.COOLDOWN_ACTIVE and verdict.until == NOW + 400
    assert guards.cooldown(records, 100, NOW).allowed
    assert guards.cooldown([record("s", ActionPhase.SKIPPED, NOW - 5, NOW - 5)], 600, NOW).allowed


def test_rate_limit_counts_taken_actions_in_the_window() -> None:
    records = [
        record("a", ActionPhase.SUCCEEDED, NOW - 3000), record("b", ActionPhase.FAILED, NOW - 100),
        record("c", ActionPhase.SKIPPED, NOW - 50), record("d", ActionPhase.REJECTED, NOW - 40),
        record("e", ActionPhase.PENDING_APPROVAL, NOW - 10),
    ]
    assert guards.rate_limit(records, 3, 3600, NOW).allowed is False
    verdict = guards.rate_limit(records, 3, 1000, NOW)
    assert verdict.allowed
    limited = guards.rate_limit(records, 2, 1000, NOW)
    assert limited.reason == PolicyReason.RATE_LIMITED and limited.until == NOW - 100 + 1000


def test_blast_radius_counts_in_flight_instances() -> None:
    busy = [record("a", ActionPhase.EXECUTING, NOW, instances=(("i-1", "asg"),))]
    sizes = {"asg": 4}
    allowed, verdict = guards.blast_radius([("i-2", "asg"), ("i-3", "asg")], busy, sizes, None, 50)
    assert allowed == [("i-2", "asg")] and verdict.allowed and "held back" in verdict.message
    allowed, verdict = guards.blast_radius([("i-2", "asg")], busy, sizes, 1, None)
    assert allowed == [] and verdict.reason == PolicyReason.BLAST_RADIUS_EXCEEDED
    done = [record("a", ActionPhase.SUCCEEDED, NOW, NOW, instances=(("i-1", "asg"),))]
    assert guards.blast_radius([("i-2", "asg")], done, sizes, 1, None)[0] == [("i-2", "asg")]
    allowed, verdict = guards.blast_radius([("i-1", "asg")], busy, sizes, 5, None)
    assert allowed == [] and "already in flight" in verdict.message


AFTERS = [0.0, 300.0, 600.0]


@pytest.mark.parametrize(("records", "expected_index", "expected_wait"), [
    ([], 0, None),
    ([record("a", ActionPhase.EXECUTING, NOW - 10)], None, None),
    ([record("a", ActionPhase.SUCCEEDED, NOW - 100, NOW - 50)], None, NOW + 250),
    ([record("a", ActionPhase.SUCCEEDED, NOW - 400, NOW - 350)], 1, None),
    ([record("a", ActionPhase.DRY_RUN, NOW - 400, NOW - 350)], 1, None),
    ([record("a", ActionPhase.FAILED, NOW - 400, NOW - 350)], None, None),
    # A remedy that ran and did not work escalates like a success (issue 14): after the next step's `after`.
    ([record("a", ActionPhase.FAILED, NOW - 400, NOW - 350, error_code="CommandFailed")], 1, None),
    ([record("a", ActionPhase.FAILED, NOW - 400, NOW - 350, error_code="CommandTimedOut")], 1, None),
    ([record("a", ActionPhase.FAILED, NOW - 100, NOW - 50, error_code="CommandFailed")], None, NOW + 250),
    # A failed call (not a failed remedy) still stops the ladder: it needs a human.
    ([record("a", ActionPhase.FAILED, NOW - 400, NOW - 350, error_code="AccessDenied")], None, None),
    ([record("a", ActionPhase.FAILED, NOW - 400, NOW - 350, error_code="Interrupted")], None, None),
    ([record("a", ActionPhase.REJECTED, NOW - 400, NOW - 350, error_code="CommandFailed")], None, None),
    ([record("a", ActionPhase.SUCCEEDED, NOW - 9000, NOW - 8000),
      record("b", ActionPhase.FAILED, NOW - 7000, NOW - 6000, step=1, error_code="CommandFailed")], 2, None),
    ([record("a", ActionPhase.FAILED, NOW - 9000, NOW - 8000, error_code="CommandFailed"),
      record("b", ActionPhase.FAILED, NOW - 7000, NOW - 6000, step=1, error_code="CommandFailed"),
      record("c", ActionPhase.FAILED, NOW - 5000, NOW - 4000, step=2, error_code="CommandFailed")], None, None),
    ([record("a", ActionPhase.REJECTED, NOW - 400, NOW - 350)], None, None),
    ([record("a", ActionPhase.SUCCEEDED, NOW - 9000, NOW - 8000),
      record("b", ActionPhase.SUCCEEDED, NOW - 7000, NOW - 6000, step=1),
      record("c", ActionPhase.SUCCEEDED, NOW - 5000, NOW - 4000, step=2)], None, None),
])
def test_ladder(records: list[ActionRecord], expected_index: int | None, expected_wait: float | None) -> None:
    step = ladder.next_step(records, AFTERS, NOW)
    assert (step.index, step.wait_until) == (expected_index, expected_wait)


def test_incident_ids_are_short_and_stable() -> None:
    assert ladder.incident_id("uid", 100.2) == ladder.incident_id("uid", 100.2)  # stable
    # A new incident within the same second as a closed one gets its own id, never the old one.
    first = ladder.incident_id("uid", 100.2)
    assert ladder.incident_id("uid", 100.4) != first
    assert ladder.incident_id("uid", 100.2, {first}) not in {first}
    assert len(ladder.incident_id("uid", 1)) == 10


@pytest.mark.parametrize(("by", "to", "desired", "bounds", "target"), [
    (2, None, 4, (2, 10), 6),
    (10, None, 4, (2, 10), 10),  # clamped at max
    (-3, None, 4, (2, 10), 2),  # clamped at min (scale in)
    (None, 7, 4, (2, 10), 7),
    (None, 20, 4, (2, 8), 8),  # the group's own MaxSize is a bound too
])
def test_plan_scale(by: int | None, to: int | None, desired: int, bounds: tuple[int, int], target: int) -> None:
    step = ScaleAutoScalingGroup(name="asg", by=by, to=to, min=bounds[0], max=bounds[1])
    plan = plans.plan_scale(step, desired, group_min=0, group_max=8 if to == 20 else 100)
    assert isinstance(plan, plans.ScalePlan) and plan.target == target and plan.before == desired


def test_plan_scale_at_bound_is_a_skip() -> None:
    plan = plans.plan_scale(ScaleAutoScalingGroup(name="asg", by=2, min=1, max=4), 4, 0, 100)
    assert isinstance(plan, plans.Skip) and plan.reason == SkipReason.AT_BOUND


def test_resolve_instances() -> None:
    targets = InstanceTargets(from_label="instance_id", instance_ids=["i-00000000000000001"])
    series = [{"instance_id": "i-0123456789abcdef0"}, {"instance_id": "i-0123456789abcdef0"}, {"other": "x"}]
    assert plans.resolve_instances(targets, series) == ["i-00000000000000001", "i-0123456789abcdef0"]
    bad = plans.resolve_instances(InstanceTargets(from_label="instance_id"), [{"instance_id": "web-1"}])
    assert isinstance(bad, plans.Skip) and "not instance ids" in bad.message
    none = plans.resolve_instances(InstanceTargets(from_label="instance_id"), [{"x": "y"}])
    assert isinstance(none, plans.Skip) and none.reason == SkipReason.NO_TARGETS


def test_describe_change() -> None:
    assert plans.describe_change({"desiredCapacity": 4}, {"desiredCapacity": 6}) == "desiredCapacity 4 → 6"


@pytest.mark.parametrize(("annotations", "outcome"), [
    ({}, approvals.Outcome.PENDING),
    ({APPROVE_ANNOTATION: "true"}, approvals.Outcome.APPROVED),
    ({APPROVE_ANNOTATION: "no"}, approvals.Outcome.PENDING),
    ({REJECT_ANNOTATION: "true"}, approvals.Outcome.REJECTED),
    ({REJECT_ANNOTATION: "true", APPROVE_ANNOTATION: "true"}, approvals.Outcome.REJECTED),
])
def test_approval_annotations(annotations: dict[str, str], outcome: approvals.Outcome) -> None:
    assert approvals.decide(annotations, [], NOW - 10, 600, True, NOW).outcome == outcome


def test_approval_who() -> None:
    by_cli = approvals.decide({APPROVE_ANNOTATION: "true", ACTOR_ANNOTATION: "alice"}, [], NOW, 600, True, NOW)
    assert by_cli.by == "alice"
    managed = [{"manager": "kubectl-annotate", "time": "2026-01-01T00:00:00Z",
                "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{APPROVE_ANNOTATION}": {}}}}}]
    by_kubectl = approvals.decide({APPROVE_ANNOTATION: "true"}, managed, NOW, 600, True, NOW)
    assert by_kubectl.by.startswith("kubectl-annotate") and by_kubectl.at == 1767225600.0


@pytest.mark.parametrize(("stated", "via"), [
    ("cli", "cli"), ("dashboard", "dashboard"), ("slack", "slack"), ("annotation", "annotation"),
    ("<script>", "annotation"), ("", "annotation"),
])
def test_approval_via_is_a_known_tool_or_annotation(stated: str, via: str) -> None:
    annotations = {APPROVE_ANNOTATION: "true", ACTOR_ANNOTATION: "alice", "vigil.dev/decided-via": stated}
    assert approvals.decide(annotations, [], NOW, 600, True, NOW).via == via
    unsigned = {APPROVE_ANNOTATION: "true", "vigil.dev/decided-via": "dashboard"}  # no decided-by: not stated
    assert approvals.decide(unsigned, [], NOW, 600, True, NOW).via == "annotation"


def test_approval_expiry() -> None:
    assert approvals.decide({}, [], NOW - 700, 600, True, NOW).outcome == approvals.Outcome.EXPIRED
    closed = approvals.decide({}, [], NOW - 10, 600, False, NOW)
    assert closed.outcome == approvals.Outcome.EXPIRED and "incident ended" in closed.message


def test_backoff() -> None:
    assert [approvals.backoff(n) for n in (1, 2, 3, 10)] == [5, 10, 20, 300]


# --- SSM command outcomes (domain/remediation/commands.py) ------------------------------------------------


def invocation(instance: str, status: str, exit_code: int | None = None) -> CommandInvocation:
    return CommandInvocation(instance_id=instance, status=status, exit_code=exit_code)


@pytest.mark.parametrize(("polled", "now", "done", "succeeded", "code"), [
    ([], NOW, False, False, None),  # nothing known yet: pending
    ([invocation("i-1", "InProgress")], NOW, False, False, None),
    ([invocation("i-1", "Success", 0)], NOW, False, False, None),  # i-2 not polled yet
    ([invocation("i-1", "Success", 0), invocation("i-2", "Delayed")], NOW, False, False, None),
    ([invocation("i-1", "Success", 0), invocation("i-2", "Success", 0)], NOW, True, True, None),
    ([invocation("i-1", "Success", 0), invocation("i-2", "Failed", 3)], NOW, True, False, "CommandFailed"),
    ([invocation("i-1", "Cancelled"), invocation("i-2", "Success", 0)], NOW, True, False, "CommandFailed"),
    ([invocation("i-1", "TimedOut"), invocation("i-2", "Success", 0)], NOW, True, False, "CommandTimedOut"),
    ([invocation("i-1", "TimedOut"), invocation("i-2", "Failed", 1)], NOW, True, False, "CommandFailed"),
    # Vigil's own deadline: a still-pending instance at the deadline ends the wait.
    ([invocation("i-1", "Success", 0), invocation("i-2", "InProgress")], NOW + 100, True, False,
     "CommandTimedOut"),
    ([invocation("i-1", "Success", 0), invocation("i-2", "Success", 0)], NOW + 100, True, True, None),
])
def test_command_outcome(polled: list[CommandInvocation], now: float, done: bool, succeeded: bool,
                         code: str | None) -> None:
    outcome = commands.judge(polled, ["i-1", "i-2"], now, NOW + 50)
    assert (outcome.done, outcome.succeeded, outcome.error_code) == (done, succeeded, code), outcome.message


def test_command_outcome_message_names_each_instance() -> None:
    outcome = commands.judge([invocation("i-1", "Success", 0), invocation("i-2", "Failed", 3)], ["i-1", "i-2"],
                             NOW, None)
    assert "i-1 Success, exit 0" in outcome.message and "i-2 Failed, exit 3" in outcome.message


def test_command_deadline_covers_delivery_and_execution() -> None:
    assert commands.deadline(1000.0, 120) == 1000.0 + 240 + commands.DEADLINE_GRACE_S


@pytest.mark.parametrize(("text", "kept", "cut"), [
    (None, None, False),
    ("", None, False),
    ("ok\n", "ok\n", False),
    ("".join(f"line {i}\n" for i in range(30)), "".join(f"line {i}\n" for i in range(20)), True),
    ("x" * 5000, "x" * 2048, True),
    ("é" * 1500, "é" * 1024, True),  # cut on a character boundary, not inside one
])
def test_command_output_excerpt(text: str | None, kept: str | None, cut: bool) -> None:
    assert commands.excerpt(text) == (kept, cut)


def test_firing_evidence_carries_the_detectors_reasons_deduplicated() -> None:
    """Issue 15: each anomalous series' why, once each, in order, for the notifications (Reason.why)."""
    a = SeriesSignal({"instance_id": "i-1"}, 0.9, True, SeriesState.ANOMALOUS, ("change point 5 min ago", "x"))
    b = SeriesSignal({"instance_id": "i-2"}, 0.8, True, SeriesState.ANOMALOUS, ("x", "y"))
    quiet = SeriesSignal({"instance_id": "i-3"}, 0.1, False, SeriesState.NORMAL, ("not anomalous",))
    result = fire(signal(series=(a, b, quiet)))
    assert result.state == TriggerState.FIRING and result.evidence is not None
    assert result.evidence.why == ("change point 5 min ago", "x", "y")
