"""The feature module: causality, invariance, training/serving agreement, edge cases."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from model import dataset
from vigil import features
from vigil.features import window

NAB = Path(__file__).parents[1] / "data" / "nab"
F = len(features.FEATURE_NAMES)


def nab_series() -> dict[str, npt.NDArray[np.float64]]:
    return {s.name: s.values for s in dataset.load_nab(NAB)}


def random_walk(n: int, seed: int, missing: float = 0.1) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=n)) * 3.0 + 50.0
    values[rng.random(n) < missing] = np.nan
    values[n // 3 : n // 3 + 70] = np.nan  # a gap longer than WINDOW - MIN_POINTS
    values[n // 2 : n // 2 + 40] = values[n // 2 - 1]  # a flat stretch
    return values


SERIES = {**{name.split("/")[1]: v for name, v in nab_series().items()}, "walk": random_walk(3000, 1)}


def test_public_api() -> None:
    assert isinstance(features.FEATURE_VERSION, str) and features.FEATURE_VERSION
    assert 8 <= F <= 24 and len(set(features.FEATURE_NAMES)) == F
    assert all("," not in name for name in features.FEATURE_NAMES)  # joined with commas in the ONNX metadata
    assert window.RECENT < features.MIN_POINTS <= features.WINDOW
    assert set(window.FEATURE_DESCRIPTIONS) == set(features.FEATURE_NAMES)


def test_no_heavy_imports() -> None:
    code = "import sys, vigil.features; bad = {'sklearn', 'onnxruntime', 'onnx'} & set(sys.modules); print(bad)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "set()"


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_shape_and_dtype(n: int) -> None:
    windows = np.random.default_rng(n).normal(size=(n, features.WINDOW))
    X = features.extract_batch(windows)
    assert X.shape == (n, F) and X.dtype == np.float32
    assert np.isfinite(X).all()


def test_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        features.extract_batch(np.zeros((2, features.WINDOW - 1)))


@pytest.mark.parametrize("name", sorted(SERIES))
def test_series_equals_batch(name: str) -> None:
    values = SERIES[name]
    X, valid = features.extract_series(values)
    assert X.shape == (len(values), F) and X.dtype == np.float32 and valid.dtype == np.bool_
    windows = features.windows_of(values)
    assert windows.shape == (len(values), features.WINDOW)
    np.testing.assert_array_equal(features.extract_batch(windows[valid]), X[valid])
    for t in np.flatnonzero(valid)[::97]:  # one window at a time, as the operator may call it
        np.testing.assert_array_equal(features.extract_batch(windows[t : t + 1])[0], X[t])
    assert not X[~valid].any()


@pytest.mark.parametrize("name", sorted(SERIES))
def test_causal_by_truncation(name: str) -> None:
    values = SERIES[name]
    X, valid = features.extract_series(values)
    rng = np.random.default_rng(7)
    for t in [0, 1, features.MIN_POINTS - 1, features.WINDOW, *rng.integers(0, len(values), 40)]:
        X_t, valid_t = features.extract_series(values[: t + 1])
        assert valid_t[t] == valid[t]
        np.testing.assert_array_equal(X_t[t], X[t])


def test_future_values_do_not_change_the_past() -> None:
    values = random_walk(1500, 3)
    X, valid = features.extract_series(values)
    t = 900
    changed = values.copy()
    changed[t + 1 :] = np.random.default_rng(0).normal(size=len(values) - t - 1) * 1e6
    X2, valid2 = features.extract_series(changed)
    np.testing.assert_array_equal(X2[: t + 1], X[: t + 1])
    np.testing.assert_array_equal(valid2[: t + 1], valid[: t + 1])


@pytest.mark.parametrize("name", sorted(SERIES))
@pytest.mark.parametrize(("a", "b"), [(1.0, 250.0), (0.001, 0.0), (37.5, -1e4), (1e6, 3.0)])
def test_scale_and_offset_invariance(name: str, a: float, b: float) -> None:
    values = SERIES[name]
    X, valid = features.extract_series(values)
    Y, valid_y = features.extract_series(a * values + b)
    np.testing.assert_array_equal(valid_y, valid)
    np.testing.assert_allclose(Y, X, rtol=1e-4, atol=1e-4)


def test_flat_window_gives_zero_features() -> None:
    for level in (0.0, 45.0, -3e9):
        X = features.extract_batch(np.full((1, features.WINDOW), level))
        np.testing.assert_array_equal(X, np.zeros((1, F), dtype=np.float32))


@pytest.mark.parametrize(
    "make",
    [
        lambda w: np.where(np.arange(w) == w - 1, 1.0, 0.0),  # flat, then a spike at the last point
        lambda w: np.where(np.arange(w) == w // 2, 1.0, 0.0),  # a spike inside a flatline
        lambda w: np.where(np.arange(w) < w - 3, 5.0, 5.0 + 1e-12),  # a tiny step on a flatline
        lambda w: np.r_[np.zeros(w - 1), 1e300],  # near the float64 limit
        lambda w: np.r_[np.full(w // 2, -1e300), np.full(w - w // 2, 1e300)],
        lambda w: np.r_[np.full(w - 8, np.nan), np.arange(8.0)],  # only the recent part is finite
    ],
)
def test_degenerate_windows_stay_finite_and_bounded(make: Callable[[int], npt.ArrayLike]) -> None:
    row = np.asarray(make(features.WINDOW), dtype=np.float64)
    X = features.extract_batch(row[None, :])
    assert np.isfinite(X).all()
    assert (X >= 0).all() and (X <= window.Z_CLIP).all()


def test_outputs_bounded_on_real_data() -> None:
    for values in SERIES.values():
        X, _ = features.extract_series(values)
        assert np.isfinite(X).all() and (X >= 0).all() and (X <= window.Z_CLIP).all()
        names = list(features.FEATURE_NAMES)
        for bounded in ("rank_extremeness", "recent_outside_frac"):
            assert X[:, names.index(bounded)].max() <= 1.0


def test_missing_points_are_ignored_not_zeroed() -> None:
    rng = np.random.default_rng(5)
    row = rng.normal(size=features.WINDOW) + 100.0
    holed = row.copy()
    holed[[3, 10, 40, features.WINDOW - 2]] = np.nan
    X, H = features.extract_batch(row[None, :]), features.extract_batch(holed[None, :])
    assert np.isfinite(H).all()
    # Zero-filling a gap in a series around 100 would make the window look wild.
    zero_filled = features.extract_batch(np.nan_to_num(holed)[None, :])
    assert np.abs(H - X).max() < np.abs(zero_filled - X).max()


def test_valid_mask_semantics() -> None:
    values = random_walk(1000, 11)
    _, valid = features.extract_series(values)
    np.testing.assert_array_equal(valid, features.valid_mask(values))
    for t in range(len(values)):
        lo = max(0, t - features.WINDOW + 1)
        expected = np.isfinite(values[t]) and np.isfinite(values[lo : t + 1]).sum() >= features.MIN_POINTS
        assert valid[t] == expected, t
    # Warming up: the first MIN_POINTS - 1 points of a gap-free series are not scored.
    clean = np.arange(200.0)
    valid_clean = features.valid_mask(clean)
    assert not valid_clean[: features.MIN_POINTS - 1].any() and valid_clean[features.MIN_POINTS - 1 :].all()


def test_empty_series() -> None:
    X, valid = features.extract_series(np.array([]))
    assert X.shape == (0, F) and valid.shape == (0,)


@pytest.mark.parametrize("width", [5, 6, 47, 90])
def test_selection_medians_equal_sorted_medians(width: int) -> None:
    """The partition fast path for complete rows picks exactly what the sort path picks."""
    rng = np.random.default_rng(width)
    a = rng.normal(size=(500, width))
    a[::3] = np.round(a[::3])  # ties
    a[1::5, 0] = np.nan  # incomplete rows take the sort path
    a[2::7, 1] = np.inf
    a[3::11] = np.nan  # no finite value at all
    n = np.isfinite(a).sum(axis=1)
    ordered = np.sort(a, axis=1)
    assert np.array_equal(window._row_median(a, n), window._median_of_sorted(ordered, n), equal_nan=True)
    lo, hi = window._row_min_max(a, n)
    assert np.array_equal(lo, ordered[:, 0], equal_nan=True)
    assert np.array_equal(hi, np.take_along_axis(ordered, np.maximum(n - 1, 0)[:, None], axis=1)[:, 0],
                          equal_nan=True)


@pytest.mark.parametrize("width", [97, 300, window.WINDOW])
def test_sliding_extremes_equal_per_window_reductions(width: int) -> None:
    """The series path (sliding min/max, short windows) equals compute() on each full window, bit for bit."""
    rng = np.random.default_rng(width)
    v = np.cumsum(rng.normal(size=2 * width + 500))
    v[rng.random(len(v)) < 0.05] = np.nan
    v[50:150] = np.nan  # a long gap
    v[width] = np.inf  # Prometheus can return +Inf/-Inf
    v[width + 40] = -np.inf
    v[width + 100 : width + 200] = 3.0  # a flatline
    x, valid = window.series_features(v, width, window.RECENT, 48)
    rows = np.flatnonzero(valid)
    assert rows.size > width  # the case is not vacuous
    with np.errstate(over="ignore", invalid="ignore"):
        expected = window.compute(np.ascontiguousarray(window.windows_of(v, width)[rows]), window.RECENT)
    assert np.array_equal(x[rows], expected)


def test_a_subset_of_names_gives_exactly_those_columns() -> None:
    """Models may read any subset of the features, in their own order; only needed groups are computed."""
    values = SERIES[sorted(SERIES)[0]]
    full, valid = features.extract_series(values)
    windows = features.windows_of(values)[valid][:200]
    for names in [window.FEATURE_NAMES[-3:], window.FEATURE_NAMES[:2], ("long_range_pos", "absz_last")]:
        index = list(features.columns(names))
        sub, sub_valid = features.extract_series(values, names)
        assert np.array_equal(sub_valid, valid) and np.array_equal(sub, full[:, index])
        assert np.array_equal(features.extract_batch(windows, names), features.extract_batch(windows)[:, index])


@pytest.mark.parametrize("names", [(), ("absz_last", "absz_last"), ("absz_last", "no_such_feature")])
def test_unknown_repeated_or_no_names_are_refused(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="feature names"):
        features.columns(names)


def daily(days: int, seed: int, noise: float = 0.05) -> npt.NDArray[np.float64]:
    """A clean daily cycle (PERIOD points a day) between 0 and 2, with a little noise."""
    t = np.arange(days * window.PERIOD)
    rng = np.random.default_rng(seed)
    return 1.0 + np.sin(2 * np.pi * t / window.PERIOD) + rng.normal(scale=noise, size=len(t))


def column(X: npt.NDArray[np.float32], name: str) -> npt.NDArray[np.float32]:
    return X[:, features.FEATURE_NAMES.index(name)]


def test_seasonal_residual_catches_a_level_normal_at_another_time_of_day() -> None:
    """Night-time values jumping to the daytime peak stay inside the week's range but not inside the hour's."""
    values = daily(8, 1)
    t0 = 7 * window.PERIOD + window.PERIOD * 3 // 4  # the trough of the eighth day
    values[t0 : t0 + window.RECENT] = 1.9  # normal at the peak, 6 h earlier
    X, valid = features.extract_series(values)
    now = t0 + window.RECENT - 1
    assert valid[now]
    assert column(X, "long_range_pos")[now] < np.log(2)  # no new extreme of the week
    for name in ("season_absz", "season_absz_recent"):  # far beyond any residual of the last 12 h
        assert column(X, name)[now] > 1.0 and column(X, name)[t0 - 1] == 0.0
    assert column(X, "season_cusum")[now] > 3 * max(column(X, "season_cusum")[t0 - 1], 1.0)


def test_one_spike_is_not_a_sustained_seasonal_excursion() -> None:
    values = daily(8, 5)
    t0 = 7 * window.PERIOD + 10
    values[t0] += 1.5
    X, _ = features.extract_series(values)
    assert column(X, "season_absz")[t0] > 1.0
    assert column(X, "season_absz_recent")[t0] == 0.0


def test_cusum_accumulates_a_small_sustained_shift() -> None:
    """A shift of 3 residual standard deviations: small per point, large once it has lasted an hour."""
    values = daily(8, 2, noise=0.1)
    t0 = 7 * window.PERIOD + 100
    values[t0:] += 0.3
    X, _ = features.extract_series(values)
    cusum = column(X, "season_cusum")
    assert cusum[t0 + 12] > cusum[t0 + 2] > cusum[t0 - 1]
    assert cusum[t0 + 12] > 2 * np.percentile(cusum[6 * window.PERIOD : t0], 99)


def test_vol_shift_sees_a_burst_of_noise() -> None:
    values = daily(8, 3, noise=0.01)
    t0 = 7 * window.PERIOD + 50
    values[t0 : t0 + window.VOL_RECENT] += np.random.default_rng(0).normal(scale=0.5, size=window.VOL_RECENT)
    X, _ = features.extract_series(values)
    vol = column(X, "vol_shift")
    assert vol[t0 + window.VOL_RECENT - 1] > 2.0 > vol[t0 - 1]


def test_context_is_zero_before_the_first_seasonal_lag() -> None:
    """Less than a day of history: no seasonal baseline, so no seasonal evidence (not an invented one)."""
    X, valid = features.extract_series(daily(1, 4))
    assert valid[window.PERIOD - 1]
    for name in ("season_absz", "season_absz_recent", "season_cusum"):
        assert not column(X, name)[: window.PERIOD].any()


def test_seasonal_residuals_median_network() -> None:
    rng = np.random.default_rng(9)
    lags = [rng.normal(size=500) for _ in range(window.SEASON_LAGS)]
    np.testing.assert_array_equal(window.seasonal_residuals(np.zeros(500), lags), -np.median(np.stack(lags), axis=0))
    lags[1][:10] = np.nan  # one missing lag: a middle value of the other four
    got = -window.seasonal_residuals(np.zeros(500), lags)[:10]
    four = np.sort(np.stack([lags[j][:10] for j in (0, 2, 3, 4)]), axis=0)
    assert np.all((got == four[1]) | (got == four[2]))
    for j in (0, 2, 3):  # four missing: the one that is there
        lags[j][:10] = np.nan
    np.testing.assert_array_equal(-window.seasonal_residuals(np.zeros(500), lags)[:10], lags[4][:10])
    lags[4][:10] = np.nan  # none: no residual
    assert np.isnan(window.seasonal_residuals(np.zeros(500), lags)[:10]).all()
    assert np.isfinite(window.seasonal_residuals(np.zeros(500), lags)[10:]).all()
