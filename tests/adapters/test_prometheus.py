"""The Prometheus source against a real Prometheus, and its session settings."""

from __future__ import annotations

import asyncio
import time

import pytest

from vigil.adapters import prometheus
from vigil.adapters.prometheus import PrometheusSource, SourceError, SourceErrorKind
from vigil_sandbox.prometheus import PrometheusServer, Series


@pytest.mark.slow
def test_range_query_and_errors_against_a_real_prometheus() -> None:
    now = float(int(time.time()) // 60 * 60)
    series = Series("src_test", {"job": "x"}, [now - 120, now - 60, now], [1.0, 2.0, 3.0])

    async def scenario(url: str) -> tuple[list[float], SourceError, SourceError]:
        (got,) = await source.query_range(url, "src_test", now - 120, now, 60)
        with pytest.raises(SourceError) as bad:
            await source.query_range(url, "src_test{", now - 120, now, 60)
        with pytest.raises(SourceError) as down:
            await source.query_range("http://127.0.0.1:1", "src_test", now - 120, now, 60)
        return got.values.tolist(), bad.value, down.value

    source = PrometheusSource(concurrency=2, timeout=5)
    try:
        with PrometheusServer([series]) as server:
            values, bad, down = asyncio.run(scenario(server.url))
    finally:
        source.close()
    assert values == [1.0, 2.0, 3.0]
    assert bad.kind == SourceErrorKind.INVALID_QUERY and "parse error" in bad.message
    assert down.kind == SourceErrorKind.UNAVAILABLE and "cannot connect" in down.message


def test_proxy_and_ca_settings_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """trust_env is off for speed, so the session must carry what requests would have read itself."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "prometheus.monitoring.svc")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/custom.pem")
    proxied = prometheus._session_for("https://thanos.example.com")
    assert proxied.trust_env is False
    assert proxied.proxies.get("https") == "http://proxy.example:3128"
    assert proxied.verify == "/etc/ssl/custom.pem"
    assert prometheus._session_for("http://prometheus.monitoring.svc:9090").proxies == {}
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert prometheus._session_for("https://thanos.example.com").verify is True
