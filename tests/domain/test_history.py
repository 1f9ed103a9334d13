"""The incremental grid: what to fetch next, how answers fold in, and that what it keeps scores exactly.

The grid keeps only the newest points and the extremes of the older ones (issue 16); the
dense grid it replaced (tests/history_reference.py) is the oracle: after every merge of a
replayed stream (re-reads that change the newest point, gaps, jumps longer than the tail,
series that come and go), availability, features and the built-in model's scores must be
equal, not close.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.harness import DATA
from tests.history_reference import DenseGrid
from vigil import features
from vigil.adapters import inference
from vigil.domain import history, resample
from vigil.domain.history import GridHistory, Samples
from vigil.engine import scoring
from vigil_sandbox import nab


def samples(labels: dict[str, str], times: list[float], values: list[float]) -> Samples:
    return Samples(labels, np.array(times, dtype=float), np.array(values, dtype=float))


def small(capacity: int, tail: int = 2, min_points: int = 2, window: int | None = None) -> GridHistory:
    return GridHistory(step=60, capacity=capacity, window=window or capacity, tail=tail, min_points=min_points)


def test_first_fetch_is_the_full_lookback_aligned_to_step() -> None:
    grid = small(5)
    fetch = grid.next_fetch(1000.5)
    assert fetch.full and fetch.end == 960 and fetch.start == 960 - 4 * 60


def test_incremental_fetch_rereads_the_newest_point() -> None:
    grid = small(5)
    first = grid.next_fetch(1000)
    grid.merge(first, [samples({"a": "1"}, [720, 780, 840, 900, 960], [1, 2, 3, 4, 5])])
    nxt = grid.next_fetch(1130)
    assert not nxt.full and nxt.start == 960 and nxt.end == 1080
    grid.merge(nxt, [samples({"a": "1"}, [960, 1020, 1080], [5.5, 6, 7])])
    key = history.series_key({"a": "1"})
    assert grid.series[key].tail.tolist() == [6, 7]
    assert grid.older_extremes(key) == (3, 5.5)  # 1 and 2 left the 5-point window; 5 was re-read as 5.5
    assert grid.present(key) == 5


def test_gap_longer_than_buffer_refetches_everything() -> None:
    grid = small(5)
    grid.merge(grid.next_fetch(1000), [samples({"a": "1"}, [960], [1])])
    assert grid.next_fetch(1000 + 5 * 60).full


def test_missing_points_are_nan_and_vanished_series_are_forgotten() -> None:
    grid = small(3)
    grid.merge(grid.next_fetch(180), [samples({"a": "1"}, [60, 120, 180], [1, 2, 3]),
                                      samples({"b": "2"}, [180], [9])])
    grid.merge(grid.next_fetch(240), [samples({"a": "1"}, [180, 240], [3, 4])])
    b = history.series_key({"b": "2"})
    assert np.isnan(grid.series[b].tail[-1]) and grid.series[b].tail[-2] == 9
    for now in (300, 360):
        grid.merge(grid.next_fetch(now), [samples({"a": "1"}, [now], [1])])
    assert b not in grid.series and b not in grid.labels  # absent for the whole buffer


def test_non_finite_values_are_missing() -> None:
    grid = small(3, tail=3)
    grid.merge(grid.next_fetch(10 * 60), [samples({}, [480, 540, 600], [1, float("nan"), float("inf")])])
    assert grid.series[()].tail[0] == 1 and np.isnan(grid.series[()].tail[1:]).all()


def test_a_rising_series_keeps_every_older_point_as_a_candidate_minimum_and_one_maximum() -> None:
    grid = small(50, tail=5, min_points=10)
    grid.merge(grid.next_fetch(100 * 60), [samples({}, [60.0 * t for t in range(51, 101)], list(range(50)))])
    summary = grid.series[()]
    assert len(summary.lows) == 45 and len(summary.highs) == 1 and len(summary.runs) == 2
    assert grid.older_extremes(()) == (0, 44)


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="tail"):
        GridHistory(step=60, capacity=10, window=20, tail=5)


def test_format_key() -> None:
    assert history.format_key(history.series_key({"b": "2", "a": "x"})) == '{a="x",b="2"}'


@functools.cache
def _scorer() -> inference.Scorer:
    return inference.Scorer(inference.builtin_bytes())


def _nab(name: str) -> np.ndarray:
    loaded = nab.load_series(DATA / "nab" / name, strict=False)
    return resample.to_grid(loaded.timestamps, loaded.values, 300.0).values


def _streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(16)
    n = 3200
    walk = np.cumsum(rng.normal(size=n)) + 100
    walk[rng.random(n) < 0.05] = np.nan  # scattered gaps
    walk[1500:1560] = np.nan  # a gap longer than the tail
    return {
        "cpu": _nab("realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv")[:n],
        "rising": np.linspace(0.0, 1.0, n),  # worst case for the minima: every point a candidate
        "walk": walk,
        "steps": np.repeat(rng.integers(0, 4, size=n // 40).astype(float), 40),  # ties everywhere
    }


@pytest.mark.parametrize("names", [features.FEATURE_NAMES, _scorer().info.feature_names],
                         ids=["all-features", "built-in"])
def test_kept_history_scores_exactly_as_the_dense_window(names: tuple[str, ...]) -> None:
    step = 300.0
    streams = _streams()
    n = len(next(iter(streams.values())))
    times = 1_000_000_200.0 + step * np.arange(n)
    capacity = features.WINDOW + 100  # a lookback longer than the window
    tail = features.tail_points(names)
    kept = GridHistory(step=step, capacity=capacity, window=features.WINDOW, tail=tail, min_points=features.MIN_POINTS)
    dense = DenseGrid(step=step, capacity=capacity)
    rng = np.random.default_rng(7)
    index, compared, scored = 40, 0, 0
    while index < n:
        fetch = kept.next_fetch(times[index] + 1)
        lo = int(np.searchsorted(times, fetch.start))
        answer = []
        for name, values in streams.items():
            part = values[lo : index + 1].copy()
            if name == "walk" and index % 7 == 0:
                part[-1] = np.nan  # the newest point not scraped yet: it comes with the next fetch's re-read
            if name == "steps" and 2000 < index < 2000 + capacity:
                continue  # the series vanishes for a while
            present = np.isfinite(part)
            answer.append(Samples({"s": name}, times[lo : index + 1][present], part[present]))
        kept.merge(fetch, answer)
        dense.merge(fetch, answer)
        assert set(kept.series) == set(dense.values)
        rows = []
        for key in kept.series:
            window = dense.window(key, features.WINDOW)
            state = scoring.assess(window)
            assert scoring.assess_kept(kept, key) == state
            if state == scoring.Availability.SCORED:
                rows.append((key, window))
        compared += 1
        if rows:
            windows = np.stack([w for _, w in rows])
            expected = features.extract_batch(windows, names)
            got = scoring.kept_features(scoring.kept_inputs([(kept, k) for k, _ in rows], names), names)
            assert np.array_equal(got, expected)
            if names == _scorer().info.feature_names:
                assert np.array_equal(_scorer().score(got), _scorer().score(expected))
            scored += len(rows)
        index += int(rng.choice([1, 2, 3, 10, 300], p=[0.6, 0.2, 0.15, 0.04, 0.01]))  # sometimes past the tail
    assert compared > 300 and scored > 1000
