"""Which of the emulator's documented deviations from a real API server still exist (issue 12, item 1).

The emulator (vigil_sandbox.kubeapi) stays for `make demo` and `make test-emulator`; `make test` runs on
the real kube-apiserver. Each case below sends the same request to both: the real server must show the
behaviour, and the emulator must still deviate as its docstring and docs/kube-real-vs-emulator.md say.
When someone teaches the emulator one of these, its case fails with "no longer deviates": update the
docs, then the table.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.realkube import RealKube, ensure_namespace, install_crds
from vigil.api import crdgen
from vigil_sandbox.kubeapi import KubeAPIServer

NAMESPACE = "deviations"
Answer = tuple[int, dict[str, Any]]


class Peer:
    """One HTTP request at a time to either server, as the operator's client sends it."""

    def __init__(self, send: Callable[[str, str, Any, str, str | None], Answer], unprivileged: str) -> None:
        self.send = send
        #: The token of an authenticated user no role binds (the emulator has one identity: its own).
        self.unprivileged = unprivileged

    def __call__(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                 token: str | None = None) -> Answer:
        return self.send(method, path, body, content_type, token)


@pytest.fixture(scope="module")
def real(real_kube: RealKube) -> Peer:
    install_crds(real_kube)
    ensure_namespace(real_kube, NAMESPACE)

    def send(method: str, path: str, body: Any, content_type: str, token: str | None) -> Answer:
        return real_kube.request(method, path, body, token=token, content_type=content_type)
    return Peer(send, real_kube.user_token)


@pytest.fixture(scope="module")
def emulated() -> Iterator[Peer]:
    with KubeAPIServer(crds=crdgen.all_crds()) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

        def send(method: str, path: str, body: Any, content_type: str, token: str | None) -> Answer:
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(f"{server.url}{path}", data=data, method=method, headers={
                "Authorization": f"Bearer {token or server.token}", "Content-Type": content_type,
                "Accept": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, json.loads(answer.read() or b"{}")
            except urllib.error.HTTPError as error:
                with error:
                    return error.code, json.loads(error.read() or b"{}")
        yield Peer(send, server.token)


def _configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {"k": "v"}}


CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


@dataclasses.dataclass(frozen=True)
class Deviation:
    name: str
    #: Runs the same requests on a peer and says whether the real server's behaviour was seen.
    behaves: Callable[[Peer, str], bool]


def _server_side_apply(peer: Peer, suffix: str) -> bool:
    name = f"ssa-{suffix}"
    status, _ = peer("PATCH", f"{CONFIGMAPS}/{name}?fieldManager=deviations", _configmap(name),
                     "application/apply-patch+yaml")
    return status in (200, 201)


def _managed_fields(peer: Peer, suffix: str) -> bool:
    name = f"mf-{suffix}"
    status, created = peer("POST", f"{CONFIGMAPS}?fieldManager=deviations", _configmap(name))
    assert status == 201, created
    return any(e.get("manager") == "deviations" for e in created["metadata"].get("managedFields") or [])


def _rbac(peer: Peer, suffix: str) -> bool:
    """An authenticated user no role binds is refused (403). The emulator authenticates (one bearer token,
    401 without it) but has no authorization: its one identity may do everything."""
    status, _ = peer("GET", CONFIGMAPS, token=peer.unprivileged)
    return status == 403


def _one_event_store(peer: Peer, suffix: str) -> bool:
    """An Event posted through ``v1`` is listed by ``events.k8s.io/v1`` too on the real server."""
    name = f"ev-{suffix}"
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NAMESPACE},
             "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": NAMESPACE},
             "reason": "Deviation", "message": "m", "type": "Normal"}
    status, created = peer("POST", f"/api/v1/namespaces/{NAMESPACE}/events", event)
    assert status == 201, created
    status, listed = peer("GET", f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events")
    assert status == 200, listed
    return any(e["metadata"]["name"] == name for e in listed["items"])


def _admission_policies(peer: Peer, suffix: str) -> bool:
    status, _ = peer("GET", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies")
    return status == 200


DEVIATIONS = [
    Deviation("server-side apply (PATCH application/apply-patch+yaml)", _server_side_apply),
    Deviation("metadata.managedFields", _managed_fields),
    Deviation("RBAC (an authenticated user without a role is refused)", _rbac),
    Deviation("v1 and events.k8s.io/v1 Events are one store", _one_event_store),
    Deviation("ValidatingAdmissionPolicy", _admission_policies),
]


@pytest.mark.parametrize("deviation", DEVIATIONS, ids=[d.name for d in DEVIATIONS])
def test_the_emulator_still_deviates_where_documented(real: Peer, emulated: Peer, deviation: Deviation,
                                                       request: pytest.FixtureRequest) -> None:
    suffix = str(abs(hash(request.node.nodeid)) % 10**8)
    assert deviation.behaves(real, suffix), f"the real server does not show {deviation.name}: the case is wrong"
    assert not deviation.behaves(emulated, suffix), (
        f"the emulator no longer deviates on {deviation.name}: update its docstring, "
        "docs/kube-real-vs-emulator.md and this table")
