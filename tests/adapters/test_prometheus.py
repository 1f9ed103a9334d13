"""The Prometheus source against a real Prometheus, and its session settings."""

from __future__ import annotations

import asyncio
import base64
import http.server
import pathlib
import socket
import threading
import time
import urllib.request

import pytest

from vigil.adapters import prometheus
from vigil.adapters.prometheus import PrometheusSource, SourceError, SourceErrorKind
from vigil.domain.history import Samples
from vigil_sandbox.prometheus import PrometheusServer, Series


@pytest.mark.slow
@pytest.mark.parametrize("compression", list(prometheus.Compression), ids=lambda c: c.value)
def test_range_query_and_errors_against_a_real_prometheus(compression: prometheus.Compression) -> None:
    now = float(int(time.time()) // 60 * 60)
    series = Series("src_test", {"job": "x"}, [now - 120, now - 60, now], [1.0, 2.0, 3.0])
    # Enough series that Prometheus streams its answer chunked (gzip: urllib3 decodes that only when asked).
    wide = [Series("src_wide", {"i": str(i)}, [now - 120, now - 60, now], [float(i), 0.5, 2.0]) for i in range(1500)]

    async def scenario(url: str) -> tuple[list[float], SourceError, SourceError]:
        (got,) = await source.query_range(url, "src_test", now - 120, now, 60)
        many = await source.query_range(url, "src_wide", now - 120, now, 60)
        assert sorted(s.values[0] for s in many) == [float(i) for i in range(1500)]
        assert all(s.values[1:].tolist() == [0.5, 2.0] for s in many)
        with pytest.raises(SourceError) as bad:
            await source.query_range(url, "src_test{", now - 120, now, 60)
        with pytest.raises(SourceError) as down:
            await source.query_range("http://127.0.0.1:1", "src_test", now - 120, now, 60)
        return got.values.tolist(), bad.value, down.value

    source = PrometheusSource(concurrency=2, timeout=5, compression=compression)
    try:
        with PrometheusServer([series, *wide]) as server:
            values, bad, down = asyncio.run(scenario(server.url))
    finally:
        source.close()
    assert values == [1.0, 2.0, 3.0]
    assert bad.kind == SourceErrorKind.INVALID_QUERY and "parse error" in bad.message
    assert down.kind == SourceErrorKind.UNAVAILABLE and "cannot connect" in down.message


def test_proxy_and_ca_settings_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: pathlib.Path) -> None:
    """Read once per base URL, the settings requests would have read itself on every request."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "prometheus.monitoring.svc")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/custom.pem")
    proxied = prometheus._connection_for("https://thanos.example.com")
    assert proxied == prometheus.ConnectionSettings(proxy="http://proxy.example:3128", ca_certs="/etc/ssl/custom.pem")
    assert prometheus._connection_for("http://prometheus.monitoring.svc:9090").proxy is None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))  # a directory of CAs, as requests accepts
    assert prometheus._connection_for("https://thanos.example.com").ca_dir == str(tmp_path)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    default = prometheus._connection_for("https://thanos.example.com").ca_certs
    assert default is not None and default.endswith("cacert.pem") and pathlib.Path(default).is_file()


#: urllib without proxies, whatever the environment says (the proxy's own requests must not loop back).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answer_json(handler: http.server.BaseHTTPRequestHandler, body: bytes, encoding: str | None = None) -> None:
    """A 200 with ``body`` as Prometheus sent it (and its Content-Encoding, if any)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if encoding:
        handler.send_header("Content-Encoding", encoding)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """An HTTP forward proxy (absolute-URI requests, RFC 9112 3.2.2) that wants Basic credentials."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Proxy-Authorization")
        type(self).seen.append((self.path, auth))
        if auth != "Basic " + base64.b64encode(b"vigil:s3cret").decode():
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with _DIRECT.open(self.path, timeout=10) as upstream:  # the proxy's own leg, direct
            body = upstream.read()
        _answer_json(self, body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_queries_go_through_an_authenticated_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY with user:password@ and no scheme, as requests accepted it: the credentials reach the proxy."""
    now = float(int(time.time()) // 60 * 60)
    series = Series("src_proxied", {"job": "x"}, [now - 60, now], [4.0, 5.0])
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    source = PrometheusSource(concurrency=1, timeout=10)
    try:
        # Prometheus first: urllib's default opener reads the proxy settings when first used, so its
        # readiness checks must not go through the proxy (the test used to pass only after another test).
        with PrometheusServer([series]) as server:
            monkeypatch.setenv("HTTP_PROXY", f"vigil:s3cret@127.0.0.1:{proxy.server_port}")
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            settings = prometheus._connection_for(server.url)
            assert settings.proxy == f"http://127.0.0.1:{proxy.server_port}"
            assert "s3cret" not in repr(settings)
            (got,) = asyncio.run(source.query_range(server.url, "src_proxied", now - 60, now, 60))
    finally:
        source.close()
        proxy.shutdown()
        proxy.server_close()
    assert got.values.tolist() == [4.0, 5.0]
    [(path, auth)] = _ForwardProxy.seen
    assert path.startswith(f"{server.url}/api/v1/query_range?") and auth is not None


class _Relay(http.server.BaseHTTPRequestHandler):
    """Passes GETs on to ``upstream`` with their Accept-Encoding, and the answer back as it came;
    records (Accept-Encoding asked, Content-Encoding answered, bytes on the wire)."""

    upstream = ""
    seen: list[tuple[str | None, str | None, int]] = []

    def do_GET(self) -> None:
        asked = self.headers.get("Accept-Encoding")
        request = urllib.request.Request(self.upstream + self.path, headers={"Accept-Encoding": asked or "identity"})
        with _DIRECT.open(request, timeout=10) as answer:  # urllib never decodes: the bytes as sent
            body = answer.read()
            encoding = answer.headers.get("Content-Encoding")
        type(self).seen.append((asked, encoding, len(body)))
        _answer_json(self, body, encoding)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_answers_are_uncompressed_unless_gzip_is_asked_for() -> None:
    """--prometheus-compression: by default Prometheus is asked not to gzip (it costs its CPU several
    times over, bench/README.md); with gzip it compresses, and both read the same series."""
    now = float(int(time.time()) // 60 * 60)
    times = [now - 60 * k for k in range(199, -1, -1)]
    series = [Series("src_enc", {"i": str(i)}, times, [float(i) + 0.25 * (k % 7) for k in range(200)])
              for i in range(5)]
    relay = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Relay)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    sources = {c: PrometheusSource(concurrency=1, timeout=10, compression=c) for c in prometheus.Compression}
    _Relay.seen = []
    try:
        with PrometheusServer(series) as server:
            _Relay.upstream = server.url
            url = f"http://127.0.0.1:{relay.server_port}"
            got = {c: asyncio.run(source.query_range(url, "src_enc", times[0], now, 60))
                   for c, source in sources.items()}
    finally:
        for source in sources.values():
            source.close()
        relay.shutdown()
        relay.server_close()
    (plain_asked, plain_sent, plain_bytes), (gzip_asked, gzip_sent, gzip_bytes) = _Relay.seen
    assert (plain_asked, plain_sent) == ("identity", None)
    assert (gzip_asked, gzip_sent) == ("gzip", "gzip") and gzip_bytes < plain_bytes / 3
    for answer in got.values():
        assert sorted(s.labels["i"] for s in answer) == ["0", "1", "2", "3", "4"]
        assert all(s.values.size == 200 for s in answer)
    by_series = [{s.labels["i"]: s.values.tolist() for s in answer} for answer in got.values()]
    assert by_series[0] == by_series[1]


@pytest.mark.slow
def test_query_many_keeps_order_and_errors_in_place() -> None:
    """query_many (issue 16): one executor job per pool thread, results in the order asked, a failing
    query's error in its own place, against a real Prometheus."""
    now = float(int(time.time()) // 60 * 60)
    series = [Series("many_test", {"i": str(i)}, [now - 60, now], [float(i), float(i) + 0.5]) for i in range(6)]
    source = PrometheusSource(concurrency=3, timeout=5)
    try:
        with PrometheusServer(series) as server:
            queries = [(server.url, f'many_test{{i="{i}"}}', now - 60, now, 60.0) for i in range(6)]
            queries.insert(2, (server.url, "many_test{", now - 60, now, 60.0))
            results = asyncio.run(source.query_many(queries))
    finally:
        source.close()
    assert len(results) == 7
    bad = results.pop(2)
    assert isinstance(bad, SourceError) and bad.kind == SourceErrorKind.INVALID_QUERY
    for i, result in enumerate(results):
        assert isinstance(result, list) and len(result) == 1, result
        assert result[0].labels["i"] == str(i) and result[0].values.tolist() == [float(i), float(i) + 0.5]


@pytest.mark.slow
def test_query_each_hands_each_answer_to_then_in_the_pool_threads() -> None:
    """``then`` (issue 16: the evaluation merges each answer while the others are still answered) runs in a
    pool thread for every answer, not for a failed query; what it returns is that query's result (the
    answer itself is not kept), and an exception it raises is."""
    now = float(int(time.time()) // 60 * 60)
    series = [Series("then_test", {"i": str(i)}, [now - 60, now], [float(i), 1.0]) for i in range(4)]
    source = PrometheusSource(concurrency=2, timeout=5)
    threads: dict[int, str] = {}

    def then(index: int, answer: list[Samples]) -> str:
        threads[index] = threading.current_thread().name
        assert answer[0].labels["i"] == str(index)
        if index == 3:
            raise ValueError("the caller's work on this answer failed")
        return f"merged {index}"
    try:
        with PrometheusServer(series) as server:
            queries = [(server.url, f'then_test{{i="{i}"}}', now - 60, now, 60.0) for i in range(4)]
            results = asyncio.run(source.query_each([*queries, (server.url, "then_test{", now - 60, now, 60.0)],
                                                    then=then))
    finally:
        source.close()
    assert sorted(threads) == [0, 1, 2, 3] and threading.main_thread().name not in threads.values()
    assert results[:3] == ["merged 0", "merged 1", "merged 2"]
    assert [type(r).__name__ for r in results[3:]] == ["ValueError", "SourceError"]


def test_a_cancelled_query_many_starts_no_further_query() -> None:
    """Cancelled while its one thread waits on a server that never answers: that query runs to its
    timeout, and none of the other four is sent."""
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.1)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                accepted.append(conn)

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        source = PrometheusSource(concurrency=1, timeout=2)
        url = f"http://127.0.0.1:{port}"

        async def scenario() -> None:
            task = asyncio.ensure_future(source.query_many([(url, "up", 0.0, 60.0, 60.0)] * 5))
            deadline = time.monotonic() + 5
            while not accepted and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        try:
            asyncio.run(scenario())
            # Wait for the pool's thread to end: it ends the hung query at its 2 s timeout and would then
            # start the next one, had the cancel not stopped it. Every connection it made is counted by then.
            source._pool.shutdown(wait=True)
        finally:
            stop.set()
            acceptor.join(timeout=5)
            source.close()
            for conn in accepted:
                conn.close()
    assert len(accepted) == 1, f"{len(accepted)} queries were sent after the cancel"
