"""Issue 11, item 10: the chart grants the operator what it calls, and nothing else.

Finding 10a: in the default (all-namespaces) mode the ClusterRole granted ``get`` on every Secret and
ConfigMap of the cluster. Now there is no Secret or ConfigMap access unless the admin names them
(``rbac.secretNames``, ``rbac.configMapNames``: ``resourceNames``) or confines them to namespaces
(``rbac.secretNamespaces``, ``rbac.configMapNamespaces``: one Role per namespace).
Finding 10b: the chart granted verbs the code never uses (``update`` and ``get`` on the custom resources
and their status, ``patch`` on the resources and on Events, ``events.k8s.io``, every ``*/finalizers``).

The chart is rendered through the real Helm engine (helm-python-sdk, as tests/chart/ does). The
cross-check runs ``vigil run`` against the Kubernetes API emulator through a whole remediation
(detector with a ConfigMap model, an alert, an action in AWS through moto, a notification from a Secret,
pruning, leader election), records every request the emulator served, and evaluates each against the
rendered Roles and bindings the way the API server's RBAC authorizer would.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.conftest import CHART_DIR, NAMESPACE, RELEASE, Manifest, parse, render_text
from tests.conftest import OperatorFactory, detector
from tests.harness import OperatorProcess, wait_for
from tests.integration import aws_world
from tests.integration.aws_world import Moto
from tests.realkube import RealKube, RealKubeAPI, ensure_namespace, install_crds
from vigil_sandbox.kubeapi import KubeAPIServer, RequestRecord

TEAM = "team-a"
SECRET, CONFIGMAP = "chat-webhooks", "latency-model"
#: Granted without being called: the OwnerReferencesPermissionEnforcement admission plugin requires
#: update on the owner's finalizers to set blockOwnerDeletion (RemediationActions on their policy).
ADMISSION_ONLY = {("vigil.dev", "remediationpolicies/finalizers", "update")}
#: Called, but only when a status write of a RemediationAction meets HTTP 409 (the engine re-reads the
#: action: ``RemediationEngine._write_action``), which a run cannot provoke on cue.
ON_CONFLICT_ONLY = {("vigil.dev", "remediationactions", "get")}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[Manifest]:
    return parse(render_text(chart, values or {}))


def roles(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


def operator_roles(objects: list[Manifest]) -> list[Manifest]:
    """The Roles and ClusterRoles bound to the operator's ServiceAccount: not ``<release>-approver``, which
    the chart leaves for the admin to bind to the people who approve RemediationActions."""
    bound = {(b["roleRef"]["kind"], b["metadata"].get("namespace") if b["roleRef"]["kind"] == "Role" else None,
              b["roleRef"]["name"])
             for b in objects if b["kind"] in ("ClusterRoleBinding", "RoleBinding") and SUBJECT in b["subjects"]}
    return [o for o in roles(objects) if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) in bound]


def test_only_the_approver_role_is_left_unbound(chart: helm.Chart) -> None:
    for values in (None, {"watchNamespaces": [TEAM, "team-b"]}):
        objects = render(chart, values)
        names = {o["metadata"]["name"] for o in roles(objects)}
        assert names - {o["metadata"]["name"] for o in operator_roles(objects)} == {f"{RELEASE}-approver"}


def grants(role: Manifest) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


# --- an RBAC authorizer over rendered manifests -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One request as RBAC sees it: (group, resource[/subresource], verb) in a namespace, on a name."""

    group: str
    resource: str
    verb: str
    namespace: str | None
    name: str | None

    @classmethod
    def of(cls, record: RequestRecord) -> Call:
        resource = f"{record.plural}/{record.subresource}" if record.subresource else str(record.plural)
        return cls(record.group or "", resource, record.verb, record.namespace, record.name)

    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


def _rule_allows(rule: dict[str, Any], call: Call) -> bool:
    if call.group not in rule["apiGroups"] or call.resource not in rule["resources"] or call.verb not in rule["verbs"]:
        return False
    names = rule.get("resourceNames")
    return not names or (call.name is not None and call.name in names)


def authorized(objects: list[Manifest], subject: dict[str, str], call: Call) -> bool:
    """Whether a ServiceAccount may make ``call``, by the ClusterRoleBindings and RoleBindings rendered."""
    by_name = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in roles(objects)}
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or subject not in binding["subjects"]:
            continue
        where = binding["metadata"].get("namespace")
        if binding["kind"] == "RoleBinding" and call.namespace != where:
            continue
        ref = binding["roleRef"]
        role = by_name.get((ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]))
        if role is not None and any(_rule_allows(rule, call) for rule in role["rules"]):
            return True
    return False


