"""Serve replayed series live, in the Prometheus text format, for a real Prometheus to scrape.

Backfilling covers the past; this covers "now onwards", so the operator sees
a series arrive sample by sample exactly as it would from a real exporter,
staleness, scrape timing and all. Time is wall-clock driven, not
scrape-driven: point ``k`` is exposed during
``[start_time + k*spacing, start_time + (k+1)*spacing)``, so a Prometheus that
misses scrapes (an outage) misses points, as it would in production.

The seam with backfilled history (see :func:`split_for_replay`): history ends
with a point *at* ``start_time``. The TSDB refuses samples older than its
newest block, so scrapes before ``start_time`` are dropped by Prometheus
(logged as "out of bounds") and the first stored live sample is point 0, at
``start_time + phase`` where ``phase`` in ``(0, spacing)`` is Prometheus' fixed
per-target scrape offset. Every later point follows ``spacing`` apart.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vigil_sandbox import httpserve
from vigil_sandbox.prometheus import (
    FIRST_SCRAPE_DELAY_S,
    Series,
    format_labels,
    selector,
    validate_label_name,
    validate_metric_name,
)

__all__ = ["ReplayExporter", "ReplaySeries", "seamless_start_time", "split_for_replay"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, init=False, eq=False)
class ReplaySeries:
    """A gauge to expose live: name, labels, and the values to step through."""

    name: str
    labels: dict[str, str]
    values: npt.NDArray[np.float64]

    def __init__(self, name: str, labels: Mapping[str, str], values: npt.ArrayLike) -> None:
        validate_metric_name(name)
        for key in labels:
            validate_label_name(key)
        if any(v == "" for v in labels.values()):
            raise ValueError(f"{name}: empty label values are the same as absent labels; omit them")
        vs = np.asarray(values, dtype=np.float64)
        if vs.ndim != 1 or vs.size == 0:
            raise ValueError(f"{name}: values must be a non-empty 1-D array")
        if not np.all(np.isfinite(vs)):
            raise ValueError(f"{name}: values must be finite (first bad index {np.flatnonzero(~np.isfinite(vs))[0]})")
        vs.flags.writeable = False
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "labels", dict(labels))
        object.__setattr__(self, "values", vs)

    @property
    def selector(self) -> str:
        return selector(self.name, self.labels)

    def __len__(self) -> int:
        return int(self.values.size)


def split_for_replay(
    name: str,
    labels: Mapping[str, str],
    values: npt.ArrayLike,
    *,
    live_from: int,
    start_time: float,
    spacing: float,
) -> tuple[Series, ReplaySeries]:
    """Cut one series into backfilled history and a live remainder that join seamlessly.

    ``values[:live_from]`` become history at ``spacing`` seconds apart, the
    last of them at ``start_time``; ``values[live_from:]`` are served live from
    ``start_time`` on. Label windows follow the same timeline: original point
    ``i`` sits at ``start_time + (i - live_from + 1) * spacing``, i.e.
    ``nab.shift_to_end_at(ts, start_time + (len(values) - live_from) * spacing, spacing)``
    (live points land up to one ``spacing`` earlier, at scrape time).
    """
    vs = np.asarray(values, dtype=np.float64)
    if not 1 <= live_from < vs.size:
        raise ValueError(f"live_from must leave at least one point on each side, got {live_from} of {vs.size}")
    history_ts = start_time - (live_from - 1 - np.arange(live_from, dtype=np.float64)) * spacing
    return Series(name, labels, history_ts, vs[:live_from]), ReplaySeries(name, labels, vs[live_from:])


def seamless_start_time(spacing: float, now: float | None = None, margin: float = 1.0) -> float:
    """The earliest ``start_time`` at which point 0 is sure to be scraped.

    Call it just before launching Prometheus. Its first scrape comes
    :data:`~vigil_sandbox.prometheus.FIRST_SCRAPE_DELAY_S` plus up to one
    interval after launch; once scraping runs, the first scrape after
    ``start_time`` falls inside point 0's interval. Earlier starts lose the
    first live points (they pass before anyone looks), later ones only wait.
    """
    return (time.time() if now is None else now) + FIRST_SCRAPE_DELAY_S + spacing + margin


class _Server(httpserve.Server):
    exporter: ReplayExporter


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = self.server.exporter.render().encode()
            self.server.exporter._count_scrape()
            self._reply(200, _CONTENT_TYPE, body)
        elif path == "/healthz":
            self._reply(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape per second would drown the test output


class ReplayExporter:
    """An HTTP exporter on 127.0.0.1 stepping through series as wall time passes.

    Serving starts on construction (the port is needed for the scrape config
    before Prometheus starts); ``stop()`` or the context manager shuts it
    down. ``clock`` is injectable so unit tests can drive time.
    """

    def __init__(
        self,
        series: Sequence[ReplaySeries],
        start_time: float,
        spacing: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not series:
            raise ValueError("nothing to replay")
        if not (spacing > 0 and math.isfinite(spacing)):
            raise ValueError(f"spacing must be a positive number of seconds, got {spacing!r}")
        seen: set[str] = set()
        for s in series:
            key = s.name + format_labels(s.labels)
            if key in seen:
                raise ValueError(f"series {key} given twice")
            seen.add(key)
        self._series = list(series)
        self._start_time = float(start_time)
        self._spacing = float(spacing)
        self._clock = clock
        self._length = max(len(s) for s in self._series)
        self._lock = threading.Lock()
        self._scrapes = 0
        self._stopped = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.exporter = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"replay-exporter-{self.port}",
            daemon=True,
        )
        self._thread.start()
        atexit.register(self.stop)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``, as a Prometheus static scrape target."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    @property
    def start_time(self) -> float:
        return self._start_time

    @property
    def spacing(self) -> float:
        return self._spacing

    @property
    def series(self) -> list[ReplaySeries]:
        return list(self._series)

    @property
    def scrapes(self) -> int:
        """How many times ``/metrics`` was served (a sign Prometheus is scraping)."""
        with self._lock:
            return self._scrapes

    @property
    def done(self) -> bool:
        """True once the last point's whole interval has passed, so it had its chance to be scraped."""
        return self._clock() >= self._start_time + self._length * self._spacing

    def index_at(self, t: float) -> int:
        """Point index exposed at wall time ``t``: ``floor((t - start)/spacing)``, clamped.

        Clamped to 0 before the start (the first live point is shown early)
        and to the longest series' last point after the end; a shorter
        series holds its own last value.
        """
        raw = math.floor((t - self._start_time) / self._spacing)
        return min(max(raw, 0), self._length - 1)

    def render(self, t: float | None = None) -> str:
        """The text exposition at wall time ``t`` (default: now). No timestamps: Prometheus stamps scrapes."""
        index = self.index_at(self._clock() if t is None else t)
        by_name: dict[str, list[ReplaySeries]] = {}
        for s in self._series:
            by_name.setdefault(s.name, []).append(s)
        lines: list[str] = []
        for name, group in by_name.items():
            lines.append(f"# TYPE {name} gauge")
            for s in group:
                value = float(s.values[min(index, len(s) - 1)])
                lines.append(f"{name}{format_labels(s.labels)} {value!r}")
        return "\n".join(lines) + "\n"

    def _count_scrape(self) -> None:
        with self._lock:
            self._scrapes += 1

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice and from any thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        atexit.unregister(self.stop)

    def __enter__(self) -> ReplayExporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
