"""Remediation end to end: real Prometheus, the API emulator, moto (through the fault proxy), ``vigil run``.

Each test builds a small AWS estate in moto, applies an AnomalyDetector over a
backfilled NAB incident and a RemediationPolicy, and checks the audit trail
(RemediationActions, Events, metrics) and the AWS state moto ends up in.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import OperatorFactory, conditions_of, detector
from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import aws_world, scenario
from tests.integration.aws_world import Estate, Moto
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer, Series

RA = ("vigil.dev/v1alpha1", "remediationactions")
RP = ("vigil.dev/v1alpha1", "remediationpolicies")
AD = ("vigil.dev/v1alpha1", "anomalydetectors")


# --- peers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    incident, normal = scenario.cpu_history("incident", "normal")
    # A series that stopped reporting an hour ago: it is in the model window but has no value now.
    stopped = incident.timestamps[incident.timestamps <= time.time() - 3600]
    gone = Series("nab_cpu", {"scenario": "stopped"}, stopped, np.asarray(incident.values[: stopped.size]))
    with PrometheusServer(history=[incident, normal, gone]) as server:
        yield server


@pytest.fixture
def operator(run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy) -> OperatorProcess:
    # 127.0.0.1:9 (discard, nothing listens) is allowed so that a detector can name an unreachable Prometheus.
    return run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election",
                        "--prometheus-allowed-urls", "http://127.0.0.1:9")


# --- objects ----------------------------------------------------------------------------------------

INCIDENT = 'nab_cpu{scenario="incident"}'
NORMAL = 'nab_cpu{scenario="normal"}'


def with_instance(query: str, instance: str) -> str:
    """Give the series an ``instance_id`` label with PromQL, as a relabelled exporter would."""
    return f'label_replace({query}, "instance_id", "{instance}", "", "")'


def apply_detector(kubeapi: KubeAPIServer, namespace: str = "default", name: str = "cpu",
                   query: str = INCIDENT, **spec: Any) -> None:
    body = detector(name, query, namespace, interval="1s", step="5m", **spec)
    body["metadata"]["labels"] = {"app": "web"}  # type: ignore[index]
    kubeapi.create(body)


def apply_policy(kubeapi: KubeAPIServer, actions: list[dict[str, Any]], namespace: str = "default",
                 name: str = "web", **spec: Any) -> None:
    body = {
        "apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"detectorSelector": {"matchLabels": {"app": "web"}}, "actions": actions,
                 "aws": {"region": aws_world.REGION}, "cooldown": "0s",
                 # Tests flip the detector on purpose: end incidents at the first quiet evaluation.
                 "trigger": {"keepFiringFor": "0s"}, **spec},
    }
    kubeapi.create(body)


def scale(by: int | None = None, to: int | None = None, *, name: str = "web", low: int = 1, high: int = 10,
          after: str = "0s") -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "min": low, "max": high}
    if by is not None:
        step["by"] = by
    if to is not None:
        step["to"] = to
    return {"name": f"scale-{name}", "after": after, "scaleAutoScalingGroup": step}


def actions(kubeapi: KubeAPIServer, namespace: str = "default") -> list[dict[str, Any]]:
    return sorted(kubeapi.list(*RA, namespace), key=lambda a: a["metadata"]["creationTimestamp"])


def phases(kubeapi: KubeAPIServer, namespace: str = "default") -> list[str]:
    return [(a.get("status") or {}).get("phase", "") for a in actions(kubeapi, namespace)]


def wait_phase(kubeapi: KubeAPIServer, phase: str, namespace: str = "default", count: int = 1,
               timeout: float = 40) -> list[dict[str, Any]]:
    return wait_for(lambda: [a for a in actions(kubeapi, namespace) if (a.get("status") or {}).get("phase") == phase]
                    if phases(kubeapi, namespace).count(phase) >= count else None,
                    timeout=timeout, what=f"{count} action(s) {phase} in {namespace}")


def policy_conditions(kubeapi: KubeAPIServer, namespace: str = "default", name: str = "web") -> dict[str, Any]:
    return conditions_of(kubeapi.get(*RP, namespace, name))


def reasons(kubeapi: KubeAPIServer, kind: str, name: str, namespace: str = "default") -> list[str]:
    return [e["reason"] for e in kubeapi.events_for(kind, namespace, name)]


def event(kubeapi: KubeAPIServer, kind: str, name: str, reason: str, namespace: str = "default") -> None:
    """Wait for an Event: they are posted just after the status write that they announce."""
    wait_for(lambda: reason in reasons(kubeapi, kind, name, namespace), what=f"{reason} event on {kind}/{name}")


def stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- the semantics ----------------------------------------------------------------------------------


def test_scale_out_within_bounds(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                 moto: Moto, proxy: FaultProxy) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=5, high=4)])
    done = wait_phase(kubeapi, "Succeeded")[0]
    assert estate.desired(moto) == 4  # 2 + 5, held at max 4
    status = done["status"]
    assert status["before"]["desiredCapacity"] == 2 and status["after"]["desiredCapacity"] == 4
    assert status["intent"]["operation"] == "SetDesiredCapacity"
    assert status["intent"]["parameters"]["DesiredCapacity"] == 4
    assert status["awsRequestIds"] and "desiredCapacity 2 → 4" in status["message"]
    spec = done["spec"]
    assert spec["reason"]["detector"] == "cpu" and spec["reason"]["score"] >= spec["reason"]["threshold"]
    # Issue 15: the detector's evidence for the series travels with the decision (and its notifications).
    assert spec["reason"]["why"] and all(isinstance(w, str) and 0 < len(w) <= 120 for w in spec["reason"]["why"])
    assert spec["targets"] == [{"kind": "AutoScalingGroup", "id": "web"}]
    owner = done["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "RemediationPolicy" and owner["controller"] is True
    assert proxy.hits("SetDesiredCapacity") == 1
    name = done["metadata"]["name"]
    for kind, who in (("RemediationAction", name), ("RemediationPolicy", "web")):
        for reason in ("ActionProposed", "ActionExecuted"):
            event(kubeapi, kind, who, reason)
    wait_for(lambda: operator.value("vigil_actions_total", policy="web", phase="Succeeded") == 1.0,
             what="actions metric")
    policy = kubeapi.get(*RP, "default", "web")
    assert policy is not None and policy["status"]["lastAction"]["name"] == name
    assert policy["status"]["matchedDetectors"] == ["cpu"]
    # The detector is still anomalous, but the ladder has one step: nothing more happens.
    steady(lambda: proxy.hits("SetDesiredCapacity") == 1 and len(actions(kubeapi)) == 1, operator.passes)
    assert not operator.errors()


def test_escalation_to_the_next_step(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                     moto: Moto) -> None:
    victim = estate.instances[0]
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, [
        scale(by=1),
        {"name": "replace", "after": "2s", "replaceInstance": {"targets": {"fromLabel": "instance_id"}}},
    ])
    done = wait_phase(kubeapi, "Succeeded", count=2)
    first, second = sorted(done, key=lambda a: a["spec"]["stepIndex"])
    assert second["spec"]["stepIndex"] == 1 and second["spec"]["targets"][0]["id"] == victim
    assert second["spec"]["targets"][0]["group"] == "web"
    # Step 2 was decided at least 'after' (2s) past step 1's completion (creationTimestamp has whole seconds).
    gap = stamp(second["metadata"]["creationTimestamp"]) - stamp(first["status"]["completedAt"])
    assert gap >= 1
    health = moto.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[victim])
    assert health["AutoScalingInstances"][0]["HealthStatus"].lower() == "unhealthy"


def test_steps_run_when_due_not_at_the_resync(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                              prometheus: PrometheusServer, proxy: FaultProxy, estate: Estate,
                                              moto: Moto) -> None:
    """With a 60 s resync the engine still acts at once on the detector's verdict (it wakes on the flip) and
    runs the second step when its ``after`` is due (the decider's requeue_after), not at the next resync."""
    run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election",
                 "--remediation-resync", "60")
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1), scale(by=1, after="3s")])
    first, second = sorted(wait_phase(kubeapi, "Succeeded", count=2, timeout=40),
                           key=lambda a: a["spec"]["stepIndex"])
    gap = stamp(second["metadata"]["creationTimestamp"]) - stamp(first["status"]["completedAt"])
    assert 2 <= gap < 10, f"step 2 came {gap:.1f}s after step 1 (after: 3s, resync 60s)"
    assert estate.desired(moto) == 4


