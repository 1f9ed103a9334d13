"""What a series' history costs in memory, and what each way of keeping it does to the scores (issue 16).

    python -m bench.history [--data ../shared/data/nab/data] [--synthetic 200] [--output docs/bench/history.md]

Three ways of keeping the model's 2,016-point window per series, measured on every NAB
series (5-minute grid) and on ``bench/scale.py``'s synthetic series:

- **dense float64**: every grid point (what the operator kept before issue 16;
  ``tests/history_reference.py``);
- **dense float32**: the same in single precision;
- **kept** (the operator's ``GridHistory`` now): the newest points the model reads one
  by one, the older points' minima and maxima as monotonic runs, and runs of present points.

Each series is replayed the way the operator sees it: one full fetch of a full window,
then one incremental fetch per grid point (re-reading the newest point) to its end.
Bytes per series are measured with ``tracemalloc`` on the grids after the replay
(numpy data and every Python object they hold, 5 series per grid like a bench detector);
the kept history's array bytes are also sampled after every merge (mean, p99, max).
Scores are the built-in model's: the kept history's features are compared with the
dense float64 window's at every replayed point; float32's over each whole series
(``features.extract_series`` on the rounded values). Measured figures only.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time
import tracemalloc
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from tests.history_reference import DenseGrid
from vigil import features
from vigil.adapters import inference
from vigil.domain import resample
from vigil.domain.history import FetchRange, GridHistory, Samples
from vigil.engine import scoring
from vigil_sandbox import nab

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEP = 300.0
W = features.WINDOW
Floats = npt.NDArray[np.float64]


@dataclasses.dataclass
class Series:
    name: str
    values: Floats  # on the STEP grid, NaN = missing


def nab_series(root: pathlib.Path) -> list[Series]:
    out = []
    for path in sorted(root.glob("*/*.csv")):
        loaded = nab.load_series(path, strict=False)
        grid = resample.to_grid(loaded.timestamps, loaded.values, STEP)
        if grid.values.size > W + 10:
            out.append(Series(f"{path.parent.name}/{path.stem}", grid.values))
    return out


def synthetic_series(count: int, points: int) -> list[Series]:
    """``bench/scale.py``'s generator with its cycle stretched to a day of 5-minute points, as in production."""
    rng = np.random.default_rng(16)
    t = np.arange(points)
    out = []
    for i in range(count):
        base = rng.uniform(20, 200)
        day = np.sin(2 * np.pi * (t / 288 + rng.uniform()))
        values = base + base * rng.uniform(0.2, 0.5) * day + rng.normal(0, 1, points) * base * rng.uniform(0.02, 0.08)
        if rng.random() < 0.1:
            begin = int(rng.integers(points // 3, points - 5))
            values[begin : begin + int(rng.integers(4, 24))] *= rng.uniform(1.6, 2.5)
        out.append(Series(f"synthetic/{i}", np.round(np.maximum(values, 0.0), 3)))
    return out


def rising(points: int) -> Series:
    """The worst case of the kept history: a series that only rises (every older point may become the minimum)."""
    return Series("worst case: only rises", np.linspace(1.0, 2.0, points))


def _answer(name: str, values: Floats, times: Floats, fetch: FetchRange) -> list[Samples]:
    lo = int(np.searchsorted(times, fetch.start))
    hi = int(np.searchsorted(times, fetch.end, side="right"))
    part = values[lo:hi]
    present = np.isfinite(part)
    return [Samples({"series": name}, times[lo:hi][present], part[present])]


@dataclasses.dataclass
class Replay:
    series: int = 0
    points: int = 0
    compared: int = 0
    unequal: int = 0
    max_diff: float = 0.0
    sizes: list[int] = dataclasses.field(default_factory=list)
    merge_seconds: dict[str, float] = dataclasses.field(default_factory=lambda: {"kept": 0.0, "dense": 0.0})
    merges: int = 0


def replay(series: Sequence[Series], scorer: inference.Scorer, result: Replay) -> None:
    """Replay each series through a kept and a dense grid, comparing scores at every scored point."""
    names = scorer.info.feature_names
    for s in series:
        times = 1_000_000_200.0 + STEP * np.arange(s.values.size)
        x, valid = features.extract_series(s.values, names)
        kept = GridHistory(step=STEP, capacity=W, window=W, tail=features.tail_points(names),
                           min_points=scorer.info.min_points)
        dense = DenseGrid(step=STEP, capacity=W)
        result.series += 1
        rows, at = [], []
        for index in range(W - 1, s.values.size):
            fetch = kept.next_fetch(times[index] + 1)
            answer = _answer(s.name, s.values, times, fetch)
            started = time.perf_counter()
            kept.merge(fetch, answer)
            middle = time.perf_counter()
            dense.merge(fetch, answer)
            result.merge_seconds["kept"] += middle - started
            result.merge_seconds["dense"] += time.perf_counter() - middle
            result.merges += 1
            result.points += 1
            for key in kept.series:
                result.sizes.append(kept.series[key].nbytes())
                if scoring.assess_kept(kept, key, scorer.info.min_points) == scoring.Availability.SCORED:
                    rows.append(scoring.kept_inputs([(kept, key)], names))
                    at.append(index)
        if not rows:
            continue
        inputs = (np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]),
                  np.concatenate([r[2] for r in rows]))
        got = scorer.score(scoring.kept_features(inputs, names))
        assert valid[at].all()
        expected = scorer.score(x[at])
        result.compared += len(at)
        result.unequal += int(np.count_nonzero(got != expected))
        result.max_diff = max(result.max_diff, float(np.max(np.abs(got - expected))))


