"""Issue 11, items 6, 8 and 15: an AnomalyDetector is hostile input too.

Item 6: one detector must not exhaust the operator (a 20k-series query took RSS to 1,274 MiB):
series cap, response byte cap, bounded labels in status and /metrics. Item 8: ``spec.prometheus.url``
must not be an SSRF channel, and a remote body must never reach status, Events or logs. Item 15:
absurd durations are refused by the schema, and reach the operator as Ready=False/InvalidSpec, never
as a traceback. Real peers: Prometheus 2.42 with promtool-loaded history, the API emulator, ``vigil
run`` as a subprocess, and, for the SSRF cases, a real HTTP server playing the internal target.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import http.server
import json
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import OperatorFactory, conditions_of, detector
from tests.harness import wait_for
from vigil.adapters import prometheus as promsource
from vigil.api import crdgen
from vigil.domain import labels
from vigil.domain.allowlist import AllowList
from vigil_sandbox.kubeapi import ApiError, KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer, Series

AD = ("vigil.dev/v1alpha1", "anomalydetectors")
STEP = 300.0
MANY = 2500  # series of `many_series`: above the default --max-series 2000
SECRET = "AKIA-SECRET-FROM-THE-METADATA-SERVICE"
LONG_VALUE = "x" * 5000


def _now_grid() -> float:
    return float(int(time.time() // STEP) * STEP)


#: The grid time the module's Prometheus history ends at: a query must use it, not a later `now` (on a
#: busy machine the clock may cross a STEP between the backfill and the query, and Prometheus's 5-minute
#: lookback then repeats the last point at the next step).
HISTORY_END: list[float] = []


@pytest.fixture(scope="module")
def prometheus_server() -> Iterator[PrometheusServer]:
    """``many_series``: 2,500 series of 12 points; ``long_labels``: one series with a 5,000-character
    label value and 40 labels, 60 points (enough for the built-in model to score it)."""
    now = _now_grid()
    HISTORY_END[:] = [now]
    rng = np.random.default_rng(6)
    short = now - STEP * np.arange(11, -1, -1)
    history = [Series("many_series", {"i": str(i)}, short, rng.normal(10, 1, short.size)) for i in range(MANY)]
    long_t = now - STEP * np.arange(59, -1, -1)
    wide = {f"l{k:02d}": f"v{k}" for k in range(40)}
    history.append(Series("long_labels", {"big": LONG_VALUE, **wide}, long_t, rng.normal(10, 1, long_t.size)))
    with PrometheusServer(history=history) as server:
        yield server


@pytest.fixture
def prometheus(prometheus_server: PrometheusServer) -> PrometheusServer:
    """The module's Prometheus under the conventional name (conftest marks its users slow)."""
    return prometheus_server


def _ready(kubeapi: KubeAPIServer, name: str) -> dict[str, str]:
    return conditions_of(kubeapi.get(*AD, "default", name))["Ready"]


def _not_ready(kubeapi: KubeAPIServer, name: str) -> dict[str, str]:
    ready = _ready(kubeapi, name)
    assert ready["status"] == "False", ready
    return ready


# --- Item 6: one detector can exhaust the operator -------------------------------------------------


def test_item6_a_query_over_max_series_is_ready_false_too_many_series(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer) -> None:
    """Item 6: 2,500 series against the default --max-series 2000 give Ready=False/TooManySeries with
    the numbers; a detector within the cap (here 3,000) is evaluated as before."""
    operator = run_operator("--prometheus-url", prometheus.url, "--no-leader-election")
    kubeapi.create(detector("broad", "many_series", interval="2s", step="5m"))
    ready = wait_for(lambda: _not_ready(kubeapi, "broad"), timeout=60, what="Ready=False")
    print(f"\nReady={ready['status']} {ready['reason']}: {ready['message']}")
    assert ready["reason"] == "TooManySeries"
    assert "more than 2000 series" in ready["message"] and "--max-series" in ready["message"]
    assert operator.value("vigil_prometheus_errors_total", kind="too-many-series")
    wait_for(lambda: any(e["reason"] == "TooManySeries" for e in kubeapi.events_for("AnomalyDetector", "default",
                                                                                       "broad")), what="Event")
    assert not operator.errors()
    operator.stop()

    raised = run_operator("--prometheus-url", prometheus.url, "--no-leader-election", "--max-series", "3000",
                          name="raised")
    kubeapi.delete(*AD, "default", "broad")
    kubeapi.create(detector("broad-raised", "many_series", interval="2s", step="5m"))
    wait_for(lambda: _ready(kubeapi, "broad-raised")["status"] == "True", timeout=60, what="Ready=True")
    assert (kubeapi.get(*AD, "default", "broad-raised") or {})["status"]["seriesCount"] == MANY
    assert not raised.errors()