def test_approval_granted_rejected_and_expired(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                               prometheus: PrometheusServer, proxy: FaultProxy, estate: Estate,
                                               moto: Moto, kubeconfig: pathlib.Path) -> None:
    # Three namespaces' policies on one group: a single-team cluster, where the admin turns the namespace tag off.
    operator = run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url,
                            "--no-leader-election", "--namespace-tag-key=")
    for namespace, timeout in (("granted", "5m"), ("rejected", "5m"), ("expired", "3s")):
        apply_detector(kubeapi, namespace=namespace)
        apply_policy(kubeapi, [scale(by=1)], namespace=namespace, approval={"required": True, "timeout": timeout})
    for namespace in ("granted", "rejected", "expired"):
        pending = wait_phase(kubeapi, "PendingApproval", namespace, timeout=40)[0] if namespace != "expired" else None
        if pending is not None:
            name = pending["metadata"]["name"]
            wait_for(lambda name=name, namespace=namespace: "ApprovalRequested" in reasons(
                kubeapi, "RemediationAction", name, namespace), what="ApprovalRequested event")
            wait_for(lambda namespace=namespace: policy_conditions(kubeapi, namespace)["ActionAllowed"]["reason"]
                     == "AwaitingApproval", what="AwaitingApproval")
    assert estate.desired(moto) == 2  # nothing happens without a human

    granted = actions(kubeapi, "granted")[0]["metadata"]["name"]
    cli = subprocess.run([sys.executable, "-m", "vigil", "approve", granted, "-n", "granted", "--kubeconfig",
                          str(kubeconfig), "--by", "alice"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    done = wait_phase(kubeapi, "Succeeded", "granted")[0]
    decision = done["status"]["decision"]
    assert {k: decision[k] for k in ("by", "via")} == {"by": "alice", "via": "cli"}
    # The real API server keeps managedFields: vigil approve writes as its own field manager.
    assert decision.get("fieldManager") in (None, "vigil-approve")
    assert estate.desired(moto) == 3

    rejected = actions(kubeapi, "rejected")[0]["metadata"]["name"]
    kubeapi.patch(*RA, "rejected", rejected, {"metadata": {"annotations": {"vigil.dev/reject": "true"}}})
    gone = wait_phase(kubeapi, "Rejected", "rejected")[0]
    event(kubeapi, "RemediationAction", rejected, "ActionRejected", "rejected")
    assert gone["status"]["decision"]["via"] == "annotation"

    expired = wait_phase(kubeapi, "Expired", "expired")[0]
    assert "not approved within" in expired["status"]["message"]
    event(kubeapi, "RemediationAction", expired["metadata"]["name"], "ActionExpired", "expired")
    assert estate.desired(moto) == 3  # only the approved one acted
    # A late approval of an expired action changes nothing.
    kubeapi.patch(*RA, "expired", expired["metadata"]["name"],
                  {"metadata": {"annotations": {"vigil.dev/approve": "true"}}})
    steady(lambda: estate.desired(moto) == 3 and phases(kubeapi, "expired") == ["Expired"], operator.passes)


def _flip(kubeapi: KubeAPIServer, query: str, anomalous: bool, policy: str = "web") -> None:
    """Point the detector at the incident or the normal series; when going quiet, wait until the
    policy has seen it and closed its incident, so the next anomaly is a new incident."""
    kubeapi.patch(*AD, "default", "cpu", {"spec": {"query": query}})
    wait_for(lambda: (kubeapi.get(*AD, "default", "cpu") or {}).get("status", {}).get("anomalous") is anomalous,
             timeout=30, what=f"detector anomalous={anomalous}")
    if not anomalous:
        wait_for(lambda: "incident" not in ((kubeapi.get(*RP, "default", policy) or {}).get("status") or {}),
                 timeout=30, what="incident closed")


def test_cooldown_and_rate_limit(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                 moto: Moto) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1)], cooldown="1h", rateLimit={"maxActions": 1, "window": "1h"},
                 successfulActionsHistoryLimit=5)
    wait_phase(kubeapi, "Succeeded")
    assert estate.desired(moto) == 3
    # The incident ends, then a new one starts within the cooldown.
    _flip(kubeapi, NORMAL, False)
    _flip(kubeapi, INCIDENT, True)
    skipped = wait_phase(kubeapi, "Skipped")[0]
    assert skipped["status"]["skipReason"] == "CooldownActive"
    conds = policy_conditions(kubeapi)
    assert conds["ActionAllowed"]["status"] == "False" and conds["ActionAllowed"]["reason"] == "CooldownActive"
    assert (kubeapi.get(*RP, "default", "web") or {})["status"]["cooldownUntil"]
    event(kubeapi, "RemediationAction", skipped["metadata"]["name"], "ActionSkipped")
    # One skip record per incident and reason, not one per tick.
    steady(lambda: phases(kubeapi).count("Skipped") == 1, operator.passes)
    assert estate.desired(moto) == 3

    # Without the cooldown, the rate limit (1 per hour) is what holds the next incident back.
    kubeapi.patch(*RP, "default", "web", {"spec": {"cooldown": "0s"}})
    wait_for(lambda: policy_conditions(kubeapi)["ActionAllowed"]["reason"] == "RateLimited", what="RateLimited")
    limited = wait_for(lambda: [a for a in actions(kubeapi)
                                if (a.get("status") or {}).get("skipReason") == "RateLimited"], what="skip record")
    assert limited and estate.desired(moto) == 3
    assert (kubeapi.get(*RP, "default", "web") or {})["status"]["actionsInWindow"] == 1


