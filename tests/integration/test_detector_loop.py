"""The AnomalyDetector loop end to end: real Prometheus, the API emulator, ``vigil run`` as a subprocess."""

from __future__ import annotations

import base64
import datetime
import hashlib
import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.conftest import OperatorFactory, conditions_of, detector
from tests.harness import OperatorProcess, wait_for
from tests.integration import scenario
from vigil.adapters import inference
from vigil_sandbox.kubeapi import ApiError, KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer

KEY = "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv"
AD = ("vigil.dev/v1alpha1", "anomalydetectors")


@pytest.fixture(scope="module")
def scorer() -> inference.Scorer:
    return inference.Scorer(inference.builtin_bytes())


@pytest.fixture(scope="module")
def scenarios(scorer: inference.Scorer) -> dict[str, scenario.Scenario]:
    return {
        "incident": scenario.build(KEY, "nab_cpu", {"scenario": "incident"}, "incident", scorer),
        "normal": scenario.build(KEY, "nab_cpu", {"scenario": "normal"}, "normal", scorer),
    }


@pytest.fixture(scope="module")
def prometheus(scenarios: dict[str, scenario.Scenario]) -> Iterator[PrometheusServer]:
    with PrometheusServer(history=[s.series for s in scenarios.values()]) as server:
        yield server


@pytest.fixture
def operator(run_operator: OperatorFactory, prometheus: PrometheusServer) -> OperatorProcess:
    return run_operator("--prometheus-url", prometheus.url, "--heartbeat", "3")


def status_of(kubeapi: KubeAPIServer, name: str, namespace: str = "default") -> dict[str, object]:
    obj = kubeapi.get(*AD, namespace, name) or {}
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    return status


def ready(kubeapi: KubeAPIServer, name: str) -> dict[str, object] | None:
    status = status_of(kubeapi, name)
    conds = conditions_of({"status": status})
    return status if conds.get("Ready", {}).get("status") == "True" and status.get("score") is not None else None