@pytest.mark.slow
def test_item6_an_answer_over_max_response_bytes_is_refused_mid_stream(prometheus: PrometheusServer) -> None:
    """Item 6: past --max-response-bytes the source stops reading and says ResponseTooLarge; the
    series cap stops it even earlier, before the series over the cap is parsed."""
    now = HISTORY_END[0]

    async def query(source: promsource.PrometheusSource, promql: str) -> Any:
        try:
            return await source.query_range(prometheus.url, promql, now - 2015 * STEP, now, STEP)
        except promsource.SourceError as exc:
            return exc

    small = promsource.PrometheusSource(limits=promsource.Limits(max_series=10_000, max_response_bytes=200_000))
    capped = promsource.PrometheusSource(limits=promsource.Limits(max_series=100))
    wide = promsource.PrometheusSource(limits=promsource.Limits(max_series=MANY))
    try:
        too_large = asyncio.run(query(small, "many_series"))
        too_many = asyncio.run(query(capped, "many_series"))
        fits = asyncio.run(query(wide, "many_series"))
    finally:
        for source in (small, capped, wide):
            source.close()
    assert isinstance(too_large, promsource.SourceError), too_large
    assert too_large.kind == promsource.SourceErrorKind.RESPONSE_TOO_LARGE
    assert "0.190735 MiB" in too_large.message and "--max-response-bytes" in too_large.message
    assert isinstance(too_many, promsource.SourceError) and too_many.kind.value == "too-many-series"
    assert "more than 100 series" in too_many.message
    assert isinstance(fits, list) and len(fits) == MANY and all(s.values.size == 12 for s in fits)


def test_item6_series_labels_are_bounded_in_status_and_metrics(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer) -> None:
    """Item 6: a 5,000-character label value and 42 labels (with __name__) reach status and /metrics bounded: values
    at most 128 characters ending in a digest marker, at most 24 labels (one ``…`` for the rest)."""
    operator = run_operator("--prometheus-url", prometheus.url)
    kubeapi.create(detector("wide", "long_labels", interval="2s", step="5m"))

    def listed() -> list[dict[str, Any]]:
        status = (kubeapi.get(*AD, "default", "wide") or {}).get("status") or {}
        return [s for s in status.get("series", []) if s.get("score") is not None]

    (series,) = wait_for(listed, timeout=60, what="a scored series in status")
    shown = series["labels"]
    assert len(shown) == labels.MAX_LABELS and shown[labels.MORE].startswith("+19 labels #")
    assert len(shown["big"]) == labels.MAX_VALUE and shown["big"].startswith("xxx")
    assert "…" in shown["big"] and LONG_VALUE not in json.dumps(shown)
    samples = wait_for(lambda: [lab for lab, _ in operator.samples("vigil_detector_score")
                                if lab["detector"] == "wide"], what="score metric")
    (metric,) = samples
    print(f"\nstatus labels: {len(json.dumps(shown))} bytes; /metrics series label: {len(metric['series'])} chars")
    assert LONG_VALUE not in metric["series"] and 'big="xxx' in metric["series"]
    assert len(metric["series"]) < labels.MAX_LABELS * (labels.MAX_NAME + labels.MAX_VALUE + 4) + 2


# --- Item 8: spec.prometheus.url is an SSRF channel ------------------------------------------------


