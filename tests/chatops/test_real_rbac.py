"""Ask Vigil on the real kube-apiserver as an unprivileged user: RBAC decides what it may read, and the audit
log shows it wrote nothing but its conversation ConfigMaps."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator

import pytest
import yaml

from tests.chatops import incident
from tests.realkube import TEST_USER, RealKube, RealKubeAPI, ensure_crds
from vigil.adapters import kubeaccess
from vigil.chatops import ask, conversation, kubeio

NAMESPACE = "ask-rbac"

#: What the Ask part of the chatops component needs, and nothing more.
ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
    "metadata": {"name": "vigil-ask", "namespace": NAMESPACE},
    "rules": [
        {"apiGroups": ["vigil.dev"], "resources": ["anomalydetectors", "remediationpolicies", "remediationactions"],
         "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "update", "delete"]},
    ],
}
BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
    "metadata": {"name": "vigil-ask", "namespace": NAMESPACE},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vigil-ask"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TEST_USER}],
}


@pytest.fixture
def api(real_kube: RealKube) -> Iterator[RealKubeAPI]:
    ensure_crds(real_kube)
    view = RealKubeAPI(real_kube)
    yield view
    for kind in ("rolebinding", "role"):
        real_kube.kubectl("-n", NAMESPACE, "delete", kind, "vigil-ask", "--ignore-not-found", check=False)
    view.close()


def test_an_unprivileged_user_reads_only_what_rbac_grants_and_writes_only_configmaps(
        api: RealKubeAPI, real_kube: RealKube, tmp_path: pathlib.Path) -> None:
    recorded = incident.seed(api, NAMESPACE)
    real_kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([ROLE, BINDING]))
    config = real_kube.write_kubeconfig(tmp_path / "user.kubeconfig", real_kube.user_token, user=TEST_USER,
                                        namespace=NAMESPACE)
    audit_start = real_kube.audit_mark()
    transport = kubeio.Transport(kubeaccess.load(str(config), in_cluster_first=False))
    try:
        asker = ask.Asker(kubeio.ApiReader(transport), default_namespace=NAMESPACE,
                          store=conversation.ConversationStore(kubeio.ConfigMapClient(transport, NAMESPACE)))
        why = asyncio.run(asker.ask(f"why {recorded.succeeded}", conversation="rbac-thread"))
        follow = asyncio.run(asker.ask("what did the detector see?", conversation="rbac-thread"))
        mine = asyncio.run(asker.ask(f"status {NAMESPACE}"))
        elsewhere = asyncio.run(asker.ask("status default"))
    finally:
        transport.close()
    assert why.error is None and f"{recorded.succeeded}**: Succeeded" in why.text
    assert "Detector `web-cpu` now: anomalous" in follow.text
    assert mine.text.startswith("**Detectors** (1):")
    assert elsewhere.text.startswith("I could not read from Kubernetes: not allowed to read anomalydetectors in "
                                     "default: anomalydetectors.vigil.dev is forbidden: User \"vigil-user\" cannot "
                                     "list resource \"anomalydetectors\"")
    changed = [(e["verb"], e["objectRef"]["resource"]) for e in real_kube.audit_events(since=audit_start)
               if e["user"]["username"] == TEST_USER and e["verb"] in ("create", "update", "patch", "delete")]
    assert changed and {resource for _, resource in changed} == {"configmaps"}
