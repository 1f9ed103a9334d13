"""Per-detector series history on a regular time grid, kept in memory.

Prometheus range queries evaluate at ``start + k*step``. Aligning every query
to multiples of ``step`` makes the grid identical across evaluations, so new
points can be appended incrementally: the engine fetches only from the newest
known grid point (re-reading it, because the sample for the newest point may
have landed after it was first read) and fetches the whole lookback only on
start or after a gap longer than the buffer. Pure state; the Prometheus
adapter does the I/O.
"""

from __future__ import annotations

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


@dataclasses.dataclass(slots=True)
class SeriesSummary:
    """What one series keeps: the newest points as they are, and the extremes of the older ones.

    The model reads every point of its window only near the present; of the rest it reads
    the minimum and the maximum (:func:`vigil.features.tail_points`). ``lows`` holds, for
    the points older than the tail and inside the window, the increasing run of suffix
    minima: each entry is smaller than every later point, so the first entry is the
    window's minimum and, when it leaves the window, the next is the minimum of what is
    left (a monotonic deque, kept as a numpy array: row 0 the grid index, row 1 the value).
    ``highs`` is the same for maxima. Both are exact; their length is the number of points
    that can still become the extreme, a few dozen for metrics that go up and down, and at
    most the window for a series that only rises or only falls.
    """

    tail: FloatArray  # the newest ``tail`` grid points, [-1] at the grid's end; NaN = missing
    lows: FloatArray  # [2, k]: grid index, value of the older points that can still be the minimum
    highs: FloatArray  # [2, k]: the same for the maximum
    runs: FloatArray  # [2, r]: first and last grid index of each run of finite points older than the tail

    def nbytes(self) -> int:
        """Bytes of the arrays' data (what grows with the history; object headers excluded)."""
        return self.tail.nbytes + self.lows.nbytes + self.highs.nbytes + self.runs.nbytes


_EMPTY_RUN = np.empty((2, 0))


def _add_runs(runs: FloatArray, index: FloatArray, enough: int) -> FloatArray:
    """``runs`` with the newer grid indices ``index`` (sorted) added, trimmed to the newest ``enough`` points."""
    if index.size == 0:
        return runs
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    new = np.stack([index[np.concatenate([[0], breaks])], index[np.concatenate([breaks - 1, [index.size - 1]])]])
    if runs.shape[1] and runs[1, -1] + 1 == new[0, 0]:
        new[0, 0] = runs[0, -1]
        runs = runs[:, :-1]
    both = np.concatenate([runs, new], axis=1)
    # Keep the newest runs that hold ``enough`` points: older ones cannot change a count capped at it.
    newest_first = np.cumsum((both[1] - both[0] + 1)[::-1])
    keep = int(np.searchsorted(newest_first, enough)) + 1
    return both[:, max(0, both.shape[1] - keep):]


def _count_runs(runs: FloatArray, oldest: float) -> int:
    """Points of ``runs`` at or after grid index ``oldest``."""
    if runs.shape[1] == 0:
        return 0
    return int(np.maximum(runs[1] - np.maximum(runs[0], oldest) + 1, 0).sum())


def _extend(run: FloatArray, index: FloatArray, value: FloatArray, lowest: bool) -> FloatArray:
    """``run`` with newer points (index, value) appended, keeping only the suffix extremes.

    A point stays when it is strictly below (above, for maxima) every later point: of equal
    values the newest stays, since it leaves the window last. Vectorised: one reversed
    running extreme over the old run and the new points.
    """
    if index.size == 0:
        return run
    both = np.concatenate([run, np.stack([index, value])], axis=1)
    values = both[1]
    ahead = (np.minimum if lowest else np.maximum).accumulate(values[::-1])[::-1]
    later = np.append(ahead[1:], np.inf if lowest else -np.inf)
    keep = values < later if lowest else values > later
    return both[:, keep] if not keep.all() else both


def _expire(run: FloatArray, oldest: float) -> FloatArray:
    """``run`` without the entries older than grid index ``oldest``."""
    if run.shape[1] == 0 or run[0, 0] >= oldest:
        return run
    return run[:, int(np.searchsorted(run[0], oldest)):]


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
            self.series = {}
            self.labels = {}
            self.end = fetched.end
            span = self.capacity
        else:
            shift = max(0, round((fetched.end - self.end) / self.step))
            self.end += shift * self.step
            span = self.tail + shift
        # A buffer of ``span`` points ending at ``end``: the old tail, then the new points.
        buffers: dict[SeriesKey, FloatArray] = {}
        for key, summary in self.series.items():
            buffer = np.full(span, np.nan)
            buffer[: self.tail] = summary.tail
            buffers[key] = buffer
        start_time = self.end - (span - 1) * self.step
        for sample in samples:
            key = series_key(sample.labels)
            if key not in buffers:
                buffers[key] = np.full(span, np.nan)
                self.series[key] = SeriesSummary(np.full(self.tail, np.nan), _EMPTY_RUN, _EMPTY_RUN, _EMPTY_RUN)
                self.labels[key] = dict(sample.labels)
            buffer = buffers[key]
            index = np.rint((sample.timestamps - start_time) / self.step).astype(np.int64)
            keep = (index >= 0) & (index < span) & np.isfinite(sample.values)
            buffer[index[keep]] = sample.values[keep]
        newest = round(self.end / self.step)
        first = newest - span + 1
        window_start = newest - self.window + 1
        capacity_start = newest - self.capacity + 1
        for key, buffer in buffers.items():
            summary = self.series[key]
            spill = buffer[: span - self.tail]
            summary.tail = buffer[span - self.tail :].copy()
            present = np.flatnonzero(np.isfinite(spill))
            if present.size:
                at: FloatArray = (first + present).astype(np.float64)
                value = spill[present]
                summary.lows = _extend(summary.lows, at, value, lowest=True)
                summary.highs = _extend(summary.highs, at, value, lowest=False)
                summary.runs = _add_runs(summary.runs, at, self.min_points)
            summary.lows = _expire(summary.lows, window_start)
            summary.highs = _expire(summary.highs, window_start)
            runs = summary.runs
            if runs.shape[1] and runs[1, 0] < capacity_start:
                summary.runs = runs = runs[:, runs[1] >= capacity_start]
            if not runs.shape[1] and not np.isfinite(summary.tail).any():
                del self.series[key]
                del self.labels[key]

    def present(self, key: SeriesKey) -> int:
        """Finite points in the window of ``key``: exact below ``min_points``, at least that otherwise."""
        summary = self.series[key]
        window_start = round(self.end / self.step) - self.window + 1 if self.end is not None else 0
        return _count_runs(summary.runs, window_start) + int(np.count_nonzero(np.isfinite(summary.tail)))

    def older_extremes(self, key: SeriesKey) -> tuple[float, float]:
        """(min, max) of the finite window points older than the tail; NaN when there are none."""
        summary = self.series[key]
        lows, highs = summary.lows, summary.highs
        return (float(lows[1, 0]) if lows.shape[1] else math.nan,
                float(highs[1, 0]) if highs.shape[1] else math.nan)

    def nbytes(self) -> int:
        """Bytes of every series' arrays (labels and object headers excluded)."""
        return sum(summary.nbytes() for summary in self.series.values())
