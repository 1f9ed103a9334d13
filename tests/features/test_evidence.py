"""Explanations: exact linear contributions, put in words from the window."""

from __future__ import annotations

import numpy as np

from vigil import features
from vigil.features import evidence, window

LINEAR = (("long_excess_6", 2.0, 0.0), ("season_absz_recent", 1.0, 0.1), ("season_cusum", 0.5, 0.5),
          ("vol_shift", 0.3, 0.5))
NAMES = tuple(n for n, _, _ in LINEAR)


def night_jump() -> np.ndarray:
    """Eight days of a daily cycle; the last 30 minutes sit at the daytime level during the night."""
    t = np.arange(8 * window.PERIOD)
    values = 1.0 + np.sin(2 * np.pi * t / window.PERIOD) + np.random.default_rng(0).normal(scale=0.05, size=len(t))
    end = 7 * window.PERIOD + window.PERIOD * 3 // 4 + window.RECENT
    values[end - window.RECENT : end] = 1.9
    return np.asarray(values[end - features.WINDOW : end])


def test_contributions_are_exact_and_sorted() -> None:
    values = [0.0, 3.1, 2.5, 0.2]
    got = evidence.contributions(values, NAMES, LINEAR)
    assert got == [("season_absz_recent", 3.0), ("season_cusum", 1.0)]  # only those that raised the logit


def test_a_night_jump_is_explained_against_the_same_time_on_previous_days() -> None:
    row = night_jump()
    X = features.extract_batch(row[None, :], NAMES)[0]
    why = evidence.explain(row, X.tolist(), NAMES, LINEAR, step_seconds=300)
    assert 1 <= len(why) <= 3 and all(len(w) <= evidence.MAX_TEXT for w in why)
    assert any(w.startswith("last 30 min") and "SDs above the same time on previous days" in w for w in why)
    assert any(w == "change point 30 min ago (upward shift against the daily pattern)" for w in why)


def test_nothing_above_typical_gives_no_explanation() -> None:
    row = night_jump()
    assert evidence.explain(row, [0.0, 0.0, 0.0, 0.0], NAMES, LINEAR, step_seconds=300) == ()


def test_a_new_extreme_is_explained_by_the_range() -> None:
    row = np.r_[np.random.default_rng(1).normal(size=features.WINDOW - 1), 10.0]
    X = features.extract_batch(row[None, :], NAMES)[0]
    why = evidence.explain(row, X.tolist(), NAMES, LINEAR, step_seconds=300)
    assert why[0].startswith("value above the maximum of the last 7 days by")


def test_missing_and_flat_windows_do_not_break_explanations() -> None:
    for row in (np.full(features.WINDOW, 3.0), np.r_[np.full(features.WINDOW - 1, np.nan), 1.0]):
        why = evidence.explain(row, [1.0, 5.0, 5.0, 5.0], NAMES, LINEAR, step_seconds=60)
        assert all(isinstance(w, str) and len(w) <= evidence.MAX_TEXT for w in why)
