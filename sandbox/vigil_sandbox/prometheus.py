"""Run a real Prometheus as a plain child process, with backfilled history.

Why a real one: the operator's queries, lookback and staleness semantics are
Prometheus' own; a fake would encode our guesses about them. The Debian
``prometheus``/``promtool`` binaries are enough, no container or systemd.

History is written as OpenMetrics and turned into TSDB blocks by
``promtool tsdb create-blocks-from openmetrics`` *before* Prometheus starts.
promtool silently drops samples it does not like (a duplicate timestamp keeps
the first value, an out-of-order or same-millisecond sample vanishes), so
:class:`PrometheusServer` validates :class:`Series` up front and, after start,
counts what Prometheus actually stored and raises on any difference.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from vigil_sandbox.ports import free_port

__all__ = [
    "FIRST_SCRAPE_DELAY_S",
    "RETENTION_DAYS",
    "BackfillError",
    "PrometheusError",
    "PrometheusServer",
    "Series",
    "openmetrics_lines",
    "pdeathsig_preexec",
    "render_openmetrics",
    "selector",
    "validate_label_name",
    "validate_metric_name",
    "write_openmetrics",
]

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: Retention given to Prometheus. Retention is measured back from the newest
#: data, and a block entirely older than that is deleted at startup, so
#: backfilled history must fit inside it. Ten years leaves every NAB series
#: (shifted to end near now) far inside.
RETENTION_DAYS = 3650

#: Prometheus 2.42 hands static targets to the scrape manager on a fixed 5 s
#: tick (the discovery manager's throttle, not configurable), then waits for
#: the target's scrape offset (up to one interval): the first scrape comes
#: 5 s to 5 s + interval after launch. Live data must be planned around it.
FIRST_SCRAPE_DELAY_S = 5.0

#: promtool cuts blocks at multiples of 2h * 3**k. The largest such range a
#: Prometheus with our retention would itself compact to is 486h (its cap is
#: 31d); bigger blocks would work but are a shape Prometheus never produces.
_MIN_BLOCK_HOURS = 2
_MAX_BLOCK_HOURS = 486

_LOG_TAIL_LINES = 40
_STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.05
_PR_SET_PDEATHSIG = 1


class PrometheusError(RuntimeError):
    """Prometheus or promtool failed; the message carries the log tail."""


class BackfillError(PrometheusError):
    """Prometheus stored a different number of samples than were backfilled."""


def validate_metric_name(name: str) -> str:
    """Return ``name`` if Prometheus accepts it as a metric name, else raise ValueError."""
    if not METRIC_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}: must match {METRIC_NAME_RE.pattern}")
    return name


def validate_label_name(name: str) -> str:
    """Return ``name`` if usable as a label name, else raise ValueError.

    Names starting with ``__`` are reserved for Prometheus' internal labels
    (``__name__`` among them) and would be rejected or rewritten.
    """
    if not LABEL_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid label name {name!r}: must match {LABEL_NAME_RE.pattern}")
    if name.startswith("__"):
        raise ValueError(f"invalid label name {name!r}: names starting with '__' are reserved")
    return name


def _validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in labels.items():
        validate_label_name(key)
        if not isinstance(value, str):
            raise ValueError(f"label {key!r} has non-string value {value!r}")
        if value == "":
            # Prometheus treats an empty label as an absent one, so the stored
            # series would not match the one we wrote and the count check would fail.
            raise ValueError(f"label {key!r} has an empty value; omit the label instead")
        out[key] = value
    return out


def _escape_label_value(value: str) -> str:
    # Same escapes in the text exposition format, OpenMetrics and PromQL strings.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` (sorted, escaped) or the empty string for no labels."""
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def selector(name: str, labels: Mapping[str, str]) -> str:
    """A PromQL selector matching ``name`` with exactly these label values."""
    return validate_metric_name(name) + format_labels(labels)


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch as exact decimal seconds (``1700000000.123``).

    Prometheus stores milliseconds; writing them this way avoids any float
    round trip, so the API and the OpenMetrics file agree to the millisecond.
    """
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    return f"{sign}{ms // 1000}.{ms % 1000:03d}"


@dataclass(frozen=True, init=False, eq=False)
class Series:
    """One gauge series of history to backfill: a metric name, labels and samples.

    Validated on construction so bad input fails here, with a message naming
    the series, rather than being dropped silently by promtool: names must
    match the Prometheus regexes, values and timestamps must be finite, and
    timestamps strictly increasing *at millisecond resolution* (what the TSDB
    keeps; two samples in the same millisecond would collapse into one).
    """

    name: str
    labels: dict[str, str]
    timestamps: npt.NDArray[np.float64]
    """Epoch seconds, as given."""
    values: npt.NDArray[np.float64]
    timestamps_ms: npt.NDArray[np.int64]
    """The timestamps Prometheus will store: epoch milliseconds, rounded."""

    def __init__(
        self,
        name: str,
        labels: Mapping[str, str],
        timestamps: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> None:
        validate_metric_name(name)
        clean_labels = _validate_labels(labels)
        ts = np.asarray(timestamps, dtype=np.float64)
        vs = np.asarray(values, dtype=np.float64)
        where = f"series {selector(name, clean_labels)}"
        if ts.ndim != 1 or vs.ndim != 1 or ts.shape != vs.shape:
            raise ValueError(f"{where}: timestamps {ts.shape} and values {vs.shape} must be equal-length 1-D")
        if ts.size == 0:
            raise ValueError(f"{where}: no samples")
        bad_v = np.flatnonzero(~np.isfinite(vs))
        if bad_v.size:
            raise ValueError(
                f"{where}: {bad_v.size} non-finite value(s) (NaN/inf), first at index {bad_v[0]}: {vs[bad_v[0]]}"
            )
        bad_t = np.flatnonzero(~np.isfinite(ts) | (ts <= 0))
        if bad_t.size:
            raise ValueError(f"{where}: non-finite or non-positive timestamp at index {bad_t[0]}: {ts[bad_t[0]]}")
        ms = np.rint(ts * 1000.0).astype(np.int64)
        not_increasing = np.flatnonzero(np.diff(ms) <= 0)
        if not_increasing.size:
            i = int(not_increasing[0]) + 1
            raise ValueError(
                f"{where}: timestamps must strictly increase at millisecond resolution; "
                f"index {i} ({ts[i]!r}) does not follow index {i - 1} ({ts[i - 1]!r})"
            )
        ts.flags.writeable = False
        vs.flags.writeable = False
        ms.flags.writeable = False
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "labels", clean_labels)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "values", vs)
        object.__setattr__(self, "timestamps_ms", ms)

    @property
    def selector(self) -> str:
        """PromQL selector for this series (it also matches label supersets)."""
        return selector(self.name, self.labels)

    @property
    def identity(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What makes a series unique in Prometheus: name plus sorted labels."""
        return self.name, tuple(sorted(self.labels.items()))

    def __len__(self) -> int:
        return int(self.values.size)


