"""What gzip costs: the operator's range queries with and without ``--prometheus-compression gzip``.

A restart with 10,000 detectors sends 10,000 first (full-window) queries at once, and every detector
queries again each interval. Whether Prometheus gzips the answers changes the CPU Prometheus spends on
each, and the operator's own (it inflates them). This measures both, never a figure typed in:

- **Prometheus**: the real binary, backfilled by ``promtool`` with detectors of 5 series each, in two
  shapes: the scale bench's (110 points a series, step 1m) and a week at step 5m (2,016 points, the
  built-in model's window: what a detector's first fetch reads once the metric has a week of history).
- **The queries**: the operator's own :class:`vigil.adapters.prometheus.PrometheusSource`, one range
  query per detector as a first evaluation asks it, through ``query_many`` (8 in flight, the default).
- **Measured**: Prometheus' CPU from /proc, this process' CPU (the source's threads parse and inflate),
  wall time and the bytes on the wire, alternating the two settings ``--rounds`` times and keeping each
  one's median; the ratio gzip / none is the figure (same run, same machine).

    python -m bench.compression                 # both shapes, 3 rounds (~2 min)
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/compression.py` as well as `python -m bench.compression`
    sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402
from vigil.adapters.prometheus import Compression, PrometheusSource  # noqa: E402
from vigil_sandbox.prometheus import PrometheusServer, Series  # noqa: E402

METRIC = "bench_enc"
SERIES_PER_DETECTOR = 5
#: (name, detectors, points per series, step seconds)
SHAPES = (("scale bench: 110 points at 1m", 2000, 110, 60.0), ("a week: 2,016 points at 5m", 200, 2016, 300.0))


def history(detectors: int, points: int, step: float, now: float) -> list[Series]:
    rng = np.random.default_rng(3)
    times = now - step * np.arange(points - 1, -1, -1)
    return [Series(METRIC, {"detector": f"d{d:05d}", "pod": f"p{p}"}, times,
                   np.round(50 + 10 * np.sin(np.arange(points) / 30 + d) + rng.normal(0, 2, points), 3))
            for d in range(detectors) for p in range(SERIES_PER_DETECTOR)]


def wire_bytes(url: str, query: str, start: float, end: float, step: float, encoding: str) -> int:
    """Bytes Prometheus sends for one answer with this Accept-Encoding (urllib never inflates)."""
    params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": f"{step:g}s"})
    request = urllib.request.Request(f"{url}/api/v1/query_range?{params}", headers={"Accept-Encoding": encoding})
    with urllib.request.urlopen(request, timeout=60) as response:
        return len(response.read())


def one_pass(source: PrometheusSource, url: str, detectors: int, points: int, step: float, now: float,
             pid: int) -> dict[str, float]:
    start = now - (points - 1) * step
    queries = [(url, f'{METRIC}{{detector="d{d:05d}"}}', start, now, step) for d in range(detectors)]
    prometheus_cpu, own_cpu, wall = procstat.cpu_seconds(pid), time.process_time(), time.perf_counter()
    answers = asyncio.run(source.query_many(queries))
    wall = time.perf_counter() - wall
    own_cpu = time.process_time() - own_cpu
    prometheus_cpu = procstat.cpu_seconds(pid) - prometheus_cpu
    failed = [a for a in answers if isinstance(a, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} queries failed, first: {failed[0]!r}")
    got = sum(s.values.size for a in answers for s in a)  # type: ignore[union-attr]
    if got != detectors * SERIES_PER_DETECTOR * points:
        raise RuntimeError(f"read {got} points, expected {detectors * SERIES_PER_DETECTOR * points}")
    return {"prometheus_ms": 1000 * prometheus_cpu / detectors, "operator_ms": 1000 * own_cpu / detectors,
            "wall_s": wall}


def measure(name: str, detectors: int, points: int, step: float, rounds: int) -> dict[str, Any]:
    now = float(int(time.time() // step) * step)
    started = time.monotonic()
    with PrometheusServer(history(detectors, points, step, now), ready_timeout=600) as prometheus:
        assert prometheus.pid is not None
        print(f"{name}: Prometheus up with {detectors} x {SERIES_PER_DETECTOR} series x {points} points "
              f"(counts verified) in {time.monotonic() - started:.0f} s", flush=True)
        query = f'{METRIC}{{detector="d00000"}}'
        size = {c: wire_bytes(prometheus.url, query, now - (points - 1) * step, now, step,
                              c.accept_encoding) for c in Compression}
        sources = {c: PrometheusSource(compression=c, timeout=60) for c in Compression}
        passes: dict[Compression, list[dict[str, float]]] = {c: [] for c in Compression}
        try:
            one_pass(sources[Compression.NONE], prometheus.url, detectors, points, step, now, prometheus.pid)  # warm
            for _ in range(rounds):
                for c in Compression:
                    passes[c].append(one_pass(sources[c], prometheus.url, detectors, points, step, now,
                                              prometheus.pid))
        finally:
            for source in sources.values():
                source.close()
    median = {c: {k: statistics.median(p[k] for p in passes[c]) for k in passes[c][0]} for c in Compression}
    return {"name": name, "detectors": detectors, "points": points, "bytes": size, "median": median}


def _ratio(a: float, b: float, digits: int = 2) -> str:
    """``a / b`` as "1.23x", or "n/a" when ``b`` is 0 (a pass too short for /proc's 10 ms CPU ticks)."""
    return f"{a / b:.{digits}f}x" if b > 0 else "n/a"


def report(result: dict[str, Any]) -> str:
    none, gzip = result["median"][Compression.NONE], result["median"][Compression.GZIP]
    size = result["bytes"]
    rows = [f"| {c.value} | {size[c] / 1024:.1f} | {m['prometheus_ms']:.2f} | {m['operator_ms']:.2f} | "
            f"{result['detectors'] / m['wall_s']:.0f} |" for c, m in ((Compression.NONE, none),
                                                                      (Compression.GZIP, gzip))]
    ratio = (f"gzip / none: Prometheus CPU {_ratio(gzip['prometheus_ms'], none['prometheus_ms'], 1)}, operator CPU "
             f"{_ratio(gzip['operator_ms'], none['operator_ms'])}, queries/s {_ratio(none['wall_s'], gzip['wall_s'])}, "
             f"bytes {_ratio(size[Compression.GZIP], size[Compression.NONE])}")
    return "\n".join([
        f"{result['name']} ({result['detectors']} detectors x {SERIES_PER_DETECTOR} series, one query each):", "",
        "| compression | KiB per answer | Prometheus CPU ms/query | operator CPU ms/query | queries/s |",
        "|---|---:|---:|---:|---:|", *rows, "", ratio, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes per setting, alternating (default 3)")
    args = parser.parse_args(argv)
    results = [measure(name, detectors, points, step, args.rounds) for name, detectors, points, step in SHAPES]
    print()
    for result in results:
        print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