def float32_scores(series: Sequence[Series], scorer: inference.Scorer) -> dict[str, float]:
    """Scores of the float32-rounded series against float64's, over every scored point."""
    names = scorer.info.feature_names
    threshold = scorer.info.recommended_threshold
    diffs, flips, points = [], 0, 0
    for s in series:
        x64, valid = features.extract_series(s.values, names)
        x32, valid32 = features.extract_series(s.values.astype(np.float32).astype(np.float64), names)
        both = valid & valid32
        a, b = scorer.score(x64[both]), scorer.score(x32[both])
        diffs.append(np.abs(a - b))
        flips += int(np.count_nonzero((a >= threshold) != (b >= threshold)))
        points += int(both.sum())
    d = np.concatenate(diffs)
    return {"points": points, "max_diff": float(d.max()), "p999_diff": float(np.quantile(d, 0.999)),
            "unequal": int(np.count_nonzero(d)), "flips": flips}


def traced_bytes(series: Sequence[Series], build: Callable[[], GridHistory | DenseGrid]) -> float:
    """Bytes per series held by grids of 5 series each at steady state, measured with tracemalloc."""
    answers = []
    for start in range(0, len(series), 5):
        group = series[start : start + 5]
        n = min(s.values.size for s in group)
        times = 1_000_000_200.0 + STEP * np.arange(n)
        full = FetchRange(start=times[n - W], end=times[n - 1], full=True)
        answers.append((full, [a for s in group for a in _answer(s.name, s.values[:n], times, full)]))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    grids = []
    for fetch, answer in answers:
        grid = build()
        grid.merge(fetch, answer)
        grids.append(grid)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    total = sum(len(g.series) if isinstance(g, GridHistory) else len(g.values) for g in grids)
    return held / max(total, 1)


