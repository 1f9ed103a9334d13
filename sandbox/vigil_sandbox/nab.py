"""Load Numenta Anomaly Benchmark (NAB) series and label windows, and move them in time.

NAB series are 2013-2015 CSVs (``timestamp,value``, naive timestamps that are
UTC). To replay one through a real Prometheus it has to end near *now*
(retention is measured back from the newest data) and, for the demo, be
compressed from 5-minute to 1-second spacing. The label windows must move
with it, or the scores would be judged against the wrong minutes: hence
:class:`TimeShift`, one transform applied to both.

The loader is strict about junk (it is test data: a bad line is a bug to
see, not to skip) but repairs NAB's known time quirks - a daylight-saving
duplicate hour, a backwards jump, gaps - and *reports* what it repaired.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "LoadReport",
    "LoadedSeries",
    "NabFormatError",
    "TimeShift",
    "Window",
    "load_series",
    "load_windows",
    "parse_timestamp",
    "point_in_window",
    "shift_to_end_at",
    "truncate_at",
]

FloatArray = npt.NDArray[np.float64]
Window = tuple[float, float]
"""A label window: (start, end) epoch seconds, both inclusive as in NAB."""

_MAX_LISTED = 10


class NabFormatError(ValueError):
    """A NAB file is malformed; the message names the file and line numbers."""


def parse_timestamp(text: str) -> float:
    """NAB timestamp (``2014-02-14 14:30:00``, optional fraction) to epoch seconds.

    NAB timestamps carry no zone and are UTC; an explicit offset is honoured.
    """
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_series` found and repaired, by 1-based file line number."""

    path: str
    rows: int
    """Data rows read (header and blank lines excluded)."""
    kept: int
    """Points returned after sorting and de-duplication."""
    duplicates: tuple[int, ...] = ()
    """Lines dropped because a *later* line has the same timestamp (the last wins)."""
    backwards: tuple[int, ...] = ()
    """Lines whose timestamp is earlier than the line before (sorted back into place)."""
    non_numeric: tuple[int, ...] = ()
    """Lines whose value is not a finite number (only with ``strict=False``; else an error)."""
    gaps: int = 0
    """Steps longer than the typical spacing, after sorting (kept as gaps, not filled)."""
    spacing: float = math.nan
    """Median step in seconds after sorting (NaN for fewer than two points)."""

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.backwards or self.non_numeric)

    def summary(self) -> str:
        return (
            f"{self.path}: {self.rows} rows, {self.kept} kept; "
            f"{len(self.duplicates)} duplicate timestamp(s){_lines(self.duplicates)}, "
            f"{len(self.backwards)} backwards jump(s){_lines(self.backwards)}, "
            f"{len(self.non_numeric)} non-numeric{_lines(self.non_numeric)}, "
            f"{self.gaps} gap(s)"
        )


def _lines(numbers: Sequence[int]) -> str:
    if not numbers:
        return ""
    shown = ", ".join(str(n) for n in numbers[:_MAX_LISTED])
    more = f", ... (+{len(numbers) - _MAX_LISTED})" if len(numbers) > _MAX_LISTED else ""
    return f" (lines {shown}{more})"


@dataclass(frozen=True, eq=False)
class LoadedSeries:
    """Sorted, de-duplicated points plus the :class:`LoadReport`.

    Iterates as ``(timestamps, values)`` so ``ts, values = load_series(p)``
    reads like the plain pair; ``.report`` is there when you want it.
    """

    timestamps: FloatArray
    values: FloatArray
    report: LoadReport

    def __iter__(self) -> Iterator[FloatArray]:
        return iter((self.timestamps, self.values))


