"""Memory of one over-broad detector: a 20,000-series query against the real ``vigil run``.

Issue 11, item 6: a query returning 20k series pulled 61 MB of JSON and took the operator's RSS to
1,274 MiB. This benchmark rebuilds that shape and measures the operator process itself (``VmRSS``
and the peak ``VmHWM`` from /proc), never a figure typed in:

- **Prometheus**: the real binary, backfilled by ``promtool`` with ``--series`` series of
  ``--points`` samples at a 5-minute step (the defaults give ~60 MB of range-query JSON, the
  issue's 61 MB), and the answer's size measured by streaming it once.
- **Kubernetes API**: the sandbox emulator; **the operator**: ``python -m vigil run``.

A warm-up detector (one series) loads the built-in model first, so the baseline already holds it.
Then the 20k-series detector is created with the default limits (``--max-series 2000``): the goal
is Ready=False/TooManySeries with an RSS growth under 50 MiB. ``--uncapped`` then repeats it with
limits wide enough to admit the query, for the cost the caps avoid.

    python -m bench.series_cap                  # 20,000 series x 90 points, default limits
    python -m bench.series_cap --uncapped       # ... and once more without the caps, for contrast
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/series_cap.py` as well as `python -m bench.series_cap`
    sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402
from tests.harness import OperatorProcess, wait_for  # noqa: E402
from vigil.api import crdgen  # noqa: E402
from vigil_sandbox.kubeapi import KubeAPIServer  # noqa: E402
from vigil_sandbox.prometheus import PrometheusServer, Series  # noqa: E402

METRIC = "bench_wide"
STEP = 300.0
WINDOW_POINTS = 2016  # what the operator asks for on a detector's first (full) fetch
GOAL_MIB = 50.0
AD = ("vigil.dev/v1alpha1", "anomalydetectors")


def answer_bytes(url: str, now: float) -> int:
    """Bytes of the JSON answer to the operator's first query, read in chunks (never held)."""
    params = urllib.parse.urlencode({"query": METRIC, "start": now - (WINDOW_POINTS - 1) * STEP, "end": now,
                                     "step": f"{STEP:g}s"})
    total = 0
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=120) as response:
        while chunk := response.read(1 << 20):
            total += len(chunk)
    return total


def detector(name: str, query: str) -> dict[str, Any]:
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"query": query, "interval": "5s", "step": "5m"}}


def ready(kubeapi: KubeAPIServer, name: str) -> dict[str, str]:
    obj = kubeapi.get(*AD, "default", name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}["Ready"]


def measure(kubeapi: KubeAPIServer, workdir: pathlib.Path, prometheus_url: str, args: list[str],
            name: str) -> dict[str, Any]:
    """Start an operator, warm it up, create the wide detector, and report its memory and verdict."""
    operator = OperatorProcess(kubeapi.write_kubeconfig(workdir / f"{name}.kubeconfig"), workdir,
                               ["--prometheus-url", prometheus_url, "--no-leader-election", *args], name=name)
    operator.start()
    try:
        assert operator.proc is not None
        pid = operator.proc.pid
        kubeapi.create(detector(f"{name}-warmup", f'{METRIC}{{i="0"}}'))
        wait_for(lambda: ready(kubeapi, f"{name}-warmup")["status"] == "True", timeout=120, what="warm-up Ready")
        time.sleep(2)
        rss0, peak0 = procstat.memory_mib(pid)
        started = time.monotonic()
        kubeapi.create(detector(f"{name}-wide", METRIC))

        def verdict() -> dict[str, str]:
            condition = ready(kubeapi, f"{name}-wide")
            assert condition["status"] in ("True", "False"), condition
            return condition

        condition = wait_for(verdict, timeout=600, interval=0.5, what="the wide detector's verdict")
        took = time.monotonic() - started
        time.sleep(6)  # a few more evaluations at the 5 s interval: steady state, not only the first pass
        rss1, peak1 = procstat.memory_mib(pid)
        kubeapi.delete(*AD, "default", f"{name}-warmup")
        kubeapi.delete(*AD, "default", f"{name}-wide")
        return {"name": name, "args": " ".join(args) or "(defaults)", "ready": condition["status"],
                "reason": condition["reason"], "message": condition["message"], "seconds": took,
                "rss": (rss0, rss1), "peak": (peak0, peak1), "errors": operator.errors()}
    finally:
        operator.stop()


def report(run: dict[str, Any]) -> str:
    rss0, rss1 = run["rss"]
    peak0, peak1 = run["peak"]
    return (f"{run['name']} [{run['args']}]: Ready={run['ready']}/{run['reason']} after {run['seconds']:.1f} s\n"
            f"  message: {run['message']}\n"
            f"  RSS {rss0:.0f} -> {rss1:.0f} MiB (+{rss1 - rss0:.1f}); peak RSS {peak0:.0f} -> {peak1:.0f} MiB "
            f"(+{peak1 - peak0:.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20_000, help="series the wide query returns (default 20000)")
    parser.add_argument("--points", type=int, default=90, help="samples per series (default 90)")
    parser.add_argument("--uncapped", action="store_true", help="also run with limits that admit the query")
    args = parser.parse_args(argv)

    now = float(int(time.time() // STEP) * STEP)
    rng = np.random.default_rng(11)
    timestamps = now - STEP * np.arange(args.points - 1, -1, -1)
    print(f"backfilling {args.series} series x {args.points} points with promtool ...", flush=True)
    history = [Series(METRIC, {"i": str(i), "pod": f"web-{i:05d}-7c9f8d6b5-x2x4q"}, timestamps,
                      rng.normal(50, 10, args.points)) for i in range(args.series)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vigil-series-cap-") as tmp, \
            PrometheusServer(history=history, ready_timeout=300) as prometheus, \
            KubeAPIServer(crds=crdgen.all_crds(), bookmark_interval=0.5) as kubeapi:
        del history
        size = answer_bytes(prometheus.url, now)
        print(f"Prometheus ready in {time.monotonic() - started:.0f} s; the operator's first query answers "
              f"{size / 1e6:.1f} MB of JSON ({args.series} series x {args.points} points)", flush=True)
        workdir = pathlib.Path(tmp)
        runs = [measure(kubeapi, workdir, prometheus.url, [], "capped")]
        if args.uncapped:
            runs.append(measure(kubeapi, workdir, prometheus.url,
                                ["--max-series", str(args.series * 2), "--max-response-bytes", str(4 << 30)],
                                "uncapped"))
    for run in runs:
        print(report(run))
    capped = runs[0]
    growth = max(capped["rss"][1] - capped["rss"][0], capped["peak"][1] - capped["peak"][0])
    met = capped["reason"] == "TooManySeries" and growth < GOAL_MIB
    print(f"goal: Ready=False/TooManySeries with < {GOAL_MIB:g} MiB growth: {'met' if met else 'MISSED'} "
          f"({capped['reason']}, +{growth:.1f} MiB)")
    if any(run["errors"] for run in runs):
        print("operator errors:\n" + "\n".join(line for run in runs for line in run["errors"][:10]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
