"""No future data (issue 5): cutting a series anywhere leaves every score and verdict before the cut unchanged.

Runs the whole offline path of ``vigil backtest`` (CSV → grid → ``vigil.backtest.run``:
features, the built-in ONNX model, the verdict state machine) on a series and on
prefixes of it cut at random points, and compares point by point, bit for bit.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tests.harness import DATA
from vigil import backtest, features
from vigil.adapters import csvseries, inference
from vigil.domain import resample

SERIES = [
    DATA / "nab" / "realAWSCloudwatch" / "ec2_cpu_utilization_fe7f93.csv",
    DATA / "nab" / "realKnownCause" / "rogue_agent_key_hold.csv",  # has gaps
]


def every_feature_model() -> bytes:
    """A logistic regression reading every feature of the module, each with a non-zero weight.

    The built-in model reads only some features; this one makes the cut tests below
    cover every feature the operator can compute (issue 15: each new feature group).
    """
    from sklearn.linear_model import LogisticRegression

    from model import export
    from vigil.features import contract

    names = features.FEATURE_NAMES
    clf = LogisticRegression()
    clf.classes_ = np.array([False, True])
    clf.coef_ = np.linspace(0.2, 1.0, len(names))[None, :]
    clf.intercept_ = np.array([-6.0])
    clf.n_features_in_ = len(names)
    return export.to_onnx(clf, len(names), {
        contract.META_MODEL_NAME: "every-feature", contract.META_FEATURE_VERSION: features.FEATURE_VERSION,
        contract.META_FEATURE_NAMES: ",".join(names), contract.META_WINDOW: str(features.WINDOW),
        contract.META_MIN_POINTS: str(features.MIN_POINTS), contract.META_RECOMMENDED_THRESHOLD: "0.5",
    })


@pytest.fixture(scope="module", params=["builtin", "every-feature"])
def scorer(request: pytest.FixtureRequest) -> inference.Scorer:
    data = inference.builtin_bytes() if request.param == "builtin" else every_feature_model()
    return inference.Scorer(data)


@pytest.mark.parametrize("path", SERIES, ids=lambda p: p.stem)
def test_scores_up_to_each_random_cut_are_unchanged(path: pathlib.Path, scorer: inference.Scorer) -> None:
    raw = csvseries.read(path, duplicates="last", unordered="sort")
    grid = resample.to_grid(raw.timestamps, raw.values, resample.median_step(raw.timestamps))
    full = backtest.run(grid.timestamps, grid.values, scorer)
    assert np.isfinite(full.scores).sum() > 1000  # the cuts below land among scored points
    rng = np.random.default_rng(5)
    n = len(grid.values)
    # Random cuts, plus cuts just before and at each flagged point: a look-ahead shows where scores move most.
    flagged = np.flatnonzero(full.anomalous)
    flagged = flagged[:: max(1, len(flagged) // 12)]  # at most ~12 of them: each cut is a whole backtest
    near_flags = {int(i) + d for i in flagged for d in (-3, -1, 0, 1) if features.MIN_POINTS < int(i) + d < n}
    cuts = sorted({int(c) for c in rng.integers(features.MIN_POINTS, n, size=20)} | near_flags
                  | {features.MIN_POINTS + 1, n - 1})
    for cut in cuts:
        part = backtest.run(grid.timestamps[:cut], grid.values[:cut], scorer)
        np.testing.assert_array_equal(part.scores, full.scores[:cut], err_msg=f"scores differ with a cut at {cut}")
        np.testing.assert_array_equal(part.anomalous, full.anomalous[:cut])
        assert part.states == full.states[:cut]


def test_a_changed_future_changes_nothing_before_it(scorer: inference.Scorer) -> None:
    """The cut test's converse: replace everything after a point by wild values; the past stays the same."""
    raw = csvseries.read(SERIES[0])
    grid = resample.to_grid(raw.timestamps, raw.values, resample.median_step(raw.timestamps))
    full = backtest.run(grid.timestamps, grid.values, scorer)
    at = len(grid.values) // 2
    wild = grid.values.copy()
    wild[at:] = np.random.default_rng(1).normal(1e6, 1e5, size=len(wild) - at)
    changed = backtest.run(grid.timestamps, wild, scorer)
    np.testing.assert_array_equal(changed.scores[:at], full.scores[:at])
    assert not np.array_equal(changed.scores[at:], full.scores[at:])  # the future did change


def test_chunked_scoring_equals_whole_series(scorer: inference.Scorer) -> None:
    """``backtest.run`` featurises in chunks (with WINDOW-1 points of context) to bound memory: same bits."""
    for path in SERIES:
        series = csvseries.read(path, duplicates="last", unordered="sort")
        grid = resample.to_grid(series.timestamps, series.values, resample.median_step(series.timestamps))
        whole = backtest.run(grid.timestamps, grid.values, scorer, points_per_chunk=len(grid.values) + 1)
        chunked = backtest.run(grid.timestamps, grid.values, scorer, points_per_chunk=700)
        assert np.array_equal(whole.scores, chunked.scores, equal_nan=True)
        assert whole.states == chunked.states