def test_a_flicker_continues_the_incident(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                         moto: Moto) -> None:
    """A quiet spell shorter than keepFiringFor neither ends the incident nor restarts the ladder."""
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1)], trigger={"keepFiringFor": "1h"})
    wait_phase(kubeapi, "Succeeded")
    incident = (kubeapi.get(*RP, "default", "web") or {})["status"]["incident"]
    kubeapi.patch(*AD, "default", "cpu", {"spec": {"query": NORMAL}})
    wait_for(lambda: ((kubeapi.get(*RP, "default", "web") or {}).get("status") or {}).get("quietSince"),
             what="quiet spell noticed")
    _flip(kubeapi, INCIDENT, True)
    steady(lambda: len(actions(kubeapi)) == 1
           and (kubeapi.get(*RP, "default", "web") or {})["status"]["incident"] == incident, operator.passes)
    assert "quietSince" not in (kubeapi.get(*RP, "default", "web") or {})["status"]  # firing again
    assert estate.desired(moto) == 3


def test_blast_radius_counts_in_flight_actions(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                               moto: Moto) -> None:
    first, second = estate.instances
    # Policy "hold" reboots the first instance but waits for approval: that action is in flight.
    apply_detector(kubeapi)
    apply_policy(kubeapi, [{"name": "reboot", "rebootInstances": {"targets": {"instanceIds": [first]}}}],
                 name="hold", approval={"required": True})
    wait_phase(kubeapi, "PendingApproval")
    # Policy "web" wants the second instance of the same 2-instance group, at most 50% at once.
    apply_policy(kubeapi, [{"name": "reboot", "rebootInstances": {"targets": {"instanceIds": [second]}}}],
                 name="web", blastRadius={"maxPercent": 50})
    skipped = wait_phase(kubeapi, "Skipped")[0]
    assert skipped["status"]["skipReason"] == "BlastRadiusExceeded"
    assert "1 of 2 in group web in flight, limit 1" in skipped["status"]["message"]
    wait_for(lambda: policy_conditions(kubeapi)["ActionAllowed"]["reason"] == "BlastRadiusExceeded",
             what="ActionAllowed=False/BlastRadiusExceeded")
    # Once the in-flight action ends (rejected), the held-back step runs, in the same incident.
    hold = next(a for a in actions(kubeapi) if a["spec"]["policyRef"]["name"] == "hold")
    kubeapi.patch(*RA, "default", hold["metadata"]["name"], {"metadata": {"annotations": {"vigil.dev/reject": "true"}}})
    done = wait_for(lambda: [a for a in actions(kubeapi) if a["spec"]["policyRef"]["name"] == "web"
                             and (a.get("status") or {}).get("phase") == "Succeeded"], what="reboot done")
    assert done[0]["spec"]["targets"][0]["id"] == second
    wait_for(lambda: policy_conditions(kubeapi)["ActionAllowed"]["reason"] != "BlastRadiusExceeded",
             what="blast radius no longer reported")


