"""Range queries against Prometheus, over one urllib3 connection pool per base URL.

urllib3 is synchronous, so queries run in a bounded thread pool: the pool size is
the concurrency limit against Prometheus, and the event loop never blocks on the
network. No retries: a failed evaluation is retried by the scheduler at the next
interval, and retrying inside one evaluation would only stretch an outage into
timeouts. No redirects either: ``spec.prometheus.url`` is checked against the
operator's allow-list, and a redirect would take the request past it.

The answer is streamed and parsed one series at a time within the operator's
limits (:mod:`vigil.adapters.promjson`), so one detector whose query matches tens
of thousands of series costs a bounded read, not the operator's memory. (The
request used to go through prometheus-api-client, whose ``response.json()``
materialises the whole answer first.)

Why urllib3 and not a requests session (which is urllib3 underneath): at a restart with 10,000
detectors every one of them queries at once, and requests' per-request work (preparing the request,
merging settings, its hooks and adapters) is interpreter time on each of them (bench/README.md, issue 16:
the short restart went from 56.3 s to 50.6 s). The settings requests would have read from the
environment (proxy, CA bundle) are read once per base URL, the same way (:func:`_connection_for`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import enum
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import requests.utils
import urllib3
import urllib3.exceptions
import urllib3.util

from vigil import __version__
from vigil.adapters import promjson
from vigil.domain.history import Samples

#: One range query: (base URL, PromQL, start, end, step), times in epoch seconds.
Query = tuple[str, str, float, float, float]

T = TypeVar("T")

#: Read size while streaming an answer; the byte budget is checked after each chunk.
CHUNK_BYTES = 256 << 10


class SourceErrorKind(enum.Enum):
    INVALID_QUERY = "invalid-query"  # HTTP 400/422: the user's PromQL is wrong
    UNAVAILABLE = "unavailable"  # connection refused, DNS, TLS, HTTP 502/503/504
    TIMEOUT = "timeout"  # client or server-side timeout
    SERVER_ERROR = "server-error"  # other non-200 answers, malformed answers
    TOO_MANY_SERIES = "too-many-series"  # more series than --max-series: the query is too broad
    RESPONSE_TOO_LARGE = "response-too-large"  # more bytes than --max-response-bytes


class SourceError(Exception):
    """A classified Prometheus failure with a message fit for a condition (never a remote body)."""

    def __init__(self, kind: SourceErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one query may cost the operator (``--max-series``, ``--max-response-bytes``).

    The byte default is sized for the largest legitimate detector: a first (full) fetch of
    ``max_series`` = 2,000 series x 2,016 points (the built-in model's window) at ~36 bytes a point
    (``[1700000000,"0.30000000000000004"],``) is ~145 MB of JSON, plus labels. 256 MiB leaves
    room for longer values; the stream is parsed series by series, so the cap bounds reading
    time and bandwidth, not memory held (see docs/security.md).
    """

    max_series: int = 2000
    max_response_bytes: int = 256 << 20


def classify_status(code: int, body: bytes) -> SourceError:
    """A non-200 answer as a SourceError, from its code and Prometheus' ``errorType`` only."""
    error_type, text = promjson.error_message(code, body)
    if code in (400, 422):
        return SourceError(SourceErrorKind.INVALID_QUERY, text)
    if code == 503 and error_type == "timeout":
        return SourceError(SourceErrorKind.TIMEOUT, text)
    if code in (502, 503, 504):
        return SourceError(SourceErrorKind.UNAVAILABLE, text)
    if 300 <= code < 400:
        return SourceError(SourceErrorKind.SERVER_ERROR,
                           f"HTTP {code}: redirects are not followed; use the API's base URL itself")
    return SourceError(SourceErrorKind.SERVER_ERROR, text)


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """What a query to one base URL goes through: the proxy (or None) and the CAs to verify TLS with."""

    #: The proxy's URL without credentials (they are in ``proxy_headers``, kept out of any repr or log).
    proxy: str | None
    #: A CA bundle file, or (``ca_dir``) a directory of hashed CA files, as requests accepts either.
    ca_certs: str | None
    ca_dir: str | None = None
    #: ``Proxy-Authorization`` from the proxy URL's credentials (urllib3 does not send them by itself).
    proxy_headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)