def test_incident_is_detected_with_the_backtest_score(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                       scenarios: dict[str, scenario.Scenario]) -> None:
    kubeapi.create(detector("cpu-incident", 'nab_cpu{scenario="incident"}', interval="1s", step="5m"))
    status = wait_for(lambda: ready(kubeapi, "cpu-incident"), timeout=30, what="Ready with a score")
    conds = conditions_of({"status": status})
    assert conds["Anomalous"]["status"] == "True", conds
    assert conds["Anomalous"]["reason"] == "AnomalyDetected"
    assert conds["Degraded"]["status"] == "False"
    assert status["anomalous"] is True and status["anomalousSince"]
    model = status["model"]
    assert isinstance(model, dict) and model["source"] == "builtin:default" and len(model["sha256"]) == 64
    assert model["inputSignature"].startswith("features: tensor(float)[N,")
    series = status["series"]
    assert isinstance(series, list) and series[0]["labels"]["scenario"] == "incident"
    assert series[0]["state"] == "Anomalous"
    # Issue 15: the anomalous series says why, in words, from the built-in model's exact contributions.
    why = series[0]["why"]
    assert isinstance(why, list) and 1 <= len(why) <= 3 and all(0 < len(w) <= 120 for w in why), why
    assert "of the last 7 days" in why[0], why
    # The live score is the backtest's score at the grid point the operator evaluated.
    evaluated_at = datetime.datetime.fromisoformat(str(status["lastEvaluationTime"]).replace("Z", "+00:00"))
    evaluated = scenario.STEP * (int(evaluated_at.timestamp()) // int(scenario.STEP))
    expected, flagged = scenarios["incident"].expected_at(evaluated)
    assert flagged
    assert status["score"] == pytest.approx(expected, abs=1e-5)
    # The labelled incident window really is where we are.
    original = evaluated - scenarios["incident"].offset
    assert scenarios["incident"].window[0] <= original <= scenarios["incident"].window[1]

    # The Events follow the status write (best effort, posted after it): wait for them, do not race them.
    def both_events() -> list[dict[str, object]]:
        events = kubeapi.events_for("AnomalyDetector", "default", "cpu-incident")
        assert {"AnomalyDetected", "Ready"} <= {e["reason"] for e in events}
        return events

    events = wait_for(both_events, timeout=10, what="the Ready and AnomalyDetected Events")
    assert [e["reason"] for e in events if e["reason"] == "AnomalyDetected"] == ["AnomalyDetected"]
    assert any(e["reason"] == "Ready" for e in events)

    metrics = wait_for(lambda: operator.samples("vigil_detector_score"), what="score metric")
    assert any(labels["detector"] == "cpu-incident" and 'scenario="incident"' in labels["series"]
               for labels, _ in metrics)
    assert operator.value("vigil_detector_anomalous", namespace="default", detector="cpu-incident") == 1.0
    assert operator.value("vigil_evaluations_total", result="evaluated")
    assert operator.samples("vigil_evaluation_duration_seconds_count")
    # Every collection is timed, and once start-up was over (all detectors evaluated) the survivors were frozen.
    assert operator.value("vigil_gc_pause_seconds_count", generation="0")
    wait_for(lambda: "objects moved out of the garbage collector's walk" in operator.log(), what="gc.freeze")
    assert not operator.errors()


def test_normal_period_is_not_anomalous(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                        scenarios: dict[str, scenario.Scenario]) -> None:
    kubeapi.create(detector("cpu-normal", 'nab_cpu{scenario="normal"}', interval="1s", step="5m", sensitivity="low"))
    status = wait_for(lambda: ready(kubeapi, "cpu-normal"), timeout=30, what="Ready")
    assert status["anomalous"] is False
    # spec.sensitivity: low maps through the built-in model's calibration table (issue 15).
    table = inference.Scorer(inference.builtin_bytes()).info.sensitivity_table
    assert table is not None and status["threshold"] == pytest.approx(dict(table)[0.25])
    assert status["threshold"] > status["model"]["recommendedThreshold"]  # type: ignore[index]
    assert conditions_of({"status": status})["Anomalous"]["reason"] == "Normal"
    assert not [e for e in kubeapi.events_for("AnomalyDetector", "default", "cpu-normal")
                if e["reason"] == "AnomalyDetected"]


def test_many_series_are_scored_separately_in_one_query(kubeapi: KubeAPIServer, operator: OperatorProcess) -> None:
    kubeapi.create(detector("cpu-both", "nab_cpu", interval="1s", step="5m", topK=5))
    status = wait_for(lambda: ready(kubeapi, "cpu-both"), timeout=30, what="Ready")
    states = {s["labels"]["scenario"]: s["state"] for s in status["series"]}  # type: ignore[union-attr]
    assert states == {"incident": "Anomalous", "normal": "Normal"}
    assert status["seriesCount"] == 2 and status["anomalousSeries"] == 1
    assert status["series"][0]["labels"]["scenario"] == "incident"  # type: ignore[index]


def test_start_up_progress_and_one_metric_by_name(kubeapi: KubeAPIServer, operator: OperatorProcess) -> None:
    """vigil_detectors_unevaluated counts the detectors this process has not evaluated yet, and
    /metrics?name[]= renders only what is asked for (a poller need not render every detector's scores)."""
    unevaluated = "vigil_detectors_unevaluated"
    for name in ("cpu-a", "cpu-b"):
        kubeapi.create(detector(name, "nab_cpu", interval="1s", step="5m"))
    wait_for(lambda: ready(kubeapi, "cpu-a") and ready(kubeapi, "cpu-b"), timeout=30, what="both Ready")
    assert operator.value(unevaluated) == 0
    assert operator.value("vigil_detector_score") is not None
    status, only = operator.get(f"/metrics?name[]={unevaluated}&name[]=vigil_status_writes_pending")
    assert status == 200
    assert f"{unevaluated} 0.0" in only and "vigil_status_writes_pending " in only
    assert "vigil_detector_score" not in only and "vigil_evaluations_total" not in only
    status, refused = operator.get("/metrics?" + "&".join(["name[]=x"] * 51))
    assert status == 400 and "at most 50" in refused


def test_status_is_written_on_change_and_heartbeat_only(kubeapi: KubeAPIServer, operator: OperatorProcess) -> None:
    kubeapi.create(detector("cpu-quiet-writes", 'nab_cpu{scenario="normal"}', interval="1s", step="5m"))
    wait_for(lambda: ready(kubeapi, "cpu-quiet-writes"), timeout=30, what="Ready")

    def writes() -> int:
        return kubeapi.count_requests(method="PATCH", plural="anomalydetectors", name="cpu-quiet-writes",
                                      subresource="status")

    first = writes()
    evaluations = operator.value("vigil_evaluations_total", result="evaluated") or 0
    wait_for(lambda: (operator.value("vigil_evaluations_total", result="evaluated") or 0) >= evaluations + 8,
             timeout=30, what="8 more evaluations")
    # ~8 evaluations at 1s with a 3s heartbeat: a few heartbeat writes, never one per evaluation.
    assert writes() - first <= 4, writes() - first
    # ... and yet each evaluation's score reaches the API with the next write (the dashboard's sparklines)
    def history() -> list[dict[str, object]]:
        points = status_of(kubeapi, "cpu-quiet-writes").get("scoreHistory")
        return points if isinstance(points, list) and len(points) >= 8 else []

    history = wait_for(history, timeout=30, what="8 scores written with a heartbeat")
    times = [str(point["time"]) for point in history]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(isinstance(point.get("score"), float) for point in history), history


@pytest.mark.parametrize(("spec", "message"), [
    ({"query": "up", "threshold": 2}, "spec.threshold: Invalid value"),
    ({"query": "up", "interval": "5 minutes"}, "spec.interval"),
    ({"interval": "1m"}, "spec.query: Required value"),
    ({"query": "up", "missingData": "maybe"}, "spec.missingData: Unsupported value"),
    ({"query": "up", "model": {"builtin": "default", "configMapRef": {"name": "m", "key": "k"}}},
     "set either builtin or configMapRef"),
    ({"query": "up", "interval": "0s"}, "spec.interval"),
])
def test_bad_specs_are_rejected_by_the_schema(kubeapi: KubeAPIServer, spec: dict[str, object], message: str) -> None:
    body = {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
            "metadata": {"name": "bad", "namespace": "default"}, "spec": spec}
    with pytest.raises(ApiError) as error:
        kubeapi.create(body)
    assert error.value.code == 422
    assert message in str(error.value.message), error.value.message


def _ready_reason(kubeapi: KubeAPIServer, name: str) -> tuple[str, str, str] | None:
    conds = conditions_of(kubeapi.get(*AD, "default", name))
    ready_ = conds.get("Ready")
    if not ready_ or ready_["status"] != "False":
        return None
    return ready_["status"], ready_["reason"], ready_["message"]


def test_wrong_but_valid_specs_give_precise_reasons(kubeapi: KubeAPIServer, operator: OperatorProcess,
                                                    tmp_path: pathlib.Path) -> None:
    kubeapi.create(detector("bad-query", "sum(nab_cpu", interval="1s", step="5m"))
    kubeapi.create(detector("no-configmap", "nab_cpu", interval="1s", step="5m",
                            model={"configMapRef": {"name": "absent", "key": "model.onnx"}}))
    kubeapi.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken", "namespace": "default"},
                    "binaryData": {"model.onnx": base64.b64encode(b"this is not onnx").decode()}})
    kubeapi.create(detector("broken-model", "nab_cpu", interval="1s", step="5m",
                            model={"configMapRef": {"name": "broken", "key": "model.onnx"}}))
    kubeapi.create(detector("pinned", "nab_cpu", interval="1s", step="5m", model={"sha256": "0" * 64}))
    kubeapi.create(detector("short-lookback", "nab_cpu", interval="1s", step="5m", lookback="10m"))

    expectations = {
        "bad-query": ("InvalidQuery", "parse error"),
        "no-configmap": ("ModelNotFound", "ConfigMap default/absent not found"),
        "broken-model": ("ModelInvalid", "not a loadable ONNX model"),
        "pinned": ("ModelDigestMismatch", hashlib.sha256(inference.builtin_bytes()).hexdigest()),
        "short-lookback": ("InvalidSpec", "lookback 10m is shorter than the model needs"),
    }
    for name, (reason, text) in expectations.items():
        got = wait_for(lambda name=name: _ready_reason(kubeapi, name), timeout=30, what=f"{name} Ready=False")
        assert got[1] == reason, (name, got)
        assert text in got[2], (name, got)
        # The Event follows the status write (best effort, posted after it): wait for it, do not race it.
        wait_for(lambda name=name, reason=reason: any(
            e["reason"] == reason and e["type"] == "Warning"
            for e in kubeapi.events_for("AnomalyDetector", "default", name)), timeout=10, what=f"{name} Event")
    assert operator.value("vigil_prometheus_errors_total", kind="invalid-query")
    assert operator.proc is not None and operator.proc.poll() is None  # the operator never crashes