def openmetrics_lines(history: Iterable[Series]) -> Iterator[str]:
    """History as OpenMetrics lines (each ending in a newline) for ``promtool``, one series at a time.

    All series of one metric name are written under a single ``# TYPE`` line
    (OpenMetrics wants a metric family's samples together). Values use
    ``repr`` so they round-trip exactly.
    """
    by_name: dict[str, list[Series]] = {}
    for s in history:
        by_name.setdefault(s.name, []).append(s)
    for name, group in by_name.items():
        yield f"# TYPE {name} gauge\n"
        for s in group:
            head = name + format_labels(s.labels)
            for ms, v in zip(s.timestamps_ms.tolist(), s.values.tolist(), strict=True):
                yield f"{head} {float(v)!r} {format_ms(int(ms))}\n"
    yield "# EOF\n"


def render_openmetrics(history: Iterable[Series]) -> str:
    """History as one OpenMetrics document (see :func:`openmetrics_lines`)."""
    return "".join(openmetrics_lines(history))


def write_openmetrics(history: Iterable[Series], path: Path) -> None:
    """History as an OpenMetrics file, written as it is rendered: 100 M samples never sit in memory as text."""
    with path.open("w", encoding="utf-8") as out:
        out.writelines(openmetrics_lines(history))


def _block_duration_hours(span_s: float) -> int:
    """The block size to ask promtool for: the smallest 2h*3**k covering the span, capped.

    promtool's default is 2h, which makes ~170 blocks for two weeks of NAB
    data: slower to write, load and compact. Blocks are aligned to multiples
    of their duration, so a span may still straddle two blocks.
    """
    hours = _MIN_BLOCK_HOURS
    while hours < span_s / 3600.0 and hours * 3 <= _MAX_BLOCK_HOURS:
        hours *= 3
    return hours