class Target:
    """A real HTTP server playing an internal service: it counts requests and answers what it is told."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.requests.append(self.path)
                code, headers, body = target.answer
                self.send_response(code)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


def test_item8_a_url_outside_the_allow_list_is_refused_without_any_request(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, target: Target) -> None:
    """Item 8: with no --prometheus-allowed-urls only --prometheus-url is allowed; any other URL gives
    Ready=False/PrometheusURLNotAllowed and the target never sees a request."""
    target.answer = (200, {"Content-Type": "text/plain"}, SECRET.encode())
    operator = run_operator("--prometheus-url", prometheus.url)
    kubeapi.create(detector("ssrf", "up", interval="1s", step="5m",
                            prometheus={"url": target.url + "/latest/meta-data"}))
    kubeapi.create(detector("trick", "up", interval="1s", step="5m",
                            prometheus={"url": prometheus.url.replace("127.0.0.1", "127.0.0.1@127.0.0.2")}))
    kubeapi.create(detector("default-url", "many_series", interval="1s", step="5m",
                            prometheus={"url": prometheus.url + "/"}))
    for name in ("ssrf", "trick"):
        def refused(name: str = name) -> dict[str, str]:
            return _not_ready(kubeapi, name)

        ready = wait_for(refused, timeout=60, what=f"{name} Ready=False")
        assert ready["reason"] == "PrometheusURLNotAllowed", ready
    assert "--prometheus-allowed-urls" in _ready(kubeapi, "ssrf")["message"]
    assert "credentials" in _ready(kubeapi, "trick")["message"]
    assert wait_for(lambda: _not_ready(kubeapi, "default-url"), timeout=60)["reason"] == "TooManySeries"
    wait_for(lambda: (operator.value("vigil_evaluations_total", result="config-error") or 0) >= 9,
             what="several evaluations of the refused detectors")
    assert target.requests == [], target.requests


def test_item8_a_remote_body_never_reaches_status_events_or_logs(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, target: Target) -> None:
    """Item 8: an allowed URL that is not a Prometheus (an HTML error page, a redirect to the metadata
    service) gives a status code and nothing of its body; a real Prometheus error keeps its
    errorType and a bounded, one-line ``error`` text."""
    other = Target()
    try:
        operator = run_operator("--prometheus-url", prometheus.url, "--log-level", "debug",
                                "--prometheus-allowed-urls", f"{target.url}/prom, {other.url}")
        cases: list[tuple[str, tuple[int, dict[str, str], bytes], str, str]] = [
            ("html-400", (400, {"Content-Type": "text/html"}, f"<h1>{SECRET}</h1>".encode()),
             "InvalidQuery", "HTTP 400 Bad Request (not a Prometheus API error; the body is not shown)"),
            ("html-500", (500, {}, SECRET.encode() * 1000), "PrometheusError", "HTTP 500 Internal Server Error"),
            ("redirect", (302, {"Location": f"{other.url}/latest/meta-data"}, SECRET.encode()), "PrometheusError",
             "redirects are not followed"),
            ("json-200", (200, {}, json.dumps({"secret": SECRET}).encode()), "PrometheusError",
             "not a Prometheus range-query result"),
            ("prom-error", (400, {}, json.dumps({"status": "error", "errorType": "bad_data",
                                                 "error": "parse error:\n\x1b[31mbad" + "!" * 500}).encode()),
             "InvalidQuery", "HTTP 400 bad_data: parse error: \x1b"[:-1]),
        ]
        for name, answer, reason, text in cases:
            target.answer = answer
            requests_before = len(target.requests)
            kubeapi.create(detector(name, "up", interval="1s", step="5m", prometheus={"url": f"{target.url}/prom"}))

            def failed(name: str = name, reason: str = reason) -> dict[str, str]:
                conds = conditions_of(kubeapi.get(*AD, "default", name))
                return {c["reason"]: c for c in conds.values() if c["status"] != "Unknown"}[reason]

            condition = wait_for(failed, timeout=60, what=f"{name}: {reason}")
            print(f"\n{name}: {condition['type']}={condition['status']} {reason}: {condition['message']}")
            assert text in condition["message"], condition
            assert SECRET not in condition["message"] and "\x1b" not in condition["message"]
            assert len(condition["message"]) < 300
            assert len(target.requests) > requests_before
            kubeapi.delete(*AD, "default", name)
        assert other.requests == []  # the redirect was not followed
        wait_for(lambda: any(e["reason"] == "InvalidQuery" for e in kubeapi.events_for(
            "AnomalyDetector", "default", "html-400")), what="the html-400 Event")
        everything = json.dumps([kubeapi.events_for("AnomalyDetector", "default", name) for name, *_ in cases])
        assert SECRET not in everything
        assert SECRET not in operator.log() and "<h1>" not in operator.log()
    finally:
        other.close()


def test_item8_allow_list_entries_compare_parsed_urls_not_string_prefixes() -> None:
    """Item 8: the allow-list matches scheme, host, port and a path boundary; credentials, queries
    and look-alike hosts are refused; ``*`` opens it; a malformed entry is refused at start."""
    allowed = AllowList.parse("http://prom.monitoring:9090, https://thanos.example.com/api/", "http://default:9090")
    yes = ["http://prom.monitoring:9090", "http://PROM.monitoring:9090/", "http://prom.monitoring:9090/sub",
           "https://thanos.example.com/api", "https://thanos.example.com:443/api/v1", "http://default:9090"]
    no = ["http://prom.monitoring:9091", "https://prom.monitoring:9090", "http://prom.monitoring.evil.com:9090",
          "http://prom.monitoring:9090@evil.com", "http://user:pw@prom.monitoring:9090",
          "http://prom.monitoring:9090/?x=1", "https://thanos.example.com/apix", "https://thanos.example.com/",
          "http://169.254.169.254/latest/meta-data", "http://default:80", "file:///etc/passwd"]
    assert [u for u in yes if not allowed.allows(u)] == []
    assert [u for u in no if allowed.allows(u)] == []
    assert AllowList.parse("", "http://default:9090").allows("http://default:9090/")
    assert not AllowList.parse("", None).allows("http://default:9090")
    assert AllowList.parse("*", None).allows("http://anything:1")
    with pytest.raises(ValueError, match="credentials"):
        AllowList.parse("http://u:p@prom:9090", None)


# --- Item 15: absurd durations ----------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ({"step": "60w"}, "spec.step: Invalid value: \"60w\": must be at most 1d"),
    ({"interval": "99999999999999999999w"}, "spec.interval in body should match"),
    ({"interval": "8d", "step": "1h"}, "spec.interval: Invalid value: \"8d\": must be at most 7d"),
    ({"interval": "2d"}, "step defaults to interval, which is above 1d"),
    ({"lookback": "20000d"}, "spec.lookback: Invalid value: \"20000d\": must be at most 10000d"),
    ({"for": "30m1h"}, "spec.for in body should match"),
])
def test_item15_absurd_durations_are_refused_by_the_schema(kubeapi: KubeAPIServer, spec: dict[str, str],
                                                           message: str) -> None:
    """Item 15: the CRD bounds every detector duration (Prometheus syntax, a CEL maximum)."""
    with pytest.raises(ApiError) as error:
        kubeapi.create(detector("absurd", "up", **spec))
    assert error.value.code == 422
    assert message in str(error.value.message), error.value.message
    kubeapi.create(detector("sane", "up", interval="7d", step="1d", lookback="10000d", **{"for": "1h30m"}))


def _unbounded_crds() -> list[dict[str, Any]]:
    """Today's CRDs with the duration bounds taken out: the schema a stored object may predate."""
    crds = copy.deepcopy(crdgen.all_crds())
    for crd in crds:
        if crd["spec"]["names"]["kind"] != "AnomalyDetector":
            continue
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        spec["x-kubernetes-validations"] = [r for r in spec["x-kubernetes-validations"] if "step" not in r["rule"]]
        for field in ("interval", "step", "lookback", "for"):
            for key in ("pattern", "x-kubernetes-validations"):
                spec["properties"][field].pop(key, None)
    return crds


