"""Range queries against Prometheus over one shared aiohttp connection pool.

Queries run on the event loop (no thread per query): a semaphore bounds how many
are in flight (``--prometheus-concurrency``), and the pool keeps that many
keep-alive connections, so thousands of detectors reuse a handful of sockets.
The scale benchmark (bench/scale.py) showed the previous synchronous client in
a thread pool spending more CPU on thread hand-offs and the client library than
on the queries' answers. There are no retries here: a failed evaluation is
retried by the scheduler at the next interval, and retrying inside one
evaluation would only stretch an outage into timeouts.
"""

from __future__ import annotations

import asyncio
import enum
import json
from typing import Any

import aiohttp
import numpy as np

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


def classify_http(code: int, body: str) -> SourceError:
    """A non-200 answer, with Prometheus' own error text when it sent its JSON error envelope."""
    detail = body.strip()
    try:
        payload = json.loads(body)
        detail = f"{payload.get('errorType', 'error')}: {payload.get('error', '')}"
    except (ValueError, AttributeError):
        pass
    text = f"HTTP {code}: {detail}"[:1000]
    if code in (400, 422):
        return SourceError(SourceErrorKind.INVALID_QUERY, text)
    if code == 503 and "timeout" in detail:
        return SourceError(SourceErrorKind.TIMEOUT, text)
    if code in (502, 503, 504):
        return SourceError(SourceErrorKind.UNAVAILABLE, text)
    return SourceError(SourceErrorKind.SERVER_ERROR, text)


def parse_matrix(payload: Any) -> list[Samples]:
    """The ``data.result`` matrix of a successful query_range answer."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        raise ValueError(f"status {payload.get('status') if isinstance(payload, dict) else type(payload)!r}")
    samples = []
    for item in payload["data"]["result"]:
        values = item.get("values") or []
        timestamps = np.fromiter((t for t, _ in values), dtype=np.float64, count=len(values))
        numbers = np.array([v for _, v in values], dtype=np.float64)  # "NaN", "+Inf" parse too
        samples.append(Samples(labels=dict(item.get("metric") or {}), timestamps=timestamps, values=numbers))
    return samples


def _format_time(t: float) -> str:
    return f"{t:.3f}"


class PrometheusSource:
    """Issues range queries to one or more Prometheus servers with bounded concurrency."""

    def __init__(self, concurrency: int = 8, timeout: float = 15.0, headers: dict[str, str] | None = None):
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    def _connect(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        if self._session is None or self._slots is None:
            # Created on first use, inside the running loop (aiohttp binds a session to its loop).
            self._slots = asyncio.Semaphore(self._concurrency)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._concurrency, keepalive_timeout=60),
            )
        return self._session, self._slots

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> list[Samples]:
        """All series of ``query`` on the grid ``start, start+step, ..., end`` (epoch seconds)."""
        session, slots = self._connect()
        form = {"query": query, "start": _format_time(start), "end": _format_time(end), "step": f"{step:g}s",
                "timeout": f"{self._timeout:g}s"}
        endpoint = url.rstrip("/") + "/api/v1/query_range"
        async with slots:  # the timeout starts once it is our turn, not while queued behind others
            try:
                async with session.post(endpoint, data=form,
                                        timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                    body = await response.text()
                    if response.status != 200:
                        raise classify_http(response.status, body)
            except TimeoutError as exc:
                raise SourceError(SourceErrorKind.TIMEOUT,
                                  f"no answer from {url} within {self._timeout:g}s") from exc
            except aiohttp.ClientConnectionError as exc:
                raise SourceError(SourceErrorKind.UNAVAILABLE, f"cannot connect to {url}: {_root(exc)}") from exc
            except aiohttp.ClientError as exc:
                raise SourceError(SourceErrorKind.SERVER_ERROR, f"request to {url} failed: {exc}") from exc
        try:
            return parse_matrix(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:  # a non-JSON or oddly shaped 200 answer
            raise SourceError(SourceErrorKind.SERVER_ERROR, f"unexpected answer from {url}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _root(exc: BaseException) -> str:
    """The innermost cause, which is what says 'Connection refused'."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return text[text.rfind(": ") + 2 :] if ": " in text else text