def load_series(path: str | Path, *, strict: bool = True) -> LoadedSeries:
    """Read a NAB CSV into epoch-second timestamps and float values.

    Junk raises :class:`NabFormatError` listing every offending line: a wrong
    header, a wrong column count, an unparsable timestamp, and (when
    ``strict``) a value that is not a finite number. With ``strict=False``
    such values are dropped and listed in ``report.non_numeric`` instead.

    Time quirks are repaired and reported, never silently: points are sorted
    by time (a backwards jump is listed in ``report.backwards``) and of equal
    timestamps the last line wins (the others in ``report.duplicates``).
    """
    path = Path(path)
    errors: list[str] = []
    non_numeric: list[int] = []
    ts_list: list[float] = []
    vs_list: list[float] = []
    line_nos: list[int] = []
    backwards: list[int] = []
    prev_t = -math.inf
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["timestamp", "value"]:
            raise NabFormatError(f"{path}:1: expected header 'timestamp,value', got {header!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                errors.append(f"line {line}: expected 2 columns, got {len(row)}: {row!r}")
                continue
            try:
                t = parse_timestamp(row[0])
            except ValueError:
                errors.append(f"line {line}: bad timestamp {row[0]!r}")
                continue
            # Judged against the previous *line*, valid value or not: it is the clock that jumped.
            if t < prev_t:
                backwards.append(line)
            prev_t = t
            try:
                v = float(row[1])
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                if strict:
                    errors.append(f"line {line}: value {row[1]!r} is not a finite number")
                else:
                    non_numeric.append(line)
                continue
            ts_list.append(t)
            vs_list.append(v)
            line_nos.append(line)
    if errors:
        shown = "\n  ".join(errors[:_MAX_LISTED])
        more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise NabFormatError(f"{path}: {len(errors)} bad line(s):\n  {shown}{more}")
    if not ts_list:
        raise NabFormatError(f"{path}: no data rows")

    ts = np.asarray(ts_list, dtype=np.float64)
    vs = np.asarray(vs_list, dtype=np.float64)
    lines = np.asarray(line_nos, dtype=np.int64)

    order = np.argsort(ts, kind="stable")  # stable: equal times stay in file order
    ts, vs, lines = ts[order], vs[order], lines[order]
    keep_last = np.append(ts[1:] != ts[:-1], True)  # keep a point unless the next has its time
    duplicates = np.sort(lines[~keep_last])
    ts, vs = ts[keep_last], vs[keep_last]

    steps = np.diff(ts)
    spacing = float(np.median(steps)) if steps.size else math.nan
    gaps = int(np.count_nonzero(steps > 1.5 * spacing)) if steps.size else 0
    report = LoadReport(
        path=str(path),
        rows=len(line_nos) + len(non_numeric),
        kept=int(ts.size),
        duplicates=tuple(int(n) for n in duplicates),
        backwards=tuple(backwards),
        non_numeric=tuple(non_numeric),
        gaps=gaps,
        spacing=spacing,
    )
    return LoadedSeries(ts, vs, report)


def load_windows(labels_json_path: str | Path, key: str) -> list[Window]:
    """Label windows of one series from a NAB ``combined_windows.json``.

    ``key`` is the series' path relative to NAB's ``data/`` folder, e.g.
    ``realKnownCause/rogue_agent_key_hold.csv``. A series without anomalies
    has an empty list; a key that is absent is an error, not an empty list,
    so a typo cannot pass for "no anomalies".
    """
    path = Path(labels_json_path)
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise NabFormatError(f"{path}: expected a JSON object of series -> windows")
    if key not in data:
        near = [k for k in data if Path(k).name == Path(key).name]
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"{key!r} not in {path} ({len(data)} series){hint}")
    windows: list[Window] = []
    for i, item in enumerate(data[key]):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise NabFormatError(f"{path}: {key} window {i}: expected [start, end] strings, got {item!r}")
        try:
            start, end = parse_timestamp(item[0]), parse_timestamp(item[1])
        except ValueError as err:
            raise NabFormatError(f"{path}: {key} window {i}: {err}") from None
        if end < start:
            raise NabFormatError(f"{path}: {key} window {i}: end {item[1]} before start {item[0]}")
        windows.append((start, end))
    return windows


