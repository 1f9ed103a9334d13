"""The remediation engine's start-up LIST (RemediationEngine.sync), against the real kube-apiserver.

It reads in pages (``limit`` + ``continue``, like client-go's pager) so that 10,000 detectors with their
statuses are never one answer decoded and folded in one stretch of the event loop.

Not exercised: a continue token that expires between two pages. This kube-apiserver serves continued
LISTs from its watch cache, so compacting etcd does not expire the token. The engine needs no special
path for it: a failed page raises, ``needs_sync`` stays set and the next pass LISTs again from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kopf
import pytest

from tests.conftest import detector
from tests.realkube import RealKube, ensure_crds
from vigil.adapters.kube import KubeClient
from vigil.adapters.metrics import OperatorMetrics
from vigil.engine.registry import Registry
from vigil.engine.remediation import engine as remediation
from vigil.engine.remediation.engine import RemediationEngine

PLURAL = "anomalydetectors"


@contextlib.asynccontextmanager
async def _engine(kube: RealKube, namespace: str, upsert: Any) -> AsyncIterator[RemediationEngine]:
    """A remediation engine on the real server, watching ``namespace``; closed with its client after."""
    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url, token=kube.admin_token, insecure=True)

    client = KubeClient(login)
    engine = RemediationEngine(Registry(), client, None, None, None, OperatorMetrics(), namespaces=[namespace],
                               upsert_detector=upsert)
    try:
        yield engine
    finally:
        engine.close()
        await client.close()


def _create(kube: RealKube, namespace: str, count: int, prefix: str = "d") -> set[str]:
    names = {f"{prefix}{i}" for i in range(count)}
    for name in names:
        status, body = kube.request("POST", f"/apis/vigil.dev/v1alpha1/namespaces/{namespace}/{PLURAL}",
                                    detector(name, "up", namespace))
        assert status == 201, body
    return names


def _list_requests(kube: RealKube, namespace: str, since: int) -> list[str]:
    return [e["requestURI"] for e in kube.audit_events(since=since)
            if e.get("verb") == "list" and f"/namespaces/{namespace}/{PLURAL}" in e.get("requestURI", "")
            and e.get("stage") == "ResponseComplete"]


@pytest.fixture
def real(real_kube: RealKube) -> RealKube:
    """The session's real kube-apiserver, with the CRDs installed."""
    ensure_crds(real_kube)
    return real_kube


@pytest.fixture
def namespace(real: RealKube) -> Iterator[str]:
    """A namespace of this test, deleted after it: its detectors must not reach other tests' operators."""
    name = f"sync-{uuid.uuid4().hex[:8]}"
    status, body = real.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    yield name
    real.kubectl("delete", "namespace", name, "--wait=false")


def _policy(namespace: str, name: str = "web", **trigger: Any) -> dict[str, Any]:
    """A policy triggered by ``trigger`` (detectorSelector, detectors or alertSelector)."""
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**trigger, "actions": [{"name": "scale-web", "after": "0s", "scaleAutoScalingGroup": {
                "name": "web", "by": 1, "min": 1, "max": 10}}], "aws": {"region": "eu-west-1"}, "dryRun": True}}


def _create_policy(kube: RealKube, namespace: str, name: str = "web", **trigger: Any) -> dict[str, Any]:
    status, body = kube.request("POST", f"/apis/vigil.dev/v1alpha1/namespaces/{namespace}/remediationpolicies",
                                _policy(namespace, name, **trigger))
    assert status == 201, body
    created: dict[str, Any] = body
    return created


def test_sync_reads_in_pages_and_misses_nothing(real: RealKube, namespace: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remediation, "LIST_PAGE", 3)  # 7 objects: pages of 3, 3 and 1
    names = _create(real, namespace, 7)
    _create_policy(real, namespace, detectorSelector={"matchLabels": {"app": "web"}})
    seen: list[str] = []
    mark = real.audit_mark()

    async def scenario() -> None:
        async with _engine(real, namespace, lambda body: seen.append(body["metadata"]["name"])) as engine:
            await engine.sync()
            assert not engine.needs_sync

    asyncio.run(scenario())
    assert sorted(seen) == sorted(names)
    pages = _list_requests(real, namespace, mark)
    assert len(pages) == 3 and all("limit=3" in uri for uri in pages), pages
    assert sum("continue=" in uri for uri in pages) == 2, pages


def test_no_policy_on_detectors_means_no_detector_list(real: RealKube, namespace: str) -> None:
    """Alert-only policies (or none) read no detector: the sync leaves the 10,000 detectors with their
    statuses to kopf's own LIST (issue 16). One that triggers on detectors and arrives later makes the
    engine LIST them before it moves at all."""
    names = _create(real, namespace, 4)
    _create_policy(real, namespace, alertSelector={"matchLabels": {"alertname": "HighLatency"}})
    seen: list[str] = []
    mark = real.audit_mark()

    async def scenario() -> None:
        reconciled: list[str] = []

        async def reconcile(entry: Any, now: float) -> None:
            reconciled.append(entry.name)
        async with _engine(real, namespace, lambda body: seen.append(body["metadata"]["name"])) as engine:
            engine._reconcile = reconcile  # type: ignore[method-assign]
            await engine.sync()
            assert not engine.needs_sync and len(engine.policies) == 1
            assert seen == [] and _list_requests(real, namespace, mark) == []
            # a policy on detectors arrives by its watch: nothing of it moves until the detectors are listed
            engine.upsert_policy(_create_policy(real, namespace, name="db", detectors=["d0"]))
            assert engine.needs_sync
            engine.needs_sync = False  # even if a tick ran before the next sync, the policy would wait
            await engine.tick()
            assert reconciled == ["web"] and engine.needs_sync
            await engine.sync()
            assert sorted(seen) == sorted(names) and not engine.needs_sync
            await engine.tick()
            assert sorted(reconciled) == ["db", "web", "web"]

    asyncio.run(scenario())
    assert len(_list_requests(real, namespace, mark)) == 1