@pytest.mark.slow
def test_item15_absurd_durations_already_stored_give_ready_false_invalid_spec(
        run_operator: OperatorFactory, prometheus: PrometheusServer, tmp_path: pathlib.Path) -> None:
    """Item 15: objects admitted before the bounds (``step: 60w`` raised ``year -291 is out of range``,
    a 20-digit interval an OverflowError, both reported as Degraded/PrometheusError) now give
    Ready=False/InvalidSpec naming the bound; the operator logs no traceback."""
    with KubeAPIServer(crds=_unbounded_crds(), bookmark_interval=0.2) as old:
        operator = run_operator("--prometheus-url", prometheus.url,
                                config=old.write_kubeconfig(tmp_path / "old-kubeconfig"))
        cases = {
            "step-60w": ({"step": "60w", "interval": "1s"}, "spec.step: Value error, must be at most 1d"),
            "huge-interval": ({"interval": "99999999999999999999w"}, "spec.interval: String should match"),
            "interval-2d": ({"interval": "2d"}, "step defaults to interval 2d, which is above the largest step 1d"),
        }
        for name, (spec, _) in cases.items():
            old.create(detector(name, "many_series", **spec))
        for name, (_, text) in cases.items():
            def readiness(name: str = name) -> dict[str, str]:
                return conditions_of(old.get(*AD, "default", name))["Ready"]

            ready = wait_for(readiness, timeout=60, what=f"{name} Ready")
            print(f"\n{name}: Ready={ready['status']} {ready['reason']}: {ready['message'][:160]}")
            assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec"), ready
            assert text in ready["message"], ready
            degraded = conditions_of(old.get(*AD, "default", name)).get("Degraded") or {}
            assert degraded.get("status") != "True", degraded
        assert not operator.errors(), operator.errors()


