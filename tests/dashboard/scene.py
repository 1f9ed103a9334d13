"""One incident on a real kube-apiserver, as the operator would have left it, for the dashboard's tests
and for scripts/dashboard-screenshots.py (the same setup, so the screenshots show what is tested).

What is real: the API server (tests/realkube.py), the project's CRDs, the chart's admission policy and
approver Role (rendered from charts/vigil with watchNamespaces=[NAMESPACE], so it guards this namespace
only and leaves the session's other tests alone), the operator's ServiceAccount creating the actions and
writing their status, and two users with their own ServiceAccount tokens:

* ``alice``: may read Vigil objects and Events, and is bound to the chart's approver Role;
* ``bob``: may read them and ``patch`` RemediationActions, but lacks the ``approve`` verb, so the
  admission policy refuses his decision with 403.

The detectors' statuses are composed by the operator's own code (:func:`vigil.domain.status.compose`
over 40 evaluations), so ``scoreHistory`` is what the operator records.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
from typing import Any

import helm_python as helm
import yaml

from tests.harness import wait_for
from tests.realkube import RealKube, ensure_crds, ensure_namespace
from vigil.api.v1alpha1 import policy as policy_api
from vigil.api.v1alpha1.common import Condition, ConditionStatus
from vigil.api.v1alpha1.detector import AnomalyDetectorStatus, ModelStatus, Reason, SeriesState
from vigil.domain import detection
from vigil.domain import status as statuses

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "vigil-dash"
OPERATOR_NAMESPACE = "vigil-system"
FULLNAME = "vigil-dash"
OPERATOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{FULLNAME}"
GROUP_PATH = f"/apis/vigil.dev/v1alpha1/namespaces/{NAMESPACE}"
#: The label value an attacker chose for a series: shown, never run.
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
POLICY = "web-scale-out"
PENDING = "web-scale-out-7f3k2-1"  # alice approves it
PENDING_OTHER = "web-scale-out-7f3k2-2"  # bob tries and is refused
DONE = "web-scale-out-4c9d1-0"  # succeeded earlier, with before/after
T0 = datetime.datetime(2026, 12, 6, 21, 0, tzinfo=datetime.UTC)
MODEL = ModelStatus(name="vigil-default", sha256="0" * 64, input_signature="features: float[N,12]",
                    feature_version="3", window=2016, recommended_threshold=0.8, source="builtin:default")


@dataclasses.dataclass
class Scene:
    kube: RealKube
    alice: pathlib.Path  # kubeconfigs
    bob: pathlib.Path
    alice_user: str
    bob_user: str
    applied: str  # the chart objects, to delete at the end

    def action(self, name: str) -> dict[str, Any]:
        status, body = self.kube.request("GET", f"{GROUP_PATH}/remediationactions/{name}")
        assert status == 200, body
        return body

    def teardown(self) -> None:
        """Remove what :func:`build` made (the namespace stays: this server has no controller to finalize it)."""
        self.kube.kubectl("delete", "--ignore-not-found", "-f", "-", input=self.applied)
        self.kube.kubectl("delete", "-n", NAMESPACE, "--ignore-not-found",
                          "remediationactions,remediationpolicies,anomalydetectors,events", "--all")


def _chart_objects() -> list[dict[str, Any]]:
    values = {"fullnameOverride": FULLNAME, "watchNamespaces": [NAMESPACE]}
    with helm.Chart.load(ROOT / "charts" / "vigil") as chart:
        rendered = chart.render(values, name="vigil", namespace=OPERATOR_NAMESPACE, is_install=True)
    wanted = {"ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects += [o for o in yaml.safe_load_all(text) if o and o["kind"] in wanted]
    return objects


def _users() -> list[dict[str, Any]]:
    reader = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "dashboard-reader", "namespace": NAMESPACE},
              "rules": [{"apiGroups": ["vigil.dev"],
                         "resources": ["anomalydetectors", "remediationpolicies", "remediationactions"],
                         "verbs": ["get", "list", "watch", "patch"]},
                        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]}]}
    objects: list[dict[str, Any]] = [reader]
    for user, roles in (("alice", ["dashboard-reader", f"{FULLNAME}-approver"]), ("bob", ["dashboard-reader"])):
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": user, "namespace": NAMESPACE}})
        for role in roles:
            objects.append({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": f"{user}-{role}", "namespace": NAMESPACE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": NAMESPACE}]})
    return objects


def _detector_status(peak: float, anomalous: bool, labels: dict[str, str]) -> dict[str, Any]:
    """40 evaluations a minute apart through the operator's own compose(): scores climb to ``peak``."""
    key = tuple(sorted(labels.items()))
    status = AnomalyDetectorStatus()
    since: float | None = None
    for i in range(40):
        now = (T0 + datetime.timedelta(minutes=i)).timestamp()
        jitter = 0.03 * ((i * 7) % 5) / 5 if i < 39 else 0.0
        score = round(min(peak, 0.12 + (peak - 0.12) * max(0.0, (i - 25) / 14) + jitter), 4)
        flagged = anomalous and i >= 36
        state = SeriesState.ANOMALOUS if flagged else SeriesState.NORMAL
        verdict = detection.SeriesVerdict(state, now, flagged, now if flagged else None, score)
        series = {key: verdict}
        summary = detection.summarise(series, since, now)
        since = summary.anomalous_since
        status = statuses.compose(status, statuses.Outcome(
            statuses.OutcomeKind.EVALUATED, Reason.EVALUATING, "scored 1 of 1 series", now, 1,
            verdict=summary, series=series, labels={key: labels}, model=MODEL, threshold=0.8), top_k=10)
    return status.to_merge_patch()


