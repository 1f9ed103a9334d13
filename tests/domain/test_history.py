"""The incremental grid: what to fetch next, and how answers fold in."""

from __future__ import annotations

import numpy as np

from vigil.domain import history
from vigil.domain.history import GridHistory, Samples


def samples(labels: dict[str, str], times: list[float], values: list[float]) -> Samples:
    return Samples(labels, np.array(times, dtype=float), np.array(values, dtype=float))


def test_first_fetch_is_the_full_lookback_aligned_to_step() -> None:
    grid = GridHistory(step=60, capacity=5)
    fetch = grid.next_fetch(1000.5)
    assert fetch.full and fetch.end == 960 and fetch.start == 960 - 4 * 60


def test_incremental_fetch_rereads_the_newest_point() -> None:
    grid = GridHistory(step=60, capacity=5)
    first = grid.next_fetch(1000)
    grid.merge(first, [samples({"a": "1"}, [720, 780, 840, 900, 960], [1, 2, 3, 4, 5])])
    nxt = grid.next_fetch(1130)
    assert not nxt.full and nxt.start == 960 and nxt.end == 1080
    grid.merge(nxt, [samples({"a": "1"}, [960, 1020, 1080], [5.5, 6, 7])])
    key = history.series_key({"a": "1"})
    assert grid.window(key, 5).tolist() == [3, 4, 5.5, 6, 7]
    assert grid.timestamps().tolist() == [840, 900, 960, 1020, 1080]


def test_gap_longer_than_buffer_refetches_everything() -> None:
    grid = GridHistory(step=60, capacity=5)
    grid.merge(grid.next_fetch(1000), [samples({"a": "1"}, [960], [1])])
    assert grid.next_fetch(1000 + 5 * 60).full


def test_missing_points_are_nan_and_vanished_series_are_forgotten() -> None:
    grid = GridHistory(step=60, capacity=3)
    grid.merge(grid.next_fetch(180), [samples({"a": "1"}, [60, 120, 180], [1, 2, 3]),
                                      samples({"b": "2"}, [180], [9])])
    step = grid.next_fetch(240)
    grid.merge(step, [samples({"a": "1"}, [180, 240], [3, 4])])
    b = history.series_key({"b": "2"})
    assert np.isnan(grid.window(b, 3)[-1]) and grid.window(b, 3)[-2] == 9
    for now in (300, 360):
        grid.merge(grid.next_fetch(now), [samples({"a": "1"}, [now], [1])])
    assert b not in grid.values  # absent for the whole buffer


def test_window_pads_on_the_left() -> None:
    grid = GridHistory(step=1, capacity=2)
    grid.merge(grid.next_fetch(10), [samples({}, [9, 10], [1, 2])])
    padded = grid.window((), 4)
    assert np.isnan(padded[:2]).all() and padded[2:].tolist() == [1, 2]


def test_non_finite_values_are_missing() -> None:
    grid = GridHistory(step=1, capacity=3)
    grid.merge(grid.next_fetch(10), [samples({}, [8, 9, 10], [1, float("nan"), float("inf")])])
    assert grid.window((), 3)[0] == 1 and np.isnan(grid.window((), 3)[1:]).all()


def test_format_key() -> None:
    assert history.format_key(history.series_key({"b": "2", "a": "x"})) == '{a="x",b="2"}'
