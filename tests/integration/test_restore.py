"""Scale back after the incident (issue 14, part 1), end to end: real Prometheus, the API emulator, moto behind
the fault proxy, ``vigil run``.

The detector replays the NAB incident, the policy scales ``web`` out 2 → 4 with a ``restore`` step; pointing
the detector at the normal series closes the incident, and the group must come back 4 → 3 → 2, one
RemediationAction per change, unless a new incident or a human gets in the way. AWS state is read from moto.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OperatorFactory
from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import scenario
from tests.integration.aws_world import Estate, Moto
from tests.integration.test_remediation import (
    INCIDENT,
    NORMAL,
    RA,
    RP,
    _flip,
    actions,
    apply_detector,
    apply_policy,
    event,
    scale,
    stamp,
    wait_phase,
)
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer

DIRECTION = "vigil.dev/direction"


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident", "normal")) as server:
        yield server


@pytest.fixture
def operator(run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy) -> OperatorProcess:
    return run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election")


def out_and_back(after: str = "2s", every: str = "1s", **restore: Any) -> list[dict[str, Any]]:
    """One step: +2 within [1, 10], scaled back one instance at a time."""
    step = scale(by=2, low=1, high=10)
    step["restore"] = {"after": after, "step": 1, "every": every, **restore}
    return [step]


def restores(kubeapi: KubeAPIServer) -> list[dict[str, Any]]:
    return sorted([a for a in actions(kubeapi) if a["metadata"].get("labels", {}).get(DIRECTION) == "restore"],
                  key=lambda a: a["spec"]["restore"]["sequence"])


def restoring(kubeapi: KubeAPIServer) -> dict[str, Any]:
    return dict(((kubeapi.get(*RP, "default", "web") or {}).get("status") or {}).get("restoring") or {})


def scaled_out(kubeapi: KubeAPIServer, estate: Estate, moto: Moto) -> dict[str, Any]:
    out = wait_phase(kubeapi, "Succeeded")[0]
    assert estate.desired(moto) == 4 and out["status"]["before"]["desiredCapacity"] == 2
    return out


def test_out_during_the_incident_then_back_step_by_step(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                        estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, out_and_back())
    out = scaled_out(kubeapi, estate, moto)
    steady(lambda: estate.desired(moto) == 4 and restores(kubeapi) == [], operator.passes, seconds=1,
           what="no scale-back while the incident is open")
    _flip(kubeapi, NORMAL, False)
    wait_for(lambda: estate.desired(moto) == 2, timeout=40, what="back to 2")
    wait_for(lambda: restoring(kubeapi).get("phase") == "Done", what="restore Done")
    first, second = restores(kubeapi)
    incident = out["spec"]["incident"]
    for action, before, target in ((first, 4, 3), (second, 3, 2)):
        assert action["status"]["phase"] == "Succeeded"
        assert action["spec"]["incident"] == incident
        assert action["metadata"]["labels"]["vigil.dev/incident"] == incident
        assert action["spec"]["restore"]["scaleAction"] == out["metadata"]["name"]
        assert action["spec"]["restore"]["baseline"] == 2 and action["spec"]["restore"]["target"] == target
        assert action["status"]["before"]["desiredCapacity"] == before
        assert action["status"]["after"]["desiredCapacity"] == target  # read back from moto after the call
        assert action["status"]["intent"]["parameters"]["DesiredCapacity"] == target
        assert action["status"]["decision"]["via"] == "policy"
    assert out["metadata"]["labels"].get(DIRECTION) is None
    # Paced: the second step came at least `every` (1 s) after the first completed (seconds resolution).
    assert stamp(second["metadata"]["creationTimestamp"]) - stamp(first["status"]["completedAt"]) >= 0
    assert stamp(second["status"]["createdAt"]) - stamp(first["status"]["completedAt"]) >= 1
    status = restoring(kubeapi)
    assert status["incident"] == incident and status["baseline"] == 2 and status["group"] == "web"
    event(kubeapi, "RemediationPolicy", "web", "RestoreDone")
    assert proxy.hits("SetDesiredCapacity") == 3
    steady(lambda: estate.desired(moto) == 2 and len(actions(kubeapi)) == 3, operator.passes,
           what="nothing more after the restore")
    assert not operator.errors()


def test_a_new_incident_stops_the_restore(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                          moto: Moto) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, out_and_back(after="1s", every="1h"))
    first_incident = scaled_out(kubeapi, estate, moto)["spec"]["incident"]
    _flip(kubeapi, NORMAL, False)
    wait_for(lambda: estate.desired(moto) == 3, timeout=30, what="first restore step 4 → 3")
    assert restoring(kubeapi)["phase"] == "Restoring"
    _flip(kubeapi, INCIDENT, True)
    stopped = wait_for(lambda: restoring(kubeapi) if restoring(kubeapi).get("phase") == "Stopped" else None,
                       what="restore Stopped")
    assert stopped["reason"] == "IncidentOpened" and stopped["incident"] == first_incident
    event(kubeapi, "RemediationPolicy", "web", "RestoreStopped")
    # The new incident runs its own ladder from the capacity it finds: 3 + 2.
    wait_for(lambda: estate.desired(moto) == 5, what="the new incident's scale-out")
    steady(lambda: [a["spec"]["restore"]["sequence"] for a in restores(kubeapi)] == [1]
           and estate.desired(moto) == 5, operator.passes, what="no more scale-back of the first incident")


def test_a_change_by_hand_stops_the_restore(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                            moto: Moto, proxy: FaultProxy) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, out_and_back(after="1s", every="4s"))
    scaled_out(kubeapi, estate, moto)
    _flip(kubeapi, NORMAL, False)
    wait_for(lambda: estate.desired(moto) == 3, timeout=30, what="first restore step 4 → 3")
    # Someone scales the group by hand before the next step.
    moto.client("autoscaling").set_desired_capacity(AutoScalingGroupName=estate.group, DesiredCapacity=6)
    skipped = wait_for(lambda: [a for a in restores(kubeapi) if a["status"].get("phase") == "Skipped"],
                       timeout=30, what="the next step Skipped")[0]
    assert skipped["status"]["skipReason"] == "ChangedOutsideVigil"
    assert "is 6, Vigil last set 3" in skipped["status"]["message"]
    stopped = wait_for(lambda: restoring(kubeapi) if restoring(kubeapi).get("phase") == "Stopped" else None,
                       what="restore Stopped")
    assert stopped["reason"] == "ChangedOutsideVigil"
    event(kubeapi, "RemediationAction", skipped["metadata"]["name"], "ActionSkipped")
    steady(lambda: estate.desired(moto) == 6 and len(restores(kubeapi)) == 2
           and proxy.hits("SetDesiredCapacity") == 2, operator.passes, what="Vigil does not fight the human")


def test_restart_mid_restore_neither_repeats_nor_loses_a_step(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                              prometheus: PrometheusServer,
                                                              proxy: FaultProxy, estate: Estate,
                                                              moto: Moto) -> None:
    args = ("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election")
    first = run_operator(*args)
    apply_detector(kubeapi)
    apply_policy(kubeapi, out_and_back(after="1s", every="1s"))
    scaled_out(kubeapi, estate, moto)
    # The first scale-back reaches AWS, but its answer never comes back: the operator dies waiting.
    release = proxy.hold("SetDesiredCapacity", forward_first=True)
    _flip(kubeapi, NORMAL, False)
    executing = wait_for(lambda: [a for a in restores(kubeapi) if a["status"].get("phase") == "Executing"],
                         what="restore step Executing")[0]
    assert executing["status"]["intent"]["parameters"]["DesiredCapacity"] == 3  # recorded before the call
    wait_for(lambda: estate.desired(moto) == 3, what="AWS applied 4 → 3")
    first.kill()
    release()
    restarted = run_operator(*args, name="restarted")
    wait_for(lambda: estate.desired(moto) == 2, timeout=40, what="back to 2 after the restart")
    wait_for(lambda: restoring(kubeapi).get("phase") == "Done", what="restore Done")
    one, two = restores(kubeapi)
    assert one["metadata"]["name"] == executing["metadata"]["name"]
    assert "resumed: AWS already shows the change, not repeated" in one["status"]["message"]
    assert (one["status"]["phase"], two["status"]["phase"]) == ("Succeeded", "Succeeded")
    assert two["spec"]["restore"]["target"] == 2 and two["status"]["before"]["desiredCapacity"] == 3
    steady(lambda: proxy.hits("SetDesiredCapacity") == 3 and estate.desired(moto) == 2
           and len(actions(kubeapi)) == 3, restarted.passes, what="each step called once")


def test_restore_follows_the_policys_approval_and_rechecks_the_group_at_the_call(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """The policy requires approval, so the scale-back waits for a human too; the group is changed by hand
    while it waits, and the approved step is refused at the moment AWS would be called."""
    apply_detector(kubeapi)
    apply_policy(kubeapi, out_and_back(after="1s", every="1s"), approval={"required": True, "timeout": "5m"})
    pending = wait_phase(kubeapi, "PendingApproval")[0]
    kubeapi.patch(*RA, "default", pending["metadata"]["name"],
                  {"metadata": {"annotations": {"vigil.dev/approve": "true"}}})
    scaled_out(kubeapi, estate, moto)
    _flip(kubeapi, NORMAL, False)
    waiting = wait_for(lambda: [a for a in restores(kubeapi) if a["status"].get("phase") == "PendingApproval"],
                       what="the scale-back waits for approval")[0]
    assert waiting["spec"]["approvalRequired"] is True and waiting["spec"]["restore"]["target"] == 3
    event(kubeapi, "RemediationAction", waiting["metadata"]["name"], "ApprovalRequested")
    steady(lambda: estate.desired(moto) == 4, operator.passes, seconds=1, what="nothing without a human")
    moto.client("autoscaling").set_desired_capacity(AutoScalingGroupName=estate.group, DesiredCapacity=6)
    kubeapi.patch(*RA, "default", waiting["metadata"]["name"],
                  {"metadata": {"annotations": {"vigil.dev/approve": "true"}}})
    skipped = wait_for(lambda: [a for a in restores(kubeapi) if a["status"].get("phase") == "Skipped"],
                       what="refused at the call")[0]
    assert skipped["metadata"]["name"] == waiting["metadata"]["name"]
    assert skipped["status"]["skipReason"] == "ChangedOutsideVigil"
    wait_for(lambda: restoring(kubeapi).get("reason") == "ChangedOutsideVigil", what="restore Stopped")
    steady(lambda: estate.desired(moto) == 6 and proxy.hits("SetDesiredCapacity") == 1 and len(restores(kubeapi)) == 1,
           operator.passes, what="Vigil does not fight the human")


def test_history_pruning_keeps_what_the_restore_reads_until_it_is_done(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """successfulActionsHistoryLimit 0 prunes every finished action, but not those of the open incident or of a
    running scale-back: the capacity before the incident is read from the scale-out's status."""
    apply_detector(kubeapi)
    apply_policy(kubeapi, out_and_back(after="1s", every="1s"), successfulActionsHistoryLimit=0)
    scaled_out(kubeapi, estate, moto)
    steady(lambda: len(actions(kubeapi)) == 1, operator.passes, seconds=1, what="the scale-out is kept")
    _flip(kubeapi, NORMAL, False)
    wait_for(lambda: restoring(kubeapi).get("phase") == "Done", timeout=40, what="restore Done")
    assert estate.desired(moto) == 2 and proxy.hits("SetDesiredCapacity") == 3
    wait_for(lambda: actions(kubeapi) == [], what="pruned once the scale-back is done")