def run(data: pathlib.Path, synthetic: int) -> dict[str, object]:
    scorer = inference.Scorer(inference.builtin_bytes())
    names = scorer.info.feature_names
    started = time.perf_counter()
    corpora = {"NAB": nab_series(data), "synthetic (daily cycle)": synthetic_series(synthetic, W + 600),
               "worst case (only rises)": [rising(W + 300)]}
    out: dict[str, object] = {"model": scorer.info.name, "features": ",".join(names),
                              "tail": features.tail_points(names)}
    rows = []
    for label, series in corpora.items():
        result = Replay()
        replay(series, scorer, result)
        f32 = float32_scores(series, scorer)
        sizes = np.array(result.sizes)
        kept_bytes = traced_bytes(series, lambda: GridHistory(step=STEP, capacity=W, window=W,
                                                              tail=features.tail_points(names),
                                                              min_points=scorer.info.min_points))
        rows.append({
            "corpus": label, "series": result.series, "points": result.points,
            "dense64_bytes": traced_bytes(series, lambda: DenseGrid(step=STEP, capacity=W)),
            "dense32_bytes": traced_bytes(series, lambda: DenseGrid(step=STEP, capacity=W, dtype=np.float32)),
            "kept_bytes": kept_bytes,
            "kept_array_mean": float(sizes.mean()), "kept_array_p99": float(np.quantile(sizes, 0.99)),
            "kept_array_max": int(sizes.max()),
            "kept_compared": result.compared, "kept_unequal": result.unequal, "kept_max_diff": result.max_diff,
            "f32": f32,
            "merge_us_kept": 1e6 * result.merge_seconds["kept"] / max(result.merges, 1),
            "merge_us_dense": 1e6 * result.merge_seconds["dense"] / max(result.merges, 1),
        })
    out["rows"] = rows
    out["runtime_s"] = time.perf_counter() - started
    return out


def markdown(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    lines = [
        "<!-- Written by bench/history.py: rerun it rather than editing. -->",
        "# History per series: dense float64, dense float32, kept extremes",
        "",
        f"Built-in model {result['model']} reads `{result['features']}`: the last {result['tail']} points one by one, "
        f"and only the minimum and maximum of the rest of its {W}-point window. Runtime {result['runtime_s']:.0f} s.",
        "",
        "| corpus | series | replayed points | dense float64 B/series | dense float32 B/series | kept B/series "
        "| kept arrays mean / p99 / max B | kept scores compared | kept scores unequal (max abs diff) "
        "| float32 scores unequal / compared | float32 max abs diff | float32 verdict flips | merge us kept / dense |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---|---:|---:|---|",
    ]
    for r in rows:
        f32 = r["f32"]
        lines.append(
            f"| {r['corpus']} | {r['series']} | {r['points']} | {r['dense64_bytes']:,.0f} | {r['dense32_bytes']:,.0f} "
            f"| {r['kept_bytes']:,.0f} | {r['kept_array_mean']:,.0f} / {r['kept_array_p99']:,.0f} / "
            f"{r['kept_array_max']:,} | {r['kept_compared']} | {r['kept_unequal']} ({r['kept_max_diff']:.3g}) "
            f"| {f32['unequal']} / {f32['points']} | {f32['max_diff']:.3g} | {f32['flips']} "
            f"| {r['merge_us_kept']:.0f} / {r['merge_us_dense']:.0f} |")
    lines += [
        "",
        "B/series: tracemalloc over grids of 5 series at steady state (a full window fetched), numpy data and "
        "Python objects, labels included. \"kept arrays\": the kept history's array data after every replayed "
        "merge. Verdict flips: points where float32 and float64 scores fall on different sides of the "
        "recommended threshold. merge us: one incremental merge of one series (new point + re-read), "
        "on a shared machine.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "nab" / "data")
    p.add_argument("--synthetic", type=int, default=200, help="synthetic series (default 200)")
    p.add_argument("--output", type=pathlib.Path, default=ROOT / "docs" / "bench" / "history.md")
    p.add_argument("--no-output", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        args.data = ROOT / "tests" / "data" / "nab"
    text = markdown(run(args.data, args.synthetic))
    print(text)
    if not args.no_output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
