"""Issue 12, item 7: watch faults on a real kube-apiserver (tests/realkube.py, one of this test's own).

kube-apiserver is killed mid-run (SIGKILL: the operator's watches are cut, not closed) and started again
on the same etcd. While it is down, objects are written straight to etcd, as another API server of an HA
control plane would, and etcd is compacted: when the operator's watches come back with the
resourceVersions they had, the new server's watch cache (which starts at etcd's current revision) and
etcd both no longer hold them, so the watches are answered ``410 Gone`` and the operator must list again.
It must lose nothing (the detector and the policy written during the outage are picked up) and repeat
nothing (the action it had already taken is not taken twice: AWS calls are counted by the fault proxy).
"""

from __future__ import annotations

import datetime
import pathlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import aws_world, scenario
from tests.integration.aws_world import Moto
from tests.realkube import RealKube, RealKubeAPI
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.prometheus import PrometheusServer

INCIDENT = 'nab_cpu{scenario="incident"}'
GROUP = "vigil.dev/v1alpha1"
RA = (GROUP, "remediationactions")
RP = (GROUP, "remediationpolicies")
AD = (GROUP, "anomalydetectors")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident")) as server:
        yield server


def detector(name: str, app: str) -> dict[str, Any]:
    return {"apiVersion": GROUP, "kind": "AnomalyDetector",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"query": INCIDENT, "interval": "1s", "step": "5m"}}


def policy(name: str, app: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GROUP, "kind": "RemediationPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"detectorSelector": {"matchLabels": {"app": app}},
                     "actions": [{"name": "scale-web", "after": "0s",
                                  "scaleAutoScalingGroup": {"name": "web", "by": 1, "min": 1, "max": 10}}],
                     "aws": {"region": aws_world.REGION}, "cooldown": "0s", **spec}}


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as kube-apiserver would store it in etcd: with the metadata the server sets on create."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**obj, "metadata": {**obj["metadata"], "uid": str(uuid.uuid4()), "creationTimestamp": now,
                                "generation": 1}}


def phases(api: RealKubeAPI, policy_name: str) -> list[str]:
    found = api.list(*RA, "default", f"vigil.dev/policy={policy_name}")
    return [(a.get("status") or {}).get("phase", "") for a in found]


