"""The chart's ValidatingAdmissionPolicy, enforced by a real kube-apiserver (tests/realkube.py).

A RemediationAction is executed by the operator, so a hand-made one must not get in: only the
operator's ServiceAccount creates them, changes their identity (labels, provenance) or status, and
approving one needs the RBAC verb ``approve``. The chart is rendered as in the other chart tests and
its ServiceAccount, RBAC and admission objects are applied to the real server; users are real tokens:
the operator's ServiceAccount token comes from TokenRequest (``kubectl create token``).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.conftest import NAMESPACE, RELEASE, Manifest, Render, select
from tests.harness import wait_for
from tests.realkube import RealKube, ensure_namespace, install_crds, remediation_action

GUARDED = "guarded"
OTHER = "guarded-other"
RAS = "/apis/vigil.dev/v1alpha1/namespaces/{ns}/remediationactions"
KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
         "ValidatingAdmissionPolicyBinding")


def test_the_chart_renders_the_policy_its_binding_and_the_approver_role(render: Render) -> None:
    objects = render()
    policy = select(objects, "ValidatingAdmissionPolicy")
    assert len(policy) == 1 and policy[0]["spec"]["failurePolicy"] == "Fail"
    assert "system:serviceaccount:vigil-system:vigil" in json.dumps(policy[0]["spec"]["variables"])
    binding = select(objects, "ValidatingAdmissionPolicyBinding")
    name = policy[0]["metadata"]["name"]
    assert [b["spec"] for b in binding] == [{"policyName": name, "validationActions": ["Deny"]}]
    approver = select(objects, "ClusterRole", f"{RELEASE}-approver")
    assert approver[0]["rules"] == [{"apiGroups": ["vigil.dev"], "resources": ["remediationactions"],
                                     "verbs": ["get", "list", "watch", "patch", "approve"]}]
    aggregated = select(render({"admissionPolicy": {"approverAggregateTo": ["admin"]}}), "ClusterRole",
                        f"{RELEASE}-approver")
    assert aggregated[0]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    namespaced = render({"watchNamespaces": ["team-a", "team-b"]})
    scoped = select(namespaced, "ValidatingAdmissionPolicyBinding")[0]["spec"]["matchResources"]
    assert scoped == {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}}
    assert [(r["kind"], r["metadata"]["namespace"]) for r in namespaced
            if r["metadata"]["name"] == f"{RELEASE}-approver"] == [("Role", "team-a"), ("Role", "team-b")]
    off = render({"admissionPolicy": {"enabled": False}})
    assert not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy") or
                o["metadata"]["name"] == f"{RELEASE}-approver"]


def _editor_role() -> list[Manifest]:
    """What a namespace editor may do on RemediationActions (RBAC allows it; only the policy says no)."""
    rules = [{"apiGroups": ["vigil.dev"], "resources": ["remediationactions", "remediationactions/status"],
              "verbs": ["get", "list", "create", "update", "patch"]}]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "vigil-test-editor"}, "rules": rules}
    bindings = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "vigil-test-editor", "namespace": ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "vigil-test-editor"},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vigil-user"}]}
                for ns in (GUARDED, OTHER)]
    return [role, *bindings]


class Users:
    def __init__(self, kube: RealKube, tmp: pathlib.Path) -> None:
        self.kube = kube
        token = kube.kubectl("create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h").stdout.strip()
        self.operator_token = token
        self.operator = kube.write_kubeconfig(tmp / "operator.kubeconfig", token, user="operator")
        self.user = kube.write_kubeconfig(tmp / "user.kubeconfig", kube.user_token, user="vigil-user")


@pytest.fixture(scope="module")
def guarded(real_kube: RealKube, render: Render, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    install_crds(real_kube)
    for namespace in (NAMESPACE, GUARDED, OTHER):
        ensure_namespace(real_kube, namespace)
    objects = [o for o in render() if o["kind"] in KINDS]
    assert {o["kind"] for o in objects} == set(KINDS)
    manifest = yaml.safe_dump_all([*objects, *_editor_role()])
    real_kube.kubectl("apply", "-f", "-", input=manifest)
    users = Users(real_kube, tmp_path_factory.mktemp("admission"))
    # The policy is compiled and loaded asynchronously: wait until it refuses the admin's dry run.
    probe = json.dumps(remediation_action("probe", GUARDED))
    wait_for(lambda: real_kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                       check=False).returncode != 0, timeout=30, what="the policy in force")
    yield users
    policies = [o for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")]
    real_kube.kubectl("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(policies))
    # other tests on this server create RemediationActions as admin: wait until they may again
    wait_for(lambda: real_kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                       check=False).returncode == 0, timeout=30, what="the policy gone")


def _create(kube: RealKube, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    namespace = body["metadata"]["namespace"]
    return kube.request("POST", RAS.format(ns=namespace), body, token=token)


def _patch(kube: RealKube, namespace: str, name: str, patch: dict[str, Any], token: str,
           subresource: str = "") -> tuple[int, dict[str, Any]]:
    path = RAS.format(ns=namespace) + f"/{name}" + (f"/{subresource}" if subresource else "")
    return kube.request("PATCH", path, patch, token=token, content_type="application/merge-patch+json")


def _denied(answer: tuple[int, dict[str, Any]], words: str) -> None:
    status, body = answer
    assert status == 403 and body.get("reason") == "Forbidden", body
    assert "ValidatingAdmissionPolicy 'vigil-remediationactions'" in body["message"], body["message"]
    assert words in body["message"], body["message"]


def test_only_the_operator_service_account_creates_remediation_actions(real_kube: RealKube, guarded: Users) -> None:
    # RBAC lets the user create them (the editor role): the admission policy is what refuses
    by_hand = remediation_action("by-hand", GUARDED)
    _denied(_create(real_kube, by_hand, real_kube.user_token), "RemediationActions are created only by the Vigil "
                                                                "operator (system:serviceaccount:vigil-system:vigil)")
    _denied(_create(real_kube, by_hand, real_kube.admin_token), "created only by the Vigil operator")
    status, created = _create(real_kube, remediation_action("by-operator", GUARDED), guarded.operator_token)
    assert status == 201, created
    real_kube.kubectl("auth", "can-i", "create", "remediationactions.vigil.dev", "-n", GUARDED,
                      kubeconfig=guarded.user)  # RBAC says yes: exit 0 (else this raises)


@pytest.fixture(scope="module")
def action(real_kube: RealKube, guarded: Users) -> str:
    body = remediation_action("awaiting-approval", GUARDED)
    body["metadata"]["annotations"] = {"vigil.dev/provenance": "policy-uid=00000000-0000-0000-0000-000000000001"}
    status, created = _create(real_kube, body, guarded.operator_token)
    assert status == 201, created
    return "awaiting-approval"


@pytest.mark.parametrize(("patch", "words"), [
    ({"metadata": {"labels": {"vigil.dev/policy": "another-policy"}}}, "vigil.dev/policy and vigil.dev/incident"),
    ({"metadata": {"labels": {"vigil.dev/incident": None}}}, "vigil.dev/policy and vigil.dev/incident"),
    ({"metadata": {"annotations": {"vigil.dev/provenance": "forged"}}}, "vigil.dev/provenance"),
    ({"metadata": {"annotations": {"vigil.dev/provenance": None}}}, "vigil.dev/provenance"),
], ids=["relabel-policy", "drop-incident", "forge-provenance", "drop-provenance"])
def test_identity_of_an_action_is_changed_only_by_the_operator(real_kube: RealKube, guarded: Users, action: str,
                                                               patch: dict[str, Any], words: str) -> None:
    _denied(_patch(real_kube, GUARDED, action, patch, real_kube.user_token), words)
    _denied(_patch(real_kube, GUARDED, action, patch, real_kube.admin_token), words)


def test_status_is_written_only_by_the_operator(real_kube: RealKube, guarded: Users, action: str) -> None:
    patch = {"status": {"phase": "Succeeded", "message": "forged"}}
    _denied(_patch(real_kube, GUARDED, action, patch, real_kube.user_token, "status"),
            "the status of a RemediationAction is written only by the Vigil operator")
    status, written = _patch(real_kube, GUARDED, action, {"status": {"message": "by the operator"}},
                             guarded.operator_token, "status")
    assert status == 200 and written["status"]["message"] == "by the operator", written


def test_other_metadata_stays_editable(real_kube: RealKube, guarded: Users, action: str) -> None:
    """The policy guards the fields it names, not every update (else it would refuse everything)."""
    status, patched = _patch(real_kube, GUARDED, action, {"metadata": {"annotations": {"team": "web"}}},
                             real_kube.user_token)
    assert status == 200 and patched["metadata"]["annotations"]["team"] == "web", patched


def test_approving_needs_the_approve_verb(real_kube: RealKube, guarded: Users, action: str) -> None:
    approve = {"metadata": {"annotations": {"vigil.dev/approve": "true", "vigil.dev/decided-by": "vigil-user"}}}
    needs = "needs the RBAC verb approve on remediationactions in its namespace: bind the ClusterRole vigil-approver"
    # kubectl annotate, as a user with patch rights but not approve
    refused = real_kube.kubectl("annotate", "ra", action, "-n", GUARDED, "vigil.dev/approve=true",
                                kubeconfig=guarded.user, check=False)
    assert refused.returncode != 0 and needs in refused.stderr, refused.stderr
    _denied(_patch(real_kube, GUARDED, action, {"metadata": {"annotations": {"vigil.dev/reject": "true"}}},
                   real_kube.user_token), needs)
    _denied(_patch(real_kube, GUARDED, action, {"metadata": {"annotations": {"vigil.dev/decided-by": "me"}}},
                   real_kube.user_token), needs)

    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "approvers", "namespace": GUARDED},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vigil-approver"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vigil-user"}]}
    real_kube.kubectl("apply", "-f", "-", input=json.dumps(binding))
    # RBAC is read from the authorizer's cache: poll until the binding is seen
    wait_for(lambda: real_kube.kubectl("auth", "can-i", "approve", "remediationactions.vigil.dev", "-n", GUARDED,
                                       kubeconfig=guarded.user, check=False).returncode == 0,
             timeout=30, what="the approver binding")
    status, approved = _patch(real_kube, GUARDED, action, approve, real_kube.user_token)
    assert status == 200, approved
    assert approved["metadata"]["annotations"]["vigil.dev/approve"] == "true"
    assert approved["metadata"]["annotations"]["vigil.dev/decided-by"] == "vigil-user"
    # decided-by is what status.decision.by records: an approver cannot write someone else's name there
    _denied(_patch(real_kube, GUARDED, action, {"metadata": {"annotations": {"vigil.dev/decided-by": "alice"}}},
                   real_kube.user_token), "vigil.dev/decided-by must name the user who sets it (vigil-user)")

    # the verb is per namespace: the binding in one does not approve in another
    status, other = _create(real_kube, remediation_action("elsewhere", OTHER), guarded.operator_token)
    assert status == 201, other
    _denied(_patch(real_kube, OTHER, "elsewhere", approve, real_kube.user_token), needs)


@pytest.mark.parametrize("annotation", ["vigil.dev/decided-via", "vigil.dev/chat-user", "vigil.dev/chat-channel",
                                        "vigil.dev/decided-groups"])
def test_where_a_decision_came_from_is_written_only_by_approvers(real_kube: RealKube, guarded: Users,
                                                                 annotation: str) -> None:
    """The chat record (vigil chatops) is part of the decision: a user without approve cannot forge it."""
    name = "chat-record-" + annotation.rsplit("/", 1)[1]
    status, created = _create(real_kube, remediation_action(name, OTHER), guarded.operator_token)
    assert status == 201, created
    _denied(_patch(real_kube, OTHER, name, {"metadata": {"annotations": {annotation: "slack"}}},
                   real_kube.user_token), "needs the RBAC verb approve on remediationactions in its namespace")
    status, patched = _patch(real_kube, OTHER, name, {"metadata": {"annotations": {annotation: "slack"}}},
                             real_kube.admin_token)  # system:masters holds every verb, approve included
    assert status == 200 and patched["metadata"]["annotations"][annotation] == "slack", patched
