"""Per-detector series history on a regular time grid, kept in memory.

Prometheus range queries evaluate at ``start + k*step``. Aligning every query
to multiples of ``step`` makes the grid identical across evaluations, so new
points can be appended incrementally: the engine fetches only from the newest
known grid point (re-reading it, because the sample for the newest point may
have landed after it was first read) and fetches the whole lookback only on
start or after a gap longer than the buffer. Pure state; the Prometheus
adapter does the I/O.

Memory (issue 16): a detector may have thousands of series and a replica ten
thousand detectors, while the model reads of each window only its newest points
and the extremes of the rest. So each series keeps exactly that (exact, not an
approximation): about 1.7 KiB per series on real metrics where every grid point
took 16 KiB (``docs/bench/history.md``).
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

SeriesKey = tuple[tuple[str, str], ...]
FloatArray = npt.NDArray[np.float64]

#: Prometheus refuses range queries with more points per series than this.
PROMETHEUS_MAX_POINTS = 11_000


def series_key(labels: Mapping[str, str]) -> SeriesKey:
    """A hashable identity for a series: its sorted label pairs."""
    return tuple(sorted(labels.items()))


def format_key(key: SeriesKey) -> str:
    """``{a="1",b="2"}``: how series are shown in metrics, events and logs."""
    return "{" + ",".join(f'{name}="{value}"' for name, value in key) + "}"


def _runs(at: FloatArray) -> list[tuple[float, float]]:
    """[first, last] of each run of consecutive grid indices in the sorted ``at``."""
    if at.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(at) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [at.size - 1]])
    return list(zip(at[starts].tolist(), at[ends].tolist(), strict=True))


def align(t: float, step: float) -> float:
    """The newest grid point at or before ``t``."""
    return math.floor(t / step) * step


@dataclasses.dataclass(frozen=True)
class FetchRange:
    start: float
    end: float
    full: bool  # True when the whole lookback is (re)fetched


@dataclasses.dataclass
class Samples:
    """What one range query returned for one series."""

    labels: dict[str, str]
    timestamps: FloatArray
    values: FloatArray


class Extremes:
    """The older points of a window that can still become its minimum (a monotonic deque).

    Each entry is strictly smaller than every later point, so the values rise from front
    to back: the first is the minimum of the points held, and when it leaves the window
    the next one is the minimum of what is left. Exact, and O(1) amortised per point.
    Kept as two ``array('d')`` (8 bytes an entry, no Python object per point); maxima use
    the same structure on negated values. Its length is the number of points that can
    still become the extreme: a few dozen for metrics that go up and down, the whole
    window for one that only rises.
    """

    __slots__ = ("at", "values")

    def __init__(self) -> None:
        self.at = array.array("d")  # grid indices, increasing
        self.values = array.array("d")  # strictly increasing

    def push(self, at: float, value: float) -> None:
        """Add a point newer than every point held."""
        keep = bisect.bisect_left(self.values, value)
        if keep < len(self.values):
            del self.values[keep:]
            del self.at[keep:]
        self.values.append(value)
        self.at.append(at)

    def fill(self, at: FloatArray, values: FloatArray) -> None:
        """Hold exactly the suffix minima of ``values`` (at grid indices ``at``): a whole window at once."""
        if values.size == 0:
            return
        ahead = np.minimum.accumulate(values[::-1])[::-1]
        keep = values < np.append(ahead[1:], np.inf)
        self.at.frombytes(np.ascontiguousarray(at[keep]).tobytes())
        self.values.frombytes(np.ascontiguousarray(values[keep]).tobytes())

    def expire(self, oldest: float) -> None:
        """Drop the points older than grid index ``oldest``."""
        if self.at and self.at[0] < oldest:
            gone = bisect.bisect_left(self.at, oldest)
            del self.at[:gone]
            del self.values[:gone]

    def first(self) -> float:
        return self.values[0] if self.values else math.nan

    def __len__(self) -> int:
        return len(self.values)


class SeriesSummary:
    """What one series keeps: its newest points as they are, and the extremes of the older ones.

    The model reads every point of its window only near the present; of the rest it reads
    the minimum and the maximum (:func:`vigil.features.tail_points`). ``lows`` and ``highs``
    (on negated values) hold the older window points that can still become those.
    ``runs`` says which older points are present, as [first, last] grid indices of runs of
    consecutive points, only as far back as it takes to count ``min_points`` of them (one
    run for a series without gaps): enough to tell warming up from scored exactly.
    """

    __slots__ = ("highs", "lows", "runs", "tail")

    def __init__(self, tail: int) -> None:
        self.tail = array.array("d", [math.nan]) * tail  # the newest grid points, [-1] at the grid's end
        self.lows = Extremes()
        self.highs = Extremes()  # on negated values
        self.runs = array.array("d")  # first0, last0, first1, last1, ... oldest first

    def add_present(self, at: float, enough: int) -> None:
        """Record that grid index ``at`` (newer than any recorded) has a value; keep ``enough`` points."""
        runs = self.runs
        if runs and runs[-1] + 1 == at:
            runs[-1] = at
        else:
            runs.append(at)
            runs.append(at)
        if len(runs) > 2:  # drop whole runs the newer ones make unnecessary for counting to ``enough``
            total, i = 0.0, len(runs)
            while i > 0 and total < enough:
                i -= 2
                total += runs[i + 1] - runs[i] + 1
            if i > 0:
                del runs[:i]

    def count_present(self, oldest: float) -> int:
        """Recorded present points at grid index ``oldest`` or later."""
        runs, count = self.runs, 0
        for i in range(len(runs) - 2, -1, -2):
            if runs[i + 1] < oldest:
                break
            count += int(runs[i + 1] - max(runs[i], oldest) + 1)
        return count

    def nbytes(self) -> int:
        """Bytes of the arrays' data (what grows with the history; object headers excluded)."""
        return 8 * (len(self.tail) + 2 * len(self.lows) + 2 * len(self.highs) + len(self.runs))