SUBJECT = {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}


# --- finding 10a: Secrets and ConfigMaps ------------------------------------------------------------


@pytest.mark.parametrize("values", [None, {"watchNamespaces": [TEAM, "team-b"]}], ids=["all-namespaces", "namespaced"])
def test_item10_default_chart_grants_no_secret_or_configmap_read(chart: helm.Chart, values: dict[str, Any] | None
                                                                 ) -> None:
    """With default values nothing may read any Secret or ConfigMap, in any namespace."""
    objects = render(chart, values)
    for role in roles(objects):
        touched = {resource for _, resource, _ in grants(role)}
        assert not touched & {"secrets", "configmaps"}, f"{role['kind']} {role['metadata']['name']} reads them"
    for namespace in (None, TEAM, "kube-system", NAMESPACE):
        for resource in ("secrets", "configmaps"):
            for verb in ("get", "list", "watch"):
                assert not authorized(objects, SUBJECT, Call("", resource, verb, namespace, "any"))


def test_item10_named_secrets_and_configmaps_are_get_by_name_only(chart: helm.Chart) -> None:
    """``rbac.secretNames`` / ``rbac.configMapNames``: get those names (every watched namespace), nothing else."""
    objects = render(chart, {"rbac": {"secretNames": [SECRET], "configMapNames": [CONFIGMAP]}})
    for resource, name in (("secrets", SECRET), ("configmaps", CONFIGMAP)):
        assert authorized(objects, SUBJECT, Call("", resource, "get", TEAM, name))
        assert not authorized(objects, SUBJECT, Call("", resource, "get", TEAM, "database-password"))
        for verb in ("list", "watch", "create", "update", "patch", "delete"):
            assert not authorized(objects, SUBJECT, Call("", resource, verb, TEAM, name))
            assert not authorized(objects, SUBJECT, Call("", resource, verb, None, None))


def test_item10_secret_and_configmap_reads_can_be_confined_to_namespaces(chart: helm.Chart) -> None:
    """``rbac.secretNamespaces`` / ``rbac.configMapNamespaces``: a Role in each, nothing cluster-wide; the
    names still restrict when given."""
    objects = render(chart, {"rbac": {"secretNamespaces": [TEAM], "secretNames": [SECRET],
                                      "configMapNamespaces": [TEAM, "ml"]}})
    assert not any(resource in ("secrets", "configmaps") for o in roles(objects) if o["kind"] == "ClusterRole"
                   for _, resource, _ in grants(o))
    assert authorized(objects, SUBJECT, Call("", "secrets", "get", TEAM, SECRET))
    assert not authorized(objects, SUBJECT, Call("", "secrets", "get", TEAM, "database-password"))
    assert not authorized(objects, SUBJECT, Call("", "secrets", "get", "ml", SECRET))
    for namespace in (TEAM, "ml"):
        assert authorized(objects, SUBJECT, Call("", "configmaps", "get", namespace, CONFIGMAP))
        assert not authorized(objects, SUBJECT, Call("", "configmaps", "list", namespace, None))
    assert not authorized(objects, SUBJECT, Call("", "configmaps", "get", "kube-system", CONFIGMAP))


# --- finding 10b: no verb the code never uses -------------------------------------------------------


#: What the recorded run below shows the operator calls (kept here so the chart test needs no peer).
CALLED: set[tuple[str, str, str]] = {
    ("vigil.dev", "anomalydetectors", "list"), ("vigil.dev", "anomalydetectors", "watch"),
    ("vigil.dev", "remediationpolicies", "list"), ("vigil.dev", "remediationpolicies", "watch"),
    ("vigil.dev", "remediationactions", "list"), ("vigil.dev", "remediationactions", "watch"),
    ("vigil.dev", "remediationactions", "get"), ("vigil.dev", "remediationactions", "create"),
    ("vigil.dev", "remediationactions", "delete"),
    ("vigil.dev", "anomalydetectors/status", "patch"), ("vigil.dev", "remediationpolicies/status", "patch"),
    ("vigil.dev", "remediationactions/status", "patch"),
    ("", "events", "create"),
    ("", "secrets", "get"), ("", "configmaps", "get"),
    ("coordination.k8s.io", "leases", "list"), ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"), ("coordination.k8s.io", "leases", "update"),
}


