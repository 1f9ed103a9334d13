"""Turn scores into verdicts: threshold, ``for`` and the missing-data policy.

The rules mirror a Prometheus alerting rule so SREs can predict them:

* a series whose score is at or above the threshold becomes *Pending*; once it
  has stayed there for ``for`` it becomes *Anomalous*;
* a score below the threshold resets it to *Normal* at once;
* a series with no value at the evaluation time is *Missing*. With
  ``missingData: ignore`` (the default) that never counts as an anomaly and
  resets any pending timer. With ``alert`` it counts as a breach, like
  ``absent()``;
* a series with too little history to score is *WarmingUp* and never anomalous.

Purely computational: the caller passes ``now`` and the previous state.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.api.v1alpha1.detector import MissingDataPolicy, SeriesState


class Availability(enum.Enum):
    SCORED = "scored"
    MISSING = "missing"
    WARMING_UP = "warming-up"


@dataclasses.dataclass(frozen=True)
class SeriesVerdict:
    """What the operator remembers about one series between evaluations."""

    state: SeriesState
    since: float  # when ``state`` began (epoch seconds)
    anomalous: bool  # the verdict after ``for``
    pending_since: float | None = None  # when the current breach began
    score: float | None = None


@dataclasses.dataclass(frozen=True)
class Rule:
    threshold: float
    for_seconds: float
    missing: MissingDataPolicy


def decide(
    previous: SeriesVerdict | None,
    availability: Availability,
    score: float | None,
    rule: Rule,
    now: float,
) -> SeriesVerdict:
    """The new verdict of one series at ``now``."""
    if availability == Availability.WARMING_UP:
        return _enter(previous, SeriesState.WARMING_UP, now, None, score=None)
    if availability == Availability.MISSING:
        if rule.missing == MissingDataPolicy.IGNORE:
            return _enter(previous, SeriesState.MISSING, now, None, score=None)
        breach = True
    else:
        if score is None:
            raise ValueError("a scored series needs a score")
        breach = score >= rule.threshold

    if not breach:
        return _enter(previous, SeriesState.NORMAL, now, None, score=score)

    pending_since = previous.pending_since if previous and previous.pending_since is not None else now
    fired = now - pending_since >= rule.for_seconds
    if availability == Availability.MISSING:
        return _enter(previous, SeriesState.MISSING, now, pending_since, score=None, anomalous=fired)
    state = SeriesState.ANOMALOUS if fired else SeriesState.PENDING
    return _enter(previous, state, now, pending_since, score=score, anomalous=fired)


def _enter(
    previous: SeriesVerdict | None,
    state: SeriesState,
    now: float,
    pending_since: float | None,
    score: float | None,
    anomalous: bool = False,
) -> SeriesVerdict:
    since = previous.since if previous is not None and previous.state == state else now
    return SeriesVerdict(
        state=state, since=since, anomalous=anomalous, pending_since=pending_since, score=score
    )


#: Order of the state codes :func:`decide_series` returns.
STATE_CODES: tuple[SeriesState, ...] = (
    SeriesState.NORMAL, SeriesState.PENDING, SeriesState.ANOMALOUS, SeriesState.MISSING, SeriesState.WARMING_UP,
)
_NORMAL, _PENDING, _ANOMALOUS, _MISSING, _WARMING_UP = range(len(STATE_CODES))


def decide_series(
    scored: npt.NDArray[np.bool_],
    missing: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    rule: Rule,
    times: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int8]]:
    """:func:`decide` folded over a whole series at once, from no previous verdict.

    ``scored`` and ``missing`` say each point's :class:`Availability` (neither =
    warming up). Returns ``(anomalous, states)`` per point, ``states`` as indices
    into :data:`STATE_CODES`. Vectorised for ``vigil backtest``, which replays
    hundreds of thousands of points; a test checks it against the fold of
    :func:`decide` on random series, so the two cannot drift apart.
    """
    n = len(scored)
    with np.errstate(invalid="ignore"):
        breach = scored & (scores >= rule.threshold)
    if rule.missing != MissingDataPolicy.IGNORE:
        breach |= missing
    # A breach run starts where the previous point did not breach; every point of
    # the run has been pending since the run's first timestamp.
    starts = breach & ~np.concatenate([[False], breach[:-1]])
    run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    pending_since = times[run_start] if n else np.zeros(0)
    anomalous = breach & (times - pending_since >= rule.for_seconds)
    states = np.full(n, _NORMAL, dtype=np.int8)
    states[scored & breach] = _PENDING
    states[scored & anomalous] = _ANOMALOUS
    states[missing] = _MISSING
    states[~scored & ~missing] = _WARMING_UP
    return anomalous, states


@dataclasses.dataclass(frozen=True)
class DetectorVerdict:
    """The detector-level summary of its series."""

    anomalous: bool
    anomalous_since: float | None
    score: float | None
    anomalous_series: int
    missing_series: int
    scored_series: int


def summarise(
    verdicts: Mapping[Any, SeriesVerdict],
    previous_anomalous_since: float | None,
    now: float,
) -> DetectorVerdict:
    """Any anomalous series makes the detector anomalous; the score is the maximum."""
    anomalous = [v for v in verdicts.values() if v.anomalous]
    scores = [v.score for v in verdicts.values() if v.score is not None]
    since: float | None = None
    if anomalous:
        since = previous_anomalous_since if previous_anomalous_since is not None else now
    return DetectorVerdict(
        anomalous=bool(anomalous),
        anomalous_since=since,
        score=max(scores) if scores else None,
        anomalous_series=len(anomalous),
        missing_series=sum(1 for v in verdicts.values() if v.state == SeriesState.MISSING),
        scored_series=len(scores),
    )
