"""Range queries against Prometheus, built on prometheus-api-client.

prometheus-api-client is synchronous (requests), so queries run in a bounded
thread pool: the pool size is the concurrency limit against Prometheus, and the
event loop never blocks on the network. Its own retries are disabled: a failed
evaluation is retried by the scheduler at the next interval, and retrying
inside one evaluation would only stretch an outage into timeouts.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import datetime
import enum
import json
import os
import re
import threading
from typing import Any

import numpy as np
import requests
import requests.adapters
import urllib3.util
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from vigil.domain.history import Samples


class SourceErrorKind(enum.Enum):
    INVALID_QUERY = "invalid-query"  # HTTP 400/422: the user's PromQL is wrong
    UNAVAILABLE = "unavailable"  # connection refused, DNS, TLS, HTTP 503
    TIMEOUT = "timeout"  # client or server-side timeout
    SERVER_ERROR = "server-error"  # other non-200 answers


class SourceError(Exception):
    """A classified Prometheus failure with a message fit for a condition."""

    def __init__(self, kind: SourceErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_STATUS = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.S)


def _classify_http(exc: PrometheusApiClientException) -> SourceError:
    """Recover the status code and Prometheus' own error text from the client's exception."""
    match = _STATUS.match(str(exc))
    if not match:
        return SourceError(SourceErrorKind.SERVER_ERROR, str(exc)[:500])
    code = int(match.group(1))
    detail = match.group(2)
    try:
        body = ast.literal_eval(detail)
        payload = json.loads(body.decode() if isinstance(body, bytes) else body)
        detail = f"{payload.get('errorType', 'error')}: {payload.get('error', '')}"
    except (ValueError, SyntaxError, AttributeError, json.JSONDecodeError):
        pass
    text = f"HTTP {code}: {detail}"[:1000]
    if code in (400, 422):
        return SourceError(SourceErrorKind.INVALID_QUERY, text)
    if code == 503 and "timeout" in detail:
        return SourceError(SourceErrorKind.TIMEOUT, text)
    if code in (502, 503, 504):
        return SourceError(SourceErrorKind.UNAVAILABLE, text)
    return SourceError(SourceErrorKind.SERVER_ERROR, text)


def _parse(result: list[dict[str, Any]]) -> list[Samples]:
    samples = []
    for item in result:
        values = item.get("values") or []
        timestamps = np.array([float(t) for t, _ in values], dtype=np.float64)
        numbers = np.array([float(v) for _, v in values], dtype=np.float64)  # "NaN", "+Inf" parse too
        samples.append(Samples(labels=dict(item.get("metric") or {}), timestamps=timestamps, values=numbers))
    return samples


def _session_for(url: str) -> requests.Session:
    """A session with the environment's proxy and CA settings resolved once, not on every request.

    requests re-reads the proxy variables (and scans the whole environment for
    them) on every request when ``trust_env`` is on; bench/scale.py's profiles put
    that at a quarter of the operator's CPU for thousands of detectors. The
    settings are the same ones requests would find (``HTTPS_PROXY``/``NO_PROXY``,
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``), read when the first query to
    ``url`` is made; a change to them needs a restart, like any other setting.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(url)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class PrometheusSource:
    """Issues range queries to one or more Prometheus servers with bounded concurrency."""

    def __init__(self, concurrency: int = 8, timeout: float = 15.0, headers: dict[str, str] | None = None):
        self._timeout = timeout
        self._headers = headers
        self._concurrency = concurrency
        self._clients: dict[str, PrometheusConnect] = {}
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="vigil-prometheus"
        )

    def _client(self, url: str) -> PrometheusConnect:
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                session = _session_for(url)
                client = PrometheusConnect(url=url, headers=self._headers, session=session)
                # Replace the library's adapter: no retries (the scheduler retries), and a
                # connection pool as large as our concurrency so threads never discard sockets.
                adapter = requests.adapters.HTTPAdapter(
                    max_retries=urllib3.util.Retry(total=0, connect=0, read=0, redirect=2),
                    pool_connections=1,
                    pool_maxsize=self._concurrency,
                )
                session.mount(url, adapter)
                self._clients[url] = client
                self._sessions.append(session)
            return client

    def _query_range_blocking(self, url: str, query: str, start: float, end: float, step: float) -> list[Samples]:
        client = self._client(url)
        try:
            result = client.custom_query_range(
                query,
                start_time=datetime.datetime.fromtimestamp(start, tz=datetime.UTC),
                end_time=datetime.datetime.fromtimestamp(end, tz=datetime.UTC),
                step=f"{step:g}s",
                params={"timeout": f"{self._timeout:g}s"},
                timeout=self._timeout,
            )
        except PrometheusApiClientException as exc:
            raise _classify_http(exc) from exc
        except requests.Timeout as exc:
            raise SourceError(SourceErrorKind.TIMEOUT, f"no answer from {url} within {self._timeout:g}s") from exc
        except requests.ConnectionError as exc:
            raise SourceError(SourceErrorKind.UNAVAILABLE, f"cannot connect to {url}: {_root(exc)}") from exc
        except requests.RequestException as exc:
            raise SourceError(SourceErrorKind.SERVER_ERROR, f"request to {url} failed: {exc}") from exc
        except (ValueError, KeyError) as exc:  # a non-JSON or oddly shaped 200 answer
            raise SourceError(SourceErrorKind.SERVER_ERROR, f"unexpected answer from {url}: {exc}") from exc
        return _parse(result)

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> list[Samples]:
        """All series of ``query`` on the grid ``start, start+step, ..., end`` (epoch seconds)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._query_range_blocking, url, query, start, end, step)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for session in self._sessions:
            session.close()


def _root(exc: BaseException) -> str:
    """The innermost cause, which is what says 'Connection refused'."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return text[text.rfind(": ") + 2 :] if ": " in text else text