def _resource_version(uri: str) -> int:
    """The resourceVersion a list or watch asked for (0: none, the newest)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    return int(query.get("resourceVersion", ["0"])[0])


@pytest.mark.slow
def test_a_restarted_api_server_and_compacted_etcd_lose_nothing_and_repeat_nothing(
        own_real_kube: RealKube, moto: Moto, prometheus: PrometheusServer, tmp_path: pathlib.Path) -> None:
    kube = own_real_kube
    began = time.monotonic()
    api = RealKubeAPI(kube)
    moto.reset()
    estate = aws_world.build(moto)
    config = kube.write_kubeconfig(tmp_path / "operator.kubeconfig", kube.admin_token, user="admin")
    with FaultProxy(moto.url) as proxy:
        operator = OperatorProcess(config, tmp_path, ["--prometheus-url", prometheus.url, "--aws-endpoint-url",
                                                      proxy.url, "--no-leader-election"]).start()
        try:
            api.create(detector("cpu", "web"))
            api.create(policy("web", "web"))
            wait_for(lambda: phases(api, "web") == ["Succeeded"], timeout=60, what="the first action Succeeded")
            assert proxy.hits("SetDesiredCapacity") == 1 and estate.desired(moto) == 3
            # The operator has seen everything so far (its own status writes included).
            wait_for(lambda: ((api.get(*RP, "default", "web") or {}).get("status") or {}).get("lastAction"),
                     what="the policy's lastAction")
            before = kube.etcd_revision()

            kube.kill_apiserver()
            # Written during the outage: a detector and a policy (which waits for approval, so that what it
            # proposes is visible without a second AWS call).
            kube.etcd_put("/registry/vigil.dev/anomalydetectors/default/cpu-b", stored(detector("cpu-b", "web-b")))
            kube.etcd_put("/registry/vigil.dev/remediationpolicies/default/web-b",
                          stored(policy("web-b", "web-b", approval={"required": True, "timeout": "10m"})))
            compacted = kube.compact()
            assert compacted > before
            outage, restarted = time.monotonic(), kube.audit_mark()
            kube.start_apiserver()
            print(f"kube-apiserver down and back in {time.monotonic() - outage:.1f}s")

            # Nothing lost: the objects written while the server was down are picked up after the re-list.
            wait_for(lambda: ((api.get(*AD, "default", "cpu-b") or {}).get("status") or {}).get("anomalous") is True,
                     timeout=90, what="the detector written during the outage evaluated")
            wait_for(lambda: phases(api, "web-b") == ["PendingApproval"], timeout=90,
                     what="the policy written during the outage proposes its action")
            # How: the operator's watches came back with resourceVersions from before the compaction, which
            # the new server answers with an ERROR event 410 Expired (inside a 200 stream), then it listed
            # again and watched from the list's resourceVersion.
            for plural in ("anomalydetectors", "remediationpolicies", "remediationactions"):
                requests = [(e["verb"], _resource_version(e["requestURI"])) for e in kube.audit_events(since=restarted)
                            if e.get("userAgent", "").startswith("kopf/")
                            and e["requestURI"].startswith(f"/apis/vigil.dev/v1alpha1/{plural}")
                            and e["responseStatus"].get("code") == 200]
                stale = [i for i, (verb, rv) in enumerate(requests) if verb == "watch" and rv < compacted]
                assert stale, f"{plural}: no watch resumed from before the compaction: {requests}"
                assert ("list", 0) in requests[stale[0]:], f"{plural}: no re-list after the 410: {requests}"
                answer = kube.watch(f"/apis/vigil.dev/v1alpha1/{plural}?resourceVersion="
                                    f"{requests[stale[0]][1]}&allowWatchBookmarks=true", timeout=1)
                assert answer and answer[0]["type"] == "ERROR" and answer[0]["object"]["code"] == 410, answer
            # Nothing repeated: one action of the first policy, one SetDesiredCapacity, while the operator
            # keeps deciding on the state it re-listed.
            steady(lambda: proxy.hits("SetDesiredCapacity") == 1 and phases(api, "web") == ["Succeeded"]
                   and phases(api, "web-b") == ["PendingApproval"], operator.passes, more=5,
                   what="no action repeated after the re-list")
            assert estate.desired(moto) == 3
            operator.stop()
            assert not operator.errors(), operator.errors()
            print(f"watch-fault test body: {time.monotonic() - began:.1f}s")
        finally:
            operator.stop()


@pytest.mark.slow
def test_the_api_server_dies_while_an_aws_call_is_in_flight(
        own_real_kube: RealKube, moto: Moto, prometheus: PrometheusServer, tmp_path: pathlib.Path) -> None:
    """kube-apiserver is killed while the operator waits for AWS's answer (moto has applied the change):
    the operator cannot record the result until the server is back, then records it once, and does not
    call AWS again."""
    kube = own_real_kube
    began = time.monotonic()
    api = RealKubeAPI(kube)
    moto.reset()
    estate = aws_world.build(moto)
    config = kube.write_kubeconfig(tmp_path / "operator.kubeconfig", kube.admin_token, user="admin")
    with FaultProxy(moto.url) as proxy:
        release = proxy.hold("SetDesiredCapacity", forward_first=True)  # moto applies it; the answer waits
        operator = OperatorProcess(config, tmp_path, ["--prometheus-url", prometheus.url, "--aws-endpoint-url",
                                                      proxy.url, "--no-leader-election"]).start()
        try:
            api.create(detector("cpu", "web"))
            api.create(policy("web", "web"))
            wait_for(lambda: proxy.hits("SetDesiredCapacity") == 1, timeout=60, what="the AWS call in flight")
            wait_for(lambda: estate.desired(moto) == 3, what="moto applied it")
            assert phases(api, "web") != ["Succeeded"]
            kube.kill_apiserver()
            release()  # the answer reaches the operator while it cannot write the status
            kube.compact()
            kube.start_apiserver()
            done = wait_for(lambda: [a for a in api.list(*RA, "default") if (a.get("status") or {}).get("phase")
                                     == "Succeeded"], timeout=90, what="the action recorded Succeeded")
            assert done[0]["status"]["after"]["desiredCapacity"] == 3
            steady(lambda: proxy.hits("SetDesiredCapacity") == 1 and phases(api, "web") == ["Succeeded"],
                   operator.passes, more=5, what="no second SetDesiredCapacity")
            assert estate.desired(moto) == 3
            operator.stop()
            assert not operator.errors(), operator.errors()
            print(f"in-flight test body: {time.monotonic() - began:.1f}s")
        finally:
            release()
            operator.stop()