def test_dry_run_changes_nothing(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate, moto: Moto,
                                 proxy: FaultProxy) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=2)], dryRun=True)
    done = wait_phase(kubeapi, "DryRun")[0]
    assert done["spec"]["dryRun"] is True
    assert "would call SetDesiredCapacity (desiredCapacity 2 → 4)" in done["status"]["message"]
    assert done["status"]["after"] == {"desiredCapacity": 4}
    assert estate.desired(moto) == 2
    assert proxy.hits("SetDesiredCapacity") == 0
    # A dry run has its own Event reason (issue 11, finding 16): nothing was executed.
    event(kubeapi, "RemediationAction", done["metadata"]["name"], "ActionDryRun")
    assert "ActionExecuted" not in reasons(kubeapi, "RemediationAction", done["metadata"]["name"])


def test_dry_run_uses_the_ec2_permission_check(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                               proxy: FaultProxy) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, [{"name": "reboot", "rebootInstances": {"targets": {"instanceIds": estate.instances[:1]}}}],
                 dryRun=True)
    done = wait_phase(kubeapi, "DryRun")[0]
    assert "permission check: allowed" in done["status"]["message"]
    assert proxy.hits("RebootInstances") == 1  # the DryRun=True call, which changes nothing


def test_untagged_target_is_refused(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                    moto: Moto, proxy: FaultProxy) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1, name="legacy")])
    skipped = wait_phase(kubeapi, "Skipped")[0]
    assert skipped["status"]["skipReason"] == "TargetNotManaged"
    assert "lacks tag vigil.dev/managed=true" in skipped["status"]["message"]
    assert estate.desired(moto, "legacy") == 2 and proxy.hits("SetDesiredCapacity") == 0


