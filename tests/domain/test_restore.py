"""The scale-back decider (domain/remediation/restore.py) and its place in the policy decider, as tables.

Each case names the one input it changes: the incident's records, the observed group, the guard rails, the
clock. The same behaviour runs end to end against moto in tests/integration/test_restore.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest

from vigil.api.v1alpha1.action import (
    ActionPhase,
    Decision,
    PolicyRef,
    Reason,
    RemediationActionSpec,
    RemediationActionStatus,
    RestoreRef,
    SkipReason,
    Target,
)
from vigil.api.v1alpha1.policy import (
    RemediationPolicySpec,
    RemediationPolicyStatus,
    RestorePhase,
    RestoreReason,
    Restoring,
)
from vigil.domain.remediation import guards, preflight, provenance, reconcile, restore, tenancy
from vigil.domain.remediation.guards import ActionRecord
from vigil.domain.remediation.restore import CapacityRecord
from vigil.domain.remediation.triggers import DetectorSignal, SeriesSignal

NOW = 1_800_000_000.0
ADMIN = tenancy.Tenancy()
QUIET_SINCE = NOW - 100


def _t(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)


def spec(restore_config: dict[str, Any] | None = None, **overrides: Any) -> RemediationPolicySpec:
    config = {"after": "60s", "step": 1, "every": "30s"} if restore_config is None else restore_config
    body: dict[str, Any] = {
        "detectors": ["cpu"], "aws": {"region": "us-east-1"}, "cooldown": "10m",
        "trigger": {"for": "0s", "keepFiringFor": "0s"},
        "actions": [{"name": "out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 1, "max": 9},
                     "restore": config}],
    }
    body.update(overrides)
    return RemediationPolicySpec.model_validate(body)


def scale_out(phase: ActionPhase = ActionPhase.SUCCEEDED, before: int = 2, set_to: int = 4,
              incident: str = "inc") -> CapacityRecord:
    return CapacityRecord("web-inc-s1", incident, 0, phase, NOW - 400, NOW - 390, "web", before, set_to)


def back(sequence: int, phase: ActionPhase = ActionPhase.SUCCEEDED, set_to: int | None = None,
         completed: float | None = NOW - 40, skip: SkipReason | None = None,
         before: int | None = None) -> CapacityRecord:
    return CapacityRecord(f"web-inc-s1-r{sequence}", "inc", 0, phase, (completed or NOW) - 1, completed, "web",
                          before, set_to, restore=sequence, skip_reason=skip)


def waiting(phase: RestorePhase = RestorePhase.WAITING) -> Restoring:
    return Restoring(incident="inc", step=0, group="web", baseline=2, quiet_since=_t(QUIET_SINCE), phase=phase)


def advance(records: tuple[CapacityRecord, ...], policy: RemediationPolicySpec | None = None,
            state: Restoring | None = None, incident_open: bool = False, quiet: bool = True,
            hold: tuple[str, float | None] | None = None, now: float = NOW) -> restore.Next:
    return restore.advance(policy or spec(), state or waiting(), incident_open, quiet, hold, records, now)


# --- the API -------------------------------------------------------------------------------------------------


def test_durations_are_parsed_once_and_step_is_at_least_one() -> None:
    config = spec({"after": "30m", "step": 2, "every": "10m", "approval": False}).actions[0].restore
    assert config is not None and (config.after_seconds, config.every_seconds, config.step) == (1800, 600, 2)
    assert not config.approval
    for bad in ({"step": 0}, {"after": "soon"}, {"every": "0s"}):
        with pytest.raises(pydantic.ValidationError):
            spec(bad)


def test_restore_only_on_a_scale_step() -> None:
    with pytest.raises(pydantic.ValidationError, match="only allowed on a scaleAutoScalingGroup"):
        RemediationPolicySpec.model_validate({
            "detectors": ["cpu"], "aws": {"region": "us-east-1"},
            "actions": [{"rebootInstances": {"targets": {"fromLabel": "instance_id"}}, "restore": {}}]})


# --- begin: what the incident changed --------------------------------------------------------------------------


def test_begin_records_the_capacity_before_the_first_change() -> None:
    second = CapacityRecord("web-inc-s2", "inc", 0, ActionPhase.SUCCEEDED, NOW - 300, NOW - 290, "web", 4, 6)
    started = restore.begin(spec(), "inc", QUIET_SINCE, [second, scale_out()], QUIET_SINCE + 10)
    assert started is not None
    assert (started.baseline, started.group, started.step, started.phase) == (2, "web", 0, RestorePhase.WAITING)
    assert started.next_at == _t(QUIET_SINCE + 60)


@pytest.mark.parametrize("records, policy", [
    ((scale_out(ActionPhase.DRY_RUN),), None),  # only changes Vigil made
    ((scale_out(ActionPhase.FAILED),), None),
    ((scale_out(incident="other"),), None),
    ((scale_out(),), "no-restore"),
], ids=["dry-run", "failed", "other-incident", "step-without-restore"])
def test_begin_finds_nothing_to_restore(records: tuple[CapacityRecord, ...], policy: str | None) -> None:
    policy_spec = spec()
    if policy == "no-restore":
        policy_spec = RemediationPolicySpec.model_validate(
            {**policy_spec.to_wire(), "actions": [{"scaleAutoScalingGroup": {"name": "web", "by": 2, "max": 9}}]})
    assert restore.begin(policy_spec, "inc", QUIET_SINCE, records, NOW) is None


# --- the arithmetic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("current, baseline, size, low, high, expected", [
    (4, 2, 1, 1, 9, 3),
    (3, 2, 1, 1, 9, 2),
    (9, 2, 5, 1, 9, 4),
    (4, 2, 5, 1, 9, 2),  # never past the baseline
    (4, 2, 1, 3, 9, 3),  # never below min
    (3, 2, 1, 3, 9, 3),  # at the floor: no move
    (1, 3, 1, 1, 9, 2),  # a scale-in step restores upward
])
def test_next_target(current: int, baseline: int, size: int, low: int, high: int, expected: int) -> None:
    assert restore.next_target(current, baseline, size, low, high) == expected


@pytest.mark.parametrize("desired, target, group_min, verdict", [
    (4, None, 1, restore.Plan(3)),
    (4, 3, 1, restore.Plan(3)),
    (4, 3, 4, restore.Refuse(SkipReason.AT_BOUND, "")),  # the group's MinSize rose to 4 meanwhile
    (4, 2, 3, restore.Plan(3)),  # re-clamped to the group's current floor, never below
    (5, 3, 1, restore.Refuse(SkipReason.CHANGED_OUTSIDE_VIGIL, "")),  # desired is not what Vigil set
    (3, None, 1, restore.Refuse(SkipReason.CHANGED_OUTSIDE_VIGIL, "")),
])
def test_plan_from_the_observed_group(desired: int, target: int | None, group_min: int,
                                      verdict: restore.Plan | restore.Refuse) -> None:
    got = restore.plan(spec().actions[0], baseline=2, expected=4, target=target, desired=desired,
                       group_min=group_min, group_max=10)
    if isinstance(verdict, restore.Refuse):
        assert isinstance(got, restore.Refuse) and got.reason == verdict.reason
    else:
        assert got == verdict


def test_changed_outside_vigil_names_both_numbers() -> None:
    got = restore.plan(spec().actions[0], 2, 3, None, 6, 1, 10)
    assert isinstance(got, restore.Refuse) and "is 6, Vigil last set 3" in got.message


# --- advance: the next move ------------------------------------------------------------------------------------


def test_waits_for_the_quiet_time_then_proposes_the_first_step() -> None:
    early = advance((scale_out(),), now=QUIET_SINCE + 30)
    assert early.propose is None and early.requeue_after == QUIET_SINCE + 60
    assert early.restoring is not None and early.restoring.target == 3
    due = advance((scale_out(),), now=QUIET_SINCE + 60)
    assert due.propose == restore.ProposeRestore("inc", 0, 1, "web", 2, 4, "web-inc-s1")
    assert due.restoring is not None and due.restoring.phase == RestorePhase.RESTORING


def test_the_next_step_waits_every_after_the_previous_one() -> None:
    records = (scale_out(), back(1, set_to=3, completed=NOW - 10))
    early = advance(records)
    assert early.propose is None and early.requeue_after == NOW + 20
    due = advance(records, now=NOW + 20)
    assert due.propose is not None and (due.propose.sequence, due.propose.expected) == (2, 3)
    assert due.restoring is not None and due.restoring.target == 2


def test_done_at_the_baseline() -> None:
    done = advance((scale_out(), back(1, set_to=3), back(2, set_to=2)))
    assert done.restoring is not None and done.restoring.phase == RestorePhase.DONE and done.propose is None


def test_in_flight_step_waits() -> None:
    got = advance((scale_out(), back(1, ActionPhase.PENDING_APPROVAL, completed=None)))
    assert got.propose is None and got.restoring is not None and got.restoring.phase == RestorePhase.RESTORING


@pytest.mark.parametrize("last, reason", [
    (back(1, ActionPhase.SKIPPED, skip=SkipReason.CHANGED_OUTSIDE_VIGIL), RestoreReason.CHANGED_OUTSIDE_VIGIL),
    (back(1, ActionPhase.FAILED), RestoreReason.STEP_ENDED),
    (back(1, ActionPhase.REJECTED), RestoreReason.STEP_ENDED),
    (back(1, ActionPhase.EXPIRED), RestoreReason.STEP_ENDED),
    (back(1, ActionPhase.SKIPPED, skip=SkipReason.NOT_PROPOSED_BY_OPERATOR), RestoreReason.STEP_ENDED),
])
def test_stops_for_good(last: CapacityRecord, reason: RestoreReason) -> None:
    got = advance((scale_out(), last), now=NOW + 3600)
    assert got.propose is None and got.restoring is not None
    assert (got.restoring.phase, got.restoring.reason) == (RestorePhase.STOPPED, reason)
    # Stopped stays stopped.
    assert advance((scale_out(), last), state=got.restoring, now=NOW + 7200).restoring == got.restoring


def test_done_at_the_steps_own_floor_without_another_action() -> None:
    got = advance((scale_out(), back(1, set_to=3)), policy=spec(
        actions=[{"scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 3, "max": 9}, "restore": {}}]),
        now=NOW + 3600)
    assert got.propose is None and got.restoring is not None and got.restoring.phase == RestorePhase.DONE


def test_at_the_floor_is_done() -> None:
    got = advance((scale_out(), back(1, ActionPhase.SKIPPED, skip=SkipReason.AT_BOUND)))
    assert got.restoring is not None and got.restoring.phase == RestorePhase.DONE


def test_a_passing_refusal_is_retried_after_every_a_bounded_number_of_times() -> None:
    once = (scale_out(), back(1, ActionPhase.SKIPPED, skip=SkipReason.RATE_LIMITED, completed=NOW - 40))
    got = advance(once)
    assert got.propose is not None and got.propose.sequence == 2 and got.propose.expected == 4
    many = (scale_out(), *(back(i, ActionPhase.SKIPPED, skip=SkipReason.RATE_LIMITED, completed=NOW - 40)
                           for i in range(1, restore.MAX_RETRIES + 2)))
    given_up = advance(many)
    assert given_up.restoring is not None and given_up.restoring.phase == RestorePhase.STOPPED


def test_never_while_an_incident_is_open_nor_on_stale_data_nor_held_by_a_guard() -> None:
    records = (scale_out(),)
    assert advance(records, incident_open=True).propose is None
    stale = advance(records, quiet=False)
    assert stale.propose is None and stale.restoring is not None and "not fresh" in (stale.restoring.message or "")
    held = advance(records, hold=("3 actions in the last 3600s (limit 3)", NOW + 50))
    assert held.propose is None and held.requeue_after == NOW + 50
    assert held.restoring is not None and held.restoring.next_at == _t(NOW + 50)
    assert "waiting: 3 actions" in (held.restoring.message or "")


def test_a_changed_step_stops_it() -> None:
    other = RemediationPolicySpec.model_validate({**spec().to_wire(), "actions": [
        {"name": "out", "scaleAutoScalingGroup": {"name": "api", "by": 2, "max": 9}, "restore": {}}]})
    got = advance((scale_out(),), policy=other)
    assert got.restoring is not None and got.restoring.reason == RestoreReason.POLICY_CHANGED


@pytest.mark.parametrize("config, required, expected", [
    ({}, True, True), ({}, False, False), ({"approval": False}, True, False), ({"approval": False}, False, False),
])
def test_approval_follows_the_policy_unless_restore_says_false(config: dict[str, Any], required: bool,
                                                               expected: bool) -> None:
    assert restore.approval_required(spec(config, approval={"required": required}), 0) is expected


# --- inside the policy decider -------------------------------------------------------------------------------


def signal(anomalous: bool) -> DetectorSignal:
    return DetectorSignal(name="cpu", ready=True, degraded=False, anomalous=anomalous,
                          anomalous_since=NOW - 600 if anomalous else None, score=0.9 if anomalous else 0.1,
                          threshold=0.7, last_evaluation=NOW - 5, interval=60.0,
                          series=(SeriesSignal({"host": "a"}, 0.9 if anomalous else 0.1, anomalous,
                                               "Anomalous" if anomalous else "Normal"),), missing_series=0)


def state(anomalous: bool, written: RemediationPolicyStatus, capacity: tuple[CapacityRecord, ...],
          records: tuple[ActionRecord, ...] = (), policy: RemediationPolicySpec | None = None) -> reconcile.PolicyState:
    return reconcile.PolicyState(namespace="shop", uid="uid-1", generation=1, spec=policy or spec(), written=written,
                                 detector_names=["cpu"], detectors=(signal(anomalous),), alerts=(), alerts_unknown=None,
                                 records=records, capacity=capacity)


def test_closing_the_incident_starts_the_restore() -> None:
    written = RemediationPolicyStatus(incident="inc", incident_since=_t(NOW - 500), quiet_since=_t(QUIET_SINCE))
    decision = reconcile.decide(state(False, written, (scale_out(),)), ADMIN, QUIET_SINCE + 10)
    assert decision.closed == "inc" and decision.status.restoring is not None
    assert decision.status.restoring.phase == RestorePhase.WAITING and decision.status.restoring.baseline == 2
    assert decision.restore is None and decision.requeue_after == QUIET_SINCE + 60
    later = reconcile.decide(state(False, decision.status, (scale_out(),)), ADMIN, QUIET_SINCE + 60)
    assert later.restore is not None and later.restore.sequence == 1 and later.propose is None


def test_a_new_incident_stops_the_restore_and_gets_its_own_ladder() -> None:
    written = RemediationPolicyStatus(restoring=waiting(RestorePhase.RESTORING))
    decision = reconcile.decide(state(True, written, (scale_out(), back(1, set_to=3))), ADMIN, NOW)
    assert decision.status.incident and decision.status.incident != "inc"
    assert decision.status.restoring is not None
    assert (decision.status.restoring.phase, decision.status.restoring.reason) == (
        RestorePhase.STOPPED, RestoreReason.INCIDENT_OPENED)
    assert decision.restore is None and decision.propose is not None


def test_the_rate_limit_holds_the_restore_and_says_until_when() -> None:
    taken = tuple(ActionRecord(f"a{i}", "old", 0, ActionPhase.SUCCEEDED, NOW - 100 * i, NOW - 100 * i + 1)
                  for i in (1, 2))
    policy = spec(rateLimit={"maxActions": 2, "window": "1h"})
    written = RemediationPolicyStatus(restoring=waiting())
    decision = reconcile.decide(state(False, written, (scale_out(),), taken, policy), ADMIN, NOW)
    assert decision.restore is None and decision.requeue_after is not None
    assert decision.requeue_after <= NOW - 200 + 3600
    restoring = decision.status.restoring
    assert restoring is not None and "waiting: 2 actions" in (restoring.message or "")
    assert restoring.next_at == _t(NOW - 200 + 3600)


def test_restore_actions_do_not_start_the_cooldown() -> None:
    restored = ActionRecord("r1", "inc", 0, ActionPhase.SUCCEEDED, NOW - 20, NOW - 10, restore=1)
    assert guards.cooldown([restored], 600, NOW).allowed
    remediated = ActionRecord("s1", "inc", 0, ActionPhase.SUCCEEDED, NOW - 20, NOW - 10)
    assert not guards.cooldown([remediated], 600, NOW).allowed


# --- the execution-time check (preflight) for restore actions ---------------------------------------------------

KEY = b"0123456789abcdef-test-key"


def preflight_check(policy: RemediationPolicySpec, incident: str | None = None,
                    state: Restoring | None = waiting(RestorePhase.RESTORING), approved: bool = False,
                    records: tuple[ActionRecord, ...] = (), rate_limited: bool = False) -> preflight.Verdict:
    name = "web-inc-s1-r2"
    spec_ = RemediationActionSpec(
        policy_ref=PolicyRef(name="web", uid="uid-1"), incident="inc", step_index=0, step=policy.actions[0],
        targets=[Target(kind="AutoScalingGroup", id="web")], reason=Reason(source="none", time=_t(NOW - 60)),
        approval_required=restore.approval_required(policy, 0), region="us-east-1",
        restore=RestoreRef(scale_action="web-inc-s1", sequence=2, baseline=2, expected=3, target=2))
    annotations = {provenance.ANNOTATION: provenance.sign(KEY, "shop", name, spec_.to_wire())}
    status = RemediationActionStatus(phase=ActionPhase.APPROVED, created_at=_t(NOW - 60),
                                     decision=Decision(by="policy", at=_t(NOW - 60), via="policy"))
    if approved:
        annotations["vigil.dev/approve"] = "true"
        status.decision = Decision(by="alice", at=_t(NOW - 30), via="annotation")
    view = preflight.ActionView("shop", name, "inc", spec_, status, annotations,
                                [{"kind": "RemediationPolicy", "uid": "uid-1", "controller": True, "name": "web"}],
                                NOW - 60)
    tags = {"vigil.dev/managed": "true", "vigil.dev/namespace": "shop"}
    if rate_limited:
        records = records + tuple(ActionRecord(f"x{i}", "old", 0, ActionPhase.SUCCEEDED, NOW - 10, NOW - 9)
                                  for i in range(3))
    return preflight.check(view, preflight.PolicyView("shop", "uid-1", policy, incident, state), ADMIN, KEY,
                           preflight.Observed(tags={"web": tags}), (), records, records, NOW)


def test_preflight_lets_a_current_restore_step_through_without_the_cooldown() -> None:
    # The incident's scale-out completed a minute ago, well inside the 10m cooldown: a restore does not wait.
    out = ActionRecord("web-inc-s1", "inc", 0, ActionPhase.SUCCEEDED, NOW - 70, NOW - 60)
    first = ActionRecord("web-inc-s1-r1", "inc", 0, ActionPhase.SUCCEEDED, NOW - 50, NOW - 40, restore=1)
    assert isinstance(preflight_check(spec(), records=(out, first)), preflight.Proceed)


@pytest.mark.parametrize("kwargs, reason", [
    ({"incident": "new"}, SkipReason.RESTORE_STOPPED),  # another incident is open
    ({"state": waiting(RestorePhase.RESTORING).model_copy(update={"phase": RestorePhase.STOPPED})},
     SkipReason.RESTORE_STOPPED),
    ({"state": waiting(RestorePhase.RESTORING).model_copy(update={"incident": "other"})},
     SkipReason.RESTORE_STOPPED),
    ({"state": None}, SkipReason.RESTORE_STOPPED),
    ({"records": (ActionRecord("web-inc-s1-r2-copy", "inc", 0, ActionPhase.SUCCEEDED, NOW - 5, NOW - 4,
                               restore=2),)}, SkipReason.POLICY_CHANGED),  # that attempt already ran
    ({"rate_limited": True}, SkipReason.RATE_LIMITED),
], ids=["incident-open", "stopped", "other-incident", "no-restore", "attempt-taken", "rate-limited"])
def test_preflight_refuses_a_restore_step(kwargs: dict[str, Any], reason: SkipReason) -> None:
    verdict = preflight_check(spec(rateLimit={"maxActions": 3, "window": "1h"}), **kwargs)
    assert isinstance(verdict, preflight.Refuse) and verdict.reason == reason, verdict


@pytest.mark.parametrize("config, approved, allowed", [
    ({}, False, False),  # the policy requires approval and restore follows it
    ({}, True, True),
    ({"approval": False}, False, True),  # restore.approval: false opts out
])
def test_preflight_approval_of_a_restore_step(config: dict[str, Any], approved: bool, allowed: bool) -> None:
    verdict = preflight_check(spec(config, approval={"required": True}), approved=approved)
    assert isinstance(verdict, preflight.Proceed) is allowed, verdict
    if not allowed:
        assert isinstance(verdict, preflight.Refuse) and verdict.reason == SkipReason.NOT_APPROVED
