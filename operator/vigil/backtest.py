"""``vigil backtest``: score CSV series offline, point by point, as the operator would live.

The path is the operator's own: samples are put on the grid a Prometheus range
query would return (:mod:`vigil.domain.resample`), each point is assessed and
featurised from data up to that point only (:mod:`vigil.engine.scoring`,
:mod:`vigil.features`), scored by the same ONNX session type, and passed
through the same verdict state machine (:mod:`vigil.domain.detection`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import pathlib
import sys
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vigil import features
from vigil.adapters import csvseries, inference
from vigil.api.v1alpha1.detector import MissingDataPolicy, SeriesState
from vigil.domain import detection, durations, resample
from vigil.engine import scoring

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[int, int], None]


@dataclasses.dataclass
class Result:
    timestamps: FloatArray
    values: FloatArray
    scores: FloatArray  # NaN where not scored
    anomalous: npt.NDArray[np.bool_]
    states: list[SeriesState]
    threshold: float


def run(
    timestamps: FloatArray,
    values: FloatArray,
    scorer: inference.Scorer,
    threshold: float | None = None,
    for_seconds: float = 0.0,
    missing: MissingDataPolicy = MissingDataPolicy.IGNORE,
    progress: Progress | None = None,
    chunk: int = 4096,
) -> Result:
    """Causal scores and verdicts for a series already on its regular grid."""
    x, valid = features.extract_series(values, scorer.info.feature_names)
    rows = np.flatnonzero(valid)
    scores = np.full(values.shape[0], np.nan)
    for begin in range(0, rows.size, chunk):
        part = rows[begin : begin + chunk]
        scores[part] = scorer.score(x[part])
        if progress:
            progress(min(begin + chunk, rows.size), rows.size)
    scored, absent = scoring.availability_masks(values, valid)
    rule = detection.Rule(
        threshold=scorer.info.recommended_threshold if threshold is None else threshold,
        for_seconds=for_seconds,
        missing=missing,
    )
    anomalous, codes = detection.decide_series(scored, absent, scores, rule, timestamps)
    states = [detection.STATE_CODES[c] for c in codes.tolist()]
    return Result(timestamps, values, scores, anomalous, states, rule.threshold)


def _inputs(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.csv"))
            if not found:
                raise SystemExit(f"vigil backtest: no .csv files in {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"vigil backtest: {path} does not exist")
    return files


class _Bar:
    """A minimal progress bar on stderr, shown only for long input on a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 20_000:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def iso_seconds(epochs: FloatArray) -> list[str]:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) for each epoch, as ``datetime.fromtimestamp(t).strftime`` gives, in bulk."""
    micros = np.round(np.asarray(epochs, dtype=np.float64) * 1e6).astype(np.int64)
    seconds = (micros // 1_000_000).astype("datetime64[s]")
    return [text.replace("T", " ") for text in np.datetime_as_string(seconds, unit="s").tolist()]


def write_csv(result: Result, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = iso_seconds(result.timestamps)
    values = ["" if v != v else repr(v) for v in result.values.tolist()]  # v != v: NaN
    scores = ["" if s != s else f"{s:.6f}" for s in result.scores.tolist()]
    flags = ["true" if a else "false" for a in result.anomalous.tolist()]
    states = [state.value for state in result.states]
    with path.open("w", newline="") as handle:
        handle.write("timestamp,value,score,anomalous,state\r\n")
        handle.writelines(f"{t},{v},{s},{a},{st}\r\n" for t, v, s, a, st in zip(stamps, values, scores, flags,
                                                                                  states, strict=True))


def plot(results: dict[str, Result], path: pathlib.Path) -> None:
    """One panel per series: the value, the score against the threshold, detections shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("vigil backtest --plot needs matplotlib: pip install 'vigil-operator[plot]'") from exc
    fig, axes = plt.subplots(len(results), 1, figsize=(12, 3.2 * len(results)), squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], results.items(), strict=True):
        when = [datetime.datetime.fromtimestamp(t, tz=datetime.UTC) for t in result.timestamps]
        ax.plot(when, result.values, color="tab:blue", linewidth=0.8, label="value")
        ax.set_title(name, fontsize=9)
        score_ax = ax.twinx()
        score_ax.plot(when, result.scores, color="tab:orange", linewidth=0.8, label="score")
        score_ax.axhline(result.threshold, color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
        score_ax.set_ylim(0, 1.05)
        score_ax.fill_between(when, 0, 1.05, where=result.anomalous, color="tab:red", alpha=0.15,
                              label="anomalous")
        ax.set_ylabel("value")
        score_ax.set_ylabel("score")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    files = _inputs(args.inputs)
    if len(files) > 1 and args.output.suffix.lower() == ".csv":
        raise SystemExit("vigil backtest: several inputs need --output to be a folder, not a .csv file")
    if args.model:
        try:
            scorer = inference.Scorer(args.model.read_bytes())
        except inference.ModelError as exc:
            print(f"vigil backtest: {args.model}: {exc.reason}: {exc.message}", file=sys.stderr)
            return 2
    else:
        scorer = inference.Scorer(inference.builtin_bytes())
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("vigil backtest: --threshold must be within [0, 1]")
    if args.for_points < 0:
        raise SystemExit("vigil backtest: --for must be 0 or more points")
    step_override = durations.parse(args.step) if args.step else None

    failures = 0
    results: dict[str, Result] = {}
    for path in files:
        try:
            series = csvseries.read(path, duplicates=args.duplicates, unordered=args.unordered)
            step = step_override or resample.median_step(series.timestamps)
            grid = resample.to_grid(series.timestamps, series.values, step)
        except (csvseries.SeriesFileError, ValueError) as exc:
            print(f"vigil backtest: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        result = run(
            grid.timestamps, grid.values, scorer, args.threshold, args.for_points * step,
            MissingDataPolicy(args.missing_data), _Bar(path.name, not args.no_progress),
        )
        target = args.output if len(files) == 1 and args.output.suffix.lower() == ".csv" else (
            args.output / f"{path.stem}.scored.csv")
        write_csv(result, target)
        results[path.stem] = result
        notes = list(series.notes)
        if grid.off_grid:
            notes.append(f"{grid.off_grid} sample(s) off the {durations.format(step)} grid, resampled as "
                         "Prometheus would (newest sample within 5m)")
        if grid.unused:
            notes.append(f"{grid.unused} sample(s) superseded by a newer one within the same step")
        if grid.empty_points:
            notes.append(f"{grid.empty_points} grid point(s) with no sample (gaps): missing data")
        flagged = int(result.anomalous.sum())
        scored = int(np.isfinite(result.scores).sum())
        print(f"{path}: {len(result.timestamps)} points at step {durations.format(step)}, {scored} scored, "
              f"{flagged} anomalous (threshold {result.threshold:g}, model {scorer.info.name}) -> {target}")
        for note in notes:
            print(f"  note: {note}")
    if args.plot and results:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 1 if failures else 0
