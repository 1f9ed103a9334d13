"""One log line when the Kubernetes API goes away, one when it is back: not one per retry.

While the API server is unreachable every loop that talks to it fails on each
attempt: kopf's watchers log ``Request attempt #n/9 failed`` three at a time, the
leader elector warns on each renewal, and the remediation loop logs a traceback
every second without leader election. None of those lines says more than the
first, and together they bury whatever else the log holds. :class:`OutageFilter`
sits on the log handlers and recognises records caused by the API server being
unreachable (its host:port in the message or exception, or a connection error
raised from a Kubernetes client); the first becomes one WARNING line without
traceback, the rest are counted and dropped, with a reminder every
``reminder`` seconds. While it is down a thread asks the server for ``/version``
with a growing pause (1 s up to 5 s); its first answer logs one line saying the
API is back. The probe is needed because kopf's watchers reconnect silently and an
idle operator may make no other request.

Anything else (HTTP errors from a reachable server, bugs, Prometheus or AWS
trouble) passes through unchanged: only the outage is collapsed.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

logger = logging.getLogger("vigil.outage")

#: Frames of these files mean the exception came from a client of the Kubernetes API.
_KUBE_CLIENT_FILES = ("/vigil/adapters/kube.py", "/kopf/_cogs/clients/")


def _netloc(server: str) -> str:
    parts = urllib.parse.urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_connection_error(exc: BaseException) -> bool:
    import aiohttp

    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError, TimeoutError)):
        return True
    status = getattr(exc, "status", None)  # kube.KubeError / kopf APIServerError: 502, 503, 504 from a proxy
    return isinstance(status, int) and status in (502, 503, 504)


def _from_kube_client(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if any(part in tb.tb_frame.f_code.co_filename for part in _KUBE_CLIENT_FILES):
            return True
        tb = tb.tb_next
    return False


def _summary(exc: BaseException) -> str:
    for item in _chain(exc):
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, TimeoutError):
            return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


class OutageFilter(logging.Filter):
    """Collapses the records an unreachable API server causes into one line per state change."""

    def __init__(self, server: str, probe: Callable[[], bool] | None = None, reminder: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.probe = probe
        self.server = server.rstrip("/")
        self.netloc = _netloc(server)
        self.reminder = reminder
        self.clock = clock
        self.down_since: float | None = None
        self.dropped = 0
        self._reminded = 0.0
        self._lock = threading.Lock()

    def cause(self, record: logging.LogRecord) -> str | None:
        """What made the API unreachable, if ``record`` is about that; None for any other record."""
        if record.levelno < logging.WARNING or record.name == logger.name:
            return None
        message = record.msg if isinstance(record.msg, str) else ""
        candidates: list[BaseException] = []
        if record.exc_info and record.exc_info[1] is not None:
            candidates.append(record.exc_info[1])
        if isinstance(record.args, tuple):
            candidates.extend(arg for arg in record.args if isinstance(arg, BaseException))
        for exc in candidates:
            for item in _chain(exc):
                if _is_connection_error(item) and (self.netloc in repr(item) or _from_kube_client(item)):
                    return _summary(exc)
        if message.startswith("Request attempt ") and " failed" in message and self.netloc in message:
            return "connection refused" if "Connect call failed" in message or "ConnectionRefused" in message \
                else message.rsplit(" -> ", 1)[-1][:200]
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        cause = self.cause(record)
        if cause is None:
            return True
        with self._lock:
            now = self.clock()
            if self.down_since is None:
                self.down_since = now
                self._reminded = now
                self.dropped = 0
                if self.probe is not None:
                    threading.Thread(target=self._watch, name="vigil-outage-probe", daemon=True).start()
                text = (f"Kubernetes API {self.server} unreachable ({cause}); retrying with back-off; "
                        "further failures are not logged until it is back")
            elif now - self._reminded >= self.reminder:
                self._reminded = now
                text = (f"Kubernetes API {self.server} still unreachable after {now - self.down_since:.0f}s "
                        f"({cause}; {self.dropped} failure(s) not logged)")
            else:
                self.dropped += 1
                return False
        record.msg, record.args = text, ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True

    def _watch(self) -> None:
        """Probe until the server answers, then log that it is back (the thread ends with the outage)."""
        assert self.probe is not None
        pause = 1.0
        wait = threading.Event()
        while self.down_since is not None:
            wait.wait(pause)
            pause = min(pause * 2, 5.0)
            try:
                answered = self.probe()
            except Exception:
                answered = False
            if answered:
                self.reachable()
                return

    def reachable(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            took, dropped = self.clock() - self.down_since, self.dropped
            self.down_since = None
            self.dropped = 0
        logger.info("Kubernetes API %s reachable again after %.0fs (%d failure(s) not logged)",
                       self.server, took, dropped)


def install(server: str, probe: Callable[[], bool] | None = None, reminder: float = 300.0) -> OutageFilter:
    """Attach one filter to every handler of the root logger (where kopf's configure puts them)."""
    outage = OutageFilter(server, probe, reminder)
    for handler in logging.getLogger().handlers:
        handler.addFilter(outage)
    return outage
