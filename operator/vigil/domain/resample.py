"""Put raw samples on the regular grid a Prometheus range query would return.

At grid time ``g`` Prometheus answers with the newest sample in
``(g - lookback_delta, g]`` (5 minutes by default), or nothing. Reproducing that
here lets ``vigil backtest`` feed the model exactly what the operator gets live
from Prometheus, gaps included. Pure: arrays in, arrays out.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Prometheus' default ``--query.lookback-delta``.
PROMETHEUS_LOOKBACK_DELTA = 300.0


@dataclasses.dataclass(frozen=True)
class Grid:
    timestamps: FloatArray
    values: FloatArray  # NaN where Prometheus would return no point
    off_grid: int  # input samples whose time is not exactly a grid point
    unused: int  # input samples no grid point picked (superseded within one step)
    empty_points: int  # grid points with no sample (gaps)


def median_step(timestamps: FloatArray) -> float:
    """The typical spacing of a series, used as the grid step when none is given."""
    if timestamps.size < 2:
        raise ValueError("need at least two samples to infer the step; pass --step")
    diffs = np.diff(timestamps)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise ValueError("all samples share one timestamp; cannot infer the step")
    return float(np.median(diffs))


def to_grid(
    timestamps: FloatArray,
    values: FloatArray,
    step: float,
    lookback_delta: float = PROMETHEUS_LOOKBACK_DELTA,
) -> Grid:
    """Sample a sorted, de-duplicated series at ``t0, t0+step, ...`` like a range query."""
    if timestamps.size == 0:
        empty = np.empty(0)
        return Grid(empty, empty, 0, 0, 0)
    if np.any(np.diff(timestamps) <= 0):
        raise ValueError("timestamps must be strictly increasing before resampling")
    start = timestamps[0]
    # Cover the last sample: the grid ends at or just after it, so no trailing sample is left out.
    count = int(np.ceil((timestamps[-1] - start) / step - 1e-9)) + 1
    grid_t = start + step * np.arange(count, dtype=np.float64)
    # Index of the newest sample at or before each grid time.
    index = np.searchsorted(timestamps, grid_t + 1e-9, side="right") - 1
    fresh = (index >= 0) & (grid_t - timestamps[np.clip(index, 0, None)] < lookback_delta)
    grid_v = np.where(fresh, values[np.clip(index, 0, None)], np.nan)
    on_grid = np.abs((timestamps - start) / step - np.rint((timestamps - start) / step)) < 1e-6
    used = np.zeros(timestamps.size, dtype=bool)
    used[index[fresh]] = True
    return Grid(
        timestamps=grid_t,
        values=grid_v.astype(np.float64),
        off_grid=int(np.count_nonzero(~on_grid)),
        unused=int(np.count_nonzero(~used)),
        empty_points=int(np.count_nonzero(~np.isfinite(grid_v))),
    )
