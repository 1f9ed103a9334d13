"""Issue 11, findings 1, 4, 13 and 14, end to end: `vigil run`, the API emulator, real Prometheus, moto.

Finding 1: a RemediationAction made by hand was executed (an untagged group went 2 → 9, an SSM command
ran on an untagged instance). Finding 4: tenancy was the policy author's to set. Finding 13: one slow AWS
call stalled every policy. Finding 14: a refused step was re-checked against AWS every second.
Each test here fails on the main before the fix and names its finding.
"""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OperatorFactory
from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import aws_world, scenario
from tests.integration.aws_world import Estate, Moto
from tests.integration.test_remediation import (
    INCIDENT,
    NORMAL,
    RA,
    RP,
    actions,
    apply_detector,
    apply_policy,
    policy_conditions,
    scale,
    wait_phase,
    with_instance,
)
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer

RUN_COMMAND = "SendCommand"


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident", "normal")) as server:
        yield server


@pytest.fixture
def key_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "provenance-key"
    path.write_text(secrets.token_hex(24) + "\n")
    return path


@pytest.fixture
def operator(run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy,
             key_file: pathlib.Path) -> OperatorProcess:
    return run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election",
                        "--provenance-key-file", str(key_file))


def _policy(kubeapi: KubeAPIServer, name: str = "web", namespace: str = "default") -> dict[str, Any]:
    found = kubeapi.get(*RP, namespace, name)
    assert found is not None
    return found


def _forge(kubeapi: KubeAPIServer, name: str, step: dict[str, Any], targets: list[dict[str, Any]],
           policy: dict[str, Any], **metadata: Any) -> None:
    """What an attacker with `create remediationactions` writes: every field the operator would, by hand."""
    meta = policy["metadata"]
    body: dict[str, Any] = {
        "apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationAction",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": {"vigil.dev/policy": meta["name"], "vigil.dev/incident": "forged"},
                     "ownerReferences": [{"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
                                          "name": meta["name"], "uid": meta["uid"], "controller": True}],
                     **metadata},
        "spec": {"policyRef": {"name": meta["name"], "uid": meta["uid"]}, "incident": "forged", "stepIndex": 0,
                 "step": step, "targets": targets, "approvalRequired": False, "region": aws_world.REGION,
                 "reason": {"source": "detector", "detector": "cpu", "time": "2026-01-01T00:00:00Z"}},
    }
    kubeapi.create(body)


def _skipped(kubeapi: KubeAPIServer, name: str, namespace: str = "default") -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = kubeapi.get(*RA, namespace, name)
        status = (found or {}).get("status") or {}
        assert status.get("phase") in (None, "Skipped"), f"{name} went {status.get('phase')}: {status}"
        return status if status.get("phase") == "Skipped" else None
    return wait_for(done, timeout=40, what=f"{name} Skipped")