@pytest.mark.parametrize("values", [
    {"rbac": {"secretNames": [SECRET], "configMapNames": [CONFIGMAP]}},
    {"watchNamespaces": [TEAM], "rbac": {"secretNamespaces": [TEAM], "configMapNamespaces": [TEAM]}},
], ids=["all-namespaces", "namespaced"])
def test_item10_no_granted_verb_is_unused(chart: helm.Chart, values: dict[str, Any]) -> None:
    """Every (group, resource, verb) any rendered Role grants is one the operator calls (or one admission
    requires): no ``update`` on the custom resources or their status, no ``patch`` on Events."""
    for role in operator_roles(render(chart, values)):
        unused = grants(role) - CALLED - ADMISSION_ONLY
        assert not unused, f"{role['kind']} {role['metadata']['name']} grants verbs the operator never uses: " \
                           f"{sorted(unused)}"


# --- the cross-check against a recorded run ---------------------------------------------------------


def _alert(operator_url: str, token: str) -> None:
    alert = {"version": "4", "status": "firing", "receiver": "vigil", "groupKey": "{}:{}", "truncatedAlerts": 0,
             "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
             "alerts": [{"status": "firing", "labels": {"alertname": "HighLatency", "namespace": TEAM},
                         "annotations": {},
                         "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                         "generatorURL": "http://prom", "fingerprint": "abc123"}]}
    request = urllib.request.Request(f"{operator_url}/alertmanager", data=json.dumps(alert).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _do_everything(api: Any, run_operator: OperatorFactory, moto: Moto, tmp_path: pathlib.Path,
                   config: pathlib.Path | None = None, scope: tuple[str, ...] = ()) -> OperatorProcess:
    """Start the operator and give it everything to do (see the test below); ``api`` is the emulator or
    tests.realkube.RealKubeAPI, ``config`` the operator's kubeconfig (default: the ``kubeconfig`` fixture)."""
    moto.reset()
    aws_world.build(moto, namespace=TEAM)
    token = tmp_path / "token"
    token.write_text("rbac-test-token\n")
    api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": TEAM},
                "stringData": {"slack": "http://127.0.0.1:9/services/T0/B0/unreachable"}})
    operator = run_operator("--aws-endpoint-url", moto.url, "--prometheus-url", "http://127.0.0.1:9",
                            "--leader-election-namespace", NAMESPACE, "--alertmanager-token-file", str(token),
                            *scope, config=config)
    body = detector("cpu", "up", TEAM, interval="1s", model={"configMapRef": {"name": CONFIGMAP, "key": "m.onnx"}})
    api.create(body)
    api.create({"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
                "metadata": {"name": "latency", "namespace": TEAM},
                "spec": {"alertSelector": {"matchLabels": {"alertname": "HighLatency"}},
                         # Two steps, one kept: the first action is pruned (delete) once the second is done.
                         "actions": [{"name": f"scale-{n}", "after": "0s" if n == 1 else "1s",
                                      "scaleAutoScalingGroup": {"name": "web", "by": 1, "min": 1, "max": 10}}
                                     for n in (1, 2)],
                         "aws": {"region": aws_world.REGION}, "cooldown": "0s",
                         "successfulActionsHistoryLimit": 1,
                         "notify": {"slack": {"urlSecretRef": {"name": SECRET, "key": "slack"}}}}})
    _alert(operator.url, "rbac-test-token")
    return operator


@pytest.mark.emulator
def test_item10_the_chart_allows_every_call_of_a_recorded_run_and_grants_nothing_else(
        chart: helm.Chart, kubeapi: KubeAPIServer, run_operator: OperatorFactory, moto: Moto,
        tmp_path: pathlib.Path) -> None:
    """One operator run that does everything: leader election, a detector whose custom model is in a
    ConfigMap, an alert that triggers a policy, the action in AWS (moto), a notification whose URL is in a
    Secret, Events, status writes, and the action pruned by the history limit. Every request the emulator
    served must be allowed by the chart rendered with the names the run uses, and every verb the chart
    grants must have been used (or be required by admission)."""
    operator = _do_everything(kubeapi, run_operator, moto, tmp_path)

    def seen() -> set[tuple[str, str, str]]:
        return {Call.of(r).key() for r in kubeapi.requests if r.verb not in ("discovery", "other")}

    expected = CALLED - ON_CONFLICT_ONLY
    try:
        wait_for(lambda: seen() >= expected, timeout=60, what="every call of CALLED")
    except AssertionError:
        raise AssertionError(f"the run never made {sorted(expected - seen())}; it made {sorted(seen())}") from None
    operator.stop()
    calls = {Call.of(r) for r in kubeapi.requests if r.verb not in ("discovery", "other")}
    assert expected <= {c.key() for c in calls} <= CALLED, "CALLED (used by the chart test) is what the operator calls"
    objects = render(chart, {"rbac": {"secretNames": [SECRET], "configMapNames": [CONFIGMAP]}})
    denied = sorted({(c.group, c.resource, c.verb, c.namespace or "*", c.name or "")
                     for c in calls if not authorized(objects, SUBJECT, c)})
    assert not denied, f"the chart forbids calls the operator makes: {denied}"
    for role in operator_roles(objects):
        assert not grants(role) - CALLED - ADMISSION_ONLY


@pytest.mark.parametrize("mode", ["all-namespaces", "namespaced"])
def test_item10_the_real_api_server_allows_every_call_as_the_charts_service_account(
        chart: helm.Chart, real_kube: RealKube, run_operator: OperatorFactory, moto: Moto,
        tmp_path: pathlib.Path, mode: str) -> None:
    """The same run on a real kube-apiserver, the operator authenticated as the chart's ServiceAccount (a
    TokenRequest token) under the chart's RBAC and admission policy: the real authorizer, not the model of
    it above, allows every request (no 403 in the audit log), and every call of CALLED is made. Both install
    modes: cluster-wide, and ``watchNamespaces`` with the operator run as the chart runs it there
    (``--namespace`` for each watched namespace)."""
    values: dict[str, Any] = {"rbac": {"secretNames": [SECRET], "configMapNames": [CONFIGMAP]}}
    scope: tuple[str, ...] = ()
    if mode == "namespaced":
        values["watchNamespaces"] = [TEAM]
        scope = ("--namespace", TEAM)
    objects = render(chart, values)
    kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
             "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    chart_objects = [o for o in objects if o["kind"] in kinds]
    install_crds(real_kube)
    for namespace in (NAMESPACE, TEAM):
        ensure_namespace(real_kube, namespace)
    real_kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(chart_objects))
    token = real_kube.kubectl("create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h").stdout.strip()
    config = real_kube.write_kubeconfig(tmp_path / "operator.kubeconfig", token, user="operator")
    user = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    api = RealKubeAPI(real_kube)
    start = real_kube.audit_mark()  # the other mode's run used the same ServiceAccount
    # A lease left by an earlier run (the other mode's) would spare this run the lease `create` CALLED lists.
    real_kube.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/vigil-leader")

    def mine() -> list[dict[str, Any]]:
        return [e for e in real_kube.audit_events(since=start) if e["user"]["username"] == user]

    try:
        operator = _do_everything(api, run_operator, moto, tmp_path, config, scope)

        def seen() -> set[tuple[str, str, str]]:
            return {((e["objectRef"].get("apiGroup") or ""), e["objectRef"]["resource"] + (
                f"/{e['objectRef']['subresource']}" if e["objectRef"].get("subresource") else ""), e["verb"])
                for e in mine() if "objectRef" in e and "resource" in e["objectRef"]}

        expected = CALLED - ON_CONFLICT_ONLY
        try:
            wait_for(lambda: seen() >= expected, timeout=90, what="every call of CALLED")
        except AssertionError:
            raise AssertionError(f"the run never made {sorted(expected - seen())}; it made {sorted(seen())}\n"
                                 f"{operator.log()[-4000:]}") from None
        operator.stop()
        refused = [(e["verb"], e["requestURI"], e["responseStatus"].get("code"))
                   for e in mine() if e["responseStatus"].get("code") in (401, 403)]
        assert not refused, f"the real API server refused the operator: {refused}"
        assert seen() <= CALLED, sorted(seen() - CALLED)
    finally:
        api.close()
        # Everything the chart made goes, the policy first (it binds cluster-wide) and the RBAC with it, so
        # the other mode's run has only its own grants.
        real_kube.kubectl("delete", "--ignore-not-found", "-f", "-",
                          input=yaml.safe_dump_all([o for o in chart_objects if o["kind"] != "ServiceAccount"]))
