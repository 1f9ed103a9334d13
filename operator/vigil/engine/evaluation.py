"""Evaluate a batch of due detectors: fetch, assess, score in one run per model, decide.

Returns one :class:`~vigil.domain.status.Outcome` per detector; writing status,
Events and metrics is the scheduler's job. Failures are sorted into the three
kinds the status distinguishes: the user's configuration is wrong
(CONFIG_ERROR, Ready=False), Prometheus is failing (SOURCE_FAILURE, Degraded,
verdict kept), or all is well (EVALUATED).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from typing import Any

from vigil import features
from vigil.adapters import inference, prometheus
from vigil.adapters.metrics import OperatorMetrics
from vigil.api.v1alpha1.detector import MAX_STEP, AnomalyDetectorSpec, MissingDataPolicy, ModelStatus, Reason
from vigil.domain import detection, durations, history, sensitivity
from vigil.domain.allowlist import AllowList
from vigil.domain.detection import Availability
from vigil.domain.history import GridHistory, SeriesKey
from vigil.domain.status import Outcome, OutcomeKind
from vigil.engine import models, scoring
from vigil.engine.registry import DetectorEntry
from vigil.features import evidence

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    default_prometheus_url: str | None
    min_interval: float = 1.0
    #: URLs ``spec.prometheus.url`` may name; None: only the default (the safe reading of "no list").
    allowed_urls: AllowList | None = None

    @property
    def allow_list(self) -> AllowList:
        return self.allowed_urls or AllowList(default_url=self.default_prometheus_url)


#: What a source error means for the detector: a config error (Ready=False) with this reason, or
#: (absent here) a source failure (Degraded) that keeps the last verdict.
_CONFIG_ERRORS = {
    prometheus.SourceErrorKind.INVALID_QUERY: Reason.INVALID_QUERY,
    prometheus.SourceErrorKind.TOO_MANY_SERIES: Reason.TOO_MANY_SERIES,
    prometheus.SourceErrorKind.RESPONSE_TOO_LARGE: Reason.RESPONSE_TOO_LARGE,
}


@dataclasses.dataclass
class _Plan:
    entry: DetectorEntry
    spec: AnomalyDetectorSpec
    url: str
    step: float
    scorer: inference.Scorer
    model: ModelStatus
    rule: detection.Rule
    fetch: history.FetchRange | None = None
    outcome: Outcome | None = None
    scorable: list[SeriesKey] = dataclasses.field(default_factory=list)
    availability: dict[SeriesKey, Availability] = dataclasses.field(default_factory=dict)


def _config_error(entry: DetectorEntry, now: float, reason: Reason, message: str,
                  model: ModelStatus | None = None) -> Outcome:
    return Outcome(OutcomeKind.CONFIG_ERROR, reason, message, now, entry.generation, model=model)


def intervals(spec: AnomalyDetectorSpec) -> tuple[float, float, float | None, float]:
    """(interval, step, lookback or None, for) in seconds, parsed from the spec.

    The API types bound each field; the one bound they cannot see field by field is a step that
    defaults to an interval above the largest step, checked here (ValueError, like a bad duration).
    """
    interval = durations.parse(spec.interval)
    step = durations.parse(spec.step) if spec.step else interval
    if not spec.step and step > durations.parse(MAX_STEP):
        raise ValueError(f"step defaults to interval {spec.interval}, which is above the largest step "
                         f"{MAX_STEP}: set spec.step")
    lookback = durations.parse(spec.lookback) if spec.lookback else None
    return interval, step, lookback, durations.parse(spec.for_)


def grid_capacity(step: float, lookback: float | None) -> int:
    return max(features.WINDOW, math.ceil(lookback / step) + 1 if lookback else 0)


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What the spec says about the query, checked: its grid, its Prometheus, its 'for'."""

    step: float
    capacity: int
    url: str
    for_seconds: float