@dataclasses.dataclass
class GridHistory:
    """What the model needs of every series a query returns, on the grid of ``step``.

    ``capacity`` is how far back a fetch reaches (the lookback in points); ``window`` is
    how many points one score reads. Of those, each series keeps its newest ``tail``
    points as they are and, of the older ones, only what can still be their minimum or
    maximum (:class:`SeriesSummary`), plus enough to tell whether ``min_points`` are
    present: memory per series no longer grows with the window for the models that
    read only extremes of it. A series that has been absent for the whole capacity is
    forgotten.
    """

    step: float
    capacity: int
    window: int = 2016
    tail: int = 6
    min_points: int = 48
    end: float | None = None
    series: dict[SeriesKey, SeriesSummary] = dataclasses.field(default_factory=dict)
    labels: dict[SeriesKey, dict[str, str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.tail <= self.window <= self.capacity:
            raise ValueError(f"need 1 <= tail {self.tail} <= window {self.window} <= capacity {self.capacity}")
        if self.min_points < 1:
            raise ValueError(f"min_points must be at least 1, got {self.min_points}")

    def next_fetch(self, now: float) -> FetchRange:
        """The range to query at ``now``: incremental if possible, else the full lookback."""
        newest = align(now, self.step)
        if self.end is None or newest - self.end >= self.capacity * self.step or newest < self.end:
            return FetchRange(start=newest - (self.capacity - 1) * self.step, end=newest, full=True)
        return FetchRange(start=self.end, end=newest, full=False)

    def merge(self, fetched: FetchRange, samples: list[Samples]) -> None:
        """Fold a query result for ``fetched`` into the summaries.

        An incremental fetch starts at the previous end, so only the newest known point can
        change (it is re-read) and it lies in the tail: a point leaves the tail only once it
        can no longer change, and only then is it folded into the extremes.
        """
        if fetched.full or self.end is None:
            self._merge_full(fetched.end, samples)
        else:
            self._merge_step(fetched.end, samples)
        newest = round(self.end / self.step)  # type: ignore[operator]
        window_start = newest - self.window + 1
        capacity_start = newest - self.capacity + 1
        for key in list(self.series):
            summary = self.series[key]
            summary.lows.expire(window_start)
            summary.highs.expire(window_start)
            runs = summary.runs
            while runs and runs[1] < capacity_start:
                del runs[:2]
            if not runs and not any(v == v for v in summary.tail):  # absent for the whole capacity
                del self.series[key]
                del self.labels[key]

    def _merge_full(self, end: float, samples: list[Samples]) -> None:
        """The whole lookback: build each series' summary from a dense buffer, vectorised."""
        self.series = {}
        self.labels = {}
        self.end = end
        span = self.capacity
        start_time = end - (span - 1) * self.step
        first = round(end / self.step) - span + 1
        window_start = round(end / self.step) - self.window + 1
        grouped: dict[SeriesKey, list[Samples]] = {}
        for sample in samples:
            grouped.setdefault(series_key(sample.labels), []).append(sample)
        for key, parts in grouped.items():
            # One dense buffer at a time: a 2,000-series answer never holds 2,000 of them at once.
            buffer = np.full(span, np.nan)
            for sample in parts:
                index = np.rint((sample.timestamps - start_time) / self.step).astype(np.int64)
                keep = (index >= 0) & (index < span) & np.isfinite(sample.values)
                buffer[index[keep]] = sample.values[keep]
            self.labels[key] = dict(parts[0].labels)
            summary = self.series[key] = SeriesSummary(self.tail)
            summary.tail = array.array("d", buffer[span - self.tail :].tobytes())
            present = np.flatnonzero(np.isfinite(buffer[: span - self.tail]))
            at = (first + present).astype(np.float64)
            values = buffer[present]
            inside = at >= window_start
            summary.lows.fill(at[inside], values[inside])
            summary.highs.fill(at[inside], -values[inside])
            for run_first, run_last in _runs(at[-self.min_points :]):
                summary.runs.append(run_first)
                summary.runs.append(run_last)

    def _merge_step(self, end: float, samples: list[Samples]) -> None:
        """A few new points: per point, in plain Python (a handful of numpy calls would cost more)."""
        assert self.end is not None
        shift = max(0, round((end - self.end) / self.step))
        self.end += shift * self.step
        span = self.tail + shift
        start_time = self.end - (span - 1) * self.step
        first = round(self.end / self.step) - span + 1
        nan = math.nan
        buffers = {key: summary.tail.tolist() + [nan] * shift for key, summary in self.series.items()}
        for sample in samples:
            key = series_key(sample.labels)
            buffer = buffers.get(key)
            if buffer is None:
                buffer = buffers[key] = [nan] * span
                self.series[key] = SeriesSummary(self.tail)
                self.labels[key] = dict(sample.labels)
            for t, value in zip(sample.timestamps.tolist(), sample.values.tolist(), strict=True):
                position = round((t - start_time) / self.step)
                if 0 <= position < span and math.isfinite(value):
                    buffer[position] = value
        for key, buffer in buffers.items():
            summary = self.series[key]
            for j in range(shift):
                value = buffer[j]
                if value == value:
                    summary.lows.push(first + j, value)
                    summary.highs.push(first + j, -value)
                    summary.add_present(first + j, self.min_points)
            summary.tail = array.array("d", buffer[shift:])

    def present(self, key: SeriesKey) -> int:
        """Finite points in the window of ``key``: exact below ``min_points``, at least that otherwise."""
        summary = self.series[key]
        window_start = round(self.end / self.step) - self.window + 1 if self.end is not None else 0
        return summary.count_present(window_start) + sum(1 for v in summary.tail if v == v)

    def older_extremes(self, key: SeriesKey) -> tuple[float, float]:
        """(min, max) of the finite window points older than the tail; NaN when there are none."""
        summary = self.series[key]
        return summary.lows.first(), -summary.highs.first()

    def nbytes(self) -> int:
        """Bytes of every series' arrays (labels and object headers excluded)."""
        return sum(summary.nbytes() for summary in self.series.values())
