"""Prometheus stopping mid-run: Degraded, the verdict held, and recovery when it returns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import OperatorFactory, conditions_of, detector
from tests.harness import wait_for
from tests.integration import scenario
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer

AD = ("vigil.dev/v1alpha1", "anomalydetectors")


@pytest.fixture
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident")) as server:
        yield server


def test_outage_degrades_without_flipping_the_verdict(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                      prometheus: PrometheusServer) -> None:
    operator = run_operator("--prometheus-url", prometheus.url, "--prometheus-timeout", "2")
    kubeapi.create(detector("cpu", 'nab_cpu{scenario="incident"}', interval="1s", step="5m"))

    def conds() -> dict[str, dict[str, str]]:
        return conditions_of(kubeapi.get(*AD, "default", "cpu"))

    wait_for(lambda: conds().get("Anomalous", {}).get("status") == "True", timeout=30, what="anomalous")
    before = kubeapi.get(*AD, "default", "cpu")
    assert before is not None

    prometheus.kill()
    wait_for(lambda: conds().get("Degraded", {}).get("status") == "True", timeout=30, what="Degraded")
    during = kubeapi.get(*AD, "default", "cpu")
    assert during is not None
    degraded = conds()["Degraded"]
    assert degraded["reason"] == "PrometheusUnavailable" and "cannot connect" in degraded["message"]
    assert during["status"]["anomalous"] is True  # no verdict flip
    assert during["status"]["anomalousSince"] == before["status"]["anomalousSince"]
    assert conds()["Ready"]["status"] == "True" and conds()["Anomalous"]["status"] == "True"
    assert conds()["Anomalous"]["lastTransitionTime"] == conditions_of(before)["Anomalous"]["lastTransitionTime"]
    wait_for(lambda: (operator.value("vigil_prometheus_errors_total", kind="unavailable") or 0) >= 2,
             what="prometheus error counter")
    events = kubeapi.events_for("AnomalyDetector", "default", "cpu")
    assert [e["reason"] for e in events].count("PrometheusUnavailable") == 1
    assert not [e for e in events if e["reason"] == "AnomalyResolved"]

    prometheus.restart()
    wait_for(lambda: conds().get("Degraded", {}).get("status") == "False", timeout=60, what="recovered")
    after = kubeapi.get(*AD, "default", "cpu")
    assert after is not None and after["status"]["anomalous"] is True
    assert "consecutiveFailures" not in after["status"]  # removed: it went stale during outages
    # The Event is posted just after the status write that shows the recovery: wait for it, do not race it.
    wait_for(lambda: any(e["reason"] == "Recovered" for e in kubeapi.events_for("AnomalyDetector", "default", "cpu")),
             what="Recovered event")
    assert not operator.errors()