async def _plan(entry: DetectorEntry, now: float, settings: EngineSettings,
                resolver: models.ModelResolver) -> _Plan | Outcome:
    spec = entry.spec
    if spec is None:
        return _config_error(entry, now, Reason.INVALID_SPEC, entry.spec_error or "spec is missing")
    if spec.paused:
        return Outcome(OutcomeKind.PAUSED, Reason.PAUSED, "spec.paused is true", now, entry.generation)
    try:
        shape = _shape(spec, settings)
    except (ValueError, OverflowError) as exc:
        # The API types bound every duration, but an absurd value must never become a traceback and
        # Degraded/PrometheusError (issue 11 item 15): whatever still fails here is a bad spec.
        return _config_error(entry, now, Reason.INVALID_SPEC, str(exc)[:1000])
    except _Refused as refused:
        return _config_error(entry, now, refused.reason, refused.message)
    try:
        scorer = await resolver.resolve(entry.namespace, spec.model, now)
    except inference.ModelError as exc:
        return _config_error(entry, now, exc.reason, exc.message)
    try:
        threshold = sensitivity.resolve(spec.threshold, spec.sensitivity, scorer.info.sensitivity_table,
                                        scorer.info.recommended_threshold)
    except ValueError as exc:
        return _config_error(entry, now, Reason.INVALID_SPEC, str(exc)[:1000])
    rule = detection.Rule(threshold=threshold, for_seconds=shape.for_seconds, missing=spec.missing_data)

    # What the grid keeps depends on the model: how many points it reads one by one, how many it needs.
    tail = features.tail_points(scorer.info.feature_names)
    identity = (spec.query, shape.step, shape.capacity, shape.url, tail, scorer.info.min_points)
    if entry.grid is None or entry.grid_identity != identity:
        if entry.grid_identity is not None and entry.grid_identity[0] != spec.query:
            entry.verdicts = {}  # a different query means different series
        entry.grid = GridHistory(step=shape.step, capacity=shape.capacity, window=features.WINDOW, tail=tail,
                                 min_points=scorer.info.min_points)
        entry.grid_identity = identity
    return _Plan(entry=entry, spec=spec, url=shape.url, step=shape.step, scorer=scorer,
                 model=models.model_status(scorer, spec.model), rule=rule)