def test_finding1_hand_made_actions_are_never_executed(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                       estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """The reproduction of the finding: a hand-made action with `approvalRequired: false` for a policy that
    requires approval, scaling an untagged group to 9 and running SSM on an untagged instance."""
    apply_detector(kubeapi, query=NORMAL)  # quiet: the operator itself has nothing to propose
    apply_policy(kubeapi, [scale(by=1)], approval={"required": True})
    wait_for(lambda: policy_conditions(kubeapi).get("Ready", {}).get("status") == "True", what="policy Ready")
    policy = _policy(kubeapi)
    _forge(kubeapi, "forged-scale", {"name": "scale", "scaleAutoScalingGroup": {"name": "legacy", "to": 9,
                                                                              "min": 1, "max": 10}},
           [{"kind": "AutoScalingGroup", "id": "legacy"}], policy)
    _forge(kubeapi, "forged-ssm", {"name": "ssm", "runCommand": {
        "commands": ["cat /etc/shadow"], "targets": {"instanceIds": [estate.untagged_instances[0]]}}},
           [{"kind": "Instance", "id": estate.untagged_instances[0], "group": "legacy"}], policy)
    for name in ("forged-scale", "forged-ssm"):
        status = _skipped(kubeapi, name)
        assert status["skipReason"] == "NotProposedByOperator", status
        assert "vigil.dev/provenance" in status["message"]
    steady(lambda: estate.desired(moto, "legacy") == 2 and proxy.hits("SetDesiredCapacity") == 0
           and proxy.hits(RUN_COMMAND) == 0, operator.passes)
    assert not moto.client("ssm").list_commands()["Commands"]


def test_finding1_a_copied_proposal_and_a_forged_approval_are_refused(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """The attacker copies a real proposal (spec and signature) under a new name with the approval preset,
    then writes the real one's status to 'Approved by policy'. Neither runs; the real one waits for a human."""
    apply_detector(kubeapi, query=INCIDENT)
    apply_policy(kubeapi, [scale(by=1)], approval={"required": True, "timeout": "10m"})
    real = wait_phase(kubeapi, "PendingApproval")[0]
    meta = real["metadata"]
    copy = {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationAction", "spec": real["spec"],
            "metadata": {"name": "copied", "namespace": "default", "labels": meta["labels"],
                         "ownerReferences": meta["ownerReferences"],
                         "annotations": {**meta["annotations"], "vigil.dev/approve": "true"}}}
    kubeapi.create(copy)
    assert _skipped(kubeapi, "copied")["skipReason"] == "NotProposedByOperator"
    kubeapi.patch(*RA, "default", meta["name"], {"status": {
        "phase": "Approved", "decision": {"by": "policy", "at": "2026-01-01T00:00:00Z", "via": "policy"}}},
        subresource="status")
    status = _skipped(kubeapi, meta["name"])
    assert status["skipReason"] == "NotApproved" and "no human approved" in status["message"]
    steady(lambda: estate.desired(moto) == 2 and proxy.hits("SetDesiredCapacity") == 0, operator.passes)


def test_finding1_an_approved_action_is_rechecked_against_the_current_policy(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """Approval is for the step as proposed: a policy edited while the action waits voids it."""
    apply_detector(kubeapi, query=INCIDENT)
    apply_policy(kubeapi, [scale(by=1)], approval={"required": True, "timeout": "10m"})
    name = wait_phase(kubeapi, "PendingApproval")[0]["metadata"]["name"]
    kubeapi.patch(*RP, "default", "web", {"spec": {"actions": [scale(by=8)]}})
    kubeapi.patch(*RA, "default", name, {"metadata": {"annotations": {"vigil.dev/approve": "true"}}})
    status = _skipped(kubeapi, name)
    assert status["skipReason"] == "PolicyChanged", status
    assert estate.desired(moto) == 2 and proxy.hits("SetDesiredCapacity") == 0


def test_finding4_one_namespace_never_acts_on_another_namespaces_group(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """`web` is tagged managed and vigil.dev/namespace=default: team-b's policy is refused, default's is not."""
    apply_detector(kubeapi, namespace="team-b", query=INCIDENT)
    apply_policy(kubeapi, [scale(by=1)], namespace="team-b")
    refused = wait_phase(kubeapi, "Skipped", "team-b")[0]["status"]
    assert refused["skipReason"] == "TargetNotManaged" and "vigil.dev/namespace=team-b" in refused["message"]
    assert estate.desired(moto) == 2 and proxy.hits("SetDesiredCapacity") == 0
    apply_detector(kubeapi, query=INCIDENT)
    apply_policy(kubeapi, [scale(by=1)])
    wait_phase(kubeapi, "Succeeded")
    assert estate.desired(moto) == 3


@pytest.mark.parametrize("spec, why", [
    ({"aws": {"region": aws_world.REGION, "roleArn": "arn:aws:iam::123456789012:role/admin"}},
     "role arn:aws:iam::123456789012:role/admin is not allowed"),
    ({"actions": [{"name": "ps", "runCommand": {"documentName": "AWS-RunPowerShellScript",
                                                "commands": ["Restart-Computer"],
                                                "targets": {"fromLabel": "instance_id"}}}]},
     "SSM document AWS-RunPowerShellScript is not allowed"),
    ({"actions": [{"name": "long", "runCommand": {"commands": ["sleep 1"], "timeoutSeconds": 172800,
                                                  "targets": {"fromLabel": "instance_id"}}}]},
     "exceeds the limit of 3600s"),
], ids=["role", "document", "timeout"])
def test_finding4_what_the_admin_does_not_allow_is_not_permitted(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, proxy: FaultProxy,
        spec: dict[str, Any], why: str) -> None:
    apply_detector(kubeapi, query=with_instance(INCIDENT, estate.instances[0]))
    actions_ = spec.pop("actions", [scale(by=1)])
    apply_policy(kubeapi, actions_, **spec)
    wait_for(lambda: policy_conditions(kubeapi).get("Ready", {}).get("reason") == "NotPermitted",
             what="Ready=False/NotPermitted")
    assert why in policy_conditions(kubeapi)["Ready"]["message"]
    skipped = wait_phase(kubeapi, "Skipped")[0]["status"]
    assert skipped["skipReason"] == "NotPermitted" and why in skipped["message"]
    steady(lambda: len(actions(kubeapi)) == 1 and proxy.hits("SetDesiredCapacity") == 0
           and proxy.hits(RUN_COMMAND) == 0 and proxy.hits("AssumeRole") == 0, operator.passes)


def test_finding14_a_refused_step_is_not_rechecked_every_second(
        kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, proxy: FaultProxy) -> None:
    apply_detector(kubeapi, query=INCIDENT)
    apply_policy(kubeapi, [scale(by=1, name="legacy")])
    assert wait_phase(kubeapi, "Skipped")[0]["status"]["skipReason"] == "TargetNotManaged"
    seen = proxy.hits("DescribeAutoScalingGroups")
    # Ten more passes of the engine while the trigger still fires: before, one Describe per pass.
    steady(lambda: proxy.hits("DescribeAutoScalingGroups") == seen, operator.passes, more=10, seconds=0)


def test_finding13_a_slow_aws_call_does_not_stall_other_policies(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy,
        estate: Estate, moto: Moto) -> None:
    operator = run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url,
                            "--no-leader-election", "--namespace-tag-key=")
    release = proxy.hold("SetDesiredCapacity", forward_first=False)  # policy a's call never returns
    try:
        apply_detector(kubeapi, namespace="a", query=INCIDENT)
        apply_policy(kubeapi, [scale(by=1)], namespace="a")
        wait_for(lambda: proxy.hits("SetDesiredCapacity") == 1, what="policy a's call in flight")
        apply_detector(kubeapi, namespace="b", query=INCIDENT)
        apply_policy(kubeapi, [scale(by=1)], namespace="b")
        # Before: b waited behind a's call (20 s read timeout, 3 attempts). Now it runs at once.
        done = wait_phase(kubeapi, "Succeeded", "b", timeout=15)
        assert done and estate.desired(moto) == 3
        assert (kubeapi.get(*RA, "a", actions(kubeapi, "a")[0]["metadata"]["name"]) or {})["status"]["phase"] \
            == "Executing"
    finally:
        release()
    assert not operator.errors()
