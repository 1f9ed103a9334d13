"""Features from a bounded history (the newest points + the older points' extremes) equal the whole window's."""

from __future__ import annotations

import numpy as np
import pytest

from vigil import features
from vigil.features import window as feature_window

LONG = feature_window.FEATURE_NAMES[feature_window.SHORT_FEATURES:feature_window.LONG_END]
CONTEXT = feature_window.FEATURE_NAMES[feature_window.LONG_END:]


def _windows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(n, features.WINDOW)), axis=1) * rng.uniform(0.01, 100, (n, 1))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[: n // 4, : features.WINDOW - 60] = np.nan  # young series: nothing older than a short tail
    x[n // 4 : n // 2, -200:] = x[n // 4 : n // 2, -201, None]  # a flat end: ties with the older extremes
    x[:, -1] = np.nan_to_num(x[:, -1])
    return x


@pytest.mark.parametrize("names", [features.FEATURE_NAMES, LONG, CONTEXT, ("absz_last", "long_range_pos")],
                         ids=["all", "long", "context", "mixed"])
@pytest.mark.parametrize("extra", [0, 1, 50])
def test_equal_to_the_whole_window_bit_for_bit(names: tuple[str, ...], extra: int) -> None:
    x = _windows(64, seed=extra)
    tail = features.tail_points(names) + extra
    older = x[:, :-tail]
    got = features.extract_summaries(x[:, -tail:], np.fmin.reduce(older, axis=1), np.fmax.reduce(older, axis=1),
                                     names)
    assert np.array_equal(got, features.extract_batch(x, names))


def test_the_tail_each_feature_group_needs() -> None:
    assert features.tail_points(LONG) == feature_window.LONG_RECENT[1]
    assert features.tail_points(("absz_last",)) == feature_window.SHORT
    assert features.tail_points(CONTEXT) == features.tail_points(features.FEATURE_NAMES) == \
        feature_window.CONTEXT_WIDTH


def test_a_tail_too_short_for_the_features_is_refused() -> None:
    with pytest.raises(ValueError, match="tails of shape"):
        features.extract_summaries(np.zeros((1, 5)), np.zeros(1), np.zeros(1), LONG)