def test_throttled_aws_is_retried(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                  prometheus: PrometheusServer, proxy: FaultProxy, estate: Estate,
                                  moto: Moto) -> None:
    run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election",
                 "--aws-max-attempts", "2")
    proxy.add_fault("SetDesiredCapacity", "Throttling", "Rate exceeded", http_status=400, times=3)
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1)])
    retrying = wait_for(lambda: [a for a in actions(kubeapi)
                                 if (a.get("status") or {}).get("errorClass") == "Recoverable"], what="retrying")
    assert "Throttling" in retrying[0]["status"]["message"]
    # The policy's Degraded condition is written just after the action's status: wait for it, do not race it.
    wait_for(lambda: policy_conditions(kubeapi)["Degraded"]["reason"] == "AWSRetrying", what="Degraded AWSRetrying")
    done = wait_phase(kubeapi, "Succeeded", timeout=60)[0]
    assert done["status"]["attempts"] == 2
    assert proxy.hits("SetDesiredCapacity") == 4  # 2 boto3 attempts, the engine's retry: 1 more throttled, 1 ok
    assert estate.desired(moto) == 3
    event(kubeapi, "RemediationAction", done["metadata"]["name"], "ActionRetrying")


def test_access_denied_is_terminal(kubeapi: KubeAPIServer, operator: OperatorProcess, proxy: FaultProxy,
                                   estate: Estate, moto: Moto) -> None:
    proxy.add_fault("SetDesiredCapacity", "AccessDenied", "User is not authorized", http_status=403, times=100)
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1)])
    failed = wait_phase(kubeapi, "Failed")[0]
    assert failed["status"]["errorClass"] == "Terminal" and failed["status"]["errorCode"] == "AccessDenied"
    assert "not retried" in failed["status"]["message"]
    event(kubeapi, "RemediationAction", failed["metadata"]["name"], "ActionFailed")
    steady(lambda: proxy.hits("SetDesiredCapacity") == 1, operator.passes, seconds=4)  # no retry storm
    assert estate.desired(moto) == 2
    assert operator.value("vigil_aws_errors_total", operation="SetDesiredCapacity", error_class="Terminal") == 1


def test_missing_or_stale_data_never_acts(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                          moto: Moto, proxy: FaultProxy) -> None:
    # 1. Only missing data (the series stopped an hour ago), even with missingData: alert.
    apply_detector(kubeapi, namespace="missing", query='nab_cpu{scenario="stopped"}', missingData="alert")
    apply_policy(kubeapi, [scale(by=1)], namespace="missing")
    wait_for(lambda: (kubeapi.get(*AD, "missing", "cpu") or {}).get("status", {}).get("anomalous") is True,
             what="anomalous through missing data")
    # 2. A detector whose Prometheus is unreachable: Degraded, hence stale.
    apply_detector(kubeapi, namespace="stale", prometheus={"url": "http://127.0.0.1:9"})
    apply_policy(kubeapi, [scale(by=1)], namespace="stale")
    wait_for(lambda: policy_conditions(kubeapi, "stale").get("ActionAllowed", {}).get("reason") == "DetectorStale",
             what="DetectorStale")
    # 3. A scale-in while one series of the detector has no data: refused (the group is this namespace's).
    moto.client("autoscaling").create_or_update_tags(Tags=[{
        "ResourceId": "web", "ResourceType": "auto-scaling-group", "Key": "vigil.dev/namespace", "Value": "scalein",
        "PropagateAtLaunch": True}])
    apply_detector(kubeapi, namespace="scalein", query='nab_cpu{scenario=~"incident|stopped"}')
    apply_policy(kubeapi, [scale(by=-1)], namespace="scalein")
    refused = wait_phase(kubeapi, "Skipped", "scalein")[0]
    assert refused["status"]["skipReason"] == "MissingData"
    assert "scale-in refused" in refused["status"]["message"]
    steady(lambda: actions(kubeapi, "missing") == [] and actions(kubeapi, "stale") == [], operator.passes, seconds=3)
    assert proxy.hits("SetDesiredCapacity") == 0 and estate.desired(moto) == 2


