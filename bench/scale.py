"""Scale benchmark: N AnomalyDetectors x S series against real peers, with the cost curve.

Everything the operator talks to is real or protocol-faithful, and the operator is
the real ``vigil run`` process:

- **Prometheus**: the real binary, loaded once with ``max(N) x S`` synthetic series
  (a daily-like cycle scaled to 90 min, noise, level-shift incidents in ~2% of them) through ``promtool``
  backfill (sample counts verified series by series), plus live samples from an
  in-process exporter it scrapes (:class:`vigil_sandbox.replay.ReplayExporter`).
- **Kubernetes API**: the sandbox emulator (:mod:`vigil_sandbox.kubeapi`: our kmock-based,
  in-memory API server with resource versions, watches, status subresource, schema
  validation), run in its *own* process so its CPU is measured apart from the operator's
  and from this harness. It counts every request the operator sends. With ``--kube real``:
  a real kube-apiserver + etcd (``tests/realkube.py``, :mod:`bench.realapi`), the operator's
  requests counted from its audit log, its and etcd's CPU and etcd's database growth reported.
- **The operator**: ``python -m vigil run`` as a subprocess, started after the N
  detectors exist (so start-up with N existing detectors is measured too).

For each N: the detectors are created, the operator started, the harness waits until
every detector has written its first status, waits one more interval (warm-up), then
measures a window (default: one heartbeat period, so steady-state writes include the
heartbeat) and prints: evaluation lag p50/p99 (``vigil_evaluation_lag_seconds``: verdict
ready minus scheduled time), evaluations/s, operator CPU seconds (from /proc, user+system)
per evaluated series and cores used, peak RSS (VmHWM), Prometheus range queries per
evaluation (counted by Prometheus itself), Kubernetes API writes per minute split into
status/events/other and per detector per hour (counted at the emulator), the per-series
cost of features + inference (the operator's histogram), start-up time to the first
evaluation and to all N evaluated, and the peers' own CPU use. Then the cost curve
(absolute figures / N), a Markdown report and a PNG plot.

    python -m bench.scale                 # the full sweep (N = 100..5000, I = 60 s)
    python -m bench.scale --quick         # a fast check (small N, compressed time)
    python -m bench.scale -n 2000 --profile bench-out   # one N, py-spy profile of the operator
    python -m bench.scale -n 10000 --restart --keep runs/r1   # keep each operator's log (the restarted one's too)
    python -m bench.scale --kube real -n 2000           # against a real kube-apiserver: docs/bench/scale-real.md

Exit status is non-zero when the harness fails (a peer or the operator dies, nothing
was evaluated); a missed goal is reported, not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/scale.py` as well as `python -m bench.scale`
    sys.path.insert(0, str(ROOT))

from bench import apitally, procstat  # noqa: E402
from tests.harness import OperatorProcess, wait_for  # noqa: E402
from vigil_sandbox.prometheus import PrometheusServer  # noqa: E402
from vigil_sandbox.replay import ReplayExporter, seamless_start_time, split_for_replay  # noqa: E402

METRIC = "bench_load"
STEP = 60.0  # data resolution and the detectors' grid step (spec.step = 1m)
HISTORY_POINTS = 110  # backfilled points per series at step 1m (>= MIN_POINTS; a week would be 50 M samples)
#: Period of the synthetic "daily" cycle, scaled down to fit inside the backfilled history.
#: In production the model's 2,016-point window spans whole cycles (a week at 5 min), so its
#: verdicts change at incidents, not with the time of day. With only HISTORY_POINTS of history,
#: a 24 h cycle would keep making "new extremes" and the benchmark would measure verdict flapping
#: that a deployment with full history does not have (measured: 23 writes per detector per hour
#: at N=2000 with a 24 h cycle, against ~12 for the heartbeat alone).
CYCLE_SECONDS = 90 * 60.0
FULL_NS = (1000, 2000, 10000)
KUBE_BACKENDS = ("emulator", "real")
DEFAULT_OUTPUT = {"emulator": ROOT / "docs" / "bench" / "scale.md", "real": ROOT / "docs" / "bench" / "scale-real.md"}
GOAL_N = 2000  # peak RSS < 300 MiB
BIG_N = 10000  # lag, cores, RSS < 1 GiB, start-up < 60 s


@dataclasses.dataclass(frozen=True)
class Config:
    ns: tuple[int, ...]
    series: int
    interval: float
    heartbeat: float
    window: float
    warmup: float
    scrape_interval: str
    live_minutes: int
    out_md: pathlib.Path | None
    out_png: pathlib.Path | None
    profile: pathlib.Path | None
    render: tuple[pathlib.Path, ...] | None
    revision: str
    operator_args: tuple[str, ...]
    command: str
    note: str = ""
    #: The Kubernetes API measured against: ``emulator`` (vigil_sandbox.kubeapi) or ``real`` (kube-apiserver + etcd).
    kube: str = "emulator"
    #: After the window, restart the operator and time its way back (``--restart``).
    restart: bool = False
    #: ``--keep``: the run's files (each operator's log, the kubeconfigs) stay here instead of a deleted temp dir.
    keep: pathlib.Path | None = None
    #: ``--history``: backfilled points per series (the model's whole window is 2,016).
    history_points: int = HISTORY_POINTS


# ---------------------------------------------------------------------------------------------
# Synthetic data.
# ---------------------------------------------------------------------------------------------

def synthetic(count: int, points: int, start: float, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``count`` series of ``points`` minutes from ``start``: a cycle (``CYCLE_SECONDS``), noise, incidents.

    Returns (values [count, points], incident mask per series). Incidents are level
    shifts (x1.6..2.5) in ~2% of the series, starting at a random point and lasting
    20..120 minutes, so some detectors change verdict during a run (writes, Events).
    """
    rng = np.random.default_rng(seed)
    incident = rng.random(count) < 0.02  # drawn first: the same series get incidents whatever the length
    t = start + STEP * np.arange(points)
    base = rng.uniform(20, 200, count)[:, None]
    amplitude = base * rng.uniform(0.2, 0.5, count)[:, None]
    phase = rng.uniform(0, 1, count)[:, None]
    day = np.sin(2 * np.pi * (t[None, :] / CYCLE_SECONDS + phase))
    noise = rng.normal(0, 1, (count, points)) * base * rng.uniform(0.02, 0.08, count)[:, None]
    values = base + amplitude * day + noise
    for i in np.flatnonzero(incident):
        begin = int(rng.integers(points // 3, points - 5))
        length = int(rng.integers(20, 120))
        values[i, begin : begin + length] *= rng.uniform(1.6, 2.5)
    return np.round(np.maximum(values, 0.0), 3), incident


def detector_name(i: int) -> str:
    return f"d{i:05d}"


# ---------------------------------------------------------------------------------------------
# The Kubernetes API: the emulator in its own process, or a real server (bench/realapi.py).
# ---------------------------------------------------------------------------------------------

def detector_manifest(i: int, interval: float) -> dict[str, Any]:
    """Detector ``i``: its own ``S`` series, every ``interval`` seconds at step 1m."""
    return {
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
        "metadata": {"name": detector_name(i), "namespace": "default"},
        "spec": {"query": f'{METRIC}{{detector="{detector_name(i)}"}}', "interval": f"{interval:g}s",
                 "step": f"{STEP:g}s"},
    }


def _emulator_main(conn: multiprocessing.connection.Connection, kubeconfig: str, count: int,
                   interval: float) -> None:
    """Child process: serve the emulated API, create ``count`` detectors, count requests."""
    from vigil.api import crdgen
    from vigil_sandbox.kubeapi import KubeAPIServer, RequestRecord

    lock = threading.Lock()
    tally = apitally.Tally(count)

    def listen(record: RequestRecord) -> None:
        with lock:
            tally.add(_request(record))

    with KubeAPIServer(crds=crdgen.all_crds(), request_log_size=100) as server:
        server.handler.listeners.append(listen)
        server.write_kubeconfig(kubeconfig)
        started = time.perf_counter()
        for i in range(count):
            server.create(detector_manifest(i, interval))
        conn.send(("ready", time.perf_counter() - started))
        while True:
            command = conn.recv()
            if command == "tally":
                with lock:
                    conn.send(json.loads(json.dumps(tally.as_dict())))
            else:
                break
    conn.send("stopped")


def _request(record: Any) -> apitally.Request:
    """The emulator's record of one request, as the tally counts it."""
    involved = None
    if record.plural == "events" and isinstance(record.body, dict):
        about = record.body.get("involvedObject") or {}
        if about.get("kind") and about.get("name"):
            involved = (str(about["kind"]), str(about["name"]))
    return apitally.Request(verb=record.verb, plural=record.plural, subresource=record.subresource,
                            name=record.name, code=record.status, received=record.received,
                            duration=record.duration, involved=involved)


class KubeBackend(Protocol):
    """The Kubernetes API one run measures against: the emulator or a real kube-apiserver + etcd."""

    #: ``emulator`` or ``real`` (``--kube``), and what its CPU column is the CPU of.
    name: str
    label: str
    kubeconfig: pathlib.Path
    #: Seconds it took to create the N detectors on it.
    create_seconds: float

    def pids(self) -> dict[str, int]:
        """The server side's processes by name (their CPU is its cost); raises once one has died."""

    def tally(self) -> dict[str, Any]:
        """The operator's requests so far (:meth:`bench.apitally.Tally.as_dict`)."""

    def extra(self) -> dict[str, float]:
        """Figures of its own sampled with every tally (etcd's database size); may be empty."""

    def stop(self) -> None: ...


def open_backend(kind: str, workdir: pathlib.Path, count: int, interval: float) -> KubeBackend:
    """Start the API server ``kind`` (``emulator`` or ``real``) with ``count`` detectors created."""
    if kind == "real":
        from bench.realapi import RealAPI

        real_dir = workdir / "kube"
        real_dir.mkdir()
        return RealAPI(real_dir, [detector_manifest(i, interval) for i in range(count)], count)
    return Emulator(workdir, count, interval)


class Emulator:
    """Handle on the emulator child process."""

    name = "emulator"
    label = "emulator"

    def __init__(self, workdir: pathlib.Path, count: int, interval: float) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_emulator_main, args=(child, str(self.kubeconfig), count, interval),
                                   name="bench-kubeapi", daemon=True)
        self.process.start()
        limit = max(600.0, 0.2 * count)  # creating 10,000 objects on a loaded machine takes minutes
        if not self._conn.poll(limit):
            raise RuntimeError(f"the emulator did not come up and create {count} detectors within {limit:g} s")
        _, self.create_seconds = self._conn.recv()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def pids(self) -> dict[str, int]:
        self._alive()
        return {"emulator": self.pid}

    def extra(self) -> dict[str, float]:
        return {}

    def _alive(self) -> None:
        if not self.process.is_alive():
            raise RuntimeError(f"the emulator died (exit code {self.process.exitcode})")

    def tally(self) -> dict[str, Any]:
        self._alive()
        self._conn.send("tally")
        result: dict[str, Any] = self._conn.recv()
        return result

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.send("stop")
            self._conn.poll(15)
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# ---------------------------------------------------------------------------------------------
# Measuring.
# ---------------------------------------------------------------------------------------------

cpu_seconds = procstat.cpu_seconds
peak_rss_mib = procstat.peak_rss_mib


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def total(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in metrics.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


def buckets(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str,
            **want: str) -> list[tuple[float, float]]:
    return sorted((float(labels["le"]), v) for labels, v in metrics.get(f"{name}_bucket", [])
                  if all(labels.get(k) == value for k, value in want.items()))


def quantile(q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """histogram_quantile over the bucket deltas (linear within a bucket, like Prometheus)."""
    deltas = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    count = deltas[-1][1] if deltas else 0
    if count <= 0:
        return math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in deltas:
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bucket: report its bound
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = le, cumulative
    return lower


@dataclasses.dataclass
class Snapshot:
    at: float
    operator_cpu: float
    #: CPU seconds of each of the API server's processes (the emulator; or kube-apiserver and etcd).
    api_cpu: dict[str, float]
    prometheus_cpu: float
    harness_cpu: float
    operator: dict[str, list[tuple[dict[str, str], float]]]
    queries: float
    tally: dict[str, Any]
    api_extra: dict[str, float] = dataclasses.field(default_factory=dict)


def snapshot(operator: OperatorProcess, api: KubeBackend, prometheus: PrometheusServer, *,
             cpu_first: bool) -> Snapshot:
    """Scrape the operator's /metrics outside the CPU window (its own cost is not the workload)."""
    assert operator.proc is not None and prometheus.pid is not None
    pids = api.pids()

    def cpus() -> tuple[float, float, dict[str, float], float, float]:
        return (time.time(), cpu_seconds(operator.proc.pid),  # type: ignore[union-attr]
                {name: cpu_seconds(pid) for name, pid in pids.items()},
                cpu_seconds(prometheus.pid), time.process_time())  # type: ignore[arg-type]

    if cpu_first:
        at, op, server, pr, me = cpus()
    tally = api.tally()
    extra = api.extra()
    queries = total(scrape(f"{prometheus.url}/metrics"), "prometheus_http_requests_total",
                    handler="/api/v1/query_range")
    metrics = scrape(f"{operator.url}/metrics")
    if not cpu_first:
        at, op, server, pr, me = cpus()
    return Snapshot(at, op, server, pr, me, metrics, queries, tally, extra)


@dataclasses.dataclass
class Result:
    n: int
    series: int
    interval: float
    window: float
    lag_p50: float
    lag_p99: float
    evals_per_s: float
    evals_per_batch: float
    series_per_s: float
    cpu_ms_per_series: float
    cores: float
    peak_rss_mib: float
    queries_per_eval: float
    status_per_min: float
    events_per_min: float
    other_per_min: float
    writes_per_detector_hour: float
    other_writes: dict[str, int]
    infer_us_per_series: float
    startup_first_s: float
    startup_all_s: float
    create_s: float
    #: The API server's cores (all its processes) and mean service time of the operator's requests.
    api_cores: float
    api_ms_per_request: float
    prometheus_cores: float
    harness_cores: float
    prometheus_errors: float
    profile: list[tuple[str, float]] | None = None
    #: From spawning `vigil run` until it had evaluated every detector once (its own
    #: ``vigil_detectors_unevaluated`` reaching 0); the status writes may come later (they are queued).
    startup_evaluated_s: float = math.nan
    #: Detectors with no Event in the window (no verdict or condition change), and their writes.
    quiet_detectors: int = 0
    quiet_writes_per_detector_hour: float = math.nan
    quiet_max_writes: int = 0
    #: Which API server: ``emulator`` or ``real`` (kube-apiserver + etcd), and its cores per process.
    kube: str = "emulator"
    api_cores_by_process: dict[str, float] = dataclasses.field(default_factory=dict)
    #: etcd's database (real server only): backend file and in-use size at the window's end (MiB), and
    #: their growth over the window, per hour.
    etcd_db_mib: float = math.nan
    etcd_db_in_use_mib: float = math.nan
    etcd_db_growth_mib_per_hour: float = math.nan
    etcd_db_in_use_growth_mib_per_hour: float = math.nan
    #: Mean service time of the operator's status writes, in ms (what one costs the API server).
    status_write_ms: float = math.nan
    #: ``--restart``: from spawning the new `vigil run` until all N evaluated again, and until the first
    #: 10 s window whose p99 evaluation lag is under 5 s (steady state).
    restart_evaluated_s: float = math.nan
    restart_steady_s: float = math.nan
    #: ``--restart``: until the new process' first verdict (its first evaluation of any detector).
    restart_first_s: float = math.nan
    #: The operator's garbage collector in the window (``vigil_gc_pause_seconds``): share of wall time spent
    #: collecting, full (generation 2) collections per minute, and their p99 and longest-bucket pause.
    gc_share: float = math.nan
    gc2_per_min: float = math.nan
    gc2_pause_p99_s: float = math.nan


#: Result fields renamed since docs/bench/scale.json files were written (``--render`` reads old ones).
RENAMED = {"emulator_cores": "api_cores", "emulator_ms_per_request": "api_ms_per_request"}


def saved_result(raw: dict[str, Any]) -> Result:
    """A Result from a saved scale.json entry, older field names included."""
    return Result(**{RENAMED.get(key, key): value for key, value in raw.items()})


def measure(before: Snapshot, after: Snapshot, n: int, config: Config, startup: tuple[float, float],
            create_s: float) -> Result:
    elapsed = after.at - before.at
    a, b = after.operator, before.operator
    evaluations = total(a, "vigil_evaluations_total") - total(b, "vigil_evaluations_total")
    rows = total(a, "vigil_inference_rows_total") - total(b, "vigil_inference_rows_total")
    batches = (total(a, "vigil_evaluation_duration_seconds_count")
               - total(b, "vigil_evaluation_duration_seconds_count"))
    infer = total(a, "vigil_inference_duration_seconds_sum") - total(b, "vigil_inference_duration_seconds_sum")
    lag_b, lag_a = buckets(b, "vigil_evaluation_lag_seconds"), buckets(a, "vigil_evaluation_lag_seconds")
    cpu = after.operator_cpu - before.operator_cpu
    writes_b, writes_a = before.tally["writes"], after.tally["writes"]
    delta = {k: writes_a.get(k, 0) - writes_b.get(k, 0) for k in writes_a}
    status = sum(v for k, v in delta.items() if k.startswith("status:"))
    events = delta.get("events", 0)
    other = {k.removeprefix("other:"): v for k, v in delta.items() if k.startswith("other:") and v}
    detector_writes = delta.get("status:anomalydetectors", 0) + events
    requests = after.tally["requests"] - before.tally["requests"]
    per_b, per_a = before.tally.get("per_detector", {}), after.tally.get("per_detector", {})
    moved = {name: [c - p for c, p in zip(counts, per_b.get(name, [0, 0]), strict=True)]
             for name, counts in per_a.items()}
    quiet = [status for name, (status, events) in moved.items() if events == 0]
    quiet += [0] * max(0, n - len(moved))  # detectors that wrote nothing at all are quiet too
    service = after.tally["service_s"] - before.tally["service_s"]
    spent_b, spent_a = before.tally.get("write_service_s", {}), after.tally.get("write_service_s", {})
    status_spent = sum(v - spent_b.get(k, 0.0) for k, v in spent_a.items() if k.startswith("status:"))
    minutes = elapsed / 60
    result = Result(
        n=n, series=config.series, interval=config.interval, window=elapsed,
        lag_p50=quantile(0.5, lag_b, lag_a), lag_p99=quantile(0.99, lag_b, lag_a),
        evals_per_s=evaluations / elapsed, evals_per_batch=evaluations / batches if batches else math.nan,
        series_per_s=rows / elapsed,
        cpu_ms_per_series=1000 * cpu / rows if rows else math.nan, cores=cpu / elapsed,
        peak_rss_mib=0.0,
        queries_per_eval=(after.queries - before.queries) / evaluations if evaluations else math.nan,
        status_per_min=status / minutes, events_per_min=events / minutes, other_per_min=sum(other.values()) / minutes,
        writes_per_detector_hour=detector_writes / n / (elapsed / 3600), other_writes=other,
        infer_us_per_series=1e6 * infer / rows if rows else math.nan,
        startup_first_s=startup[0], startup_all_s=startup[1], create_s=create_s,
        api_cores=(sum(after.api_cpu.values()) - sum(before.api_cpu.values())) / elapsed,
        api_ms_per_request=1000 * service / requests if requests else math.nan,
        prometheus_cores=(after.prometheus_cpu - before.prometheus_cpu) / elapsed,
        harness_cores=(after.harness_cpu - before.harness_cpu) / elapsed,
        prometheus_errors=total(a, "vigil_prometheus_errors_total") - total(b, "vigil_prometheus_errors_total"),
        quiet_detectors=len(quiet),
        quiet_writes_per_detector_hour=sum(quiet) / len(quiet) / (elapsed / 3600) if quiet else math.nan,
        quiet_max_writes=max(quiet, default=0),
        kube=config.kube,
        status_write_ms=1000 * status_spent / status if status else math.nan,
        api_cores_by_process={name: (seconds - before.api_cpu.get(name, 0.0)) / elapsed
                              for name, seconds in after.api_cpu.items()},
    )
    gc_spent = total(a, "vigil_gc_pause_seconds_sum") - total(b, "vigil_gc_pause_seconds_sum")
    full = (total(a, "vigil_gc_pause_seconds_count", generation="2")
            - total(b, "vigil_gc_pause_seconds_count", generation="2"))
    if "vigil_gc_pause_seconds_sum" in a:
        result.gc_share = gc_spent / elapsed
        result.gc2_per_min = full / minutes
        result.gc2_pause_p99_s = quantile(0.99, buckets(b, "vigil_gc_pause_seconds", generation="2"),
                                          buckets(a, "vigil_gc_pause_seconds", generation="2"))
    etcd = _etcd_figures(before.api_extra, after.api_extra, elapsed)
    result.etcd_db_mib = etcd.get("etcd_db_mib", math.nan)
    result.etcd_db_in_use_mib = etcd.get("etcd_db_in_use_mib", math.nan)
    result.etcd_db_growth_mib_per_hour = etcd.get("etcd_db_growth_mib_per_hour", math.nan)
    result.etcd_db_in_use_growth_mib_per_hour = etcd.get("etcd_db_in_use_growth_mib_per_hour", math.nan)
    return result


def _etcd_figures(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, float]:
    """etcd's database size at the end and its growth per hour over the window, in MiB (real server only)."""
    out = {}
    for key, field in (("etcd_db_bytes", "etcd_db"), ("etcd_db_in_use_bytes", "etcd_db_in_use")):
        if key in before and key in after:
            out[f"{field}_mib"] = after[key] / 2**20
            out[f"{field}_growth_mib_per_hour"] = (after[key] - before[key]) / 2**20 / (elapsed / 3600)
    return out


# ---------------------------------------------------------------------------------------------
# One N.
# ---------------------------------------------------------------------------------------------

def run_one(n: int, config: Config, prometheus: PrometheusServer, workdir: pathlib.Path) -> Result:
    print(f"\n== N={n} detectors x {config.series} series, interval {config.interval:g}s", flush=True)
    api = open_backend(config.kube, workdir, n, config.interval)
    operator: OperatorProcess | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        print(f"   {n} detectors created in the {api.label} in {api.create_seconds:.1f}s", flush=True)
        args = ["--prometheus-url", prometheus.url, "--heartbeat", f"{config.heartbeat:g}", *config.operator_args]
        operator = OperatorProcess(api.kubeconfig, workdir, args, name=f"operator-{n}")
        spawned = time.time()
        operator.start(ready_timeout=120)

        evaluated_at: list[float] = []

        def all_written() -> dict[str, Any]:
            if operator is not None and operator.proc is not None and operator.proc.poll() is not None:
                raise RuntimeError(f"operator exited:\n{operator.log()[-3000:]}")
            if not evaluated_at and operator is not None and all_evaluated(operator, n):
                evaluated_at.append(time.time())
            tally = api.tally()
            return tally if tally["all_status"] is not None and evaluated_at else {}

        tally = wait_for(all_written, timeout=max(120.0, 4 * config.interval + n / 20), interval=0.5,
                         what=f"a first status on all {n} detectors")
        startup = (tally["first_status"] - spawned, tally["all_status"] - spawned)
        print(f"   start-up: all {n} evaluated after {evaluated_at[0] - spawned:.1f}s; first status written after "
              f"{startup[0]:.1f}s, all {n} after {startup[1]:.1f}s; warm-up {config.warmup:g}s", flush=True)
        time.sleep(config.warmup)
        assert operator.proc is not None
        if config.profile is not None:
            spy = _start_profiler(config.profile, n, operator.proc.pid, config.window)
        before = snapshot(operator, api, prometheus, cpu_first=False)
        print(f"   measuring for {config.window:g}s", flush=True)
        _sleep_watching(config.window, operator)
        after = snapshot(operator, api, prometheus, cpu_first=True)
        result = measure(before, after, n, config, startup, api.create_seconds)
        result.startup_evaluated_s = evaluated_at[0] - spawned
        result.peak_rss_mib = peak_rss_mib(operator.proc.pid)
        if spy is not None and config.profile is not None:
            spy.wait(timeout=60)
            result.profile = hot_spots(config.profile / f"operator-{n}.txt")
        if result.evals_per_s <= 0:
            raise RuntimeError(f"nothing was evaluated at N={n}; operator log tail:\n{operator.log()[-3000:]}")
        if config.restart:
            operator.stop()
            operator = OperatorProcess(api.kubeconfig, workdir, args, name=f"operator-{n}-restarted")
            result.restart_first_s, result.restart_evaluated_s, result.restart_steady_s = time_restart(
                operator, n, config)
        errors = operator.errors()
        if errors:
            print(f"   operator logged {len(errors)} errors, first: {errors[0][:300]}", flush=True)
        print_result(result)
        return result
    finally:
        if spy is not None and spy.poll() is None:
            spy.terminate()
            spy.wait()
        if operator is not None:
            operator.stop()
        api.stop()


STEADY_LAG_S = 5.0  # the lag goal: a restarted operator is steady once a window's p99 is under it
STEADY_WINDOW_S = 10.0
LAG_BUCKETS = "vigil_evaluation_lag_seconds_bucket"


def time_restart(operator: OperatorProcess, n: int, config: Config) -> tuple[float, float, float]:
    """Start ``operator`` (a new `vigil run` on the same N existing detectors, with their statuses) and
    time it: until its first verdict, until all N are evaluated, and until the first STEADY_WINDOW_S
    window with p99 lag under STEADY_LAG_S."""
    spawned = time.time()
    operator.start(ready_timeout=120)
    limit = max(300.0, 4 * config.interval + n / 20)
    first = wait_for(lambda: time.time() if evaluations(operator) > 0 else None, timeout=limit, interval=0.2,
                     what="the first verdict after the restart") - spawned
    print(f"   restart: first verdict after {first:.1f}s", flush=True)
    evaluated = wait_for(lambda: time.time() if all_evaluated(operator, n) else None, timeout=limit, interval=0.5,
                         what=f"all {n} detectors evaluated after the restart") - spawned
    print(f"   restart: all {n} evaluated after {evaluated:.1f}s", flush=True)

    def lag_buckets() -> list[tuple[float, float]]:
        status, text = operator.get(f"/metrics?name[]={LAG_BUCKETS}")
        assert status == 200, text
        return sorted((float(sample.labels["le"]), sample.value) for family in text_string_to_metric_families(text)
                      for sample in family.samples if sample.name == LAG_BUCKETS)

    deadline = time.monotonic() + limit
    before = lag_buckets()
    while time.monotonic() < deadline:
        _sleep_watching(STEADY_WINDOW_S, operator)
        after = lag_buckets()
        p99 = quantile(0.99, before, after)
        if not math.isnan(p99) and p99 < STEADY_LAG_S:
            steady = time.time() - spawned
            print(f"   restart: steady (p99 lag {p99:.2f}s over {STEADY_WINDOW_S:g}s) after {steady:.1f}s", flush=True)
            return first, evaluated, steady
        before = after
    print(f"   restart: not steady within {limit:g}s", flush=True)
    return first, evaluated, math.nan


def evaluations(operator: OperatorProcess) -> float:
    """The operator's evaluations so far (any result), 0 while it cannot answer."""
    status, text = operator.get("/metrics?name[]=vigil_evaluations_total")
    if status != 200:
        return 0.0
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "vigil_evaluations_total")


def all_evaluated(operator: OperatorProcess, n: int) -> bool:
    """Whether the operator has registered all ``n`` detectors and evaluated each once (two gauges only)."""
    status, text = operator.get("/metrics?name[]=vigil_detectors&name[]=vigil_detectors_unevaluated")
    if status != 200:
        return False
    values = {sample.name: sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples}
    return values.get("vigil_detectors", 0) >= n and values.get("vigil_detectors_unevaluated", 1) == 0


def _sleep_watching(seconds: float, operator: OperatorProcess) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        if operator.proc is not None and operator.proc.poll() is not None:
            raise RuntimeError(f"operator exited during the window:\n{operator.log()[-3000:]}")


_IDLE = ("EpollSelector.select (", "_worker (concurrent/futures/thread.py)", "Condition.wait (", "Event.wait (",
         "Thread._wait_for_tstate_lock (")


def hot_spots(path: pathlib.Path, top: int = 6) -> list[tuple[str, float]]:
    """Where the operator's CPU samples go (py-spy raw stacks: 'frame;frame;... count'; idle waits left out).

    The ``top`` vigil functions by inclusive share (which stage of the pipeline), then the ``top``
    functions by self share (the leaves that burn the time), per function rather than per line.
    """
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", frame.strip()) for frame in stack.split(";")]
        if frames[-1].startswith(_IDLE):
            continue  # a thread parked in epoll or on its work queue (py-spy samples these as active)
        samples += int(count)
        for name in set(frames):
            if "vigil/" in name and not name.startswith(("<module>", "main (", "_run (", "run (")):
                inclusive[name] = inclusive.get(name, 0) + int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    if not samples:
        return []

    def ranked(table: dict[str, int], tag: str) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(f"{tag} {name}", 100.0 * c / samples) for name, c in best]

    return ranked(inclusive, "incl") + ranked(own, "self")


def _start_profiler(folder: pathlib.Path, n: int, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50", "--nonblocking",
         "--format", "raw", "--output", str(folder / f"operator-{n}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------------------------------------
# Reporting.
# ---------------------------------------------------------------------------------------------

def _f(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def print_result(r: Result) -> None:
    print(f"   evaluation lag p50 {_f(r.lag_p50, 3)}s p99 {_f(r.lag_p99, 3)}s; {r.evals_per_s:.1f} evaluations/s "
          f"({r.series_per_s:.0f} series/s, {_f(r.evals_per_batch, 1)} detectors per batch)", flush=True)
    print(f"   operator: {r.cores:.3f} cores, {_f(r.cpu_ms_per_series, 3)} ms CPU per evaluated series, "
          f"peak RSS {r.peak_rss_mib:.0f} MiB; features+inference {_f(r.infer_us_per_series, 1)} us per series")
    print(f"   Prometheus queries per evaluation {_f(r.queries_per_eval)}; Kubernetes writes/min: status "
          f"{r.status_per_min:.1f}, events {r.events_per_min:.1f}, other {r.other_per_min:.1f} {r.other_writes}; "
          f"{r.writes_per_detector_hour:.2f} detector writes per detector per hour")
    print(f"   quiet detectors (no Event in the window): {r.quiet_detectors}, "
          f"{_f(r.quiet_writes_per_detector_hour)} status writes per detector per hour, at most {r.quiet_max_writes}")
    if r.kube == "real":
        processes = ", ".join(f"{name} {cores:.3f}" for name, cores in sorted(r.api_cores_by_process.items()))
        print(f"   etcd database {_f(r.etcd_db_mib)} MiB ({_f(r.etcd_db_in_use_mib)} MiB in use), growth "
              f"{_f(r.etcd_db_growth_mib_per_hour)} MiB/h ({_f(r.etcd_db_in_use_growth_mib_per_hour)} MiB/h in use)")
    else:
        processes = ""
    print(f"   peers: {API_LABELS[r.kube]} {r.api_cores:.3f} cores{f' ({processes})' if processes else ''}, "
          f"{_f(r.api_ms_per_request)} ms per request ({_f(r.status_write_ms)} per status write); "
          f"Prometheus {r.prometheus_cores:.3f} cores, harness {r.harness_cores:.3f} cores; "
          f"Prometheus errors {r.prometheus_errors:g}", flush=True)


HEADERS = ("N", "lag p50 s", "lag p99 s", "evals/s", "evals/batch", "CPU ms/series", "cores", "peak RSS MiB",
           "queries/eval",
           "status writes/min", "events/min", "other writes/min", "writes/detector/h", "feat+inf us/series",
           "first status s", "all evaluated s", "all statuses s")


def row(r: Result) -> list[str]:
    return [str(r.n), _f(r.lag_p50, 3), _f(r.lag_p99, 3), f"{r.evals_per_s:.1f}", _f(r.evals_per_batch, 1),
            _f(r.cpu_ms_per_series, 3),
            f"{r.cores:.3f}", f"{r.peak_rss_mib:.0f}", _f(r.queries_per_eval), f"{r.status_per_min:.1f}",
            f"{r.events_per_min:.1f}", f"{r.other_per_min:.1f}", f"{r.writes_per_detector_hour:.2f}",
            _f(r.infer_us_per_series, 1), f"{r.startup_first_s:.1f}", _f(r.startup_evaluated_s, 1),
            f"{r.startup_all_s:.1f}"]


CURVE_HEADERS = ("N", "cores / N (milli)", "RSS MiB / N", "evals/s / N", "writes/min / N", "first status s / N (ms)",
                 "all statuses s / N (ms)", "CPU ms/series vs smallest N", "marginal CPU ms/series",
                 "marginal RSS KiB/series")


def curve_row(r: Result, base: Result, previous: Result | None = None) -> list[str]:
    writes = r.status_per_min + r.events_per_min + r.other_per_min
    marginal = memory = "n/a"
    if previous is not None and r.series_per_s > previous.series_per_s:
        marginal = f"{1000 * (r.cores - previous.cores) / (r.series_per_s - previous.series_per_s):.3f}"
    if previous is not None and r.n > previous.n:
        memory = f"{marginal_kib_per_series([previous, r])[0][2]:.2f}"
    return [str(r.n), f"{1000 * r.cores / r.n:.3f}", f"{r.peak_rss_mib / r.n:.4f}", f"{r.evals_per_s / r.n:.4f}",
            f"{writes / r.n:.4f}", f"{1000 * r.startup_first_s / r.n:.2f}", f"{1000 * r.startup_all_s / r.n:.2f}",
            f"{r.cpu_ms_per_series / base.cpu_ms_per_series:.2f}x", marginal, memory]


def curve_rows(results: Sequence[Result]) -> list[list[str]]:
    return [curve_row(r, results[0], results[i - 1] if i else None) for i, r in enumerate(results)]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def marginal_kib_per_series(results: Sequence[Result]) -> list[tuple[int, int, float]]:
    """(N from, N to, extra peak RSS in KiB per extra series) between consecutive N: fixed costs cancel out."""
    ordered = sorted(results, key=lambda r: r.n)
    return [(a.n, b.n, 1024 * (b.peak_rss_mib - a.peak_rss_mib) / ((b.n - a.n) * b.series))
            for a, b in itertools.pairwise(ordered) if b.n > a.n]


def steady(r: Result, config: Config) -> bool:
    """Whether the window held a whole heartbeat period, so its write rate is the steady state's."""
    return r.window >= 0.95 * config.heartbeat


def total_writes_per_s(r: Result) -> float:
    return (r.status_per_min + r.events_per_min + r.other_per_min) / 60


def goals(results: Sequence[Result], config: Config) -> list[str]:
    """Issue 16's goals, judged on the measured figures; a goal whose N is not in the run says so."""
    if config.interval != 60 or config.series != 5:
        return ["- Not the goal setup (S=5, I=60 s): no verdict."]
    lines = []
    by_n = {r.n: r for r in results}

    def judge(text: str, ok: bool) -> None:
        lines.append(f"- {'met' if ok else '**MISSED**'}: {text}")

    big = by_n.get(BIG_N)
    if big is None:
        lines.append(f"- N={BIG_N} not in this run: its goals (lag, cores, RSS, start-up) have no verdict.")
    else:
        judge(f"p99 evaluation lag {_f(big.lag_p99, 3)} s < 5 s (N={BIG_N})", big.lag_p99 < 5)
        judge(f"operator {big.cores:.3f} cores < 1 core (N={BIG_N})", big.cores < 1)
        judge(f"peak RSS {big.peak_rss_mib:.0f} MiB < 1024 MiB (N={BIG_N})", big.peak_rss_mib < 1024)
        judge(f"all {BIG_N} existing detectors evaluated {_f(big.startup_evaluated_s, 1)} s after start < 60 s "
              f"(their first statuses written after {big.startup_first_s:.1f} s to {big.startup_all_s:.1f} s)",
              big.startup_evaluated_s < 60)

    for r in results:
        if not math.isnan(r.restart_evaluated_s):
            first = "" if math.isnan(r.restart_first_s) else f"first verdict {r.restart_first_s:.1f} s, "
            lines.append(f"- restart with {r.n} existing detectors (--restart): {first}all evaluated "
                         f"{r.restart_evaluated_s:.1f} s after the new process started, steady (p99 lag < "
                         f"{STEADY_LAG_S:g} s over {STEADY_WINDOW_S:g} s) after {_f(r.restart_steady_s, 1)} s")
    mid = by_n.get(GOAL_N)
    if mid is None:
        lines.append(f"- N={GOAL_N} not in this run: its RSS goal has no verdict.")
    else:
        judge(f"peak RSS {mid.peak_rss_mib:.0f} MiB < 300 MiB (N={GOAL_N})", mid.peak_rss_mib < 300)
    inside = [m for m in marginal_kib_per_series([r for r in results if 1000 <= r.n <= BIG_N])]
    if len(inside) >= 2:
        values = [v for _, _, v in inside]
        ratio = max(values) / min(values) if min(values) > 0 else math.inf
        judge(f"memory per series flat from N=1000 to N={BIG_N}: marginal peak RSS per series "
              + ", ".join(f"{v:.1f} KiB ({a}->{b})" for a, b, v in inside) + f"; max/min {ratio:.2f} <= 1.25",
              ratio <= 1.25)
    elif inside:
        a, b, v = inside[0]
        lines.append(f"- marginal peak RSS per series {v:.1f} KiB ({a}->{b}); flatness needs three N in 1000..{BIG_N}")
    judged = [r for r in results if steady(r, config)]
    quiet = [r for r in judged if not math.isnan(r.quiet_writes_per_detector_hour)]
    if quiet:
        worst_quiet = max(quiet, key=lambda r: r.quiet_writes_per_detector_hour)
        judge(f"a quiet detector (no Event in the window: {worst_quiet.quiet_detectors} of {worst_quiet.n}) writes "
              f"{worst_quiet.quiet_writes_per_detector_hour:.2f} times per hour on average, at most "
              f"{worst_quiet.quiet_max_writes} in the {worst_quiet.window:.0f} s window, <= 4 (N={worst_quiet.n})",
              worst_quiet.quiet_writes_per_detector_hour <= 4)
    elif judged:
        lines.append("- writes of quiet detectors alone: not measured in this run (no per-detector tally)")
    if judged:
        worst = max(judged, key=lambda r: r.writes_per_detector_hour)
        within = "within" if worst.writes_per_detector_hour <= 4 else "above"
        lines.append(f"- all detectors, quiet or not: at most {worst.writes_per_detector_hour:.2f} detector writes "
                     f"(status + Events) per detector per hour (N={worst.n}; {within} 4), measured over a "
                     f"{worst.window:.0f} s window, heartbeat {config.heartbeat:g} s; verdict changes "
                     "of the synthetic incidents and flapping come on top of the heartbeat")
    others = [f"{r.n} ({r.window:.0f} s)" for r in results if not steady(r, config)]
    if others:
        lines.append(f"- writes per detector per hour not judged at N={', '.join(others)}: the window "
                     f"was shorter than one heartbeat ({config.heartbeat:g} s), so it holds none or all of the "
                     "heartbeat writes")
    if big is not None:
        lines.append(f"- total API writes at N={BIG_N}: {total_writes_per_s(big):.2f}/s (status "
                     f"{big.status_per_min / 60:.2f}, Events {big.events_per_min / 60:.2f}, Lease "
                     f"{big.other_per_min / 60:.2f})" + ("" if steady(big, config) else
                                                          "; window shorter than a heartbeat"))
    return lines


def revision() -> str:
    """The commit measured (and whether the tree had local changes), and the built-in model."""
    commit = procstat.commit(ROOT) or "unknown commit"
    from vigil import features
    from vigil.adapters import inference

    info = inference.Scorer(inference.builtin_bytes()).info
    return f"commit {commit}, built-in model {info.name} ({features.FEATURE_VERSION}, window {features.WINDOW} points)"


def _window() -> int:
    from vigil import features

    return features.WINDOW


def _min_points() -> int:
    from vigil import features

    return features.MIN_POINTS


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        kib = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs ({model}){memory}, Linux {platform.release()}, Python {platform.python_version()}; "
            f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


API_LABELS = {"emulator": "emulator", "real": "kube-apiserver + etcd"}


def peers_table(results: Sequence[Result], kube: str) -> str:
    """The peers' own cost per N: the API server's (labelled for what it is), Prometheus', the harness'."""
    label = API_LABELS[kube]
    headers = ["N", f"{label} cores"]
    if kube == "real":
        headers += ["kube-apiserver cores", "etcd cores"]
    headers += [f"{'API' if kube == 'real' else 'emulator'} ms/request", "ms/status write"]
    if kube == "real":
        headers += ["etcd DB MiB (in use)", "etcd DB growth MiB/h (in use)"]
    headers += ["Prometheus cores", "harness cores", "detectors created s", "Prometheus errors",
                "other writes in window"]
    rows = []
    for r in results:
        cells = [str(r.n), f"{r.api_cores:.3f}"]
        if kube == "real":
            cells += [f"{r.api_cores_by_process.get('kube-apiserver', math.nan):.3f}",
                      f"{r.api_cores_by_process.get('etcd', math.nan):.3f}"]
        cells += [_f(r.api_ms_per_request), _f(r.status_write_ms)]
        if kube == "real":
            cells += [f"{_f(r.etcd_db_mib, 1)} ({_f(r.etcd_db_in_use_mib, 1)})",
                      f"{_f(r.etcd_db_growth_mib_per_hour, 1)} ({_f(r.etcd_db_in_use_growth_mib_per_hour, 1)})"]
        cells += [f"{r.prometheus_cores:.3f}", f"{r.harness_cores:.3f}", f"{r.create_s:.1f}",
                  f"{r.prometheus_errors:g}",
                  ", ".join(f"{k} {v}" for k, v in sorted(r.other_writes.items())) or "none"]
        rows.append(cells)
    return markdown_table(headers, rows)


def api_setup(kube: str) -> tuple[str, str]:
    """How the report describes the API server: (the setup sentence, who counted the writes)."""
    if kube == "real":
        return ("a real Kubernetes API server\n(kube-apiserver and etcd of `scripts/kube-bins.sh`'s pinned release, "
                "started by `tests/realkube.py`; etcd compacted\nby kube-apiserver every 5 minutes as in a cluster, "
                "the audit log written in blocking mode) with the project's CRDs, fresh for each N",
                "API writes counted from\nkube-apiserver's audit log (the operator's user agents `vigil/` and "
                "`kopf/`; Event creations logged at Request level for\ntheir involvedObject); service time is the "
                "audit log's requestReceived to ResponseComplete, watches left out; etcd's\ndatabase size from its "
                "maintenance status")
    return ("the Kubernetes API\nemulator (`vigil_sandbox.kubeapi`, an in-memory API server with watches, resource "
            "versions, status subresource and\nschema validation) in its own process",
            "API writes counted by the emulator")


def report(results: Sequence[Result], config: Config, runtime: float, host: str,
           measured: Sequence[str] = ()) -> str:
    peers = peers_table(results, config.kube)
    setup, counted = api_setup(config.kube)
    title = " against a real kube-apiserver + etcd" if config.kube == "real" else ""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if config.render is None:
        stamp = now
    else:  # a re-render: the runs' own end times where they were saved, and when it was rendered
        known = [m for m in measured if m]
        stamp = (f"{' and '.join(known)} (runs ended; rendered {now})" if len(known) == len(measured)
                 else f"(run times not saved; rendered {now})")
    return f"""<!-- Written by bench/scale.py: do not edit the measured part by hand; rerun the benchmark. -->
# Scale benchmark{title}

Measured {stamp} on {host}; {config.revision}. Command: `{config.command}`;
total runtime {runtime / 60:.1f} min.{chr(10) + chr(10) + "**Conditions:** " + config.note if config.note else ""}

Setup: one real Prometheus (2.42) with {max(config.ns)} x {config.series} synthetic series (a daily-like cycle
scaled to {CYCLE_SECONDS / 60:.0f} min so the backfilled history spans it, noise, level-shift incidents in ~2% of
series) backfilled with promtool ({config.history_points} points at 1 min, sample counts verified; the model reads up to
{_window()} points and scores from {_min_points()}; the operator keeps of each series its newest points and the
extremes of the older ones, so with a week of history it holds more per series than here: `docs/bench/history.md`
measures that on full windows) plus live samples scraped every {config.scrape_interval} from an in-process
exporter; {setup}; the operator as `python -m vigil run` with leader election on (its Lease
renewals are the "other" writes) and `--heartbeat {config.heartbeat:g}`. Each detector queries
`{METRIC}{{detector="dNNNNN"}}` ({config.series} series) at step 1m, every {config.interval:g} s. The N detectors
exist before the operator starts. After every detector has written its first status and a {config.warmup:g} s
warm-up, a window is measured ({_windows(results)}): CPU from /proc (user + system), lag from the operator's
`vigil_evaluation_lag_seconds` histogram (verdict ready minus scheduled time; quantiles interpolated within
buckets), Prometheus queries counted by Prometheus, {counted}.

## Results

{markdown_table(HEADERS, [row(r) for r in results])}

"writes/detector/h" counts status patches and Events of AnomalyDetectors only; a detector is evaluated
{3600 / config.interval:.0f} times per hour. "feat+inf" is the operator's `vigil_inference_duration_seconds`
(feature extraction and the batched ONNX run) per scored series. Start-up times run from spawning
`vigil run` to the API server receiving the first status write ("first status") / the last detector's first
status write ("all statuses"), and to the operator's own `vigil_detectors_unevaluated` reaching 0 with all N
registered ("all evaluated", polled every 0.5 s through `/metrics?name[]=`: status writes are queued, so
evaluation can finish before the API server has them all).

## Goals (issue 16)

{chr(10).join(goals(results, config))}

## Cost curve (figure / N)

"marginal" is the extra operator CPU per extra evaluated series, and the extra peak RSS per extra series,
from the previous N to this one (fixed per-process costs cancel out).

{markdown_table(CURVE_HEADERS, curve_rows(results))}

## Peers (is the harness the bottleneck?)

{peers}
{_loop_table(results)}{_profiles(results)}"""


def _windows(results: Sequence[Result]) -> str:
    windows = sorted({round(r.window) for r in results})
    if len(windows) == 1:
        return f"{windows[0]} s"
    return ", ".join(f"{round(r.window)} s at N={r.n}" for r in results)


def _loop_table(results: Sequence[Result]) -> str:
    """The operator's garbage collector, which stops its event loop (absent from runs before it was measured)."""
    measured = [r for r in results if not math.isnan(r.gc_share)]
    if not measured:
        return ""
    rows = [[str(r.n), _percent(r.gc_share), _f(r.gc2_per_min), _f(r.gc2_pause_p99_s)] for r in measured]
    table = markdown_table(["N", "% of wall time in GC", "full collections/min", "full collection p99 s"], rows)
    return (f"\n## The operator's garbage collector\n\nFrom `vigil_gc_pause_seconds`: the event loop stands "
            f"still while Python collects, so a long full collection is evaluation lag.\n\n{table}\n")


def _percent(share: float) -> str:
    """A share as a percentage to three significant digits: a small run's 0.008 % must not print as 0.00."""
    return f"{100 * share:.3g}"


def _profiles(results: Sequence[Result]) -> str:
    parts = []
    for r in results:
        if r.profile:
            lines = "\n".join(f"- {pct:.1f}% {name}" for name, pct in r.profile)
            parts.append(f"\n## Operator profile at N={r.n} (py-spy, share of CPU samples)\n\n{lines}\n")
    return "".join(parts)


def plot(results: Sequence[Result], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r.n for r in results]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels = [
        ("evaluation lag (s)", [("p50", [r.lag_p50 for r in results]), ("p99", [r.lag_p99 for r in results])]),
        ("operator CPU ms per evaluated series", [("CPU", [r.cpu_ms_per_series for r in results])]),
        ("operator cores", [("cores", [r.cores for r in results])]),
        ("peak RSS (MiB)", [("RSS", [r.peak_rss_mib for r in results])]),
        ("writes per detector per hour", [("status+events", [r.writes_per_detector_hour for r in results])]),
        ("start-up (s)", [("first status", [r.startup_first_s for r in results]),
                          ("all evaluated", [r.startup_evaluated_s for r in results]),
                          ("all statuses", [r.startup_all_s for r in results])]),
    ]
    for ax, (title, lines) in zip(axes.flat, panels, strict=True):
        for label, values in lines:
            ax.plot(ns, values, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)  # a zoomed axis would make a flat line look like a swing
        ax.set_title(title)
        ax.set_xlabel("detectors (N)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    api = "real kube-apiserver + etcd" if results[0].kube == "real" else "API emulator"
    fig.suptitle(f"vigil scale benchmark: S={results[0].series}, interval {results[0].interval:g}s, {api}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def peers(config: Config) -> Iterator[PrometheusServer]:
    count = max(config.ns) * config.series
    live = config.live_minutes
    # History runs a little into the future: up to the first scrape that is sure to land (the scrape
    # interval bounds it, not the data's spacing); live points follow from there, one per minute.
    scrape_s = float(config.scrape_interval.removesuffix("s"))
    start_time = seamless_start_time(scrape_s)
    points = config.history_points
    first = start_time - (points - 1) * STEP
    started = time.perf_counter()
    values, incident = synthetic(count, points + live, first)
    history, replay = [], []
    for i in range(count):
        labels = {"detector": detector_name(i // config.series), "pod": f"p{i % config.series}"}
        h, r = split_for_replay(METRIC, labels, values[i], live_from=points, start_time=start_time,
                                spacing=STEP)
        history.append(h)
        replay.append(r)
    print(f"generated {count} series x {points} history + {live} live points "
          f"({int(incident.sum())} with incidents) in {time.perf_counter() - started:.1f}s", flush=True)
    with ReplayExporter(replay, start_time, STEP) as exporter:
        started = time.perf_counter()
        del values
        with PrometheusServer(history, scrape_targets=[exporter.target], scrape_interval=config.scrape_interval,
                              ready_timeout=600) as prometheus:
            print(f"Prometheus up with {count * points} backfilled samples (counts verified) in "
                  f"{time.perf_counter() - started:.1f}s; waiting for live samples", flush=True)
            del history
            prometheus.wait_for_targets(deadline=120)
            yield prometheus
            # The live half of the data really arrived (checked at the end: no wait up front).
            query = f"count(timestamp({METRIC}) > {start_time:.3f})"
            wait_for(lambda: _count(prometheus, query) == count, timeout=4 * scrape_s + 60,
                     what=f"live samples of all {count} series after the backfilled history")
            print(f"live samples: all {count} series scraped after the backfilled history", flush=True)


def _count(prometheus: PrometheusServer, query: str) -> int:
    result = prometheus.query(query)
    return int(float(result[0]["value"][1])) if result else 0


def parse(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--detectors", type=int, action="append", help=f"N (repeatable; default {FULL_NS})")
    p.add_argument("-s", "--series", type=int, default=5, help="series per detector (S)")
    p.add_argument("-i", "--interval", type=float, default=60.0, help="evaluation interval I in seconds")
    p.add_argument("--heartbeat", type=float,
                   help="operator --heartbeat (default 1200 s, its own default; 5 x I if I < 60)")
    p.add_argument("--window", type=float, help="measured window per N (default: one heartbeat)")
    p.add_argument("--warmup", type=float, help="wait after all detectors were first evaluated (default: I)")
    p.add_argument("--quick", action="store_true", help="N = 20, 100 at I = 10 s, heartbeat 50 s: a fast check")
    p.add_argument("--kube", choices=KUBE_BACKENDS, default="emulator",
                   help="the Kubernetes API: the in-memory emulator (default) or a real kube-apiserver + etcd "
                        "(tests/realkube.py; writes counted from its audit log)")
    p.add_argument("--output", type=pathlib.Path,
                   help="Markdown report (a PNG plot and the raw JSON are written beside it; default "
                        "docs/bench/scale.md, or docs/bench/scale-real.md with --kube real)")
    p.add_argument("--no-output", action="store_true", help="print only")
    p.add_argument("--render", type=pathlib.Path, action="append",
                   help="only re-render the report from saved scale.json files (repeatable: the runs' N are merged; "
                        "the first file's settings are reported)")
    p.add_argument("--note", default="", help="a sentence on the conditions of the run, printed in the report "
                                              "(e.g. other jobs sharing the CPUs)")
    p.add_argument("--profile", type=pathlib.Path, help="py-spy flame graph of the operator per N into this folder")
    p.add_argument("--restart", action="store_true",
                   help="after each window, restart the operator and time its way back: all evaluated, then steady")
    p.add_argument("--operator-arg", action="append", default=[], help="extra `vigil run` argument (repeatable)")
    p.add_argument("--history", type=int, default=HISTORY_POINTS,
                   help=f"backfilled points per series at 1m (default {HISTORY_POINTS}; the model's whole window "
                        "is 2016: each detector's first fetch then reads full windows, as with a week at 5m)")
    p.add_argument("--keep", type=pathlib.Path, help="keep the run's files (each operator's log, e.g. of the process "
                                                     "restarted by --restart) in this folder instead of a temp dir")
    args = p.parse_args(argv)
    interval = 10.0 if args.quick and args.interval == 60.0 else args.interval
    ns = tuple(sorted(set(args.detectors or ((20, 100) if args.quick else FULL_NS))))
    heartbeat = args.heartbeat or (1200.0 if interval >= 60 else 5 * interval)
    window = args.window or heartbeat
    md = None if args.no_output else args.output or DEFAULT_OUTPUT[args.kube]
    return Config(
        ns=ns, series=args.series, interval=interval, heartbeat=heartbeat, window=window,
        warmup=interval if args.warmup is None else args.warmup,
        scrape_interval="5s" if interval < 30 else "15s",
        live_minutes=int(len(ns) * (window + 3 * interval + 180 + (600 if args.restart else 0)) / 60) + 30,
        out_md=md, out_png=md.with_suffix(".png") if md else None,
        profile=args.profile, render=tuple(args.render) if args.render else None,
        revision="" if args.render else revision(), operator_args=tuple(args.operator_arg), note=args.note,
        command="python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        kube=args.kube, restart=args.restart, keep=args.keep, history_points=args.history,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse(argv)
    if config.render is not None:
        raws = [json.loads(path.read_text()) for path in config.render]
        saved = sorted((saved_result(r) for raw in raws for r in raw["results"]), key=lambda r: r.n)
        kinds = {raw["config"].get("kube", "emulator") for raw in raws}
        if len(kinds) > 1:
            raise SystemExit(f"--render: runs against different API servers ({', '.join(sorted(kinds))}) "
                             "do not make one report")
        fields = {"revision": "revision not recorded", "note": "", **raws[0]["config"]}
        out_md, out_png = config.out_md, config.out_png
        kind = fields.get("kube", "emulator")
        if out_md == DEFAULT_OUTPUT[config.kube] and kind != config.kube:  # no --output: the saved run's default
            out_md = DEFAULT_OUTPUT[kind]
            out_png = out_md.with_suffix(".png")
        if len(raws) > 1:
            fields["command"] = " + ".join(raw["config"].get("command", "?") for raw in raws)
        fields["window"] = max(raw["config"]["window"] for raw in raws)
        stored = Config(**{**fields, "ns": tuple(r.n for r in saved), "operator_args": tuple(fields["operator_args"]),
                           "out_md": out_md, "out_png": out_png, "profile": None, "render": config.render,
                           "note": config.note or fields["note"]})
        write_outputs(saved, stored, max(raw["runtime"] for raw in raws), raws[0]["machine"],
                      measured=[raw.get("measured_at", "") for raw in raws])
        return 0
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so every child is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    results: list[Result] = []
    if config.keep is not None:
        config.keep.mkdir(parents=True, exist_ok=True)
    kept = contextlib.nullcontext(str(config.keep)) if config.keep is not None else None
    with (kept or tempfile.TemporaryDirectory(prefix="vigil-bench-scale-")) as tmp, peers(config) as prometheus:
        for n in config.ns:
            workdir = pathlib.Path(tmp) / f"n{n}"
            workdir.mkdir(exist_ok=config.keep is not None)
            results.append(run_one(n, config, prometheus, workdir))
    runtime = time.monotonic() - started
    print("\n" + markdown_table(HEADERS, [row(r) for r in results]))
    print("\ncost curve (figure / N):\n" + markdown_table(CURVE_HEADERS, curve_rows(results)))
    print("\n" + "\n".join(goals(results, config)))
    print(f"\ntotal runtime {runtime / 60:.1f} min")
    if config.out_md is not None:
        write_outputs(results, config, runtime)
    return 0


def write_outputs(results: Sequence[Result], config: Config, runtime: float, host: str | None = None,
                  measured: Sequence[str] = ()) -> None:
    """scale.md (quoted by the README via scripts/sync-bench-docs.py), scale.png and scale.json (raw figures)."""
    assert config.out_md is not None and config.out_png is not None
    config.out_md.parent.mkdir(parents=True, exist_ok=True)
    host = host or machine()
    config.out_md.write_text(report(results, config, runtime, host, measured))
    plot(results, config.out_png)
    ended = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    raw = {"config": {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in dataclasses.asdict(config).items()},
           "runtime": runtime, "machine": host, "results": [dataclasses.asdict(r) for r in results],
           "measured_at": " and ".join(m for m in measured if m) if config.render is not None else ended}
    config.out_md.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(f"wrote {config.out_md}, {config.out_png} and {config.out_md.with_suffix('.json')}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a harness failure: say why, exit non-zero
        print(f"bench.scale failed: {exc!r}", file=sys.stderr)
        raise