@dataclass(frozen=True, eq=False)
class TimeShift:
    """A monotonic map from original to shifted time, for a series and its windows.

    A pure offset, or (``spacing`` given) a rank-based resampling of time:
    original point *i* goes to ``end - (n-1-i) * spacing``. Times between
    points are interpolated linearly between their neighbours' new times, and
    times outside the series (a window may reach past it) are extrapolated at
    ``spacing`` per original median step, so windows keep their place
    relative to the points.
    """

    source: FloatArray
    """Original timestamps (sorted)."""
    timestamps: FloatArray
    """The shifted timestamps of ``source``."""
    spacing: float | None = None
    _scale: float = field(default=1.0, repr=False)

    @property
    def offset(self) -> float:
        """Shift of the last point (the whole shift when ``spacing`` is None)."""
        return float(self.timestamps[-1] - self.source[-1])

    def __call__(self, t: float) -> float:
        """Map one original time."""
        return float(self.apply(np.asarray([t], dtype=np.float64))[0])

    def apply(self, times: npt.ArrayLike) -> FloatArray:
        """Map an array of original times."""
        arr = np.asarray(times, dtype=np.float64)
        if self.spacing is None:
            out: FloatArray = arr + self.offset
            return out
        src, dst = self.source, self.timestamps
        mapped: FloatArray = np.interp(arr, src, dst)
        before, after = arr < src[0], arr > src[-1]
        mapped[before] = dst[0] - (src[0] - arr[before]) * self._scale
        mapped[after] = dst[-1] + (arr[after] - src[-1]) * self._scale
        return mapped

    def window(self, window: Window) -> Window:
        start, end = self.apply(window)
        return float(start), float(end)

    def windows(self, windows: Sequence[Window]) -> list[Window]:
        """The same transform applied to label windows, keeping them aligned."""
        return [self.window(w) for w in windows]


def shift_to_end_at(timestamps: npt.ArrayLike, end: float, spacing: float | None = None) -> TimeShift:
    """Plan a shift so the last point lands exactly at ``end``.

    Without ``spacing`` the original spacing (gaps included) is kept. With
    it, points are placed ``spacing`` seconds apart by rank, which is how the
    demo replays 5-minute data at one point per second; gaps then close up.
    Use ``.timestamps`` for the points and ``.windows(...)`` for the labels.
    """
    src = np.asarray(timestamps, dtype=np.float64)
    if src.ndim != 1 or src.size == 0:
        raise ValueError("timestamps must be a non-empty 1-D array")
    if np.any(np.diff(src) <= 0):
        raise ValueError("timestamps must be strictly increasing (load_series sorts and de-duplicates)")
    if spacing is None:
        return TimeShift(src, src + (end - src[-1]), None)
    if not (spacing > 0 and math.isfinite(spacing)):
        raise ValueError(f"spacing must be a positive number of seconds, got {spacing!r}")
    n = src.size
    dst = end - (n - 1 - np.arange(n, dtype=np.float64)) * spacing
    median_step = float(np.median(np.diff(src))) if n > 1 else spacing
    return TimeShift(src, dst, spacing, spacing / median_step)


def truncate_at(timestamps: npt.ArrayLike, values: npt.ArrayLike, at: float) -> tuple[FloatArray, FloatArray]:
    """The points with timestamp <= ``at``: the series as seen at that moment.

    With :func:`point_in_window` and :func:`shift_to_end_at` this lets a test
    stand "now" inside a labelled anomaly and check what a detector sees.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    if ts.shape != vs.shape:
        raise ValueError(f"timestamps {ts.shape} and values {vs.shape} differ in shape")
    keep = ts <= at
    if not keep.any():
        raise ValueError(f"no point at or before {at}")
    return ts[keep], vs[keep]


def point_in_window(timestamps: npt.ArrayLike, window: Window, fraction: float = 0.5) -> float:
    """Timestamp of a data point inside ``window``, ``fraction`` of the way through its points."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    ts = np.asarray(timestamps, dtype=np.float64)
    inside = ts[(ts >= window[0]) & (ts <= window[1])]
    if inside.size == 0:
        raise ValueError(f"no data point inside window {window}")
    return float(inside[round(fraction * (inside.size - 1))])