def test_a_start_does_not_act_on_a_stored_verdict_before_its_own_evaluation(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, proxy: FaultProxy, estate: Estate,
        moto: Moto) -> None:
    """Issue 16: after a start (an upgrade, a takeover), a detector's status is an older process' verdict.
    Fresh and anomalous as it looks, the policy waits for this process' own first evaluation, with the
    whole window loaded: here it never comes, because Prometheus accepts the query and does not answer."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), never answers
        port = silent.getsockname()[1]
        apply_detector(kubeapi, namespace="loading")
        at = datetime.datetime.now(datetime.UTC)
        now, since = (t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (at, at - datetime.timedelta(minutes=30)))
        kubeapi.patch(*AD, "loading", "cpu", {"status": {
            "observedGeneration": 1, "anomalous": True, "anomalousSince": since, "lastEvaluationTime": now,
            "score": 0.99, "threshold": 0.5, "seriesCount": 1, "anomalousSeries": 1, "missingSeries": 0,
            "series": [{"labels": {"scenario": "incident"}, "score": 0.99, "anomalous": True,
                        "state": "Anomalous", "since": since}],
            "conditions": [
                {"type": t, "status": v, "reason": r, "message": "", "lastTransitionTime": now}
                for t, v, r in (("Ready", "True", "Evaluating"), ("Degraded", "False", "AsExpected"),
                                ("Anomalous", "True", "AnomalyDetected"))]}}, subresource="status")
        # Ten minutes of staleness allowed: the stored verdict is fresh enough to act on, for all it says.
        apply_policy(kubeapi, [scale(by=1)], namespace="loading",
                     trigger={"keepFiringFor": "0s", "maxStaleness": "10m"})
        operator = run_operator("--prometheus-url", f"http://127.0.0.1:{port}", "--prometheus-timeout", "120",
                                "--aws-endpoint-url", proxy.url, "--no-leader-election")
        allowed = wait_for(
            lambda: c if (c := policy_conditions(kubeapi, "loading").get("ActionAllowed", {})).get("reason")
            == "DetectorStale" else None, what="DetectorStale while the detector's history loads")
        assert "has not been evaluated since this operator started" in allowed["message"]
        steady(lambda: actions(kubeapi, "loading") == [], operator.passes, seconds=3)
        assert proxy.hits("SetDesiredCapacity") == 0 and estate.desired(moto) == 2


def test_restart_mid_action_neither_repeats_nor_loses(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                      prometheus: PrometheusServer, proxy: FaultProxy,
                                                      estate: Estate, moto: Moto) -> None:
    args = ("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election")
    first = run_operator(*args)
    # AWS applies the change, but its answer never reaches the operator: it dies waiting.
    release = proxy.hold("SetDesiredCapacity", forward_first=True)
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=2)])
    executing = wait_phase(kubeapi, "Executing")[0]
    assert executing["status"]["intent"]["parameters"]["DesiredCapacity"] == 4  # written before the call
    wait_for(lambda: estate.desired(moto) == 4, what="AWS applied the change")
    first.kill()
    release()
    run_operator(*args, name="restarted")
    done = wait_phase(kubeapi, "Succeeded")[0]
    assert "resumed: AWS already shows the change, not repeated" in done["status"]["message"]
    assert proxy.hits("SetDesiredCapacity") == 1 and estate.desired(moto) == 4
    assert len(actions(kubeapi)) == 1


def test_restart_before_the_call_reaches_aws_issues_it_once(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                           prometheus: PrometheusServer, proxy: FaultProxy,
                                                           estate: Estate, moto: Moto) -> None:
    args = ("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--no-leader-election")
    first = run_operator(*args)
    release = proxy.hold("SetDesiredCapacity", forward_first=False)  # the request never gets to moto
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=2)])
    wait_phase(kubeapi, "Executing")
    wait_for(lambda: proxy.hits("SetDesiredCapacity") == 1, what="the call in flight")
    first.kill()
    release()
    assert estate.desired(moto) == 2  # lost in flight
    restarted = run_operator(*args, name="restarted")
    done = wait_phase(kubeapi, "Succeeded")[0]
    assert done["status"]["attempts"] == 2 and estate.desired(moto) == 4
    expected = (4, [done["metadata"]["name"]], 2)

    def unchanged() -> bool:
        got = (estate.desired(moto), [a["metadata"]["name"] for a in actions(kubeapi)],
               proxy.hits("SetDesiredCapacity"))
        assert got == expected, got
        return True

    steady(unchanged, restarted.passes)


def test_two_replicas_never_both_act(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                     prometheus: PrometheusServer, proxy: FaultProxy, estate: Estate,
                                     moto: Moto) -> None:
    args = ("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url, "--leader-election",
            "--leader-election-namespace", "default", "--lease-duration", "3")
    one = run_operator(*args, "--identity", "one", name="one")
    two = run_operator(*args, "--identity", "two", name="two")
    wait_for(lambda: sorted([one.value("vigil_leader") or 0, two.value("vigil_leader") or 0]) == [0, 1],
             what="exactly one leader")
    leader, standby = (one, two) if one.value("vigil_leader") == 1 else (two, one)
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1)])
    wait_phase(kubeapi, "Succeeded")
    assert proxy.hits("SetDesiredCapacity") == 1 and estate.desired(moto) == 3
    assert (standby.value("vigil_evaluations_total", result="evaluated") or 0) == 0  # the standby only watches
    lease = kubeapi.get("coordination.k8s.io/v1", "leases", "default", "vigil-leader")
    assert lease is not None and lease["spec"]["holderIdentity"] == leader.name.split("-")[0]
    leader.kill()  # no release: the standby must wait for expiry, then take over
    wait_for(lambda: standby.value("vigil_leader") == 1, timeout=20, what="failover")
    wait_for(lambda: (standby.value("vigil_evaluations_total", result="evaluated") or 0) > 0, what="standby works")
    steady(lambda: proxy.hits("SetDesiredCapacity") == 1 and len(actions(kubeapi)) == 1, standby.passes)


def test_alertmanager_alert_triggers_a_policy(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                              prometheus: PrometheusServer, proxy: FaultProxy, estate: Estate,
                                              moto: Moto, tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    operator = run_operator("--prometheus-url", prometheus.url, "--aws-endpoint-url", proxy.url,
                            "--no-leader-election", "--alertmanager-token-file", str(token))
    kubeapi.create({"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
                    "metadata": {"name": "latency", "namespace": "default"},
                    "spec": {"alertSelector": {"matchLabels": {"alertname": "HighLatency"}},
                             "actions": [scale(by=1)], "aws": {"region": aws_world.REGION}, "cooldown": "0s"}})
    alert = {"version": "4", "status": "firing", "receiver": "vigil", "groupKey": "{}:{}", "truncatedAlerts": 0,
             "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
             "alerts": [{"status": "firing", "labels": {"alertname": "HighLatency", "service": "web",
                                                        "namespace": "default"},
                         "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                         "generatorURL": "http://prom", "fingerprint": "abc123"}]}

    def post(secret: str) -> int:
        request = urllib.request.Request(f"{operator.url}/alertmanager", data=json.dumps(alert).encode(),
                                         headers={"Authorization": f"Bearer {secret}",
                                                  "Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert post("wrong") == 401
    assert actions(kubeapi) == []
    assert post("s3cret") == 200
    done = wait_phase(kubeapi, "Succeeded")[0]
    assert done["spec"]["reason"]["source"] == "alertmanager"
    assert done["spec"]["reason"]["alert"] == {"alertname": "HighLatency", "service": "web", "namespace": "default"}
    assert estate.desired(moto) == 3
    assert operator.value("vigil_alertmanager_alerts_received_total") == 1.0


def test_history_limit_prunes_old_actions(kubeapi: KubeAPIServer, operator: OperatorProcess, estate: Estate,
                                          moto: Moto) -> None:
    apply_detector(kubeapi)
    apply_policy(kubeapi, [scale(by=1)], successfulActionsHistoryLimit=1)
    wait_phase(kubeapi, "Succeeded")
    first = actions(kubeapi)[0]["metadata"]["name"]
    _flip(kubeapi, NORMAL, False)
    _flip(kubeapi, INCIDENT, True)
    wait_for(lambda: [a["metadata"]["name"] for a in actions(kubeapi)] not in ([], [first])
             and len(actions(kubeapi)) == 1 and phases(kubeapi) == ["Succeeded"],
             what=f"pruned to one (first {first}); have {[a['metadata']['name'] for a in actions(kubeapi)]}")
    assert estate.desired(moto) == 4


# --- load balancing: examples/remediationpolicy-load-balancer.yaml ---------------------------------------

LB_EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples/remediationpolicy-load-balancer.yaml"


def ladder(target_group_arn: str, replace_after: str) -> list[dict[str, Any]]:
    """The example's steps, with this estate's target group and test-sized delays."""
    steps: list[dict[str, Any]] = yaml.safe_load(LB_EXAMPLE.read_text())["spec"]["actions"]
    drain, replace = steps
    assert "deregisterTarget" in drain and replace["replaceInstance"]["mode"] == "Terminate"
    drain["deregisterTarget"].update(targetGroupArn=target_group_arn, reregisterAfter="1s")
    replace["after"] = replace_after
    return steps


def targets(moto: Moto, arn: str) -> dict[str, str]:
    health = moto.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {t["Target"]["Id"]: t["TargetHealth"]["State"] for t in health}


def test_drain_then_register_again_when_healthy(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    victim, other = estate.instances
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, ladder(estate.target_group_arn, replace_after="1h"))
    drained = wait_phase(kubeapi, "Succeeded")[0]
    assert drained["spec"]["targets"][0]["id"] == victim
    assert victim not in targets(moto, estate.target_group_arn) and other in targets(moto, estate.target_group_arn)
    assert proxy.hits("RegisterTargets") == 0
    # Draining cured it: the incident ends before the replacement is due, and the instance goes back.
    _flip(kubeapi, with_instance(NORMAL, victim), False)
    wait_for(lambda: targets(moto, estate.target_group_arn).get(victim) == "healthy", what="registered again")
    event(kubeapi, "RemediationAction", drained["metadata"]["name"], "TargetsReregistered")
    assert proxy.hits("RegisterTargets") == 1 and proxy.hits("TerminateInstanceInAutoScalingGroup") == 0


def test_registering_again_is_rechecked_against_the_tags(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                         estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    """RegisterTargets changes AWS too (issue 11, finding 1): the target group lost the namespace tag after the
    drain, so the drained instance is not put back by this namespace's policy."""
    victim, _ = estate.instances
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, ladder(estate.target_group_arn, replace_after="1h"))
    drained = wait_phase(kubeapi, "Succeeded")[0]
    moto.client("elbv2").remove_tags(ResourceArns=[estate.target_group_arn], TagKeys=["vigil.dev/namespace"])
    _flip(kubeapi, with_instance(NORMAL, victim), False)

    def refused() -> str | None:
        after = ((kubeapi.get(*RA, "default", drained["metadata"]["name"]) or {}).get("status") or {}).get("after")
        return (after or {}).get("reregisterRefused")
    assert "lacks tag vigil.dev/namespace=default" in wait_for(refused, what="re-registration refused")
    event(kubeapi, "RemediationAction", drained["metadata"]["name"], "ReregisterFailed")
    assert proxy.hits("RegisterTargets") == 0 and victim not in targets(moto, estate.target_group_arn)


