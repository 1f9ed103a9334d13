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


#: Points featurised and scored at a time. Features of point t read points t-WINDOW+1..t only, so a
#: chunk plus the WINDOW-1 points before it gives exactly the rows of the whole-series extraction
#: (a test checks it bit for bit) while the float32 feature matrix stays a few MiB whatever the length.
POINTS_PER_CHUNK = 131_072


def run(
    timestamps: FloatArray,
    values: FloatArray,
    scorer: inference.Scorer,
    threshold: float | None = None,
    for_seconds: float = 0.0,
    missing: MissingDataPolicy = MissingDataPolicy.IGNORE,
    progress: Progress | None = None,
    chunk: int = 4096,
    points_per_chunk: int = POINTS_PER_CHUNK,
) -> Result:
    """Causal scores and verdicts for a series already on its regular grid."""
    total = values.shape[0]
    scores = np.full(total, np.nan)
    valid = np.zeros(total, dtype=bool)
    context = features.WINDOW - 1
    for begin in range(0, total, points_per_chunk):
        end = min(begin + points_per_chunk, total)
        lo = max(0, begin - context)
        x, part_valid = features.extract_series(values[lo:end], scorer.info.feature_names)
        part_valid = part_valid[begin - lo :]
        valid[begin:end] = part_valid
        rows = np.flatnonzero(part_valid)
        for first in range(0, rows.size, chunk):
            picked = rows[first : first + chunk]
            scores[begin + picked] = scorer.score(x[begin - lo + picked])
            if progress:
                progress(begin + int(picked[-1]) + 1, total)
        if progress:
            progress(end, total)
    scored, absent = scoring.availability_masks(values, valid)
    rule = detection.Rule(
        threshold=scorer.info.recommended_threshold if threshold is None else threshold,
        for_seconds=for_seconds,
        missing=missing,
    )
    anomalous, codes = detection.decide_series(scored, absent, scores, rule, timestamps)
    states = [detection.STATE_CODES[c] for c in codes.tolist()]
    return Result(timestamps, values, scores, anomalous, states, rule.threshold)


class UsageError(Exception):
    """Arguments that cannot work whatever the files hold: exit 2, before any work is done."""