def _detector(name: str, app: str, query: str) -> dict[str, Any]:
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": app}},
            "spec": {"query": query, "interval": "1m"}}


def _policy() -> dict[str, Any]:
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": POLICY, "namespace": NAMESPACE},
            "spec": {"detectorSelector": {"matchLabels": {"app": "web"}}, "trigger": {"for": "2m"},
                     "actions": [{"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2,
                                                                                "min": 3, "max": 12}}],
                     "aws": {"region": "eu-west-1"}, "approval": {"required": True, "timeout": "30m"},
                     "cooldown": "10m", "rateLimit": {"maxActions": 3, "window": "1h"},
                     "blastRadius": {"maxInstances": 4}}}


def _stamp(minutes: float) -> str:
    return (T0 + datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _policy_status() -> dict[str, Any]:
    when = T0 + datetime.timedelta(minutes=38)
    conds = [
        Condition(type="Ready", status=ConditionStatus.TRUE, reason="Valid", message="1 detector matched",
                  last_transition_time=T0),
        Condition(type="ActionAllowed", status=ConditionStatus.FALSE, reason="AwaitingApproval",
                  message=f"{PENDING} waits for a human", last_transition_time=when),
    ]
    status = policy_api.RemediationPolicyStatus(
        conditions=conds, phase=policy_api.PolicyPhase.AWAITING_APPROVAL, actions_in_window=1, in_flight=2,
        incident="7f3k2", incident_since=when, escalation_step=0, matched_detectors=["web-latency"],
        last_action=policy_api.LastAction(name=DONE, step=0, phase="Succeeded",
                                          time=T0 + datetime.timedelta(minutes=6)))
    return status.to_merge_patch()


def _action(name: str, incident: str, created: float) -> dict[str, Any]:
    return {
        "apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationAction",
        "metadata": {"name": name, "namespace": NAMESPACE,
                     "labels": {"vigil.dev/policy": POLICY, "vigil.dev/incident": incident}},
        "spec": {"policyRef": {"name": POLICY, "uid": "00000000-0000-0000-0000-000000000001"},
                 "incident": incident, "stepIndex": 0,
                 "step": {"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 3, "max": 12}},
                 "reason": {"source": "detector", "detector": "web-latency", "score": 0.93, "threshold": 0.8,
                            "time": _stamp(created)},
                 "approvalRequired": True, "region": "eu-west-1"},
    }


def _pending_status(created: float) -> dict[str, Any]:
    return {"phase": "PendingApproval", "message": "waiting for approval: scale web from 4 to 6",
            "createdAt": _stamp(created), "expiresAt": _stamp(created + 30),
            "before": {"desiredCapacity": 4, "minSize": 3, "maxSize": 12, "inService": 4},
            "after": {"desiredCapacity": 6}}


def _done_status() -> dict[str, Any]:
    return {"phase": "Succeeded", "message": "desired capacity of web set from 2 to 4",
            "createdAt": _stamp(2), "startedAt": _stamp(5), "completedAt": _stamp(6),
            "decision": {"by": "system:serviceaccount:vigil-dash:alice", "at": _stamp(4.5), "via": "cli",
                         "fieldManager": "vigil-approve"},
            "before": {"desiredCapacity": 2, "minSize": 3, "maxSize": 12, "inService": 2},
            "after": {"desiredCapacity": 4, "minSize": 3, "maxSize": 12, "inService": 4},
            "awsRequestIds": ["5f2c1a9e-0000-4000-8000-000000000001"], "attempts": 1}


def _event(kind: str, name: str, reason: str, message: str, minutes: float, warning: bool = False) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": NAMESPACE},
            "involvedObject": {"apiVersion": "vigil.dev/v1alpha1", "kind": kind, "name": name, "namespace": NAMESPACE},
            "type": "Warning" if warning else "Normal", "reason": reason, "message": message,
            "source": {"component": "vigil"}, "reportingComponent": "vigil", "reportingInstance": "vigil-0",
            "firstTimestamp": _stamp(minutes), "lastTimestamp": _stamp(minutes), "count": 1}


def _ok(answer: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    status, body = answer
    assert status in (200, 201), body
    return body


def build(kube: RealKube, workdir: pathlib.Path) -> Scene:
    ensure_crds(kube)
    for namespace in (OPERATOR_NAMESPACE, NAMESPACE):
        ensure_namespace(kube, namespace)
    applied = yaml.safe_dump_all([*_chart_objects(), *_users()])
    kube.kubectl("apply", "-f", "-", input=applied)
    operator_token = kube.kubectl("create", "token", FULLNAME, "-n", OPERATOR_NAMESPACE, "--duration=1h").stdout.strip()
    tokens = {u: kube.kubectl("create", "token", u, "-n", NAMESPACE, "--duration=1h").stdout.strip()
              for u in ("alice", "bob")}
    # The policy is loaded asynchronously: wait until it refuses the admin's dry-run create.
    probe = _action("probe", "probe", 0)
    wait_for(lambda: kube.request("POST", f"{GROUP_PATH}/remediationactions?dryRun=All", probe)[0] == 403,
             timeout=30, what="the admission policy in force")

    merge = "application/merge-patch+json"
    for name, app, query, peak, anomalous, labels in (
        ("web-latency", "web", "histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[5m]))",
         0.93, True, {"instance": "i-0abc123", "job": "web", "path": HOSTILE}),
        ("api-errors", "api", 'sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))', 0.41, False,
         {"job": "api"}),
    ):
        _ok(kube.request("POST", f"{GROUP_PATH}/anomalydetectors", _detector(name, app, query)))
        _ok(kube.request("PATCH", f"{GROUP_PATH}/anomalydetectors/{name}/status",
                         {"status": _detector_status(peak, anomalous, labels)}, content_type=merge))
    _ok(kube.request("POST", f"{GROUP_PATH}/remediationpolicies", _policy()))
    _ok(kube.request("PATCH", f"{GROUP_PATH}/remediationpolicies/{POLICY}/status", {"status": _policy_status()},
                     content_type=merge))
    for name, incident, created, status in ((DONE, "4c9d1", 2, _done_status()),
                                            (PENDING, "7f3k2", 37, _pending_status(37)),
                                            (PENDING_OTHER, "7f3k2", 38, _pending_status(38))):
        _ok(kube.request("POST", f"{GROUP_PATH}/remediationactions", _action(name, incident, created),
                         token=operator_token))
        _ok(kube.request("PATCH", f"{GROUP_PATH}/remediationactions/{name}/status", {"status": status},
                         token=operator_token, content_type=merge))
    for event in (
        _event("AnomalyDetector", "web-latency", "AnomalyDetected", "1 series anomalous (threshold 0.8)", 1.5, True),
        _event("RemediationAction", DONE, "ApprovalRequired", "approve with: vigil approve " + DONE, 2),
        _event("RemediationAction", DONE, "Succeeded", "desired capacity of web set from 2 to 4", 6),
        _event("AnomalyDetector", "web-latency", "AnomalyResolved", "no series anomalous any more", 12),
        _event("AnomalyDetector", "web-latency", "AnomalyDetected",
               f"1 series anomalous (threshold 0.8): path={HOSTILE}", 36, True),
        _event("RemediationPolicy", POLICY, "Triggered", "incident 7f3k2 opened by web-latency", 37),
        _event("RemediationAction", PENDING, "ApprovalRequired", "approve with: vigil approve " + PENDING, 37),
    ):
        _ok(kube.request("POST", f"/api/v1/namespaces/{NAMESPACE}/events", event))

    alice = kube.write_kubeconfig(workdir / "alice.kubeconfig", tokens["alice"], user="alice", namespace=NAMESPACE)
    bob = kube.write_kubeconfig(workdir / "bob.kubeconfig", tokens["bob"], user="bob", namespace=NAMESPACE)
    return Scene(kube, alice, bob, f"system:serviceaccount:{NAMESPACE}:alice",
                 f"system:serviceaccount:{NAMESPACE}:bob", applied)
