"""The verdict state machine, as a table (kopf-style parametrised grids)."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.api.v1alpha1.detector import MissingDataPolicy, SeriesState
from vigil.domain import detection
from vigil.domain.detection import STATE_CODES, Availability, Rule, decide, decide_series

S, M, W = Availability.SCORED, Availability.MISSING, Availability.WARMING_UP
IGNORE = detection.Rule(threshold=0.5, for_seconds=120, missing=MissingDataPolicy.IGNORE)
ALERT = detection.Rule(threshold=0.5, for_seconds=120, missing=MissingDataPolicy.ALERT)


def replay(rule: detection.Rule, steps: list[tuple[float, Availability, float | None]]) -> list[tuple[str, bool]]:
    verdict = None
    out = []
    for now, availability, score in steps:
        verdict = detection.decide(verdict, availability, score, rule, now)
        out.append((verdict.state.value, verdict.anomalous))
    return out


def test_for_delays_the_verdict_like_a_prometheus_alert() -> None:
    steps = [(0, S, 0.9), (60, S, 0.9), (120, S, 0.9), (180, S, 0.2)]
    assert replay(IGNORE, steps) == [
        ("Pending", False), ("Pending", False), ("Anomalous", True), ("Normal", False)]


def test_dip_below_threshold_resets_pending() -> None:
    steps = [(0, S, 0.9), (60, S, 0.1), (120, S, 0.9), (180, S, 0.9), (240, S, 0.9)]
    assert [a for _, a in replay(IGNORE, steps)] == [False, False, False, False, True]


def test_threshold_is_inclusive() -> None:
    assert replay(detection.Rule(0.5, 0, MissingDataPolicy.IGNORE), [(0, S, 0.5)]) == [("Anomalous", True)]


@pytest.mark.parametrize("rule", [IGNORE, ALERT])
def test_warming_up_never_anomalous(rule: detection.Rule) -> None:
    assert replay(rule, [(0, W, None), (500, W, None)]) == [("WarmingUp", False), ("WarmingUp", False)]


def test_missing_never_counts_under_ignore_and_resets_pending() -> None:
    steps = [(0, S, 0.9), (60, M, None), (120, S, 0.9), (180, S, 0.9)]
    assert replay(IGNORE, steps) == [
        ("Pending", False), ("Missing", False), ("Pending", False), ("Pending", False)]


def test_missing_alerts_after_for_under_alert() -> None:
    steps = [(0, M, None), (60, M, None), (120, M, None)]
    assert replay(ALERT, steps) == [("Missing", False), ("Missing", False), ("Missing", True)]


def test_since_is_kept_while_state_holds() -> None:
    v = detection.decide(None, S, 0.1, IGNORE, 0)
    v = detection.decide(v, S, 0.2, IGNORE, 60)
    assert v.since == 0 and v.state == SeriesState.NORMAL
    v = detection.decide(v, S, 0.9, IGNORE, 120)
    assert v.since == 120 and v.pending_since == 120


def test_summary() -> None:
    verdicts = {
        "a": detection.SeriesVerdict(SeriesState.ANOMALOUS, 10, True, 0, 0.9),
        "b": detection.SeriesVerdict(SeriesState.NORMAL, 10, False, None, 0.3),
        "c": detection.SeriesVerdict(SeriesState.MISSING, 10, False, None, None),
    }
    summary = detection.summarise(verdicts, None, 100)
    assert summary.anomalous and summary.score == 0.9 and summary.anomalous_since == 100
    assert summary.anomalous_series == 1 and summary.missing_series == 1 and summary.scored_series == 2
    assert detection.summarise(verdicts, 50, 100).anomalous_since == 50
    assert not detection.summarise({}, 50, 100).anomalous


def test_scored_needs_a_score() -> None:
    with pytest.raises(ValueError):
        detection.decide(None, S, None, IGNORE, 0)


@pytest.mark.parametrize("missing", list(MissingDataPolicy))
@pytest.mark.parametrize("for_seconds", [0.0, 60.0, 150.0])
def test_decide_series_equals_the_fold_of_decide(missing: MissingDataPolicy, for_seconds: float) -> None:
    """The vectorised backtest path and the live per-tick path give the same verdicts, point by point."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(0, 300))
        kinds = rng.choice([Availability.SCORED, Availability.MISSING, Availability.WARMING_UP], size=n,
                           p=[0.8, 0.1, 0.1])
        scores = np.where([k == Availability.SCORED for k in kinds], rng.random(n), np.nan)
        times = np.cumsum(rng.choice([30.0, 60.0, 90.0], size=n)) + 1e9
        rule = Rule(threshold=0.6, for_seconds=for_seconds, missing=missing)

        verdict = None
        expected_anomalous, expected_states = [], []
        for kind, score, t in zip(kinds, scores.tolist(), times.tolist(), strict=True):
            verdict = decide(verdict, kind, None if kind != Availability.SCORED else score, rule, t)
            expected_anomalous.append(verdict.anomalous)
            expected_states.append(verdict.state)

        scored = np.array([k == Availability.SCORED for k in kinds], dtype=bool)
        absent = np.array([k == Availability.MISSING for k in kinds], dtype=bool)
        anomalous, codes = decide_series(scored, absent, scores, rule, times)
        assert anomalous.tolist() == expected_anomalous
        assert [STATE_CODES[c] for c in codes.tolist()] == expected_states
        if for_seconds == 0.0 and n:
            assert anomalous.any() or not (scores >= 0.6).any()  # the case is not vacuous