def test_paused_detector(kubeapi: KubeAPIServer, operator: OperatorProcess) -> None:
    kubeapi.create(detector("paused", "nab_cpu", interval="1s", step="5m", paused=True))
    got = wait_for(lambda: _ready_reason(kubeapi, "paused"), timeout=30, what="Paused")
    assert got[1] == "Paused"


def test_a_query_over_the_series_cap_backs_off_and_an_edit_retries_at_once(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer) -> None:
    """TooManySeries every interval would make Prometheus evaluate the over-broad query forever: the waits
    double (2, 4, 8... intervals) and Ready's message says when the next attempt comes."""
    operator = run_operator("--prometheus-url", prometheus.url, "--max-series", "1", "--heartbeat", "3",
                            name="capped")
    kubeapi.create(detector("too-broad", "nab_cpu", interval="1s", step="5m"))  # 2 series > 1

    def refused(times: int) -> str | None:
        got = _ready_reason(kubeapi, "too-broad")
        return got[2] if got and got[1] == "TooManySeries" and f"refused {times} time(s)" in got[2] else None

    first = wait_for(lambda: refused(1), timeout=30, what="the first refusal")
    assert "next attempt at" in first and "editing the spec retries at once" in first
    seen_first = time.monotonic()
    wait_for(lambda: refused(3), timeout=30, what="the third refusal")
    # Attempts 2 and 3 came after waits of about 2 and 4 intervals, not 1 and 1.
    assert time.monotonic() - seen_first >= 3.0  # at least 2 + 4 intervals minus polling slack (2 without back-off)
    attempts = operator.value("vigil_prometheus_errors_total", kind="too-many-series") or 0
    assert 3 <= attempts <= 4, attempts
    # An edit (a new generation) is tried at once and starts the count over.
    kubeapi.patch(*AD, "default", "too-broad", {"spec": {"interval": "2s"}})
    wait_for(lambda: refused(1), timeout=15, what="a retry right after the edit")
    assert not operator.errors()


