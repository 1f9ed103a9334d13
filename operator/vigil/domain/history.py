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


@dataclasses.dataclass
class GridHistory:
    """The last ``capacity`` grid points of every series a query returns.

    Column ``-1`` is the grid time ``end``; missing points are NaN. A series
    that has been absent for the whole buffer is forgotten.
    """

    step: float
    capacity: int
    end: float | None = None
    values: dict[SeriesKey, FloatArray] = dataclasses.field(default_factory=dict)
    labels: dict[SeriesKey, dict[str, str]] = dataclasses.field(default_factory=dict)

    def next_fetch(self, now: float) -> FetchRange:
        """The range to query at ``now``: incremental if possible, else the full lookback."""
        newest = align(now, self.step)
        if self.end is None or newest - self.end >= self.capacity * self.step or newest < self.end:
            return FetchRange(start=newest - (self.capacity - 1) * self.step, end=newest, full=True)
        return FetchRange(start=self.end, end=newest, full=False)

    def merge(self, fetched: FetchRange, samples: list[Samples]) -> None:
        """Fold a query result for ``fetched`` into the buffers."""
        if fetched.full or self.end is None:
            self.values = {}
            self.labels = {}
            self.end = fetched.end
        else:
            shift = round((fetched.end - self.end) / self.step)
            if shift > 0:
                for key, buffer in self.values.items():
                    moved = np.full(self.capacity, np.nan)
                    moved[: self.capacity - shift] = buffer[shift:]
                    self.values[key] = moved
                self.end = fetched.end
        start_time = self.end - (self.capacity - 1) * self.step
        for sample in samples:
            key = series_key(sample.labels)
            if key not in self.values:
                self.values[key] = np.full(self.capacity, np.nan)
                self.labels[key] = dict(sample.labels)
            buffer = self.values[key]
            index = np.rint((sample.timestamps - start_time) / self.step).astype(np.int64)
            keep = (index >= 0) & (index < self.capacity) & np.isfinite(sample.values)
            buffer[index[keep]] = sample.values[keep]
        for key in [key for key, buffer in self.values.items() if not np.isfinite(buffer).any()]:
            del self.values[key]
            del self.labels[key]

    def window(self, key: SeriesKey, size: int) -> FloatArray:
        """The newest ``size`` points of one series, NaN-padded on the left if needed."""
        buffer = self.values[key]
        if size <= self.capacity:
            return buffer[self.capacity - size :]
        padded = np.full(size, np.nan)
        padded[size - self.capacity :] = buffer
        return padded

    def timestamps(self) -> FloatArray:
        if self.end is None:
            return np.empty(0)
        return self.end - self.step * np.arange(self.capacity - 1, -1, -1, dtype=np.float64)