class _Refused(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _shape(spec: AnomalyDetectorSpec, settings: EngineSettings) -> _Shape:
    """The checked grid and URL of a spec; ValueError (InvalidSpec) or _Refused (its own reason)."""
    interval, step, lookback, for_seconds = intervals(spec)
    if interval < settings.min_interval:
        raise ValueError(f"interval {spec.interval} is below the operator's minimum "
                         f"{durations.format(settings.min_interval)} (--min-interval)")
    if step < 1 or step != int(step):
        raise ValueError(f"step {spec.step or spec.interval} must be a whole number of seconds")
    need = (features.WINDOW - 1) * step
    if lookback is not None and lookback < need:
        raise ValueError(f"lookback {spec.lookback} is shorter than the model needs: "
                         f"{features.WINDOW} points at step {durations.format(step)} = {durations.format(need)}")
    capacity = grid_capacity(step, lookback)
    if capacity > history.PROMETHEUS_MAX_POINTS:
        raise ValueError(f"lookback/step gives {capacity} points; Prometheus serves at most "
                         f"{history.PROMETHEUS_MAX_POINTS} per series and query")
    own_url = spec.prometheus.url if spec.prometheus else None
    if own_url and not settings.allow_list.allows(own_url):
        raise _Refused(Reason.PROMETHEUS_URL_NOT_ALLOWED, settings.allow_list.why_not(own_url))
    url = own_url or settings.default_prometheus_url
    if not url:
        raise ValueError("no Prometheus URL: set spec.prometheus.url or run the operator with --prometheus-url")
    return _Shape(step=step, capacity=capacity, url=url, for_seconds=for_seconds)


async def evaluate(
    entries: list[DetectorEntry],
    now: float,
    settings: EngineSettings,
    source: prometheus.PrometheusSource,
    resolver: models.ModelResolver,
    metrics: OperatorMetrics,
) -> list[tuple[DetectorEntry, Outcome]]:
    """Evaluate every entry at ``now``. Mutates their histories and verdicts."""
    planned = [await _plan(entry, now, settings, resolver) for entry in entries]
    results: list[tuple[DetectorEntry, Outcome]] = []
    plans: list[_Plan] = []
    for entry, item in zip(entries, planned, strict=True):
        if isinstance(item, Outcome):
            results.append((entry, item))
        else:
            plans.append(item)

    # 1. Fetch everything concurrently; the source's thread pool bounds the concurrency. Each answer is
    #    merged and assessed in the thread that fetched it, while the other queries are still answered.
    for plan in plans:
        assert plan.entry.grid is not None
        plan.fetch = plan.entry.grid.next_fetch(now)
    #    Only what failed comes back: each answer is dropped once merged (its grid holds what is kept).
    fetched = await source.query_each(
        [(p.url, p.spec.query, p.fetch.start, p.fetch.end, p.step) for p in plans],  # type: ignore[union-attr]
        then=lambda index, answer: _merge(plans[index], answer))

    # 2. Sort out the failures; gather the windows to score, grouped by model.
    by_model: dict[str, list[tuple[_Plan, SeriesKey]]] = {}
    for plan, answer in zip(plans, fetched, strict=True):
        entry = plan.entry
        grid = entry.grid
        assert grid is not None and plan.fetch is not None
        if isinstance(answer, prometheus.SourceError):
            metrics.prometheus_errors.labels(answer.kind.value).inc()
            if answer.kind in _CONFIG_ERRORS:
                plan.outcome = _config_error(entry, now, _CONFIG_ERRORS[answer.kind], answer.message, plan.model)
            else:
                reason = {
                    prometheus.SourceErrorKind.TIMEOUT: Reason.PROMETHEUS_TIMEOUT,
                    prometheus.SourceErrorKind.UNAVAILABLE: Reason.PROMETHEUS_UNAVAILABLE,
                }.get(answer.kind, Reason.PROMETHEUS_ERROR)
                plan.outcome = Outcome(OutcomeKind.SOURCE_FAILURE, reason, answer.message, now, entry.generation)
            continue
        if isinstance(answer, BaseException):
            logger.exception("unexpected failure querying for %s/%s", *entry.id, exc_info=answer)
            metrics.prometheus_errors.labels("internal").inc()
            entry.grid = None  # a merge that failed half-way: the next evaluation fetches the window anew
            entry.grid_identity = None
            plan.outcome = Outcome(OutcomeKind.SOURCE_FAILURE, Reason.PROMETHEUS_ERROR,
                                   f"internal error: {type(answer).__name__} (see the operator's log)",
                                   now, entry.generation)
            continue
        entry.labels = dict(grid.labels)
        for key in plan.scorable:
            by_model.setdefault(plan.scorer.info.sha256, []).append((plan, key))

    # 3. One batched feature extraction and one onnxruntime run per model.
    scores: dict[tuple[int, SeriesKey], float] = {}
    explanations: dict[tuple[int, SeriesKey], tuple[str, ...]] = {}
    failed_models: dict[str, inference.ModelError] = {}
    loop = asyncio.get_running_loop()
    for sha, rows in by_model.items():
        scorer = rows[0][0].scorer
        kept = scoring.kept_inputs([(p.entry.grid, k) for p, k in rows],  # type: ignore[misc]
                                   scorer.info.feature_names)
        started = time.perf_counter()
        try:
            X, values = await loop.run_in_executor(None, _score, scorer, kept)
        except inference.ModelError as exc:
            failed_models[sha] = exc
            metrics.model_load_errors.labels(exc.reason.value).inc()
            continue
        metrics.inference_duration.observe(time.perf_counter() - started)
        metrics.inference_rows.inc(len(rows))
        for i, ((plan, key), value) in enumerate(zip(rows, values.tolist(), strict=True)):
            scores[(id(plan), key)] = value
            if scorer.info.contributions and value >= plan.rule.threshold:
                # Only series at or above their threshold: the cost stays off the per-point path.
                explanations[(id(plan), key)] = evidence.explain(
                    scoring.kept_row(kept, i), X[i].tolist(), scorer.info.feature_names,
                    scorer.info.contributions, plan.step)

    # 4. Decide.
    for plan in plans:
        entry = plan.entry
        if plan.outcome is None and plan.scorer.info.sha256 in failed_models:
            error = failed_models[plan.scorer.info.sha256]
            plan.outcome = _config_error(entry, now, error.reason, error.message, plan.model)
        if plan.outcome is not None:
            results.append((entry, plan.outcome))
            continue
        verdicts: dict[SeriesKey, detection.SeriesVerdict] = {}
        for key, state in plan.availability.items():
            verdicts[key] = detection.decide(
                entry.verdicts.get(key), state, scores.get((id(plan), key)), plan.rule, now
            )
        if not verdicts and plan.rule.missing == MissingDataPolicy.ALERT:
            # An empty answer is missing data too: track it as the series with no labels.
            verdicts[()] = detection.decide(entry.verdicts.get(()), Availability.MISSING, None, plan.rule, now)
        entry.verdicts = verdicts
        summary = detection.summarise(verdicts, _previous_since(entry), now)
        message = (f"scored {summary.scored_series} of {len(verdicts)} series with {plan.model.name} "
                   f"(threshold {plan.rule.threshold:g})")
        results.append((entry, Outcome(
            OutcomeKind.EVALUATED, Reason.EVALUATING, message, now, entry.generation,
            verdict=summary, series=verdicts, labels=entry.labels, model=plan.model,
            threshold=plan.rule.threshold, for_seconds=plan.rule.for_seconds,
            explanations={k: explanations[(id(plan), k)] for k in verdicts if (id(plan), k) in explanations},
        )))
    return results


def _merge(plan: _Plan, answer: list[history.Samples]) -> None:
    """Fold one answer into the plan's grid and assess each series (in a source thread: nothing else
    touches this entry's grid while its batch is being evaluated)."""
    grid = plan.entry.grid
    assert grid is not None and plan.fetch is not None
    grid.merge(plan.fetch, answer)
    for key in grid.series:
        state = scoring.assess_kept(grid, key, plan.scorer.info.min_points)
        plan.availability[key] = state
        if state == Availability.SCORED:
            plan.scorable.append(key)


def _previous_since(entry: DetectorEntry) -> float | None:
    since = entry.current.anomalous_since
    return since.timestamp() if since is not None and entry.current.anomalous else None


def _score(scorer: inference.Scorer, kept: scoring.KeptInputs) -> tuple[Any, Any]:
    """(features, scores) of what the history kept; the features feed the explanations."""
    X = scoring.kept_features(kept, scorer.info.feature_names)
    return X, scorer.score(X)
