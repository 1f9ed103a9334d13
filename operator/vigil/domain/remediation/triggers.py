"""When anomaly evidence is a reason to act.

The rules exist to make acting on bad data impossible: a detector that is not
Ready, is Degraded, or has not evaluated recently is *stale* and never
triggers; an anomaly carried only by missing data (``missingData: alert``) never
triggers either, because there is nothing to remediate on; and alerts whose
``endsAt`` has passed (Alertmanager stopped re-sending them) are ignored.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

from vigil.api.v1alpha1.detector import SeriesState


@dataclasses.dataclass(frozen=True)
class SeriesSignal:
    labels: Mapping[str, str]
    score: float | None
    anomalous: bool
    state: SeriesState
    #: The detector's evidence for this series (SeriesStatus.why, issue 15); empty if it gave none.
    why: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DetectorSignal:
    """What the policy engine knows about one AnomalyDetector, from its status."""

    name: str
    ready: bool
    degraded: bool
    anomalous: bool | None
    anomalous_since: float | None
    score: float | None
    threshold: float | None
    last_evaluation: float | None
    interval: float
    series: tuple[SeriesSignal, ...] = ()
    missing_series: int = 0
    #: Seconds the copy we read may lag the detector's last evaluation. 0 when this replica evaluates it;
    #: the heartbeat when another shard does, since that shard writes only on a change and per heartbeat.
    lag: float = 0.0
    #: This replica evaluates it but has not since it started (or took over): its window is still being
    #: loaded, and what the status says is an older process' verdict. Never acted on (issue 16).
    loading: bool = False


@dataclasses.dataclass(frozen=True)
class AlertSignal:
    labels: Mapping[str, str]
    starts_at: float
    ends_at: float | None


class TriggerState(enum.Enum):
    QUIET = "quiet"  # nothing to act on
    FIRING = "firing"  # act
    STALE = "stale"  # cannot tell: data missing or old; never act


@dataclasses.dataclass(frozen=True)
class Evidence:
    source: str  # "detector" or "alertmanager"
    detector: str | None
    alert: Mapping[str, str] | None
    series: tuple[Mapping[str, str], ...]
    score: float | None
    threshold: float | None
    since: float | None
    #: True when every series of the detector had data at its last evaluation.
    complete: bool
    #: The evidence of those series, deduplicated, in order: what notifications quote (Reason.why).
    why: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TriggerResult:
    state: TriggerState
    message: str
    evidence: Evidence | None = None


def freshness_limit(signal: DetectorSignal, max_staleness: float | None) -> float:
    return (max_staleness if max_staleness is not None else 3 * signal.interval) + signal.lag


def is_fresh(signal: DetectorSignal, now: float, max_staleness: float | None) -> tuple[bool, str]:
    if signal.loading:
        return False, (f"detector {signal.name} has not been evaluated since this operator started: "
                       "its history is still loading")
    if not signal.ready:
        return False, f"detector {signal.name} is not Ready"
    if signal.degraded:
        return False, f"detector {signal.name} is Degraded (Prometheus failing)"
    if signal.last_evaluation is None:
        return False, f"detector {signal.name} has not been evaluated yet"
    age = now - signal.last_evaluation
    limit = freshness_limit(signal, max_staleness)
    if age > limit:
        lagging = f", of which {signal.lag:.0f}s for another shard's heartbeat" if signal.lag else ""
        return False, f"detector {signal.name} last evaluated {age:.0f}s ago (limit {limit:.0f}s{lagging})"
    return True, ""


def evaluate(
    detectors: Sequence[DetectorSignal],
    alerts: Sequence[AlertSignal],
    for_seconds: float,
    min_score: float | None,
    max_staleness: float | None,
    now: float,
    expect_detectors: bool = True,
    alerts_unknown: str | None = None,
) -> TriggerResult:
    """FIRING with the strongest evidence, else STALE if any source is stale or unknown, else QUIET.

    QUIET closes an incident, so it needs positive evidence of health: a policy that expects
    detectors but matches none (not watched yet, or deleted) is STALE, and so is a policy on
    alerts while the alert state is unknown (``alerts_unknown`` says why, e.g. just after a start,
    before Alertmanager has re-sent what is firing).
    """
    firing: list[Evidence] = []
    stale: list[str] = []
    if expect_detectors and not detectors:
        stale.append("no AnomalyDetector matches the policy")
    if alerts_unknown:
        stale.append(alerts_unknown)
    for signal in detectors:
        fresh, why = is_fresh(signal, now, max_staleness)
        if not fresh:
            stale.append(why)
            continue
        if not signal.anomalous or signal.anomalous_since is None:
            continue
        if now - signal.anomalous_since < for_seconds:
            continue
        if min_score is not None and (signal.score is None or signal.score < min_score):
            continue
        scored = tuple(s for s in signal.series if s.anomalous and s.state == SeriesState.ANOMALOUS)
        if not scored:
            continue  # anomalous only through missing data: nothing to remediate on
        firing.append(Evidence(
            source="detector", detector=signal.name, alert=None,
            series=tuple(dict(s.labels) for s in scored), score=signal.score, threshold=signal.threshold,
            since=signal.anomalous_since, complete=signal.missing_series == 0,
            why=tuple(dict.fromkeys(w for s in scored for w in s.why))[:9],
        ))
    for alert in alerts:
        if alert.ends_at is not None and alert.ends_at <= now:
            continue
        if now - alert.starts_at < for_seconds:
            continue
        firing.append(Evidence(
            source="alertmanager", detector=None, alert=dict(alert.labels), series=(dict(alert.labels),),
            score=None, threshold=None, since=alert.starts_at, complete=True,
        ))
    if firing:
        # Detectors (with a score to compare) before alerts; the strongest, then the oldest.
        best = max(firing, key=lambda e: (e.source == "detector", e.score or 0.0, -(e.since or 0.0)))
        what = f"detector {best.detector}" if best.detector else f"alert {dict(best.alert or {})}"
        return TriggerResult(TriggerState.FIRING, f"{what} anomalous since {best.since:.0f}", best)
    if stale:
        return TriggerResult(TriggerState.STALE, "; ".join(stale))
    return TriggerResult(TriggerState.QUIET, "no matched detector or alert is firing")