def test_drain_replace_and_the_replacement_takes_its_place(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                         estate: Estate, moto: Moto, proxy: FaultProxy) -> None:
    victim, other = estate.instances
    # As the example says: the group is attached to the target group, so it registers its new instances.
    moto.client("autoscaling").attach_load_balancer_target_groups(
        AutoScalingGroupName=estate.group, TargetGroupARNs=[estate.target_group_arn])
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, ladder(estate.target_group_arn, replace_after="1s"))
    drained, replaced = sorted(wait_phase(kubeapi, "Succeeded", count=2), key=lambda a: a["spec"]["stepIndex"])
    assert replaced["spec"]["step"]["replaceInstance"]["mode"] == "Terminate"
    state = moto.client("ec2").describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated")
    group = moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[estate.group])
    members = {i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]}
    (replacement,) = members - {victim, other}
    registered = targets(moto, estate.target_group_arn)
    assert victim not in registered and replacement in registered, registered
    # Healthy again: the drained instance is gone, so it is left out, not registered.
    _flip(kubeapi, with_instance(NORMAL, victim), False)
    wait_for(lambda: ((kubeapi.get(*RA, "default", drained["metadata"]["name"])
                       or {}).get("status") or {}).get("after", {}).get("reregisteredAt"), what="re-registration done")
    after = (kubeapi.get(*RA, "default", drained["metadata"]["name"])
             or {})["status"]["after"]
    assert after["notReregistered"] == [victim]
    assert proxy.hits("RegisterTargets") == 0 and victim not in targets(moto, estate.target_group_arn)
