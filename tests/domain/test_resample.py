from __future__ import annotations

import numpy as np
import pytest

from vigil.domain import resample


def test_regular_series_maps_one_to_one() -> None:
    t = np.arange(0, 3000, 300, dtype=float)
    grid = resample.to_grid(t, t / 10, 300)
    assert grid.timestamps.tolist() == t.tolist() and grid.values.tolist() == (t / 10).tolist()
    assert (grid.off_grid, grid.unused, grid.empty_points) == (0, 0, 0)


def test_gaps_become_missing_like_prometheus_staleness() -> None:
    t = np.array([0, 300, 1200, 1500], dtype=float)  # 600 and 900 have no sample
    grid = resample.to_grid(t, np.array([1, 2, 3, 4.0]), 300)
    assert np.isnan(grid.values[2:4]).all() and grid.empty_points == 2


def test_off_grid_samples_are_taken_as_the_newest_within_lookback() -> None:
    t = np.array([0, 310, 590, 905], dtype=float)
    grid = resample.to_grid(t, np.array([1, 2, 3, 4.0]), 300)
    # Grid 0..1200. Prometheus' window is (g-5m, g]: at 300 the sample at 0 is exactly 5m old -> none;
    # at 900 the newest is 590 (310s old) -> none; the grid extends to 1200 to take the sample at 905.
    assert grid.timestamps.tolist() == [0, 300, 600, 900, 1200]
    assert np.array_equal(grid.values, [1, np.nan, 3, np.nan, 4], equal_nan=True)
    assert grid.off_grid == 3 and grid.unused == 1 and grid.empty_points == 2


def test_requires_sorted_unique() -> None:
    with pytest.raises(ValueError):
        resample.to_grid(np.array([0, 0.0]), np.array([1, 2.0]), 1)


def test_median_step() -> None:
    assert resample.median_step(np.array([0, 60, 120, 300.0])) == 60
    with pytest.raises(ValueError):
        resample.median_step(np.array([5.0]))