def _connection_for(url: str) -> ConnectionSettings:
    """The environment's proxy and CA settings for ``url``, resolved once, not on every request.

    requests re-reads the proxy variables (and scans the whole environment for them) on every
    request when ``trust_env`` is on; bench/scale.py's profiles put that at a quarter of the
    operator's CPU for thousands of detectors. The settings are the ones requests would find
    (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` with ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``/
    ``CURL_CA_BUNDLE``, else the certifi bundle requests ships with), read when the first query to
    ``url`` is made; a change to them needs a restart, like any other setting.
    """
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url)) or None
    headers: dict[str, str] = {}
    if proxy is not None:
        # As requests' adapter does: "proxy:3128" means http://, and user:password@ becomes a header.
        proxy = proxy if "://" in proxy else f"http://{proxy}"
        username, password = requests.utils.get_auth_from_url(proxy)
        if username:
            headers = urllib3.util.make_headers(proxy_basic_auth=f"{username}:{password}")
        proxy = urllib3.util.parse_url(proxy)._replace(auth=None).url  # the credentials live in the header only
    bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
              or requests.utils.DEFAULT_CA_BUNDLE_PATH)
    if os.path.isdir(bundle):
        return ConnectionSettings(proxy=proxy, ca_certs=None, ca_dir=bundle, proxy_headers=headers)
    return ConnectionSettings(proxy=proxy, ca_certs=bundle, proxy_headers=headers)


#: Headers of every query; the caller's headers (e.g. Authorization) are added to these.
_HEADERS = {"User-Agent": f"vigil/{__version__}", "Accept": "application/json"}


class Compression(enum.Enum):
    """Whether to ask Prometheus to gzip its answers (``--prometheus-compression``).

    Uncompressed by default: gzip is bought with Prometheus' CPU, and Prometheus is shared. Measured
    here (``python -m bench.compression``, bench/README.md), gzip made Prometheus 2.42 spend several
    times the CPU per range query, the more the larger the answer, and a restart of 10,000 detectors
    asks for 10,000 windows at once. Gzip saves bytes on the wire; it pays where the link to
    Prometheus is slow or metered, not inside a cluster.
    """

    NONE = "none"
    GZIP = "gzip"

    @property
    def accept_encoding(self) -> str:
        return "gzip" if self is Compression.GZIP else "identity"


