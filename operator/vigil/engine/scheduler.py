"""The central scheduler: one loop evaluates every due detector in batches.

Each detector runs on its own interval but at a stable phase derived from its
uid, so thousands of detectors created at once spread evenly over the interval
instead of stampeding Prometheus every minute. The loop sleeps until the next
detector is due (or until a kopf handler wakes it for a new or changed spec),
but at least a short batch window after the previous batch started: spread
phases would otherwise give one batch per detector, so ONNX would run one tiny
batch per detector and every tick would scan the registry (ticks per second
grow with N, so the cost per detector would too). The window bounds the ticks
per second and lets detectors due close together share one batch.

Status writes are not part of a batch. A batch queues the statuses that need a write (one pending per
detector: a newer one replaces it) and goes on; ``write_concurrency`` writers drain the queue. Writing
inside the batch made evaluation wait on the API server: at 10,000 detectors the first statuses, and
every heartbeat after them (all due together), held the next batches back by minutes (p99 lag 212 s).
Heartbeats are also spread: each detector's is up to a quarter shorter, by a stable fraction of its
uid, so detectors that started together do not all write again in the same minute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from vigil.adapters import kube, prometheus
from vigil.adapters.metrics import OperatorMetrics
from vigil.api.v1alpha1 import detector as api
from vigil.api.v1alpha1.common import API_VERSION
from vigil.api.v1alpha1.detector import AnomalyDetectorStatus, ConditionType
from vigil.domain import backoff, conditions, durations, freshness, history, labels
from vigil.domain import status as statuses
from vigil.domain.status import Outcome, OutcomeKind
from vigil.engine import evaluation, models
from vigil.engine.registry import DetectorEntry, Owns, Registry, resource_version, utc

logger = logging.getLogger(__name__)

#: Retry period for detectors whose spec cannot even be parsed.
_CONFIG_RETRY = 60.0
#: A detector's heartbeat is shortened by up to this fraction (stable per uid), to spread the writes.
HEARTBEAT_SPREAD = 0.25
#: On shutdown, how long the writers may take to write what is still queued.
_FLUSH_SECONDS = 10.0


def spread(heartbeat: float, uid: str) -> float:
    """``heartbeat`` shortened by a stable fraction of it in [0, HEARTBEAT_SPREAD) taken from ``uid``:
    never longer than configured (freshness is promised within it), on average 12.5 % shorter."""
    return heartbeat * (1.0 - HEARTBEAT_SPREAD * (zlib.crc32(uid.encode()) / 2**32))


def sleep_for(now: float, upcoming: float | None, batch_started: float, batch_window: float, max_sleep: float,
              backlog: bool) -> float:
    """Seconds to sleep before the next batch.

    Until the next detector is due, but not before ``batch_window`` after the previous batch
    started (unless a batch hit the batch limit and more are already due), and never more than
    ``max_sleep`` (the loop's liveness beat).
    """
    if upcoming is None:
        return max_sleep
    wake = upcoming if backlog else max(upcoming, batch_started + batch_window)
    return max(0.0, min(max_sleep, wake - now))


class Engine:
    """Owns the registry and runs the evaluation loop. Lives in the kopf memo."""

    def __init__(
        self,
        settings: evaluation.EngineSettings,
        source: prometheus.PrometheusSource,
        resolver: models.ModelResolver,
        kube_client: kube.KubeClient,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.time,
        max_sleep: float = 1.0,
        batch_window: float = 0.5,
        batch_limit: int = 1000,
        heartbeat: float = 1200.0,
        anomalous_heartbeat: float = 300.0,
        write_concurrency: int = 8,
        owns: Owns | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.resolver = resolver
        self.kube = kube_client
        self.metrics = metrics
        self.clock = clock
        self.max_sleep = max_sleep
        self.batch_window = batch_window
        self.batch_limit = batch_limit
        self.heartbeat = heartbeat
        self.anomalous_heartbeat = anomalous_heartbeat
        self.registry = Registry(owns)
        self.last_loop = clock()
        #: When the newest evaluation ran (the shard's freshness on its Lease), None before the first.
        self.last_evaluation: float | None = None
        #: Set while this replica may act (always, unless leader election holds it back).
        self.active = asyncio.Event()
        self.active.set()
        self._wake = asyncio.Event()
        self.write_concurrency = write_concurrency
        #: Statuses waiting for a writer, oldest first: one per detector, with the time it was evaluated.
        self._pending: dict[tuple[str, str], tuple[DetectorEntry, AnomalyDetectorStatus, float]] = {}
        self._writing: set[tuple[str, str]] = set()
        self._queued = asyncio.Event()
        #: Called when a detector's verdict or conditions change (the remediation engine's wake-up).
        self.on_change: Callable[[], None] | None = None
        #: Called once, when every owned detector has been evaluated since the start (start-up is over).
        self.on_settled: Callable[[], object] | None = None
        self._settled = False

    # --- fed by kopf handlers -------------------------------------------------------------

    def upsert(self, body: dict[str, Any]) -> None:
        before = len(self.registry.entries)
        meta = body.get("metadata", {})
        known = self.registry.entries.get((meta.get("namespace", "default"), meta.get("name", "")))
        was_owned = known is not None and known.owned
        now = self.clock()
        entry = self.registry.upsert(body, now)
        if was_owned and not entry.owned:  # relabelled out of this replica's selector shard
            self.metrics.forget(entry.id)
        if len(self.registry.entries) != before:
            self.metrics.detectors.set(len(self.registry.entries))
            if entry.owned:
                self.metrics.detectors_unevaluated.inc()  # exact again after the next batch
        if entry.next_due <= now:  # new or changed; the echoes of our own status writes need no batch
            self._wake.set()

    def wake_all(self) -> None:
        """Evaluate every detector now (e.g. on becoming leader: the standby's statuses are old)."""
        now = self.clock()
        for entry in self.registry.entries.values():
            entry.next_due = now
        self._wake.set()

    def shard_freshness(self) -> freshness.ShardFreshness:
        """This shard's freshness now: its newest evaluation and how many of its detectors are overdue."""
        due = (e.next_due for e in self.registry.entries.values() if e.owned)
        return freshness.assess(due, self.last_evaluation, self.clock())

    def remove(self, namespace: str, name: str) -> None:
        if self.registry.remove(namespace, name) is not None:
            self.metrics.forget((namespace, name))
            self.metrics.detectors.set(len(self.registry.entries))

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("evaluation engine started")
        writers = [asyncio.create_task(self._writer(stop), name=f"vigil-status-writer-{i}")
                   for i in range(self.write_concurrency)]
        try:
            await self._loop(stop)
        finally:
            self._queued.set()  # writers finish what is queued (up to _FLUSH_SECONDS), then stop
            _, late = await asyncio.wait(writers, timeout=_FLUSH_SECONDS)
            for writer in late:
                writer.cancel()
            if self._pending:
                logger.warning("stopping with %d status writes not done", len(self._pending))
        logger.info("evaluation engine stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = self.last_loop = self.clock()
            evaluated = 0
            if self.active.is_set():
                try:
                    evaluated = await self.tick()
                except Exception:  # never let one bad batch stop all detection
                    logger.exception("evaluation batch failed")
            # A standby has nothing due, however overdue its never-evaluated entries look: it sleeps the
            # whole beat instead of turning every batch window. Becoming active wakes the loop (wake_all).
            upcoming = self.registry.next_due() if self.active.is_set() else None
            delay = sleep_for(self.clock(), upcoming, started, self.batch_window, self.max_sleep,
                              backlog=evaluated >= self.batch_limit)
            await self._sleep(stop, delay)

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def tick(self) -> int:
        """Evaluate what is due now. Returns how many detectors were evaluated."""
        now = self.clock()
        due = self.registry.due(now, self.batch_limit)
        if not due:
            return 0
        self.metrics.scheduler_lag.set(max(0.0, now - min(e.next_due for e in due)))
        started = time.perf_counter()
        results = await evaluation.evaluate(due, now, self.settings, self.source, self.resolver, self.metrics)
        await asyncio.gather(*(self._apply(entry, outcome, now) for entry, outcome in results))
        self.last_evaluation = now
        self.metrics.evaluation_duration.observe(time.perf_counter() - started)
        unevaluated = sum(1 for e in self.registry.entries.values() if e.owned and not e.evaluated)
        self.metrics.detectors_unevaluated.set(unevaluated)
        if not unevaluated and not self._settled:
            self._settled = True
            if self.on_settled is not None:
                self.on_settled()
        return len(due)

    async def _apply(self, entry: DetectorEntry, outcome: Outcome, now: float) -> None:
        if self.registry.entries.get(entry.id) is not entry:
            return  # deleted while being evaluated
        self.metrics.evaluation_lag.observe(max(0.0, self.clock() - entry.next_due))
        outcome = self._reschedule(entry, outcome, now)
        spec = entry.spec
        top_k = spec.top_k if spec is not None else 10
        new = statuses.compose(entry.current, outcome, top_k)
        changed = entry.significant(entry.current) != entry.significant(new)
        entry.current = new
        if changed and self.on_change is not None:
            self.on_change()
        self.metrics.evaluations.labels(outcome.kind.value).inc()
        entry.evaluated = True
        self._publish(entry, outcome, new)
        if not statuses.needs_write(entry.written, new, entry.last_write, now, spread(self.heartbeat, entry.uid),
                                    entry.significant, spread(self.anomalous_heartbeat, entry.uid)):
            return
        self._pending.pop(entry.id, None)  # a newer status replaces one still queued (and goes last)
        self._pending[entry.id] = (entry, new, now)
        self.metrics.status_writes_pending.set(len(self._pending))
        self._queued.set()

    async def _writer(self, stop: asyncio.Event) -> None:
        """Write queued statuses, oldest first, never two of one detector at once; after ``stop``, only
        until the queue is empty."""
        while True:
            key = next((k for k in self._pending if k not in self._writing), None)
            if key is None:
                if stop.is_set():
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            entry, new, at = self._pending.pop(key)
            self.metrics.status_writes_pending.set(len(self._pending))
            if not self.active.is_set() or self.registry.entries.get(key) is not entry:
                continue  # no longer ours to write (leadership lost, or the detector deleted)
            self._writing.add(key)
            try:
                await self._write(entry, new, at)
            except Exception:  # a writer never dies: the next evaluation queues this status again
                logger.exception("status write for %s/%s failed", *key)
            finally:
                self._writing.discard(key)
                if self._pending:
                    self._queued.set()  # a status of this detector may have waited for this write

    async def _write(self, entry: DetectorEntry, new: AnomalyDetectorStatus, at: float) -> None:
        events = statuses.events_between(entry.written, new)
        try:
            updated = await self.kube.patch_status(
                API_VERSION, api.PLURAL, entry.namespace, entry.name, new.to_merge_patch()
            )
        except kube.KubeError as exc:
            self.metrics.status_writes.labels("error").inc()
            if exc.status == 404:
                self.remove(entry.namespace, entry.name)
            else:
                logger.error("status write for %s/%s failed: %s", entry.namespace, entry.name, exc)
            return
        except Exception as exc:  # network trouble: keep the old 'written', the next evaluation queues again
            self.metrics.status_writes.labels("error").inc()
            logger.warning("status write for %s/%s failed: %r", entry.namespace, entry.name, exc)
            return
        self.metrics.status_writes.labels("ok").inc()
        entry.written = new
        entry.resource_version = max(entry.resource_version, resource_version(updated.get("metadata", {})))
        entry.last_write = at
        for event in events:
            await self._post_event(entry, event, at)

    async def _post_event(self, entry: DetectorEntry, event: statuses.EventSpec, now: float) -> None:
        try:
            await self.kube.post_event(entry.involved, event.type, event.reason, event.message, utc(now))
            self.metrics.events.labels(event.reason).inc()
        except Exception as exc:  # an Event is best effort: the status already says it
            logger.warning("event %s for %s/%s not posted: %r", event.reason, *entry.id, exc)

    def _reschedule(self, entry: DetectorEntry, outcome: Outcome, now: float) -> Outcome:
        """Schedule the next evaluation; an oversized answer backs off, and its outcome says until when."""
        interval = _CONFIG_RETRY
        if entry.spec is not None:
            try:
                interval = max(self.settings.min_interval, evaluation.intervals(entry.spec)[0])
            except ValueError:
                pass
        if outcome.kind != OutcomeKind.CONFIG_ERROR or outcome.reason not in backoff.OVERSIZED:
            entry.refused = 0
            entry.schedule_after(now, interval)
            return outcome
        entry.refused += 1
        wait = backoff.delay(interval, entry.refused)
        entry.schedule_after(now + wait - interval, interval)
        again = utc(entry.next_due).strftime("%Y-%m-%dT%H:%M:%SZ")
        return dataclasses.replace(outcome, message=(
            f"{outcome.message[:800]}; refused {entry.refused} time(s) in a row: next attempt at {again} "
            f"(back-off up to {durations.format(backoff.MAX_DELAY)}; editing the spec retries at once)"))

    def _publish(self, entry: DetectorEntry, outcome: Outcome, new: AnomalyDetectorStatus) -> None:
        gauges = self.metrics.detector_gauges
        ready = 1.0 if conditions.is_true(new.conditions, ConditionType.READY) else 0.0
        if outcome.kind == OutcomeKind.SOURCE_FAILURE:
            gauges.update(entry.id, ready=ready)
            return  # keep the last scores; the Degraded condition tells the story
        anomalous = 1.0 if new.anomalous else 0.0
        if outcome.kind != OutcomeKind.EVALUATED:
            gauges.update(entry.id, ready=ready, anomalous=anomalous)
            gauges.publish_scores(entry.id, [])
            return
        gauges.update(entry.id, ready=ready, anomalous=anomalous, last_evaluation=outcome.now,
                      series=len(outcome.series), max_score=new.score)
        top_k = entry.spec.top_k if entry.spec is not None else 10
        ranked = sorted(
            ((history.format_key(history.series_key(labels.bounded(dict(k)))), v.score)
             for k, v in outcome.series.items() if v.score is not None),
            key=lambda item: -item[1],
        )[:top_k]
        gauges.publish_scores(entry.id, ranked)
