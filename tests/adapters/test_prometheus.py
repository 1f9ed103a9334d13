"""Classifying Prometheus answers (pure) and the source against a real Prometheus."""

from __future__ import annotations

import asyncio
import time

import pytest

from vigil.adapters.prometheus import PrometheusSource, SourceError, SourceErrorKind, classify_http, parse_matrix
from vigil.sandbox.prometheus import PrometheusServer, Series


@pytest.mark.parametrize(("code", "body", "kind"), [
    (400, '{"status":"error","errorType":"bad_data","error":"parse error"}', SourceErrorKind.INVALID_QUERY),
    (422, '{"status":"error","errorType":"execution","error":"many-to-many"}', SourceErrorKind.INVALID_QUERY),
    (503, '{"status":"error","errorType":"timeout","error":"query timed out"}', SourceErrorKind.TIMEOUT),
    (503, "upstream unavailable", SourceErrorKind.UNAVAILABLE),
    (502, "<html>bad gateway</html>", SourceErrorKind.UNAVAILABLE),
    (500, "boom", SourceErrorKind.SERVER_ERROR),
])
def test_http_answers_are_classified(code: int, body: str, kind: SourceErrorKind) -> None:
    error = classify_http(code, body)
    assert error.kind == kind and error.message.startswith(f"HTTP {code}: ")


def test_prometheus_error_text_is_kept() -> None:
    error = classify_http(400, '{"status":"error","errorType":"bad_data","error":"parse error at char 3"}')
    assert error.message == "HTTP 400: bad_data: parse error at char 3"


def test_matrix_values_parse_including_special_floats() -> None:
    payload = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"a": "1"}, "values": [[10, "1.5"], [20, "NaN"], [30, "+Inf"]]},
    ]}}
    (samples,) = parse_matrix(payload)
    assert samples.labels == {"a": "1"}
    assert samples.timestamps.tolist() == [10.0, 20.0, 30.0]
    assert samples.values[0] == 1.5 and str(samples.values[1]) == "nan" and samples.values[2] == float("inf")


def test_range_query_and_errors_against_a_real_prometheus() -> None:
    now = float(int(time.time()) // 60 * 60)
    series = Series("src_test", {"job": "x"}, [now - 120, now - 60, now], [1.0, 2.0, 3.0])

    async def scenario(url: str) -> tuple[list[float], SourceError, SourceError]:
        source = PrometheusSource(concurrency=2, timeout=5)
        try:
            (got,) = await source.query_range(url, "src_test", now - 120, now, 60)
            with pytest.raises(SourceError) as bad:
                await source.query_range(url, "src_test{", now - 120, now, 60)
            with pytest.raises(SourceError) as down:
                await source.query_range("http://127.0.0.1:1", "src_test", now - 120, now, 60)
            return got.values.tolist(), bad.value, down.value
        finally:
            await source.close()

    with PrometheusServer([series]) as prometheus:
        values, bad, down = asyncio.run(scenario(prometheus.url))
    assert values == [1.0, 2.0, 3.0]
    assert bad.kind == SourceErrorKind.INVALID_QUERY and "parse error" in bad.message
    assert down.kind == SourceErrorKind.UNAVAILABLE and "cannot connect" in down.message