def _inputs(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.csv"))
            if not found:
                raise UsageError(f"no .csv files in {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path} does not exist")
    return files


def targets(files: list[pathlib.Path], output: pathlib.Path, folders: list[pathlib.Path]) -> list[pathlib.Path]:
    """The output file of each input, refusing any layout that would overwrite or re-read an input.

    ``-o same.csv`` would silently replace the data being scored; a folder output
    holding an input (or inside an input folder) would mix results into the inputs
    and feed them back in on the next run; two inputs with one stem would overwrite
    each other's results. Paths are compared resolved (symlinks, ``..``).
    """
    single = len(files) == 1 and output.suffix.lower() == ".csv"
    if len(files) > 1 and output.suffix.lower() == ".csv":
        raise UsageError("several inputs need --output to be a folder, not a .csv file")
    out = [output] if single else [output / f"{path.stem}.scored.csv" for path in files]
    resolved = {path.resolve(): path for path in files}
    seen: dict[pathlib.Path, pathlib.Path] = {}
    for path, target in zip(files, out, strict=True):
        real = target.resolve()
        if real in resolved:
            raise UsageError(f"--output {target} is the input {resolved[real]}; refusing to overwrite it")
        if real in seen:
            raise UsageError(f"inputs {seen[real]} and {path} would both be written to {target}; "
                             "score them into separate folders")
        seen[real] = path
    if not single:
        folder = output.resolve()
        for real, path in resolved.items():
            if real.is_relative_to(folder):
                raise UsageError(f"--output {output} holds the input {path}: results would be read back as "
                                 "input next time; choose another folder")
        for given in folders:
            if folder.is_relative_to(given.resolve()):
                raise UsageError(f"--output {output} is inside the input folder {given}: results would be read "
                                 "back as input next time; choose another folder")
    return out


def writable(target: pathlib.Path) -> None:
    """Raise OSError now if ``target`` cannot be written, rather than after minutes of scoring.

    Permission bits are not enough (root passes ``os.access`` on /proc), so this
    creates the folder and opens the file for writing without truncating it, and
    removes the file again if it did not exist.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    with target.open("ab"):
        pass
    if not existed:
        target.unlink()


class _Bar:
    """Progress on stderr: reading (bytes), scoring (points), writing (rows), for each file in turn.

    Drawn only when stderr is a terminal (``--progress`` forces it, ``--no-progress``
    hides it), at most ten times a second, and not at all for a file done within
    the first tenth of a second. The line is cleared when the file is done, so the
    summary on stdout is not interleaved with bar remnants.
    """

    def __init__(self, enabled: bool, count: int) -> None:
        self.enabled = enabled
        self.count = count
        self.label = ""
        self.phase = ""
        self._last = 0.0
        self._drawn = False

    def start(self, index: int, label: str) -> None:
        self.label = f"[{index}/{self.count}] {label}" if self.count > 1 else label
        self._last = time.monotonic()

    def phase_of(self, phase: str) -> Progress:
        def report(done: int, total: int) -> None:
            self.phase = phase
            self(done, total)
        return report

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{self.label} {self.phase} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{100 * done / max(total, 1):3.0f}%\x1b[K")
        sys.stderr.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False


def iso_seconds(epochs: FloatArray) -> list[str]:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) for each epoch, as ``datetime.fromtimestamp(t).strftime`` gives, in bulk."""
    micros = np.round(np.asarray(epochs, dtype=np.float64) * 1e6).astype(np.int64)
    seconds = (micros // 1_000_000).astype("datetime64[s]")
    return [text.replace("T", " ") for text in np.datetime_as_string(seconds, unit="s").tolist()]


#: Rows formatted at a time when writing: the text of a whole large series would cost ~300 bytes a row.
ROWS_PER_WRITE = 65_536


def write_csv(result: Result, path: pathlib.Path, progress: Progress | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    total = len(result.timestamps)
    with path.open("w", newline="") as handle:
        handle.write("timestamp,value,score,anomalous,state\r\n")
        for begin in range(0, total, ROWS_PER_WRITE):
            part = slice(begin, begin + ROWS_PER_WRITE)
            stamps = iso_seconds(result.timestamps[part])
            values = ["" if v != v else repr(v) for v in result.values[part].tolist()]  # v != v: NaN
            scores = ["" if s != s else f"{s:.6f}" for s in result.scores[part].tolist()]
            flags = ["true" if a else "false" for a in result.anomalous[part].tolist()]
            states = [state.value for state in result.states[part]]
            handle.writelines(f"{t},{v},{s},{a},{st}\r\n" for t, v, s, a, st in zip(stamps, values, scores, flags,
                                                                                      states, strict=True))
            if progress:
                progress(min(begin + ROWS_PER_WRITE, total), total)


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
    """Exit 0 when every file was scored, 1 when any failed (bad rows, nothing to score, cannot write),
    2 for arguments that cannot work (missing input or model, an output that is an input)."""
    try:
        files = _inputs(args.inputs)
        outputs = targets(files, args.output, [path for path in args.inputs if path.is_dir()])
        if args.plot is not None and args.plot.resolve() in {path.resolve() for path in files}:
            raise UsageError(f"--plot {args.plot} is an input; refusing to overwrite it")
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise UsageError("--threshold must be within [0, 1]")
        if args.for_points < 0:
            raise UsageError("--for must be 0 or more points")
        scorer = _scorer(args.model)
    except UsageError as exc:
        print(f"vigil backtest: {exc}", file=sys.stderr)
        return 2
    try:
        for target in {target.parent if len(outputs) > 1 else target for target in outputs}:
            if target.suffix.lower() == ".csv":
                writable(target)
            else:
                target.mkdir(parents=True, exist_ok=True)
                writable(target / ".vigil-backtest-write-check")
        if args.plot is not None:
            writable(args.plot)
    except OSError as exc:
        print(f"vigil backtest: cannot write {exc.filename or args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    step_override: float | None = args.step
    bar = _Bar((args.progress or sys.stderr.isatty()) and not args.no_progress, len(files))
    failures = 0
    results: dict[str, Result] = {}
    for index, (path, target) in enumerate(zip(files, outputs, strict=True), start=1):
        bar.start(index, path.name)
        try:
            try:
                series = csvseries.read(path, duplicates=args.duplicates, unordered=args.unordered,
                                        progress=bar.phase_of("reading"))
            except OSError as exc:
                raise csvseries.SeriesFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
            try:
                step = step_override or resample.median_step(series.timestamps)
                grid = resample.to_grid(series.timestamps, series.values, step)
            except ValueError as exc:
                raise csvseries.SeriesFileError(f"{path}: {exc}") from exc
            notes = list(series.notes)
            del series  # the grid is all that is scored: free the raw samples before scoring
            result = run(
                grid.timestamps, grid.values, scorer, args.threshold, args.for_points * step,
                MissingDataPolicy(args.missing_data), bar.phase_of("scoring"),
            )
            scored = int(np.isfinite(result.scores).sum())
            if scored == 0:
                raise csvseries.SeriesFileError(
                    f"{path}: nothing scored: {len(result.timestamps)} point(s) at step {durations.format(step)}, "
                    f"but a score needs at least {features.MIN_POINTS} points with a value (the model looks back "
                    f"{features.WINDOW} points); nothing written")
            try:
                write_csv(result, target, bar.phase_of("writing"))
            except OSError as exc:
                raise csvseries.SeriesFileError(f"{path}: cannot write {target}: {exc.strerror or exc}") from exc
        except csvseries.SeriesFileError as exc:
            bar.done()
            print(f"vigil backtest: {exc}", file=sys.stderr)
            failures += 1
            continue
        bar.done()
        if args.plot:
            results[path.stem] = result  # only then: a folder of large files would otherwise pile up in memory
        if grid.off_grid:
            notes.append(f"{grid.off_grid} sample(s) off the {durations.format(step)} grid, resampled as "
                         "Prometheus would (newest sample within 5m)")
        if grid.unused:
            notes.append(f"{grid.unused} sample(s) superseded by a newer one within the same step")
        if grid.empty_points:
            notes.append(f"{grid.empty_points} grid point(s) with no sample (gaps): missing data")
        flagged = int(result.anomalous.sum())
        print(f"{path}: {len(result.timestamps)} points at step {durations.format(step)}, {scored} scored, "
              f"{flagged} anomalous (threshold {result.threshold:g}, model {scorer.info.name}) -> {target}")
        for note in notes:
            print(f"  note: {note}")
    if args.plot and results:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 1 if failures else 0


def _scorer(model: pathlib.Path | None) -> inference.Scorer:
    """The ``--model`` file's scorer (the built-in one without it); UsageError for a model that cannot serve."""
    if model is None:
        return inference.Scorer(inference.builtin_bytes())
    try:
        data = model.read_bytes()
    except OSError as exc:
        raise UsageError(f"--model {model}: {exc.strerror or exc}") from exc
    try:
        return inference.Scorer(data)
    except inference.ModelError as exc:
        raise UsageError(f"--model {model}: {exc.reason}: {exc.message}") from exc
