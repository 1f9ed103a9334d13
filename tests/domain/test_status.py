"""Status composition, write suppression and the events derived from flips."""

from __future__ import annotations

from vigil.api.v1alpha1.common import ConditionStatus
from vigil.api.v1alpha1.detector import AnomalyDetectorStatus, ModelStatus, Reason, SeriesState
from vigil.domain import conditions, detection
from vigil.domain import status as statuses
from vigil.domain.status import Outcome, OutcomeKind

MODEL = ModelStatus(name="m", sha256="0" * 64, input_signature="features: tensor(float)[N,3]")
KEY_A = (("instance", "a"),)
KEY_B = (("instance", "b"),)


def evaluated(now: float, a: detection.SeriesVerdict, b: detection.SeriesVerdict, prev_since: float | None = None,
              gen: int = 1) -> Outcome:
    series = {KEY_A: a, KEY_B: b}
    return Outcome(
        OutcomeKind.EVALUATED, Reason.EVALUATING, "scored 2 of 2 series", now, gen,
        verdict=detection.summarise(series, prev_since, now), series=series,
        labels={KEY_A: {"instance": "a"}, KEY_B: {"instance": "b"}}, model=MODEL, threshold=0.5,
    )


def normal(score: float, since: float = 0) -> detection.SeriesVerdict:
    return detection.SeriesVerdict(SeriesState.NORMAL, since, False, None, score)


def anomalous(score: float, since: float) -> detection.SeriesVerdict:
    return detection.SeriesVerdict(SeriesState.ANOMALOUS, since, True, since, score)


def test_evaluated_sets_all_three_conditions() -> None:
    new = statuses.compose(AnomalyDetectorStatus(), evaluated(100, normal(0.1), normal(0.3)), top_k=10)
    kinds = {c.type: (c.status, c.reason) for c in new.conditions}
    assert kinds == {
        "Ready": (ConditionStatus.TRUE, "Evaluating"),
        "Anomalous": (ConditionStatus.FALSE, "Normal"),
        "Degraded": (ConditionStatus.FALSE, "AsExpected"),
    }
    assert new.score == 0.3 and new.anomalous is False and new.series_count == 2
    assert [s.labels["instance"] for s in new.series] == ["b", "a"]  # by score
    assert new.observed_generation == 1


def test_score_changes_alone_do_not_write_until_heartbeat() -> None:
    first = statuses.compose(AnomalyDetectorStatus(), evaluated(100, normal(0.1), normal(0.3)), 10)
    second = statuses.compose(first, evaluated(160, normal(0.2), normal(0.25)), 10)
    assert not statuses.needs_write(first, second, last_write=100, now=160, heartbeat=300)
    assert statuses.needs_write(first, second, last_write=100, now=400, heartbeat=300)
    assert statuses.needs_write(None, second, None, 160, 300)


