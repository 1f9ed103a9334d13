"""``vigil backtest`` throughput on one core, and the cost of loading a model.

    python -m bench.backtest [--data ../shared/data/nab/data] [--repeat 3] [--models 8]

Pins this process to one CPU (``sched_setaffinity``; onnxruntime already runs one
thread per session) and measures, on every CSV under ``--data``:

- end to end: ``vigil backtest``'s own ``main()`` (read, grid, features, model,
  verdicts, scored CSV written to a temporary folder), in points per second;
- the same work stage by stage (read + grid, features, inference, verdicts,
  write), so the bottleneck is visible;
- the verdict stage against its per-point reference (the fold of
  ``detection.decide`` the live operator runs each tick), as a ratio measured here;
- model load: seconds to build one onnxruntime session of the built-in model, and
  resident memory per loaded session (RSS growth over ``--models`` sessions held at
  once, as the operator's model cache holds them).

The goal in issue 6 is >= 200,000 points/s end to end. Figures are the best of
``--repeat`` runs (the least disturbed by other load); nothing here is typed in.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/backtest.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from vigil import backtest, cli, features
from vigil.adapters import csvseries, inference
from vigil.api.v1alpha1.detector import MissingDataPolicy
from vigil.domain import detection, resample
from vigil.domain.detection import Availability
from vigil.engine import scoring

GOAL_POINTS_PER_SECOND = 200_000


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this OS)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/nab/data"), help="folder of CSV series")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept")
    parser.add_argument("--models", type=int, default=32, help="sessions held at once for the memory figure")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="folder for the scored CSVs, removed afterwards (default: the system's temp folder)")
    parser.add_argument("--write", type=Path, default=None, metavar="MD",
                        help="also write the figures as Markdown (make bench-backtest: docs/bench/backtest.md)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"bench.backtest: {args.data} is not a folder (the NAB copy lives in ../shared/data/nab)",
              file=sys.stderr)
        return 2
    pinned = pin_to_one_core()
    files = sorted(args.data.rglob("*.csv"))
    model_bytes = inference.builtin_bytes()
    # Memory first, before any session has been built and freed (freed arenas would hide the growth).
    gc.collect()
    before = rss_bytes()
    held = [inference.Scorer(model_bytes) for _ in range(args.models)]
    for session in held:
        session.score(np.zeros((1, len(session.info.feature_names)), dtype=np.float32))
    gc.collect()
    grown = rss_bytes() - before
    del held
    scorer = inference.Scorer(model_bytes)

    # The inputs of every stage, computed once so each stage is timed alone.
    def read_all() -> list[resample.Grid]:
        grids = []
        for path in files:
            series = csvseries.read(path, duplicates="last", unordered="sort")
            grids.append(resample.to_grid(series.timestamps, series.values, resample.median_step(series.timestamps)))
        return grids

    grids = read_all()
    points = sum(len(g.values) for g in grids)
    names = scorer.info.feature_names
    feats = [features.extract_series(g.values, names) for g in grids]
    scored_rows = sum(int(valid.sum()) for _, valid in feats)
    rule = detection.Rule(scorer.info.recommended_threshold, 0.0, MissingDataPolicy.IGNORE)

    def infer_all() -> list[npt.NDArray[np.float64]]:
        out = []
        for x, valid in feats:
            scores = np.full(len(valid), np.nan)
            rows = np.flatnonzero(valid)
            for begin in range(0, rows.size, 4096):
                part = rows[begin : begin + 4096]
                scores[part] = scorer.score(x[part])
            out.append(scores)
        return out

    all_scores = infer_all()

    def verdicts_vectorised() -> None:
        for g, (_, valid), scores in zip(grids, feats, all_scores, strict=True):
            scored, absent = scoring.availability_masks(g.values, valid)
            detection.decide_series(scored, absent, scores, rule, g.timestamps)

    def verdicts_per_point() -> None:
        for g, (_, valid), scores in zip(grids, feats, all_scores, strict=True):
            scored, absent = scoring.availability_masks(g.values, valid)
            verdict = None
            for t, ok, gone, s in zip(g.timestamps.tolist(), scored.tolist(), absent.tolist(), scores.tolist(),
                                      strict=True):
                state = Availability.SCORED if ok else Availability.MISSING if gone else Availability.WARMING_UP
                verdict = detection.decide(verdict, state, s if ok else None, rule, t)

    results = [backtest.run(g.timestamps, g.values, scorer) for g in grids]
    # `make test` runs this: the scored CSVs must not outlive it. Removed below; on an exception,
    # TemporaryDirectory's finaliser removes it when the object is collected or at exit.
    scratch = tempfile.TemporaryDirectory(prefix="vigil-bench-backtest-", dir=args.tmp)
    out_dir = Path(scratch.name)

    def write_all() -> None:
        for i, result in enumerate(results):
            backtest.write_csv(result, out_dir / f"{i}.csv")

    def end_to_end() -> None:
        ns = cli.parser().parse_args(["backtest", str(args.data), "-o", str(out_dir / "e2e"), "--no-progress",
                                "--duplicates", "last", "--unordered", "sort"])
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                backtest.main(ns)
            finally:
                sys.stdout = stdout

    stages = [
        ("read CSV + grid", best_of(args.repeat, read_all)),
        ("features", best_of(args.repeat, lambda: [features.extract_series(g.values, names) for g in grids])),
        ("inference (onnxruntime)", best_of(args.repeat, infer_all)),
        ("verdicts (vectorised)", best_of(args.repeat, verdicts_vectorised)),
        ("write scored CSV", best_of(args.repeat, write_all)),
    ]
    total = best_of(args.repeat, end_to_end)
    per_point = best_of(1, verdicts_per_point)
    scratch.cleanup()

    stage_sum = sum(s for _, s in stages)
    core = next(s for n, s in stages if n == "features") + next(s for n, s in stages if n.startswith("inference"))
    vectorised = next(s for n, s in stages if n.startswith("verdicts"))
    load = best_of(args.repeat, lambda: inference.Scorer(model_bytes))
    rate = points / total
    lines = [
        f"`vigil backtest` over {len(files)} NAB files, {points:,} grid points ({scored_rows:,} scored), "
        f"one core ({pinned}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs), "
        f"best of {args.repeat}, model {scorer.info.name}.",
        "",
        "| stage | seconds | points/s | share |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {seconds:.3f} | {points / seconds:,.0f} | {seconds / stage_sum:.0%} |"
          for name, seconds in stages),
        f"| **end to end** (`backtest.main`) | {total:.3f} | **{rate:,.0f}** | |",
        "",
        f"- Goal >= {GOAL_POINTS_PER_SECOND:,} points/s end to end: "
        f"**{'met' if rate >= GOAL_POINTS_PER_SECOND else 'not met'}** "
        f"({rate / GOAL_POINTS_PER_SECOND:.2f}x the goal).",
        f"- Scoring core (features + inference): {points / core:,.0f} points/s.",
        f"- Verdicts: per-point fold of `decide()` {per_point:.3f} s, vectorised {vectorised:.3f} s "
        f"({per_point / vectorised:.0f}x).",
        f"- Model load: {load * 1000:.1f} ms per onnxruntime session ({len(model_bytes) / 1024:.0f} KiB ONNX, "
        "metadata checks included).",
        f"- Memory: {grown / args.models / 2**20:.2f} MiB RSS per loaded session ({args.models} held at once).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text("# Backtest throughput and model load\n\nWritten by `make bench-backtest` "
                              "(`bench/backtest.py`); measured, not typed in.\n\n" + text)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