def test_item6_the_streamed_parse_equals_json_loads_at_any_chunk_boundary() -> None:
    """Item 6: the series-by-series parser reads exactly what json.loads reads, however the body is
    cut into chunks (split inside strings, numbers, escapes and multi-byte characters); truncated
    bodies and non-matrix answers are refused, never half-read."""
    from vigil.adapters import promjson

    rng = np.random.default_rng(15)
    result: list[dict[str, Any]] = [{"metric": {"__name__": "m", "i": str(i), "odd": 'a"b\\c]}{,é✓\u2028'},
               "values": [[1700000000 + 300 * k, repr(float(v))] for k, v in enumerate(rng.normal(0, 1e6, 7))]}
              for i in range(30)]
    result[3]["values"].append([1700009000.5, "NaN"])
    budget = promjson.Budget(max_series=100, max_bytes=1 << 20, points=10)
    for indent in (None, 1):  # compact, and with whitespace between every token
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result},
                           "warnings": ["w"]}, ensure_ascii=False, indent=indent).encode()
        for size in (1, 2, 3, 7, 64, 1000, len(body)):
            chunks = iter([body[i:i + size] for i in range(0, len(body), size)])
            got = promjson.read_matrix(chunks, budget)
            assert [s.labels for s in got] == [r["metric"] for r in result]
            for s, r in zip(got, result, strict=True):
                np.testing.assert_array_equal(s.timestamps, [float(t) for t, _ in r["values"]])
                np.testing.assert_array_equal(s.values, [float(v) for _, v in r["values"]])
    for bad in (body[:-40], b'{"status":"success","data":{"resultType":"vector","result":[]}}', b"<html>", b""):
        with pytest.raises(promjson.Malformed):
            promjson.read_matrix(iter([bad]), budget)
    with pytest.raises(promjson.TooManySeries, match="more than 29 series"):
        promjson.read_matrix(iter([body]), dataclasses.replace(budget, max_series=29))
    huge = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"big": "x" * (promjson.SERIES_LABEL_BYTES + 1024)}, "values": []}]}}).encode()
    with pytest.raises(promjson.TooLarge, match="one series"):
        promjson.read_matrix(iter([huge[i:i + 4096] for i in range(0, len(huge), 4096)]),
                             dataclasses.replace(budget, points=1))
    with pytest.raises(promjson.TooLarge, match="--max-response-bytes"):
        promjson.read_matrix(iter([body]), dataclasses.replace(budget, max_bytes=len(body) - 1))
    assert promjson.error_message(503, b'{"status":"error","errorType":"timeout","error":"query timed out"}') == (
        "timeout", "HTTP 503 timeout: query timed out")


def test_item15_the_cel_bound_agrees_with_the_operator_on_every_duration(kubeapi: KubeAPIServer) -> None:
    """Item 15: the CEL arithmetic the API server runs and the operator's own parse agree at the
    bounds: just under is admitted, just over refused, whatever the units."""
    cases = {"6d23h59m59s999ms": True, "7d": True, "1w": True, "10080m": True, "604800s": True,
             "604800000ms": True, "1w1ms": False, "7d1s": False, "604801s": False, "10081m": False,
             "168h1m": False, "1m5ms": True}
    for i, (interval, admitted) in enumerate(cases.items()):
        try:
            kubeapi.create(detector(f"d{i}", "up", interval=interval, step="1h"))
            got = True
        except ApiError as error:
            assert "must be at most 7d" in str(error.message), error.message
            got = False
        assert got == admitted, interval