def test_verdict_flip_writes_and_emits_one_event() -> None:
    first = statuses.compose(AnomalyDetectorStatus(), evaluated(100, normal(0.1), normal(0.3)), 10)
    flipped = statuses.compose(first, evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    assert statuses.needs_write(first, flipped, 100, 160, 300)
    events = statuses.events_between(first, flipped)
    assert [(e.type, e.reason) for e in events] == [("Warning", "AnomalyDetected")]
    assert 'instance="a"' in events[0].message
    resolved = statuses.compose(flipped, evaluated(220, normal(0.1, 220), normal(0.3)), 10)
    assert [e.reason for e in statuses.events_between(flipped, resolved)] == ["AnomalyResolved"]
    assert resolved.anomalous_since is None


def test_anomalous_transition_time_is_kept_while_anomalous() -> None:
    s1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    s2 = statuses.compose(s1, evaluated(220, anomalous(0.95, 160), normal(0.3), prev_since=160), 10)
    c1 = conditions.get(s1.conditions, "Anomalous")
    c2 = conditions.get(s2.conditions, "Anomalous")
    assert c1 is not None and c2 is not None and c1.last_transition_time == c2.last_transition_time
    assert s2.anomalous_since == s1.anomalous_since
    assert not statuses.needs_write(s1, s2, 160, 220, 300)


def test_an_anomalous_status_is_rewritten_at_the_shorter_anomalous_heartbeat() -> None:
    """Other shards act on an anomalous verdict only while it is fresh: it must be rewritten sooner than a
    quiet one, so a dead shard's verdict goes stale (issue 16 made the quiet heartbeat 20 min)."""
    s1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    s2 = statuses.compose(s1, evaluated(500, anomalous(0.95, 160), normal(0.3), prev_since=160), 10)
    assert not statuses.needs_write(s1, s2, 160, 400, 1200, anomalous_heartbeat=300)
    assert statuses.needs_write(s1, s2, 160, 460, 1200, anomalous_heartbeat=300)
    quiet1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, normal(0.1), normal(0.3)), 10)
    quiet2 = statuses.compose(quiet1, evaluated(500, normal(0.2), normal(0.3)), 10)
    assert not statuses.needs_write(quiet1, quiet2, 160, 1000, 1200, anomalous_heartbeat=300)
    assert statuses.needs_write(quiet1, quiet2, 160, 1360, 1200, anomalous_heartbeat=300)


def test_source_failure_keeps_the_verdict_and_marks_degraded() -> None:
    s1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    failure = Outcome(OutcomeKind.SOURCE_FAILURE, Reason.PROMETHEUS_UNAVAILABLE, "refused", 220, 1)
    s2 = statuses.compose(s1, failure, 10)
    assert s2.anomalous is True and s2.score == s1.score and s2.series == s1.series
    assert conditions.is_true(s2.conditions, "Degraded") and conditions.is_true(s2.conditions, "Ready")
    s3 = statuses.compose(s2, failure, 10)
    # A repeated failure changes nothing worth a write: no counter goes stale between heartbeats (issue 11,
    # finding 16), and the failing-since time is the Degraded condition's lastTransitionTime.
    assert s3 == s2 and not statuses.needs_write(s2, s3, 220, 280, 300)
    degraded = conditions.get(s3.conditions, "Degraded")
    assert degraded is not None and degraded.last_transition_time == conditions.get(s2.conditions,
                                                                                    "Degraded").last_transition_time
    events = statuses.events_between(s1, s2)
    assert [(e.type, e.reason) for e in events] == [("Warning", "PrometheusUnavailable")]
    back = statuses.compose(s3, evaluated(340, anomalous(0.9, 160), normal(0.3), prev_since=160), 10)
    assert [e.reason for e in statuses.events_between(s3, back)] == ["Recovered"]


def test_compose_never_changes_the_previous_status() -> None:
    """compose copies shallowly (issue 16): it must assign new values, never change shared ones in place."""
    s1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    s2 = statuses.compose(s1, evaluated(220, anomalous(0.95, 160), normal(0.3), prev_since=160), 10)
    outcomes = [
        evaluated(280, normal(0.1, 280), normal(0.2)),
        Outcome(OutcomeKind.SOURCE_FAILURE, Reason.PROMETHEUS_UNAVAILABLE, "refused", 280, 1),
        Outcome(OutcomeKind.CONFIG_ERROR, Reason.INVALID_QUERY, "bad_data: parse error", 280, 2),
        Outcome(OutcomeKind.PAUSED, Reason.PAUSED, "paused", 280, 3),
    ]
    for outcome in outcomes:
        before = s2.model_dump(mode="json")
        after = statuses.compose(s2, outcome, 10)
        assert s2.model_dump(mode="json") == before, outcome.kind
        assert after.model_dump(mode="json") != before, outcome.kind


