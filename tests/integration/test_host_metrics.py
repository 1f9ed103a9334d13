"""The node_exporter examples (examples/detectors/node-*.yaml) against a real node_exporter and Prometheus.

The Debian package ``prometheus-node-exporter`` (installed by scripts/bootstrap.sh) runs as a plain process on
a free port; the real Prometheus scrapes it every second, adding the ``instance_id`` label that EC2 service
discovery and relabelling give it in production (examples/detectors/prometheus-ec2-scrape.yaml); each example
is applied to the API emulator and evaluated by ``vigil run``.

A node_exporter that just started has seconds of history, not the model's window, and ``rate()`` needs two
samples: the test shortens the examples' ``[5m]`` ranges to ``[5s]`` and their interval and step to 1 s. What
it checks is what the README promises for a young series: the detector is Ready, every series of the query is
there, carries the instance id, and is scored or WarmingUp (never Missing); none of them is anomalous.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import OperatorFactory, conditions_of
from tests.harness import wait_for
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.ports import free_port
from vigil_sandbox.prometheus import PrometheusServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples/detectors").glob("node-*.yaml"))
INSTANCE_ID = "i-0123456789abcdef0"
AD = ("vigil.dev/v1alpha1", "anomalydetectors")
BINARY = "prometheus-node-exporter"


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[str]:
    binary = shutil.which(BINARY) or shutil.which("node_exporter")
    if binary is None:
        pytest.fail(f"{BINARY} is not on PATH: `make bootstrap` installs the Debian package {BINARY}")
    address = f"127.0.0.1:{free_port()}"
    # Every filesystem type counts: in a container "/" is an overlay, which node_exporter leaves out by default.
    process = subprocess.Popen([binary, f"--web.listen-address={address}",
                                "--collector.filesystem.fs-types-exclude=^(proc|sysfs|tmpfs|devtmpfs|cgroup2?)$"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(address), timeout=15, what="node_exporter listening")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def _up(address: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def prometheus(node_exporter: str) -> Iterator[PrometheusServer]:
    with PrometheusServer(scrape_targets=[node_exporter], drop_target_labels=False,
                          target_labels={"instance_id": INSTANCE_ID}) as server:
        server.wait_for_targets()
        yield server


def shortened(path: pathlib.Path) -> dict[str, Any]:
    body = yaml.safe_load(path.read_text())
    spec = body["spec"]
    assert "[5m]" in spec["query"] or "rate(" not in spec["query"], f"{path.name}: expected [5m] ranges"
    spec["query"] = spec["query"].replace("[5m]", "[5s]")
    spec.update(interval="1s", step="1s", **{"for": "0s"})
    return dict(body)


def test_there_is_a_node_exporter_example_per_resource() -> None:
    names = {p.stem for p in EXAMPLES}
    assert names == {"node-cpu", "node-memory", "node-disk-space", "node-disk-io", "node-network"}, names


def test_every_node_exporter_example_returns_series_and_is_ready(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer) -> None:
    # Every query answers in Prometheus itself first (with the shortened ranges), so a failure below is the
    # operator's, not the query's.
    bodies = [shortened(p) for p in EXAMPLES]
    for body in bodies:
        found = wait_for(lambda body=body: prometheus.query(body["spec"]["query"]), timeout=30,
                         what=f"{body['metadata']['name']} has samples")
        assert {s["metric"].get("instance_id") for s in found} == {INSTANCE_ID}, found
    operator = run_operator("--prometheus-url", prometheus.url, "--no-leader-election")
    for body in bodies:
        kubeapi.create(body)

    def evaluated(name: str, namespace: str) -> dict[str, Any] | None:
        found = kubeapi.get(*AD, namespace, name)
        status = (found or {}).get("status") or {}
        ready = conditions_of(found).get("Ready", {})
        return status if ready.get("status") == "True" and status.get("seriesCount") else None

    for body in bodies:
        meta = body["metadata"]
        status = wait_for(lambda meta=meta: evaluated(meta["name"], meta["namespace"]), timeout=60,
                          what=f"{meta['name']} Ready with series")
        assert status["seriesCount"] >= 1 and status["missingSeries"] == 0, (meta["name"], status)
        for series in status["series"]:
            assert series["labels"]["instance_id"] == INSTANCE_ID, (meta["name"], series)
            assert series["state"] in ("WarmingUp", "Normal"), (meta["name"], series)
        conditions = conditions_of(kubeapi.get(*AD, meta["namespace"], meta["name"]))
        assert conditions["Anomalous"]["status"] == "False", (meta["name"], conditions["Anomalous"])
        assert conditions["Anomalous"]["reason"] in ("WarmingUp", "Normal"), (meta["name"], conditions["Anomalous"])
        assert conditions["Degraded"]["status"] == "False", (meta["name"], conditions["Degraded"])
    assert not operator.errors()