def pdeathsig_preexec() -> Any:
    """A ``preexec_fn`` asking Linux to SIGKILL the child if we die.

    ``atexit`` does not run when the test runner itself is SIGKILLed; this
    does. Linux ties the signal to the *thread* that forked, so it is only
    used when starting from the main thread (which lives as long as the
    process); elsewhere the atexit hook alone must do.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # parent died before prctl took effect
            os._exit(1)

    return preexec


class PrometheusServer:
    """A real Prometheus on 127.0.0.1 with a throw-away data directory.

    Usable as a context manager (start on enter; stop and delete the temp
    directory on exit). ``kill()`` + ``restart()`` simulate an outage: the data
    directory and port stay the same, so history and scraped data survive as
    they would for a real Prometheus with a persistent volume.

    Scraped targets get ``job``/``instance`` dropped by default
    (``drop_target_labels``) so a live series scraped from the replay exporter
    is *the same series* as its backfilled history, not a new one beside it.
    """

    def __init__(
        self,
        history: Sequence[Series] = (),
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        extra_args: Sequence[str] = (),
        *,
        drop_target_labels: bool = True,
        target_labels: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self._history = list(history)
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for s in self._history:
            if s.identity in seen:
                raise ValueError(f"series {s.selector} appears twice in history")
            seen.add(s.identity)
        self._scrape_targets = list(scrape_targets)
        self._scrape_interval = scrape_interval
        self._extra_args = list(extra_args)
        self._drop_target_labels = drop_target_labels
        #: Labels added to every scraped series (a static_config's ``labels``), e.g. the ``instance_id``
        #: that EC2 service discovery and relabelling would give a node_exporter target.
        self._target_labels = _validate_labels(target_labels or {})
        self._ready_timeout = ready_timeout
        self._tmp = Path(tempfile.mkdtemp(prefix="vigil-prometheus-"))
        self._data_dir = self._tmp / "data"
        self._data_dir.mkdir()
        self._config_path = self._tmp / "prometheus.yml"
        self._log_path = self._tmp / "prometheus.log"
        self._port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._backfilled = False
        self._ever_started = False
        self._closed = False
        atexit.register(self._atexit)

    # -- properties --------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def config_path(self) -> Path:
        return self._config_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> PrometheusServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Backfill (first time only), launch, wait for ready and verify history.

        Returns once ``/-/ready`` answers and every backfilled series is
        queryable with exactly the number of samples written.
        """
        if self._closed:
            raise PrometheusError("server was closed")
        if self.running:
            raise PrometheusError(f"Prometheus already running (pid {self.pid})")
        self._write_config()
        if not self._backfilled:
            self._backfill()
            self._backfilled = True
        # A fresh port only on the very first start: restart() must keep the
        # address, as clients (and tests) hold on to it.
        attempts = 1 if self._ever_started else 3
        for attempt in range(attempts):
            self._launch()
            try:
                self._wait_ready()
                break
            except PrometheusError:
                if attempt + 1 < attempts and "address already in use" in self._log_tail():
                    self.kill()
                    self._port = free_port()
                    continue
                self.kill()
                raise
        self._ever_started = True
        try:
            self._verify_history()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if needed. Keeps the data directory for restart()."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL without warning: an outage, as a crash or OOM-kill would be."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop if running, then start again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the temporary directory (data, config, log)."""
        self.stop()
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._tmp, ignore_errors=True)
            atexit.unregister(self._atexit)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- queries -----------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10.0) -> Any:
        """Call ``/api/v1/<path>`` and return its ``data``; raise with the error text.

        With ``params`` it POSTs them as a form (long PromQL does not fit a
        URL); without, it GETs (some endpoints, like ``targets``, are GET-only).
        """
        url = f"{self.url}/api/v1/{path}"
        if params is None:
            req = urllib.request.Request(url, method="GET")
            params = {}
        else:
            req = urllib.request.Request(url, data=urllib.parse.urlencode(params).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = json.load(resp)
        except urllib.error.HTTPError as err:
            with err:
                text = err.read().decode(errors="replace")
            raise PrometheusError(f"{path} {dict(params)} -> HTTP {err.code}: {text}") from None
        if payload.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)} -> {payload}")
        return payload["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; ``result`` list (vector or matrix for range selectors)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = format_ms(round(at * 1000))
        result: list[dict[str, Any]] = self.api("query", params)["result"]
        return result

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query; ``result`` matrix."""
        params = {
            "query": promql,
            "start": format_ms(round(start * 1000)),
            "end": format_ms(round(end * 1000)),
            "step": repr(float(step)),
        }
        result: list[dict[str, Any]] = self.api("query_range", params)["result"]
        return result

    def wait_for_sample(self, query: str, deadline: float = 10.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series.

        ``deadline`` is seconds from now. Raises PrometheusError (with the log
        tail) when it passes, so a test fails with a reason instead of hanging.
        """
        until = time.monotonic() + deadline
        last_error: Exception | None = None
        while True:
            try:
                result = self.query(query)
                if result:
                    return result
            except (PrometheusError, OSError) as err:
                last_error = err
            if time.monotonic() >= until:
                raise PrometheusError(
                    f"no sample for {query!r} within {deadline}s (last error: {last_error})" + self._log_suffix()
                )
            time.sleep(_POLL_INTERVAL_S)

    def wait_for_targets(self, deadline: float = FIRST_SCRAPE_DELAY_S + 10.0) -> None:
        """Poll until every scrape target has been scraped successfully at least once.

        Expect about :data:`FIRST_SCRAPE_DELAY_S` plus one interval after start.
        ``deadline`` is seconds from now.
        """
        until = time.monotonic() + deadline
        wanted = set(self._scrape_targets)
        health: dict[str, str] = {}
        while True:
            active = self.api("targets")["activeTargets"]
            health = {t["labels"].get("instance", ""): t["health"] for t in active}
            if all(health.get(target) == "up" for target in wanted):
                return
            if time.monotonic() >= until:
                raise PrometheusError(
                    f"targets not up within {deadline}s: {health or 'none active yet'}" + self._log_suffix()
                )
            time.sleep(_POLL_INTERVAL_S * 4)

    # -- internals ---------------------------------------------------------

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self._scrape_interval,
                # Must not exceed the interval; Prometheus' default of 10s would.
                "scrape_timeout": self._scrape_interval,
                "evaluation_interval": self._scrape_interval,
            },
            "scrape_configs": [],
        }
        if self._scrape_targets:
            job: dict[str, Any] = {
                "job_name": "sandbox",
                "static_configs": [{"targets": list(self._scrape_targets),
                                    **({"labels": dict(self._target_labels)} if self._target_labels else {})}],
            }
            if self._drop_target_labels:
                job["metric_relabel_configs"] = [{"action": "labeldrop", "regex": "job|instance"}]
            config["scrape_configs"].append(job)
        self._config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _check_retention(self) -> None:
        newest = max(time.time(), max(float(s.timestamps[-1]) for s in self._history))
        oldest = min(float(s.timestamps[0]) for s in self._history)
        # A day of margin: retention is enforced per block, blocks are aligned.
        limit = newest - (RETENTION_DAYS - 1) * 86400.0
        if oldest < limit:
            raise ValueError(
                f"history starts {(newest - oldest) / 86400:.0f} days before its newest point/now, "
                f"beyond the {RETENTION_DAYS}d retention: Prometheus would delete it at startup. "
                "Shift the series to end near now (vigil_sandbox.nab.shift_to_end_at)."
            )

    def _backfill(self) -> None:
        if not self._history:
            return
        self._check_retention()
        om_path = self._tmp / "history.om"
        write_openmetrics(self._history, om_path)
        span = max(float(s.timestamps[-1]) for s in self._history) - min(float(s.timestamps[0]) for s in self._history)
        cmd = [
            _binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            # Not in --help for 2.42, but accepted.
            f"--max-block-duration={_block_duration_hours(span)}h",
            "--quiet",
            str(om_path),
            str(self._data_dir),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self._tmp)
        if done.returncode != 0:
            raise PrometheusError(f"promtool failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}{done.stderr}")

    def _launch(self) -> None:
        cmd = [
            _binary("prometheus"),
            f"--config.file={self._config_path}",
            f"--storage.tsdb.path={self._data_dir}",
            f"--storage.tsdb.retention.time={RETENTION_DAYS}d",
            f"--web.listen-address=127.0.0.1:{self._port}",
            "--log.level=info",
            *self._extra_args,
        ]
        with open(self._log_path, "ab") as log:
            log.write(f"\n=== vigil: starting {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._tmp,
                preexec_fn=pdeathsig_preexec(),
            )

    def _wait_ready(self) -> None:
        until = time.monotonic() + self._ready_timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise PrometheusError(f"Prometheus exited with code {code} before ready" + self._log_suffix())
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as err:
                err.close()  # 503 while the TSDB loads; close it or it leaks a socket
            except OSError:
                pass  # not listening yet (URLError is an OSError)
            if time.monotonic() >= until:
                raise PrometheusError(f"Prometheus not ready after {self._ready_timeout}s" + self._log_suffix())
            time.sleep(_POLL_INTERVAL_S)

    def _verify_history(self) -> None:
        """Compare stored sample counts with what was written, series by series.

        Counts over exactly the written span, evaluated at the last written
        timestamp, so live scrapes of the same series (which land later) are
        not counted. Series sharing a name and a span are counted by one query
        (a benchmark backfills tens of thousands; one query each would take
        minutes). Blocks are loaded before ``/-/ready``, but the first query is
        still polled rather than assumed.
        """
        until = time.monotonic() + self._ready_timeout
        groups: dict[tuple[str, int, int], list[Series]] = {}
        for s in self._history:
            groups.setdefault((s.name, int(s.timestamps_ms[0]), int(s.timestamps_ms[-1])), []).append(s)
        for (name, first_ms, last_ms), members in groups.items():
            # count_over_time drops the name; match the other labels exactly, as a
            # selector also matches series carrying extra labels.
            sel = members[0].selector if len(members) == 1 else name
            query = f"count_over_time({sel}[{last_ms - first_ms + 1}ms])"
            wanted = {tuple(sorted(s.labels.items())) for s in members}
            while True:
                stored = {
                    tuple(sorted(r["metric"].items())): int(float(r["value"][1]))
                    for r in self.query(query, at=last_ms / 1000.0)
                }
                if wanted <= stored.keys() or time.monotonic() >= until:
                    break
                time.sleep(_POLL_INTERVAL_S)
            for s in members:
                count = stored.get(tuple(sorted(s.labels.items())), 0)
                if count != len(s):
                    raise BackfillError(
                        f"series {s.selector}: wrote {len(s)} samples, Prometheus stores {count} "
                        f"between {format_ms(first_ms)} and {format_ms(last_ms)}; promtool drops "
                        "duplicate, out-of-order and same-millisecond samples, and retention deletes "
                        "old blocks" + self._log_suffix()
                    )

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _log_suffix(self) -> str:
        tail = self._log_tail()
        return f"\n--- last lines of {self._log_path} ---\n{tail}" if tail else ""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"{name} not found on PATH (Debian package 'prometheus')")
    return path