def test_a_restart_continues_the_heartbeat_instead_of_rewriting_every_status(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer) -> None:
    """A new `vigil run` (an upgrade, a restart) reads each detector's lastEvaluationTime as its last write:
    an unchanged status is not written again until the heartbeat from then is due."""
    name = "cpu-restart-writes"
    kubeapi.create(detector(name, 'nab_cpu{scenario="normal"}', interval="1s", step="5m"))

    def writes() -> int:
        return kubeapi.count_requests(method="PATCH", plural="anomalydetectors", name=name, subresource="status")

    def evaluated(process: OperatorProcess) -> float:
        return process.value("vigil_evaluations_total", result="evaluated") or 0

    first = run_operator("--prometheus-url", prometheus.url, "--heartbeat", "600")
    wait_for(lambda: ready(kubeapi, name), timeout=30, what="Ready")
    # Settled: three evaluations without a write (the first ones may still change the conditions).
    mark = {"writes": -1, "evaluated": 0.0}

    def settled() -> bool:
        count, done = writes(), evaluated(first)
        if count != mark["writes"]:
            mark.update(writes=count, evaluated=done)
            return False
        return done - mark["evaluated"] >= 3

    wait_for(settled, timeout=30, interval=1.0, what="three evaluations without a status write")
    first.stop()
    before, stamped = writes(), status_of(kubeapi, name).get("lastEvaluationTime")
    second = run_operator("--prometheus-url", prometheus.url, "--heartbeat", "600", name="restarted")
    wait_for(lambda: evaluated(second) >= 3, timeout=30, what="three evaluations by the new process")
    assert writes() == before, "the restarted operator rewrote an unchanged status"
    assert stamped and status_of(kubeapi, name).get("lastEvaluationTime") == stamped  # the first process' write
