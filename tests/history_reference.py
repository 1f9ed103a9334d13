"""The dense history grid the operator kept before issue 16: every grid point, as a reference.

Kept under tests/ (not in the operator) as the oracle the bounded history is checked
against, and as the "float64 / float32 grid" options ``bench/history.py`` measures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from vigil.domain.history import FetchRange, Samples, SeriesKey, series_key


@dataclasses.dataclass
class DenseGrid:
    """The last ``capacity`` grid points of every series, NaN = missing (the pre-issue-16 ``GridHistory``)."""

    step: float
    capacity: int
    dtype: type[np.floating] = np.float64  # type: ignore[type-arg]
    end: float | None = None
    values: dict[SeriesKey, npt.NDArray[np.floating]] = dataclasses.field(default_factory=dict)  # type: ignore[type-arg]

    def merge(self, fetched: FetchRange, samples: list[Samples]) -> None:
        if fetched.full or self.end is None:
            self.values = {}
            self.end = fetched.end
        else:
            shift = round((fetched.end - self.end) / self.step)
            if shift > 0:
                for key, buffer in self.values.items():
                    moved = np.full(self.capacity, np.nan, dtype=self.dtype)
                    moved[: self.capacity - shift] = buffer[shift:]
                    self.values[key] = moved
                self.end = fetched.end
        start_time = self.end - (self.capacity - 1) * self.step
        for sample in samples:
            key = series_key(sample.labels)
            if key not in self.values:
                self.values[key] = np.full(self.capacity, np.nan, dtype=self.dtype)
            buffer = self.values[key]
            index = np.rint((sample.timestamps - start_time) / self.step).astype(np.int64)
            keep = (index >= 0) & (index < self.capacity) & np.isfinite(sample.values)
            buffer[index[keep]] = sample.values[keep]
        for key in [key for key, buffer in self.values.items() if not np.isfinite(buffer).any()]:
            del self.values[key]

    def window(self, key: SeriesKey, size: int) -> npt.NDArray[np.float64]:
        """The newest ``size`` points of one series as float64, NaN-padded on the left if needed."""
        buffer = self.values[key].astype(np.float64)
        if size <= self.capacity:
            return buffer[self.capacity - size :]
        padded = np.full(size, np.nan)
        padded[size - self.capacity :] = buffer
        return padded