def test_config_error_clears_the_verdict() -> None:
    s1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    error = Outcome(OutcomeKind.CONFIG_ERROR, Reason.INVALID_QUERY, "bad_data: parse error", 220, 2)
    s2 = statuses.compose(s1, error, 10)
    ready = conditions.get(s2.conditions, "Ready")
    assert ready is not None and ready.status == ConditionStatus.FALSE and ready.reason == "InvalidQuery"
    assert s2.anomalous is None and s2.series == [] and s2.observed_generation == 2
    reasons = [e.reason for e in statuses.events_between(s1, s2)]
    assert reasons == ["InvalidQuery"]


def test_first_failure_leaves_ready_unknown() -> None:
    failure = Outcome(OutcomeKind.SOURCE_FAILURE, Reason.PROMETHEUS_TIMEOUT, "slow", 10, 1)
    s = statuses.compose(AnomalyDetectorStatus(), failure, 10)
    ready = conditions.get(s.conditions, "Ready")
    assert ready is not None and ready.status == ConditionStatus.UNKNOWN
    assert s.observed_generation is None


def test_top_k_prefers_anomalous_series() -> None:
    verdicts = {
        KEY_A: anomalous(0.6, 0),
        KEY_B: normal(0.9),
    }
    top = statuses.top_series(verdicts, {}, 1)
    assert [s.labels for s in top] == [{"instance": "a"}]


def test_merge_patch_nulls_cleared_fields() -> None:
    s1 = statuses.compose(AnomalyDetectorStatus(), evaluated(160, anomalous(0.9, 160), normal(0.3)), 10)
    s2 = statuses.compose(s1, evaluated(220, normal(0.1, 220), normal(0.3)), 10)
    patch = s2.to_merge_patch()
    assert patch["anomalousSince"] is None and patch["anomalous"] is False  # null deletes the old value
    assert set(patch) == set(AnomalyDetectorStatus().model_dump(by_alias=True))  # every field, camelCase
    assert all(v is not None for s in patch["series"] for k, v in s.items())  # nested objects stay compact


def test_score_history_keeps_the_last_points_oldest_first_and_survives_failures() -> None:
    from vigil.api.v1alpha1.detector import SCORE_HISTORY_POINTS

    current = AnomalyDetectorStatus()
    for i in range(SCORE_HISTORY_POINTS + 5):
        current = statuses.compose(current, evaluated(1000 + 60 * i, normal(i / 100), normal(0.0)), 10)
    history = current.score_history
    assert len(history) == SCORE_HISTORY_POINTS
    assert [p.score for p in history[:2]] == [0.05, 0.06] and history[-1].score == (SCORE_HISTORY_POINTS + 4) / 100
    assert [p.time.timestamp() for p in history] == sorted(p.time.timestamp() for p in history)
    failed = statuses.compose(current, Outcome(OutcomeKind.SOURCE_FAILURE, Reason.PROMETHEUS_UNAVAILABLE,
                                               "down", 9999, 1), 10)
    assert failed.score_history == history  # an outage adds no point and loses none
    again = statuses.compose(current, evaluated(1000 + 60 * (SCORE_HISTORY_POINTS + 4) + 0.2, normal(0.9),
                                                normal(0.0)), 10)
    assert len(again.score_history) == SCORE_HISTORY_POINTS and again.score_history[-1].score == 0.9
    assert again.score_history[:-1] == history[:-1]  # the same second: the later score replaces the point


def test_why_is_listed_only_for_pending_or_anomalous_series_and_bounded() -> None:
    """Issue 15: the evidence goes to status for series above threshold only, at most MAX_WHY reasons."""
    verdicts = {KEY_A: anomalous(0.9, 100), KEY_B: normal(0.3)}
    why = {KEY_A: ("a1", "a2", "a3", "a4"), KEY_B: ("stale reason",)}
    top = statuses.top_series(verdicts, {}, 10, why)
    assert [(s.labels["instance"], s.why) for s in top] == [("a", ["a1", "a2", "a3"]), ("b", None)]
    assert statuses.top_series(verdicts, {}, 10)[0].why is None
    assert "why" not in top[1].to_wire() and top[0].to_wire()["why"] == ["a1", "a2", "a3"]