class PrometheusSource:
    """Issues range queries to one or more Prometheus servers with bounded concurrency and cost."""

    def __init__(self, concurrency: int = 8, timeout: float = 15.0, headers: dict[str, str] | None = None,
                 limits: Limits | None = None, compression: Compression = Compression.NONE):
        self._timeout = timeout
        self._headers = {**_HEADERS, "Accept-Encoding": compression.accept_encoding, **(headers or {})}
        self._concurrency = concurrency
        self.limits = limits or Limits()
        self._managers: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="vigil-prometheus"
        )

    def _manager(self, url: str) -> urllib3.PoolManager:
        with self._lock:
            manager = self._managers.get(url)
            if manager is None:
                settings = _connection_for(url)
                # No retries (the scheduler retries), no redirects (the allow-list: set per request), and
                # as many kept connections as our concurrency so threads never discard sockets.
                options: dict[str, Any] = {
                    "maxsize": self._concurrency, "retries": False, "ca_certs": settings.ca_certs,
                    "ca_cert_dir": settings.ca_dir,
                    "cert_reqs": "CERT_REQUIRED", "timeout": urllib3.Timeout(connect=self._timeout,
                                                                             read=self._timeout),
                }
                # One base URL, so one host: one pool (redirects are never followed to another).
                manager = (urllib3.ProxyManager(settings.proxy, num_pools=1, proxy_headers=settings.proxy_headers,
                                                **options) if settings.proxy
                           else urllib3.PoolManager(num_pools=1, **options))
                self._managers[url] = manager
            return manager

    def _query_range_blocking(self, url: str, query: str, start: float, end: float, step: float) -> list[Samples]:
        points = round((end - start) / step) + 1
        budget = promjson.Budget(self.limits.max_series, self.limits.max_response_bytes, points,
                                 deadline=time.monotonic() + self._timeout)
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}s",
                  "timeout": f"{self._timeout:g}s"}
        try:
            manager = self._manager(url)  # inside: a proxy setting urllib3 refuses is this query's error
            response = manager.request("GET", f"{url.rstrip('/')}/api/v1/query_range", fields=params,
                                       headers=self._headers, preload_content=False, redirect=False)
            try:
                if response.status != 200:
                    raise classify_status(response.status, _head(response, promjson.ERROR_BODY_LIMIT))
                samples = promjson.read_matrix(response.stream(CHUNK_BYTES, decode_content=True), budget)
            except BaseException:
                response.close()  # a half-read answer must not go back to the pool as a reusable connection
                raise
            finally:
                response.release_conn()
            return samples
        except promjson.TooManySeries as exc:
            raise SourceError(SourceErrorKind.TOO_MANY_SERIES, exc.message) from exc
        except promjson.TooLarge as exc:
            raise SourceError(SourceErrorKind.RESPONSE_TOO_LARGE, exc.message) from exc
        except promjson.Deadline as exc:
            raise SourceError(SourceErrorKind.TIMEOUT, f"{exc.message} ({self._timeout:g}s)") from exc
        except promjson.AnswerError as exc:
            raise SourceError(SourceErrorKind.SERVER_ERROR, f"unexpected answer from {url}: {exc.message}") from exc
        except urllib3.exceptions.NewConnectionError as exc:  # before TimeoutError: urllib3 derives it from that
            raise SourceError(SourceErrorKind.UNAVAILABLE, f"cannot connect to {url}: {_root(exc)}") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise SourceError(SourceErrorKind.TIMEOUT, f"no answer from {url} within {self._timeout:g}s") from exc
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError,
                urllib3.exceptions.ProxyError) as exc:
            raise SourceError(SourceErrorKind.UNAVAILABLE, f"cannot connect to {url}: {_root(exc)}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise SourceError(SourceErrorKind.SERVER_ERROR,
                              f"request to {url} failed: {type(exc).__name__}") from exc

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> list[Samples]:
        """All series of ``query`` on the grid ``start, start+step, ..., end`` (epoch seconds)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._query_range_blocking, url, query, start, end, step)

    async def query_many(self, queries: Sequence[Query]) -> list[list[Samples] | Exception]:
        """Each query's series, or the exception it raised, in order (:meth:`query_each` keeping the answers)."""
        return await self.query_each(queries, lambda index, answer: answer)

    async def query_each(self, queries: Sequence[Query],
                         then: Callable[[int, list[Samples]], T]) -> list[T | Exception]:
        """``then(index, series)`` of each query's answer, or the exception the query raised, in order; at
        most ``concurrency`` queries run at once.

        ``then`` runs in the same pool thread right after a query answered, so the caller's work on one
        answer overlaps Prometheus answering the next ones instead of waiting for the last (issue 16:
        folding the first windows in after the whole batch had arrived left Prometheus idle meanwhile).
        Its return value is the query's result, and the answer is dropped as soon as it returns: a batch
        of 1,000 first fetches of a week (5 series x 2,016 points each) would otherwise hold 160 MB of
        answers until its last query answered, and the operator's RSS keeps what it once held. An
        exception ``then`` raises is that query's result, as a query's own would be.

        One executor job per pool thread, each taking the next query until none is left, instead of one
        future per query: at a restart with 10,000 detectors due at once, creating those futures and
        waking the loop for each was 9 % of the event loop's time (issue 16). If the caller is cancelled,
        the jobs finish the queries they are running and start no other.
        """
        results: list[T | Exception | None] = [None] * len(queries)
        waiting = collections.deque(range(len(queries)))  # popleft is atomic: the threads share it
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    index = waiting.popleft()
                except IndexError:
                    return
                try:
                    results[index] = then(index, self._query_range_blocking(*queries[index]))
                except Exception as exc:  # handed back like gather(return_exceptions=True) did
                    results[index] = exc

        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, work) for _ in range(min(self._concurrency, len(queries)))]
        try:
            await asyncio.gather(*jobs)
        except BaseException:
            stop.set()
            raise
        # Every query was taken and answered: the jobs ended without being cancelled.
        return cast("list[T | Exception]", results)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for manager in self._managers.values():
            manager.clear()


def _head(response: urllib3.BaseHTTPResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (an error page may be endless)."""
    data = bytearray()
    for chunk in response.stream(8192, decode_content=True):
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])


def _root(exc: BaseException) -> str:
    """The innermost cause, which is what says 'Connection refused'."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    text = text[text.rfind(": ") + 2 :] if ": " in text else text
    return promjson.sanitize(text, promjson.ERROR_TEXT_LIMIT)
