"""Compose an AnomalyDetector's status from one evaluation, and decide what to write.

Writing status wakes every watcher of the object, so the engine writes only
when something *significant* changed (a verdict, a condition, the model, the
observed generation) or when the heartbeat is due. Scores alone change every
tick; they go to /metrics and reach the API server only with the heartbeat.
Events are derived here from condition flips, so each flip makes exactly one.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Mapping

from vigil.api.v1alpha1.common import Condition, ConditionStatus
from vigil.api.v1alpha1.detector import (
    MAX_WHY,
    SCORE_HISTORY_POINTS,
    AnomalyDetectorStatus,
    ConditionType,
    ModelStatus,
    Reason,
    ScorePoint,
    SeriesState,
    SeriesStatus,
)
from vigil.domain import conditions, detection, durations, history
from vigil.domain import labels as shown
from vigil.domain.history import SeriesKey


class OutcomeKind(enum.Enum):
    EVALUATED = "evaluated"  # the query ran and every series got a verdict
    CONFIG_ERROR = "config-error"  # the spec, query or model is wrong: user action needed
    SOURCE_FAILURE = "source-failure"  # Prometheus unreachable/slow/failing: keep the verdict
    PAUSED = "paused"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The result of one evaluation attempt, as the engine hands it to :func:`compose`."""

    kind: OutcomeKind
    reason: Reason
    message: str
    now: float
    generation: int | None
    verdict: detection.DetectorVerdict | None = None
    series: Mapping[SeriesKey, detection.SeriesVerdict] = dataclasses.field(default_factory=dict)
    labels: Mapping[SeriesKey, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    model: ModelStatus | None = None
    threshold: float | None = None
    for_seconds: float = 0.0
    #: Evidence per series above the threshold (issue 15), for SeriesStatus.why; empty = none.
    explanations: Mapping[SeriesKey, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def _ts(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(round(epoch), tz=datetime.UTC)


def compose(previous: AnomalyDetectorStatus, outcome: Outcome, top_k: int) -> AnomalyDetectorStatus:
    """The status after ``outcome``. Fields the outcome says nothing about are kept.

    ``previous`` is never changed, and the copy is shallow: every field that changes is assigned a new
    value (a new list, new conditions), none is changed in place, so the two may share what did not
    change. The deep copy it replaces was 8.6 % of the operator's GIL samples while a restart evaluated
    10,000 detectors (issue 16). tests/domain/test_status.py checks that ``previous`` is left as it was.
    """
    now = _ts(outcome.now)
    gen = outcome.generation
    conds = list(previous.conditions)
    status = previous.model_copy()

    def put(type: ConditionType, value: ConditionStatus, reason: Reason, message: str) -> None:
        nonlocal conds
        conds = conditions.set_condition(conds, type, value, reason, message, now, gen)

    if outcome.kind == OutcomeKind.EVALUATED:
        assert outcome.verdict is not None
        verdict = outcome.verdict
        put(ConditionType.READY, ConditionStatus.TRUE, Reason.EVALUATING, outcome.message)
        put(ConditionType.DEGRADED, ConditionStatus.FALSE, Reason.AS_EXPECTED, "Prometheus answered")
        reason, message = _anomalous_reason(outcome)
        put(
            ConditionType.ANOMALOUS,
            ConditionStatus.TRUE if verdict.anomalous else ConditionStatus.FALSE,
            reason,
            message,
        )
        status.score = None if verdict.score is None else round(verdict.score, 6)
        status.anomalous = verdict.anomalous
        status.anomalous_since = None if verdict.anomalous_since is None else _ts(verdict.anomalous_since)
        status.last_evaluation_time = now
        status.series_count = len(outcome.series)
        status.anomalous_series = verdict.anomalous_series
        status.missing_series = verdict.missing_series
        status.series = top_series(outcome.series, outcome.labels, top_k, outcome.explanations)
        status.model = outcome.model
        status.threshold = outcome.threshold
        status.observed_generation = gen
        # Times are whole seconds: two evaluations within one second keep the later score only.
        kept = [p for p in status.score_history if p.time != now]
        status.score_history = [*kept, ScorePoint(time=now, score=status.score)][-SCORE_HISTORY_POINTS:]
    elif outcome.kind == OutcomeKind.CONFIG_ERROR:
        put(ConditionType.READY, ConditionStatus.FALSE, outcome.reason, outcome.message)
        put(ConditionType.ANOMALOUS, ConditionStatus.UNKNOWN, Reason.NOT_EVALUATED,
            "not evaluated: the detector is not ready")
        if conditions.get(conds, ConditionType.DEGRADED) is None:
            put(ConditionType.DEGRADED, ConditionStatus.FALSE, Reason.AS_EXPECTED, "")
        status.anomalous = None
        status.anomalous_since = None
        status.score = None
        status.series = []
        status.series_count = None
        status.anomalous_series = None
        status.missing_series = None
        status.model = outcome.model
        status.observed_generation = gen
    elif outcome.kind == OutcomeKind.SOURCE_FAILURE:
        # Keep the last verdict: an outage of Prometheus is not evidence of health or of anomaly.
        put(ConditionType.DEGRADED, ConditionStatus.TRUE, outcome.reason, outcome.message)
        if conditions.get(conds, ConditionType.READY) is None:
            put(ConditionType.READY, ConditionStatus.UNKNOWN, Reason.PENDING,
                "waiting for the first successful evaluation")
        if conditions.get(conds, ConditionType.ANOMALOUS) is None:
            put(ConditionType.ANOMALOUS, ConditionStatus.UNKNOWN, Reason.NOT_EVALUATED,
                "not evaluated yet")
    elif outcome.kind == OutcomeKind.PAUSED:
        put(ConditionType.READY, ConditionStatus.FALSE, Reason.PAUSED, "spec.paused is true")
        status.observed_generation = gen
    status.conditions = _ordered(conds)
    return status


def _ordered(conds: list[Condition]) -> list[Condition]:
    order = {t.value: i for i, t in enumerate(ConditionType)}
    return sorted(conds, key=lambda c: order.get(c.type, len(order)))


def _anomalous_reason(outcome: Outcome) -> tuple[Reason, str]:
    verdict = outcome.verdict
    assert verdict is not None
    total = len(outcome.series)
    if verdict.anomalous:
        return Reason.ANOMALY_DETECTED, f"{verdict.anomalous_series} of {total} series anomalous"
    if total == 0:
        return Reason.NO_DATA, "the query returned no series"
    states = [v.state for v in outcome.series.values()]
    pending = states.count(SeriesState.PENDING)
    if pending:
        return Reason.FOR_PENDING, (
            f"{pending} of {total} series above the threshold, waiting for "
            f"{durations.format(outcome.for_seconds)}"
        )
    if states.count(SeriesState.MISSING) == total:
        return Reason.MISSING_DATA, f"all {total} series have no value at the evaluation time"
    if states.count(SeriesState.WARMING_UP) == total:
        return Reason.WARMING_UP, f"all {total} series have too little history to score yet"
    return Reason.NORMAL, f"no series anomalous ({verdict.scored_series} of {total} scored)"


#: States whose series carry their evidence in status (the others' reasons would be noise).
_EXPLAINED = (SeriesState.PENDING, SeriesState.ANOMALOUS)


def _why(state: SeriesState, reasons: tuple[str, ...]) -> list[str] | None:
    """The reasons to list for a series in ``state``; None (left out of status) when there are none."""
    return list(reasons[:MAX_WHY]) if state in _EXPLAINED and reasons else None


def top_series(
    verdicts: Mapping[SeriesKey, detection.SeriesVerdict],
    labels: Mapping[SeriesKey, Mapping[str, str]],
    top_k: int,
    explanations: Mapping[SeriesKey, tuple[str, ...]] | None = None,
) -> list[SeriesStatus]:
    """The ``top_k`` series to list: anomalous first, then by score, then by labels (stable).

    Labels are listed in their bounded form (:mod:`vigil.domain.labels`): a query decides them.
    """

    def rank(key: SeriesKey) -> tuple[int, float, str]:
        v = verdicts[key]
        return (0 if v.anomalous else 1, -(v.score if v.score is not None else -1.0), history.format_key(key))

    chosen = sorted(verdicts, key=rank)[:top_k]
    return [
        SeriesStatus(
            labels=shown.bounded(labels.get(key, dict(key))),
            score=None if verdicts[key].score is None else round(float(verdicts[key].score or 0.0), 6),
            anomalous=verdicts[key].anomalous,
            state=verdicts[key].state,
            since=_ts(verdicts[key].since),
            why=_why(verdicts[key].state, (explanations or {}).get(key, ())),
        )
        for key in chosen
    ]


def significant(status: AnomalyDetectorStatus) -> object:
    """The parts of a status whose change is worth a write (scores and timestamps are not)."""
    return (
        status.observed_generation,
        tuple((c.type, c.status, c.reason, c.message) for c in status.conditions),
        status.anomalous,
        status.anomalous_since,
        status.threshold,
        status.series_count,
        status.anomalous_series,
        status.missing_series,
        status.model.model_dump() if status.model else None,
        tuple(
            sorted(
                (tuple(sorted(s.labels.items())), s.state.value, s.since)
                for s in status.series
                if s.state != SeriesState.NORMAL
            )
        ),
    )


def needs_write(
    written: AnomalyDetectorStatus | None,
    new: AnomalyDetectorStatus,
    last_write: float | None,
    now: float,
    heartbeat: float,
    summary: Callable[[AnomalyDetectorStatus], object] = significant,
    anomalous_heartbeat: float | None = None,
) -> bool:
    """Write when something significant changed, or when the heartbeat is due.

    ``summary`` is :func:`significant` or a memo of it (the engine's: each status is summarised once).
    While the verdict is anomalous the heartbeat is ``anomalous_heartbeat`` (when shorter): other shards'
    policies act on it, and must see it go stale soon if this replica stops writing it.
    """
    if written is None or last_write is None:
        return True
    if summary(written) != summary(new):
        return True
    if new.anomalous and anomalous_heartbeat is not None:
        heartbeat = min(heartbeat, anomalous_heartbeat)
    return now - last_write >= heartbeat


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


def events_between(old: AnomalyDetectorStatus, new: AnomalyDetectorStatus) -> list[EventSpec]:
    """One Kubernetes Event per condition flip (or change of failure reason)."""
    events: list[EventSpec] = []
    old_ready = conditions.get(old.conditions, ConditionType.READY)
    new_ready = conditions.get(new.conditions, ConditionType.READY)
    if new_ready is not None and (
        old_ready is None or (old_ready.status, old_ready.reason) != (new_ready.status, new_ready.reason)
    ):
        if new_ready.status == ConditionStatus.TRUE:
            events.append(EventSpec("Normal", "Ready", new_ready.message))
        elif new_ready.reason == Reason.PAUSED:
            events.append(EventSpec("Normal", "Paused", "evaluation paused"))
        elif new_ready.status == ConditionStatus.FALSE:
            events.append(EventSpec("Warning", new_ready.reason, new_ready.message))

    old_deg = conditions.get(old.conditions, ConditionType.DEGRADED)
    new_deg = conditions.get(new.conditions, ConditionType.DEGRADED)
    if new_deg is not None:
        was = old_deg is not None and old_deg.status == ConditionStatus.TRUE
        changed = old_deg is None or old_deg.reason != new_deg.reason
        if new_deg.status == ConditionStatus.TRUE and (not was or changed):
            events.append(EventSpec("Warning", new_deg.reason, new_deg.message))
        elif new_deg.status != ConditionStatus.TRUE and was:
            events.append(EventSpec("Normal", "Recovered", "Prometheus answers again"))

    if bool(old.anomalous) != bool(new.anomalous) and new.anomalous is not None:
        if new.anomalous:
            names = ", ".join(
                history.format_key(tuple(sorted(s.labels.items())))
                + (f" score {s.score:.3f}" if s.score is not None else " (missing data)")
                for s in new.series
                if s.anomalous
            )
            events.append(EventSpec(
                "Warning",
                "AnomalyDetected",
                f"{new.anomalous_series} series anomalous (threshold {new.threshold}): {names}"[:1000],
            ))
        else:
            events.append(EventSpec("Normal", "AnomalyResolved", "no series anomalous any more"))
    return events
