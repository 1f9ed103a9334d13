"""The remediation loop: reconcile policies, drive actions, keep the audit trail.

Ordering rules that make the trail trustworthy:

* every decision is written to the API (a RemediationAction) before anything
  is done about it, and its name is deterministic, so a retried create after a
  crash finds the first one instead of making a second;
* an action's *intent* is written to its status with a compare-and-swap on
  ``resourceVersion`` before AWS is called: if another replica moved the action
  first, the write fails and this replica backs off;
* after a restart an Executing action is verified against AWS before anything
  is re-issued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from vigil.adapters import kube
from vigil.adapters.metrics import OperatorMetrics
from vigil.api.v1alpha1 import action as api_action
from vigil.api.v1alpha1 import policy as api_policy
from vigil.api.v1alpha1.action import (
    ActionPhase,
    ErrorClass,
    RemediationActionSpec,
    RemediationActionStatus,
    SkipReason,
    Target,
)
from vigil.api.v1alpha1.common import API_VERSION, ConditionStatus
from vigil.api.v1alpha1.detector import ConditionType as DetectorCondition
from vigil.api.v1alpha1.policy import (
    PolicyConditionType,
    PolicyReason,
    RemediationPolicySpec,
    RemediationPolicyStatus,
)
from vigil.domain import conditions, durations, selectors
from vigil.domain import notifications as notes
from vigil.domain.remediation import (
    approvals,
    commands,
    guards,
    plans,
    preflight,
    provenance,
    reconcile,
    restore,
    tenancy,
    triggers,
)
from vigil.domain.remediation.triggers import TriggerResult, TriggerState
from vigil.engine.registry import DetectorEntry, Owns, Registry
from vigil.engine.remediation import executors
from vigil.engine.remediation.state import ActionEntry, ObjectId, PolicyEntry, newer, resource_version, to_time

logger = logging.getLogger(__name__)
T = TypeVar("T")

_SUCCESSFUL = frozenset({ActionPhase.SUCCEEDED, ActionPhase.DRY_RUN})
_EVENT_TYPES = {
    notes.EventKind.ACTION_PROPOSED: "Normal",
    notes.EventKind.APPROVAL_REQUESTED: "Normal",
    notes.EventKind.ACTION_EXECUTED: "Normal",
    notes.EventKind.ACTION_DRY_RUN: "Normal",
    notes.EventKind.ACTION_SKIPPED: "Normal",
    notes.EventKind.ACTION_FAILED: "Warning",
    notes.EventKind.ACTION_REJECTED: "Normal",
    notes.EventKind.ACTION_EXPIRED: "Warning",
}


#: A refused step (TargetNotManaged, AtBound, ...) is re-checked after this long, doubling up to the max,
#: unless the policy, the evidence or the work in flight changes first.
REFUSAL_BACKOFF = 30.0
REFUSAL_BACKOFF_MAX = 600.0
#: Objects per page of the engine's start-up LIST (client-go's pager uses 500).
LIST_PAGE = 500


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(round(epoch, 3), tz=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A step that will not run now, and why (recorded as a Skipped action)."""

    reason: SkipReason
    message: str
    targets: list[Target] = dataclasses.field(default_factory=list)


def action_name(policy: str, incident: str, step: int, skip: SkipReason | None = None) -> str:
    """Deterministic, so that re-creating after a crash hits AlreadyExists instead of duplicating."""
    suffix = f"-{incident}-s{step + 1}" + (f"-skip-{skip.value.lower()}" if skip else "")
    return policy[: 253 - len(suffix)] + suffix


def restore_action_name(policy: str, incident: str, step: int, sequence: int) -> str:
    """The ``sequence``-th scale-back attempt after ``incident``: deterministic like :func:`action_name`."""
    suffix = f"-{incident}-s{step + 1}-r{sequence}"
    return policy[: 253 - len(suffix)] + suffix


def wake_in(due: list[float], now: float, decided_at: float, max_sleep: float) -> float:
    """Seconds to sleep before the next pass: until the soonest due time, at most ``max_sleep``.

    A due time at or before ``decided_at`` (the ``now`` the last pass decided with) was handled by that pass,
    or belongs to a state that no longer holds: counting it would spin the loop. A due time after it was
    not handled, even if the clock has passed it while the pass ran (a step due at 951.001 with a pass
    that decided at 951.000 and finished at 951.002): that one is due at once, not at the resync.
    """
    soonest = min((t for t in due if t > decided_at), default=now + max_sleep)
    return min(max_sleep, max(0.05, soonest - now))


def step_label(step: api_policy.Step, index: int) -> str:
    return step.name or f"step-{index + 1}"


class RemediationEngine:
    def __init__(
        self,
        detectors: Registry,
        kube_client: kube.KubeClient,
        aws_for: Callable[[str, str | None], executors.Aws],
        notifier: Any,
        alerts: Any,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.time,
        max_sleep: float = 1.0,
        aws_workers: int = 8,
        namespaces: Sequence[str] = (),
        upsert_detector: Callable[[dict[str, Any]], None] | None = None,
        owns: Owns | None = None,
        remote_lag: float = 0.0,
        remote_anomalous_lag: float | None = None,
        admin: tenancy.Tenancy | None = None,
        provenance_key: bytes | None = None,
        pass_wait: float = 2.0,
        command_poll_interval: float = 5.0,
    ) -> None:
        self.detectors = detectors
        #: The cluster admin's limits on what policies may ask for (flags, never the policy).
        self.admin = admin or tenancy.Tenancy()
        #: HMAC key of the provenance annotation (None: a plain digest; see domain/remediation/provenance.py).
        self.provenance_key = provenance_key
        #: A tick waits this long for the policies' passes, then lets a slow one (a hung AWS call) run on alone.
        self.pass_wait = pass_wait
        #: Seconds between two polls of a running SSM command (each poll is one short pass, never a wait).
        self.command_poll_interval = command_poll_interval
        self._passes: dict[ObjectId, asyncio.Task[None]] = {}
        #: Sharding: which policies this replica reconciles. Actions follow their policy's shard.
        self._owns = owns
        #: How stale another shard's detector status may be on top of maxStaleness (that shard's heartbeat).
        self.remote_lag = remote_lag
        #: The same for an anomalous status, which that shard rewrites sooner (its anomalous heartbeat).
        self.remote_anomalous_lag = remote_lag if remote_anomalous_lag is None else remote_anomalous_lag
        self.namespaces = tuple(namespaces)
        self._upsert_detector = upsert_detector
        #: Set until a full LIST of our resources has been folded in: no decision on a partial view.
        self.needs_sync = True
        #: Whether the last sync LISTed the detectors too (it does only if a policy triggers on them).
        self._detectors_listed = upsert_detector is None
        self.kube = kube_client
        self.aws_for = aws_for
        self.notifier = notifier
        self.alerts = alerts
        self.metrics = metrics
        self.clock = clock
        self.max_sleep = max_sleep
        self.policies: dict[ObjectId, PolicyEntry] = {}
        self.actions: dict[ObjectId, ActionEntry] = {}
        self.active = asyncio.Event()
        self.active.set()
        self._wake = asyncio.Event()
        self._decided_at = 0.0  # the ``now`` the last tick's deciders saw
        self._tick_waiting = False  # a tick is waiting for its passes (it computes the sleep after them)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=aws_workers, thread_name_prefix="vigil-aws")
        self._triggers: dict[ObjectId, TriggerResult] = {}
        self._by_namespace: dict[str, list[DetectorEntry]] = {}
        self.started = clock()

    # --- fed by kopf handlers -------------------------------------------------------------

    def upsert_policy(self, body: dict[str, Any]) -> None:
        fresh = PolicyEntry.from_body(body)
        if _on_detectors(fresh.spec) and not self._detectors_listed:
            self.needs_sync = True  # its detectors were not listed: LIST them before it decides
        fresh.owned = self._owns is None or self._owns(fresh.namespace, fresh.name, fresh.labels)
        known = self.policies.get(fresh.id)
        if known is not None and known.uid == fresh.uid:
            known.spec, known.spec_error, known.labels = fresh.spec, fresh.spec_error, fresh.labels
            if known.owned and not fresh.owned:  # relabelled out of this replica's selector shard
                self._forget_gauges(*fresh.id)
            known.owned = fresh.owned
            known.generation = fresh.generation
            if fresh.resource_version > known.resource_version:
                # Written by someone else (a previous leader): their incident and cooldown are ours now.
                known.written = fresh.written
                known.resource_version = fresh.resource_version
        else:
            self.policies[fresh.id] = fresh
        self.wake()

    def remove_policy(self, namespace: str, name: str) -> None:
        self.policies.pop((namespace, name), None)
        self._forget_gauges(namespace, name)

    def _forget_gauges(self, namespace: str, name: str) -> None:
        self._triggers.pop((namespace, name), None)
        for gauge in (self.metrics.policy_action_allowed, self.metrics.actions_in_flight):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass

    def upsert_action(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", "default"), meta.get("name", ""))
        if newer(body, self.actions.get(key)):
            self.actions[key] = ActionEntry.from_body(body)
            self.wake()

    def remove_action(self, namespace: str, name: str) -> None:
        self.actions.pop((namespace, name), None)

    def owns_action(self, action: ActionEntry) -> bool:
        """An action belongs to its policy's shard: the replica that decided it drives it."""
        policy = self.policies.get((action.namespace, action.policy))
        return policy is not None and policy.owned

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- loop --------------------------------------------------------------------------------

    async def sync(self) -> None:
        """LIST detectors, policies and actions, like an informer before it reports HasSynced.

        kopf delivers each kind from its own watch, in no particular order: right after a start (or a
        takeover) the policy may be known before its actions or detectors. Deciding on that partial
        view would re-run a step whose action is simply not listed yet. Raises on API errors.
        """
        paths = ([f"/apis/{API_VERSION}/namespaces/{ns}" for ns in self.namespaces]
                 if self.namespaces else [f"/apis/{API_VERSION}"])
        self._detectors_listed = self._upsert_detector is None
        for plural, upsert in ((api_policy.PLURAL, self.upsert_policy), (api_action.PLURAL, self.upsert_action)):
            for base in paths:
                await self._list_into(f"{base}/{plural}", upsert)
        # The detectors only if a policy triggers on them. Listing 10,000 detectors with their statuses (which
        # kopf's own LIST delivers to the evaluation engine anyway) was 11 % of a restart's interpreter time
        # for nothing when no policy reads them (issue 16); a policy that arrives later and does read them
        # sets needs_sync again (upsert_policy), and no pass of it runs before they are listed (_policy_pass).
        needed = self._upsert_detector is not None and any(_on_detectors(p.spec) for p in self.policies.values())
        if needed:
            for base in paths:
                await self._list_into(f"{base}/anomalydetectors", self._upsert_detector)
            self._detectors_listed = True
        self.needs_sync = False
        logger.info("remediation engine synced: %d policies, %d actions%s", len(self.policies), len(self.actions),
                    ", their detectors" if needed else " (no policy triggers on detectors: none listed)")

    async def _list_into(self, path: str, upsert: Callable[[dict[str, Any]], None] | None) -> None:
        """LIST ``path`` in pages of :data:`LIST_PAGE` objects, folding each page in before asking for the next.

        One unpaged LIST of 10,000 detectors with their statuses is a single answer of tens of MB, decoded
        and folded in one stretch of the event loop: at a restart that held the evaluation loop and
        kopf's handlers back for seconds. Pages bound both, as client-go's pager does. A page that fails
        (an expired continue token included) raises: ``needs_sync`` stays set and the next pass LISTs
        again from the start; what was folded in stays (upserts keep the newest resourceVersion).
        """
        token = ""
        while True:
            query = f"?limit={LIST_PAGE}" + (f"&continue={urllib.parse.quote(token, safe='')}" if token else "")
            listed = await self.kube.request("GET", path + query)
            for item in listed.get("items", []):
                if upsert is not None:
                    upsert(item)
            token = (listed.get("metadata") or {}).get("continue") or ""
            if not token:
                return
            await asyncio.sleep(0)  # let the evaluation loop and kopf run between two pages

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("remediation engine started")
        while not stop.is_set():
            # Cleared before the pass, never after it: a wake that arrives while a pass runs (a watch event,
            # or the engine's own write of an action that just finished) must cause another pass, or the
            # next step would wait for the resync.
            self._wake.clear()
            if self.active.is_set():
                try:
                    if self.needs_sync:
                        await self.sync()
                    await self.tick()
                except Exception:
                    logger.exception("remediation tick failed")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=self.sleep_for(self.clock(), self._decided_at),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        passes = [task for task in self._passes.values() if not task.done()]
        for task in passes:
            task.cancel()
        if passes:
            await asyncio.wait(passes, timeout=5)
        logger.info("remediation engine stopped")

    def sleep_for(self, now: float, decided_at: float) -> float:
        """Until the soonest time a decider said something changes on its own, at most ``max_sleep`` (the
        resync, a safety net). Events (policies, actions, alerts, a detector verdict that flips) wake earlier."""
        due: list[float] = [entry.requeue_after for entry in self.policies.values()
                            if entry.owned and entry.requeue_after is not None]
        due += [held[1] for entry in self.policies.values() if entry.owned for held in entry.refused.values()]
        for action in self.actions.values():
            if action.phase is not None and action.phase.in_flight:
                due += [t for t in (to_time(action.status.next_attempt_at), to_time(action.status.expires_at))
                        if t is not None]
        return wake_in(due, now, decided_at, self.max_sleep)

    async def tick(self) -> None:
        """Start one pass per owned policy that is not still busy with the previous one.

        Policies do not wait on each other: a pass stuck in a slow AWS call (20 s read timeouts, three
        attempts) holds back only its own policy. Within a policy, passes never overlap, which keeps its
        actions in order and each AWS call made once (the intent CAS guards across replicas as before).
        AWS calls themselves are bounded by the thread pool (``aws_workers``).
        """
        now = self._decided_at = self.clock()
        # One pass over the detectors per tick, not one per policy: policies only match in their namespace.
        by_namespace: dict[str, list[DetectorEntry]] = {}
        for detector in self.detectors.entries.values():
            by_namespace.setdefault(detector.namespace, []).append(detector)
        self._by_namespace = by_namespace
        started = []
        for entry in [entry for entry in self.policies.values() if entry.owned]:
            running = self._passes.get(entry.id)
            if running is not None and not running.done():
                continue
            task = asyncio.create_task(self._policy_pass(entry, now), name=f"vigil-policy-{entry.namespace}/"
                                                                           f"{entry.name}")
            self._passes[entry.id] = task
            started.append(task)
        for gone in [key for key, task in self._passes.items() if task.done() and key not in self.policies]:
            del self._passes[gone]
        if started:
            self._tick_waiting = True
            try:
                await asyncio.wait(started, timeout=self.pass_wait)
            finally:
                self._tick_waiting = False
        self.metrics.remediation_ticks.inc()

    async def _policy_pass(self, entry: PolicyEntry, now: float) -> None:
        if _on_detectors(entry.spec) and not self._detectors_listed:
            # Changed to trigger on detectors since the last sync: nothing of it moves before they are listed.
            self.needs_sync = True
            self.wake()
            return
        try:
            await self._reconcile(entry, now)
        except Exception:
            logger.exception("reconciling policy %s/%s failed", *entry.id)
        for action in self.actions_of(entry):
            if action.phase is not None and action.phase.terminal:
                continue
            try:
                await self._progress(action, now)
            except Exception:
                logger.exception("progressing action %s/%s failed", *action.id)
        try:
            await self._prune(entry)
            await self._reregister(entry, now)
        except Exception:
            logger.exception("housekeeping of policy %s/%s failed", *entry.id)
        if not self._tick_waiting:
            # This pass outlived its tick (a slow AWS call past ``pass_wait``): the loop already chose its
            # sleep without the due times this pass decided. Look again now, or a step due meanwhile would
            # wait for the next event or the resync.
            self.wake()

    async def _aws(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    # --- policies ------------------------------------------------------------------------------

    def _matched(self, entry: PolicyEntry, spec: RemediationPolicySpec) -> list[DetectorEntry]:
        found = []
        for detector in self._by_namespace.get(entry.namespace, []):
            if detector.name in spec.detectors or (
                spec.detector_selector is not None and selectors.matches(spec.detector_selector,
                                                                         detector.object_labels)):
                found.append(detector)
        return sorted(found, key=lambda d: d.name)

    def _signal(self, detector: DetectorEntry) -> triggers.DetectorSignal:
        status = detector.current
        interval = 60.0
        if detector.spec is not None:
            try:
                interval = durations.parse(detector.spec.interval)
            except ValueError:
                pass
        return triggers.DetectorSignal(
            name=detector.name,
            ready=conditions.is_true(status.conditions, DetectorCondition.READY),
            degraded=conditions.is_true(status.conditions, DetectorCondition.DEGRADED),
            anomalous=status.anomalous,
            anomalous_since=status.anomalous_since.timestamp() if status.anomalous_since else None,
            score=status.score,
            threshold=status.threshold,
            last_evaluation=status.last_evaluation_time.timestamp() if status.last_evaluation_time else None,
            interval=interval,
            series=tuple(triggers.SeriesSignal(s.labels, s.score, s.anomalous, s.state, tuple(s.why or ()))
                         for s in status.series),
            missing_series=status.missing_series or 0,
            # Another shard evaluates it: we only see what it wrote (on a change, else per heartbeat).
            # An anomalous status is rewritten at the shorter anomalous heartbeat: a dead shard's last
            # anomalous verdict goes stale within it, and is never acted on after that.
            lag=0.0 if detector.owned else (self.remote_anomalous_lag if status.anomalous else self.remote_lag),
            # Ours, but not evaluated since we started: the status is the previous process' verdict, and no
            # decision waits on less than this process' own first evaluation with the whole window loaded.
            loading=detector.owned and not detector.evaluated,
        )

    def _alerts(self, entry: PolicyEntry, spec: RemediationPolicySpec, now: float) -> list[triggers.AlertSignal]:
        if self.alerts is None or spec.alert_selector is None:
            return []
        # An alert is believed until its expiry (endsAt, or a bounded time after it was last re-sent).
        return [triggers.AlertSignal(a.labels, (a.starts_at or a.received_at).timestamp(), a.expires_at.timestamp())
                for a in self.alerts.firing(entry.namespace, spec.alert_selector, _utc(now))]

    def _alerts_unknown(self, spec: RemediationPolicySpec, now: float) -> str | None:
        """Alerts live in memory: after a start, 'nothing firing' means nothing until Alertmanager has had
        the alert TTL to re-send what is still firing."""
        if spec.alert_selector is None or self.alerts is None:
            return None
        known_from = self.started + self.alerts.ttl.total_seconds()
        if now >= known_from:
            return None
        return f"alert state unknown for {known_from - now:.0f}s more after the operator started"

    def actions_of(self, entry: PolicyEntry) -> list[ActionEntry]:
        return [a for a in self.actions.values() if a.namespace == entry.namespace and a.policy == entry.name]

    def _state(self, entry: PolicyEntry, spec: RemediationPolicySpec, now: float) -> reconcile.PolicyState:
        """Gather what the decider needs about one policy (no I/O: all of it is in memory)."""
        detectors = self._matched(entry, spec)
        return reconcile.PolicyState(
            namespace=entry.namespace, uid=entry.uid, generation=entry.generation, spec=spec, written=entry.written,
            detector_names=[d.name for d in detectors], detectors=[self._signal(d) for d in detectors],
            alerts=self._alerts(entry, spec, now), alerts_unknown=self._alerts_unknown(spec, now),
            records=[a.record() for a in self.actions_of(entry)], aws_backoff_until=entry.aws_backoff_until,
            capacity=[c for c in (a.capacity() for a in self.actions_of(entry)) if c is not None],
        )

    async def _reconcile(self, entry: PolicyEntry, now: float) -> None:
        """Gather, decide (domain/remediation/reconcile.py), apply: the status, at most one step, the gauges."""
        spec = entry.spec
        if spec is None:
            await self._write_policy(entry, reconcile.invalid(entry.written, entry.spec_error or "invalid spec",
                                                              entry.generation, now))
            return
        state = self._state(entry, spec, now)
        decision = reconcile.decide(state, self.admin, now)
        self._triggers[entry.id] = decision.trigger
        if decision.closed is not None:
            entry.skips = {s for s in entry.skips if s[0] != decision.closed}
            entry.refused.clear()
        if decision.status.incident is None:
            entry.held_back = None
        degraded = None
        if decision.skip is not None:
            skip = decision.skip
            await self._record_skip(entry, spec, skip.incident, skip.step, skip.reason, skip.message,
                                    decision.trigger, [], now)
        elif decision.propose is not None:
            degraded = await self._propose(entry, spec, decision.propose.incident, decision.propose.step,
                                           decision.trigger, now)
        elif decision.restore is not None:
            degraded = await self._propose_restore(entry, spec, decision.restore, decision.trigger, now)
        after = dataclasses.replace(state, records=[a.record() for a in self.actions_of(entry)])
        summary = reconcile.summarize(after, decision.status, decision.trigger, self.admin, entry.held_back,
                                      degraded, now)
        entry.requeue_after = reconcile.soonest(decision.requeue_after, summary.requeue_after)
        self.metrics.policy_action_allowed.labels(*entry.id).set(1 if summary.allowed else 0)
        self.metrics.actions_in_flight.labels(*entry.id).set(summary.in_flight)
        was = entry.written.restoring
        await self._write_policy(entry, summary.status)
        ended = summary.status.restoring
        if ended is not None and not ended.active and (was is None or was.phase != ended.phase
                                                       or was.incident != ended.incident):
            kind = notes.EngineEvent.RESTORE_DONE if ended.phase == api_policy.RestorePhase.DONE \
                else notes.EngineEvent.RESTORE_STOPPED
            await self._event(entry.involved, "Normal" if kind == notes.EngineEvent.RESTORE_DONE else "Warning",
                              kind, f"incident {ended.incident}: {ended.message or ended.phase.value}")

    async def _write_policy(self, entry: PolicyEntry, status: RemediationPolicyStatus) -> None:
        if status.to_wire() == entry.written.to_wire():
            return
        try:
            updated = await self.kube.patch_status(API_VERSION, api_policy.PLURAL, entry.namespace, entry.name,
                                                   status.to_merge_patch())
        except kube.KubeError as exc:
            if exc.status == 404:
                self.remove_policy(entry.namespace, entry.name)
            else:
                logger.warning("status write for policy %s/%s failed: %s", *entry.id, exc)
            return
        entry.written = status
        entry.resource_version = max(entry.resource_version, resource_version(updated))

    # --- proposals -----------------------------------------------------------------------------

    async def _propose(self, entry: PolicyEntry, spec: RemediationPolicySpec, incident: str, index: int,
                       result: TriggerResult, now: float) -> str | None:
        """Decide the targets of step ``index`` and record the decision. Returns a Degraded message on a
        Recoverable AWS error (nothing recorded; retried later), else None."""
        from vigil.adapters import aws as aws_adapter

        name = action_name(entry.name, incident, index)
        if (entry.namespace, name) in self.actions:
            return None
        step = spec.actions[index]
        fingerprint = self._refusal_fingerprint(entry, result)
        held = entry.refused.get((incident, index))
        if held is not None and held[0] == fingerprint and now < held[1]:
            return None  # refused before, and nothing it depended on changed: no AWS call until the backoff ends
        try:
            chosen = await self._targets(entry.namespace, spec, step, result)
        except aws_adapter.AwsError as exc:
            self.metrics.aws_errors.labels(exc.operation or "describe", exc.error_class.value).inc()
            if exc.error_class == ErrorClass.RECOVERABLE:
                entry.aws_backoff_until = now + approvals.backoff(entry.written.recoverable_errors + 1)
                return f"AWS {exc.code} while observing for {step_label(step, index)}; retrying"
            await self._create_action(entry, spec, incident, index, [], result, now,
                                      failed=(exc, f"cannot observe AWS: {exc.code}: {exc.message}"))
            return None
        entry.aws_backoff_until = 0.0
        if isinstance(chosen, Refusal):
            delay = min(held[2] * 2, REFUSAL_BACKOFF_MAX) if held is not None and held[0] == fingerprint \
                else REFUSAL_BACKOFF
            entry.refused[(incident, index)] = (fingerprint, now + delay, delay)
            if chosen.reason == SkipReason.BLAST_RADIUS_EXCEEDED:
                entry.held_back = chosen.message  # re-checked every tick; runs when in-flight work ends
            await self._record_skip(entry, spec, incident, index, chosen.reason, chosen.message, result,
                                    chosen.targets, now)
            return None
        entry.held_back = None
        entry.refused.pop((incident, index), None)
        targets, remarks = chosen
        if remarks:
            await self._event(entry.involved, "Normal", notes.EngineEvent.TARGETS_REDUCED, "; ".join(remarks))
        await self._create_action(entry, spec, incident, index, targets, result, now)
        return None

    async def _propose_restore(self, entry: PolicyEntry, spec: RemediationPolicySpec, due: restore.ProposeRestore,
                               result: TriggerResult, now: float) -> str | None:
        """Observe the group, plan one scale-back step (domain/remediation/restore.py) and record it as an
        action, or record why not (Skipped, e.g. ChangedOutsideVigil). Returns a Degraded message on a
        Recoverable AWS error (nothing recorded; retried later), else None."""
        from vigil.adapters import aws as aws_adapter

        name = restore_action_name(entry.name, due.incident, due.step, due.sequence)
        if (entry.namespace, name) in self.actions:
            return None
        step = spec.actions[due.step]
        ref = api_action.RestoreRef(scale_action=due.scale_action, sequence=due.sequence, baseline=due.baseline,
                                    expected=due.expected, target=due.expected)
        aws = self.aws_for(spec.aws.region, spec.aws.role_arn)
        try:
            group = await self._aws(aws.describe_group, due.group)
        except aws_adapter.AwsError as exc:
            self.metrics.aws_errors.labels(exc.operation or "describe", exc.error_class.value).inc()
            if exc.error_class == ErrorClass.RECOVERABLE:
                entry.aws_backoff_until = now + approvals.backoff(entry.written.recoverable_errors + 1)
                return f"AWS {exc.code} while observing {due.group} to scale back; retrying"
            await self._create_action(entry, spec, due.incident, due.step, [], result, now, scale_back=ref, name=name,
                                      failed=(exc, f"cannot observe AWS: {exc.code}: {exc.message}"))
            return None
        entry.aws_backoff_until = 0.0
        targets = [Target(kind="AutoScalingGroup", id=due.group)]
        if missing := tenancy.missing_tags(group.tags, self.admin.required_tags(entry.namespace, spec)):
            await self._create_action(entry, spec, due.incident, due.step, targets, result, now, scale_back=ref,
                                      name=name, skip=(SkipReason.TARGET_NOT_MANAGED,
                                                       f"Auto Scaling Group {due.group} lacks tag "
                                                       f"{', '.join(missing)}"))
            return None
        planned = restore.plan(step, due.baseline, due.expected, None, group.desired, group.min_size, group.max_size)
        if isinstance(planned, restore.Refuse):
            await self._create_action(entry, spec, due.incident, due.step, targets, result, now, scale_back=ref,
                                      name=name, skip=(planned.reason, planned.message))
            return None
        await self._create_action(entry, spec, due.incident, due.step, targets, result, now, name=name,
                                  scale_back=ref.model_copy(update={"target": planned.target}))
        return None

    def _refusal_fingerprint(self, entry: PolicyEntry, result: TriggerResult) -> object:
        """What a refused proposal depended on: the policy's generation, the evidence, the work in flight."""
        series = tuple(sorted(tuple(sorted(s.items())) for s in result.evidence.series)) if result.evidence else ()
        busy = tuple(sorted(a.name for a in self.actions.values() if a.record().phase.in_flight))
        return (entry.generation, series, busy)

    async def _targets(self, namespace: str, spec: RemediationPolicySpec, step: api_policy.Step,
                       result: TriggerResult) -> tuple[list[Target], list[str]] | Refusal:
        """Resolve, check against the required tags (admin's and policy's) and the blast radius. Raises AwsError."""
        aws = self.aws_for(spec.aws.region, spec.aws.role_arn)
        required = self.admin.required_tags(namespace, spec)
        evidence = result.evidence
        scale = step.scale_auto_scaling_group
        if scale is not None:
            group = await self._aws(aws.describe_group, scale.name)
            if missing := tenancy.missing_tags(group.tags, required):
                return Refusal(SkipReason.TARGET_NOT_MANAGED,
                               f"Auto Scaling Group {scale.name} lacks tag {', '.join(missing)}")
            plan = plans.plan_scale(scale, group.desired, group.min_size, group.max_size)
            if isinstance(plan, plans.Skip):
                return Refusal(plan.reason, plan.message)
            if plan.scale_in and (evidence is None or not evidence.complete):
                return Refusal(SkipReason.MISSING_DATA,
                               "scale-in refused: some series of the detector had no data at its last evaluation")
            return [Target(kind="AutoScalingGroup", id=scale.name)], []

        instance_targets = step.instance_targets
        assert instance_targets is not None  # the schema allows exactly one kind, and it is not a scale step
        ids = plans.resolve_instances(instance_targets, list(evidence.series) if evidence else [])
        if isinstance(ids, plans.Skip):
            return Refusal(ids.reason, ids.message)
        if step.deregister_target is not None:
            target_group = await self._aws(aws.describe_target_group, step.deregister_target.target_group_arn)
            if missing_tags := tenancy.missing_tags(target_group.tags, required):
                return Refusal(SkipReason.TARGET_NOT_MANAGED, f"target group lacks tag {', '.join(missing_tags)}")
        found = await self._aws(aws.describe_instances, ids)
        missing = [i for i in ids if i not in found]
        untagged = [i for i in ids if i in found and tenancy.missing_tags(found[i].tags, required)]
        usable = [i for i in ids if i in found and i not in untagged]
        if not usable:
            if untagged:
                need = ", ".join(f"{k}={v}" for k, v in required)
                return Refusal(SkipReason.TARGET_NOT_MANAGED, f"instances lack tag {need}: {', '.join(untagged)}")
            return Refusal(SkipReason.NOT_FOUND, f"instances not found: {', '.join(missing)}")
        wanted = [(i, found[i].group) for i in usable]
        groups = sorted({g for _, g in wanted if g})
        sizes = await self._aws(aws.group_sizes, groups) if groups else {}
        radius = spec.blast_radius
        # In-flight work on a group counts whichever policy started it: the group's capacity is shared.
        allowed, verdict = guards.blast_radius(
            wanted, [a.record() for a in self.actions.values()], sizes,
            radius.max_instances if radius else None, radius.max_percent if radius else None)
        if not allowed:
            return Refusal(SkipReason.BLAST_RADIUS_EXCEEDED, verdict.message,
                           [Target(kind="Instance", id=i, group=g) for i, g in wanted])
        remarks = []
        if untagged:
            remarks.append(f"refused untagged {', '.join(untagged)}")
        if missing:
            remarks.append(f"not found {', '.join(missing)}")
        if verdict.message != guards.ALLOWED.message:
            remarks.append(verdict.message)
        return [Target(kind="Instance", id=i, group=g) for i, g in allowed], remarks

    def _reason(self, result: TriggerResult, now: float) -> api_action.Reason:
        evidence = result.evidence
        if evidence is None:
            return api_action.Reason(source="none", time=_utc(now))
        return api_action.Reason(
            source=evidence.source, detector=evidence.detector,
            alert=dict(evidence.alert) if evidence.alert else None,
            series=[dict(s) for s in evidence.series][:50], score=evidence.score, threshold=evidence.threshold,
            anomalous_since=_utc(evidence.since) if evidence.since else None, time=_utc(now),
            why=list(evidence.why),
        )

    async def _record_skip(self, entry: PolicyEntry, spec: RemediationPolicySpec, incident: str, index: int,
                           reason: SkipReason, message: str, result: TriggerResult, targets: list[Target],
                           now: float) -> None:
        mark = (incident, index, reason.value)
        if mark in entry.skips:
            return
        entry.skips.add(mark)
        await self._create_action(entry, spec, incident, index, targets, result, now, skip=(reason, message))

    async def _create_action(
        self, entry: PolicyEntry, spec: RemediationPolicySpec, incident: str, index: int, targets: list[Target],
        result: TriggerResult, now: float, skip: tuple[SkipReason, str] | None = None,
        failed: tuple[Any, str] | None = None, scale_back: api_action.RestoreRef | None = None,
        name: str | None = None,
    ) -> None:
        step = spec.actions[index]
        if step.name is None:
            step = step.model_copy(update={"name": step_label(step, index)})
        name = name or action_name(entry.name, incident, index, skip[0] if skip else None)
        action_spec = RemediationActionSpec(
            policy_ref=api_action.PolicyRef(name=entry.name, uid=entry.uid), incident=incident, step_index=index,
            step=step, targets=targets, reason=self._reason(result, now), dry_run=spec.dry_run,
            approval_required=skip is None and failed is None and (
                restore.approval_required(spec, index) if scale_back is not None else spec.approval.required),
            region=spec.aws.region, role_arn=spec.aws.role_arn, restore=scale_back,
        )
        labels = {api_action.POLICY_LABEL: entry.name[:63], api_action.INCIDENT_LABEL: incident,
                  "app.kubernetes.io/managed-by": "vigil"}
        if scale_back is not None:
            labels[api_action.DIRECTION_LABEL] = api_action.RESTORE_DIRECTION
        body = {
            "apiVersion": API_VERSION, "kind": api_action.KIND,
            "metadata": {
                "name": name, "namespace": entry.namespace,
                "annotations": {provenance.ANNOTATION: provenance.sign(self.provenance_key, entry.namespace, name,
                                                                       action_spec.to_wire())},
                "labels": labels,
                "ownerReferences": [{"apiVersion": API_VERSION, "kind": api_policy.KIND, "name": entry.name,
                                     "uid": entry.uid, "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": action_spec.to_wire(),
        }
        try:
            created = await self.kube.request(
                "POST", f"/apis/{API_VERSION}/namespaces/{entry.namespace}/{api_action.PLURAL}", body)
        except kube.KubeError as exc:
            if exc.status == 409:
                return  # recorded before a restart; the watch will bring it
            logger.error("cannot record action %s/%s: %s", entry.namespace, name, exc)
            return
        action = ActionEntry.from_body(created)
        self.actions[action.id] = action
        status = RemediationActionStatus(created_at=_utc(now))
        if skip is not None:
            status.phase, status.skip_reason, status.message = ActionPhase.SKIPPED, skip[0], skip[1]
            status.completed_at = _utc(now)
            await self._write_action(action, status)
            self._count_terminal(action, entry)
            await self._announce(action, notes.EventKind.ACTION_SKIPPED, f"{skip[0].value}: {skip[1]}")
            return
        if failed is not None:
            error, text = failed
            status.phase, status.message, status.completed_at = ActionPhase.FAILED, text, _utc(now)
            status.error_class, status.error_code = error.error_class, error.code
            await self._write_action(action, status)
            self._count_terminal(action, entry)
            await self._announce(action, notes.EventKind.ACTION_FAILED, text)
            return
        await self._initialise(action, entry, now, status)

    async def _initialise(self, action: ActionEntry, entry: PolicyEntry, now: float,
                          status: RemediationActionStatus | None = None) -> None:
        """Give a new action its first phase, unless the operator did not propose it."""
        assert action.spec is not None
        status = status or action.status.model_copy(deep=True)
        status.created_at = status.created_at or _utc(action.created or now)
        forged = provenance.problems(self.provenance_key, action.namespace, action.name, action.spec.to_wire(),
                                     action.annotations, action.owner_references, entry.uid,
                                     action.spec.policy_ref.uid)
        if forged:
            await self._finish_skipped(action, entry, status, SkipReason.NOT_PROPOSED_BY_OPERATOR,
                                       "not proposed by the operator: " + "; ".join(forged), now)
            return
        if any(a in action.annotations for a in (api_action.APPROVE_ANNOTATION, api_action.REJECT_ANNOTATION)):
            await self._finish_skipped(action, entry, status, SkipReason.NOT_APPROVED,
                                       "approval annotations were set before the operator proposed the action", now)
            return
        # The current policy decides whether a human must approve, whatever the action says.
        required = action.spec.approval_required if entry.spec is None else \
            preflight.approval_needed(entry.spec, action.spec)
        if required:
            timeout = entry.spec.approval.timeout_seconds if entry.spec else 1800.0
            status.phase = ActionPhase.PENDING_APPROVAL
            status.expires_at = _utc((to_time(status.created_at) or now) + timeout)
            status.message = "waiting for approval"
            await self._write_action(action, status)
            await self._announce(action, notes.EventKind.APPROVAL_REQUESTED, self._describe_proposal(action))
        else:
            status.phase = ActionPhase.APPROVED
            status.message = "approved by policy (no approval required)"
            status.decision = api_action.Decision(by="policy", at=_utc(now), via="policy")
            await self._write_action(action, status)
            await self._announce(action, notes.EventKind.ACTION_PROPOSED, self._describe_proposal(action))

    @staticmethod
    def _describe_proposal(action: ActionEntry) -> str:
        assert action.spec is not None
        targets = ", ".join(t.id for t in action.spec.targets) or "no targets"
        back = action.spec.restore
        if back is not None:
            return (f"{action.spec.step.name} scale-back on {targets}: desired capacity {back.expected} → "
                    f"{back.target} (toward {back.baseline}, before incident {action.incident}; undoes "
                    f"{back.scale_action})")
        reason = action.spec.reason
        why = f"detector {reason.detector} score {reason.score}" if reason.detector else f"alert {reason.alert}"
        mode = " (dry-run)" if action.spec.dry_run else ""
        return f"{action.spec.step.name}{mode} on {targets} because {why}"

    # --- actions -------------------------------------------------------------------------------

    async def _progress(self, action: ActionEntry, now: float) -> None:
        entry = self.policies.get((action.namespace, action.policy))
        if action.spec is None or entry is None:
            return
        if action.phase is None:
            await self._initialise(action, entry, now)
            return
        if action.phase == ActionPhase.PENDING_APPROVAL and not await self._approval(action, entry, now):
            return
        next_attempt = to_time(action.status.next_attempt_at)
        if next_attempt is not None and now < next_attempt:
            return
        if action.phase == ActionPhase.EXECUTING and action.status.command_status is not None:
            await self._poll(action, entry, now)  # the command runs whatever the policy says now: keep reading
            return
        if entry.spec is not None and entry.spec.paused:
            return  # approved actions wait while the policy is paused
        if action.phase == ActionPhase.APPROVED:
            await self._execute(action, entry, now)
        elif action.phase == ActionPhase.EXECUTING:
            await self._resume(action, entry, now)

    async def _approval(self, action: ActionEntry, entry: PolicyEntry, now: float) -> bool:
        """Apply a human's decision or the expiry. Returns True when the action is now Approved."""
        assert action.spec is not None
        created = to_time(action.status.created_at) or action.created
        expires = to_time(action.status.expires_at)
        timeout = (expires - created) if expires is not None else 1800.0
        current = restore.current(entry.written.restoring, entry.written.incident is not None, action.incident) \
            if action.spec.restore is not None else entry.written.incident == action.incident
        decision = approvals.decide(action.annotations, action.managed_fields, created, timeout, current, now)
        if action.spec.restore is not None and not current and decision.outcome == approvals.Outcome.EXPIRED:
            decision = dataclasses.replace(decision, message="the scale-back stopped (another incident opened, or "
                                                             "the restore ended) before anyone approved")
        if decision.outcome == approvals.Outcome.PENDING:
            return False
        status = action.status.model_copy(deep=True)
        if decision.outcome == approvals.Outcome.APPROVED:
            status.phase = ActionPhase.APPROVED
            status.decision = api_action.Decision(by=decision.by, at=_utc(decision.at or now), via=decision.via,
                                                  field_manager=decision.field_manager)
            status.message = decision.message
            if await self._write_action(action, status, cas=True):
                await self._event(action.involved, "Normal", notes.EngineEvent.ACTION_APPROVED, decision.message)
                return True
            return False
        status.completed_at = _utc(now)
        if decision.outcome == approvals.Outcome.REJECTED:
            status.phase = ActionPhase.REJECTED
            status.decision = api_action.Decision(by=decision.by, at=_utc(decision.at or now), via=decision.via,
                                                  field_manager=decision.field_manager)
            kind = notes.EventKind.ACTION_REJECTED
        else:
            status.phase = ActionPhase.EXPIRED
            kind = notes.EventKind.ACTION_EXPIRED
        status.message = decision.message
        if await self._write_action(action, status, cas=True):
            self._count_terminal(action, entry)
            await self._announce(action, kind, decision.message)
        return False

    def _quiet(self, entry: PolicyEntry) -> bool:
        """A scale-back's evidence: the trigger has fresh data and does not fire."""
        result = self._triggers.get(entry.id)
        return bool(result and result.state == TriggerState.QUIET)

    def _data_complete(self, entry: PolicyEntry) -> bool:
        result = self._triggers.get(entry.id)
        return bool(result and result.state == TriggerState.FIRING and result.evidence and result.evidence.complete)

    async def _preflight(self, action: ActionEntry, entry: PolicyEntry, now: float) -> preflight.Verdict:
        """Gather what the pure execution-time check needs (observing AWS) and ask it. Raises AwsError."""
        assert action.spec is not None
        if entry.spec is None:
            return preflight.Refuse(SkipReason.POLICY_CHANGED, "the policy's spec is not valid any more: "
                                    + (entry.spec_error or "invalid spec")[:500])
        view = action.view()
        policy = preflight.PolicyView(entry.namespace, entry.uid, entry.spec, entry.written.incident,
                                      entry.written.restoring)
        records = [a.record() for a in self.actions_of(entry)]
        refused = preflight.check_recorded(view, policy, self.admin, self.provenance_key, records)
        if refused is not None:
            return refused  # decided without assuming any role or calling AWS
        aws = self.aws_for(entry.spec.aws.region, entry.spec.aws.role_arn)
        step = entry.spec.actions[action.spec.step_index]
        observed = await self._aws(executors.observe, aws, step, [t.id for t in action.spec.targets
                                                                 if t.kind == "Instance"])
        result = self._triggers.get(entry.id)
        series = result.evidence.series if result and result.state == TriggerState.FIRING and result.evidence \
            else ()
        return preflight.check_observed(view, policy, self.admin, observed, series, records,
                                        [a.record() for a in self.actions.values()], now)

    async def _execute(self, action: ActionEntry, entry: PolicyEntry, now: float) -> None:
        from vigil.adapters import aws as aws_adapter

        assert action.spec is not None
        executor = executors.EXECUTORS[action.spec.step.kind]
        status = action.status.model_copy(deep=True)
        try:
            verdict = await self._preflight(action, entry, now)
        except aws_adapter.AwsError as exc:
            await self._aws_failure(action, entry, exc, now)
            return
        if isinstance(verdict, preflight.Refuse):
            await self._finish_skipped(action, entry, status, verdict.reason, verdict.message, now)
            return
        if verdict.remarks:
            await self._event(action.involved, "Normal", notes.EngineEvent.TARGETS_REDUCED,
                              "; ".join(verdict.remarks)[:1000])
        aws = self.aws_for(action.spec.region, action.spec.role_arn)  # equal to the policy's: checked above
        try:
            prepared = await self._aws(executor.prepare, aws, action.spec.model_copy(
                update={"targets": list(verdict.targets)}))
        except aws_adapter.AwsError as exc:
            await self._aws_failure(action, entry, exc, now)
            return
        if isinstance(prepared, plans.Skip):
            await self._finish_skipped(action, entry, status, prepared.reason, prepared.message, now)
            return
        if action.spec.restore is not None and not self._quiet(entry):
            await self._finish_skipped(action, entry, status, SkipReason.DETECTOR_STALE,
                                       "scale-back refused: the detectors' data is not fresh and quiet now", now)
            return
        if prepared.scale_in and action.spec.restore is None and not self._data_complete(entry):
            await self._finish_skipped(action, entry, status, SkipReason.MISSING_DATA,
                                       "scale-in refused: the detector's data is not complete and fresh now", now)
            return
        status.before = prepared.before
        status.intent = api_action.Intent(operation=prepared.operation, parameters=prepared.parameters,
                                          recorded_at=_utc(now), attempt=status.attempts + 1)
        if action.spec.dry_run:
            try:
                allowed, check = await self._aws(executor.dry_run, aws, prepared)
            except aws_adapter.AwsError as exc:
                await self._aws_failure(action, entry, exc, now)
                return
            status.phase = ActionPhase.DRY_RUN
            status.after = prepared.planned_after
            status.completed_at = _utc(now)
            change = plans.describe_change(prepared.before, prepared.planned_after)
            status.message = (f"dry run: would call {prepared.operation}"
                              + (f" ({change})" if change else "")
                              + f"; permission check: {'allowed' if allowed else 'DENIED'}: {check}")
            if await self._write_action(action, status, cas=True):
                self._count_terminal(action, entry)
                await self._announce(action, notes.EventKind.ACTION_DRY_RUN, status.message)
            return
        # The intent is durable before AWS hears of it; the CAS makes this replica the only executor.
        status.phase = ActionPhase.EXECUTING
        status.started_at = status.started_at or _utc(now)
        status.attempts += 1
        status.message = f"calling {prepared.operation}"
        status.error_class = None
        status.error_code = None
        status.next_attempt_at = None
        if not await self._write_action(action, status, cas=True):
            return
        await self._call(action, entry, executor, aws, now)

    async def _call(self, action: ActionEntry, entry: PolicyEntry, executor: executors.Executor,
                    aws: executors.Aws, now: float) -> None:
        from vigil.adapters import aws as aws_adapter

        intent = action.status.intent
        assert intent is not None
        try:
            called = await self._aws(executor.call, aws, intent.parameters, action.uid)
        except aws_adapter.AwsError as exc:
            await self._aws_failure(action, entry, exc, now)
            return
        if executor.tracks:
            await self._track(action, entry, executor, aws, called, now)
            return
        await self._succeed(action, entry, executor, aws, called.request_ids, now, "")

    async def _track(self, action: ActionEntry, entry: PolicyEntry, executor: executors.Executor,
                     aws: executors.Aws, called: executors.Called | None, now: float) -> None:
        """The call started work AWS finishes later (an SSM command): record what to poll, stay Executing.

        Written before the first poll, so that after a restart the engine polls the same command instead
        of looking for it again (or sending it again). ``called`` is None when resuming: the command is then
        found by the action's uid in its comment."""
        from vigil.adapters import aws as aws_adapter

        assert isinstance(executor, executors.RunCommand)
        intent = action.status.intent
        assert intent is not None
        try:
            tracked = await self._aws(executor.track, aws, intent.parameters, action.uid, called, now)
        except aws_adapter.AwsError as exc:
            await self._aws_failure(action, entry, exc, now)
            return
        status = action.status.model_copy(deep=True)
        if called is not None:
            status.aws_request_ids = (status.aws_request_ids + [r for r in called.request_ids if r])[-50:]
        if tracked is None:  # only when resuming: verify saw the command, and now it is gone
            status.next_attempt_at = _utc(now + self.command_poll_interval)
            status.message = f"{intent.operation} sent, but the command is not listed by SSM yet; looking again"
            await self._write_action(action, status)
            return
        status.command_status = tracked
        status.error_class = None
        status.error_code = None
        status.next_attempt_at = _utc(now + self.command_poll_interval)
        status.message = (f"command {tracked.command_id} sent to {len(intent.parameters['InstanceIds'])} "
                          "instance(s); waiting for it to finish")
        if await self._write_action(action, status):
            await self._event(action.involved, "Normal", notes.EngineEvent.COMMAND_SENT, status.message)

    async def _poll(self, action: ActionEntry, entry: PolicyEntry, now: float) -> None:
        """One look at a running command: GetCommandInvocation per unfinished instance (in the AWS thread pool),
        then Executing until the next poll, or the action's end. Never waits for the command itself."""
        from vigil.adapters import aws as aws_adapter

        assert action.spec is not None
        executor = executors.EXECUTORS[action.spec.step.kind]
        assert isinstance(executor, executors.RunCommand)
        intent, known = action.status.intent, action.status.command_status
        assert intent is not None and known is not None
        aws = self.aws_for(action.spec.region, action.spec.role_arn)
        status = action.status.model_copy(deep=True)
        try:
            polled = await self._aws(executor.progress, aws, intent.parameters, known, now)
        except aws_adapter.AwsError as exc:
            self.metrics.aws_errors.labels(exc.operation or "GetCommandInvocation", exc.error_class.value).inc()
            deadline = to_time(known.deadline)
            if exc.error_class == ErrorClass.RECOVERABLE and (deadline is None or now < deadline):
                status.next_attempt_at = _utc(now + max(self.command_poll_interval, approvals.backoff(1)))
                status.message = f"command {known.command_id} running; reading its result failed ({exc.code}), " \
                                 "retrying"
                await self._write_action(action, status)
                return
            status.phase = ActionPhase.FAILED
            status.error_class = exc.error_class
            status.error_code = exc.code
            status.completed_at = _utc(now)
            status.next_attempt_at = None
            status.message = (f"command {known.command_id} was sent, but its result cannot be read: {exc.code}: "
                              f"{exc.message}")[:4000]
            if await self._write_action(action, status):
                self._count_terminal(action, entry)
                await self._announce(action, notes.EventKind.ACTION_FAILED, status.message)
            return
        outcome = commands.judge(polled.invocations, list(intent.parameters["InstanceIds"]), now,
                                 to_time(known.deadline))
        status.command_status = polled.model_copy(update={
            "status": "InProgress" if not outcome.done else ("Success" if outcome.succeeded else "Failed")})
        if not outcome.done:
            status.next_attempt_at = _utc(now + self.command_poll_interval)
            status.message = f"command {known.command_id}: {outcome.message}"[:4000]
            await self._write_action(action, status)
            return
        if outcome.succeeded:
            note = f"command {known.command_id}: {outcome.message};"[:3000]
            await self._succeed(action, entry, executor, aws, [], now, note, status)
            return
        status.phase = ActionPhase.FAILED
        status.error_class = ErrorClass.TERMINAL
        status.error_code = outcome.error_code
        status.completed_at = _utc(now)
        status.next_attempt_at = None
        status.message = (f"command {known.command_id}: {outcome.message}; the ladder's next step runs if the "
                          "trigger still fires")[:4000]
        if await self._write_action(action, status):
            self._count_terminal(action, entry)
            await self._announce(action, notes.EventKind.ACTION_FAILED, status.message)

    async def _succeed(self, action: ActionEntry, entry: PolicyEntry, executor: executors.Executor,
                       aws: executors.Aws, request_ids: list[str], now: float, note: str,
                       base: RemediationActionStatus | None = None) -> None:
        from vigil.adapters import aws as aws_adapter

        intent = action.status.intent
        assert intent is not None
        try:
            after = await self._aws(executor.after, aws, intent.parameters, action.uid)
        except aws_adapter.AwsError as exc:
            after = {"error": f"could not read the state after: {exc.code}"}
        status = (base or action.status).model_copy(deep=True)
        status.phase = ActionPhase.SUCCEEDED
        status.after = after
        status.aws_request_ids = (status.aws_request_ids + [r for r in request_ids if r])[-50:]
        status.completed_at = _utc(now)
        status.error_class = None
        status.error_code = None
        status.next_attempt_at = None
        change = plans.describe_change(status.before, after)
        status.message = (note + " " if note else "") + f"{intent.operation} done" + (f": {change}" if change else "")
        if await self._write_action(action, status):
            self._count_terminal(action, entry)
            await self._announce(action, notes.EventKind.ACTION_EXECUTED, status.message)

    async def _resume(self, action: ActionEntry, entry: PolicyEntry, now: float) -> None:
        """An Executing action: verify against AWS, then finish, retry, or refuse to repeat."""
        from vigil.adapters import aws as aws_adapter

        assert action.spec is not None
        executor = executors.EXECUTORS[action.spec.step.kind]
        aws = self.aws_for(action.spec.region, action.spec.role_arn)
        intent = action.status.intent
        if intent is None:
            await self._execute(action, entry, now)
            return
        try:
            done = await self._aws(executor.verify, aws, intent.parameters, action.uid)
        except aws_adapter.AwsError as exc:
            await self._aws_failure(action, entry, exc, now)
            return
        if done and executor.tracks:
            await self._track(action, entry, executor, aws, None, now)  # sent before a restart: poll it
            return
        if done:
            await self._succeed(action, entry, executor, aws, [], now,
                                "resumed: AWS already shows the change, not repeated;")
            return
        answered = action.status.error_class is not None  # AWS refused the last attempt: it did not happen
        if done is None and not answered:
            status = action.status.model_copy(deep=True)
            status.phase = ActionPhase.FAILED
            status.error_class = ErrorClass.TERMINAL
            status.error_code = "Interrupted"
            status.completed_at = _utc(now)
            status.message = (f"the operator stopped while calling {intent.operation}; AWS keeps no record to check "
                              "whether it was received, so it is not repeated. Check the targets and approve a new "
                              "action if needed")
            if await self._write_action(action, status, cas=True):
                self._count_terminal(action, entry)
                await self._announce(action, notes.EventKind.ACTION_FAILED, status.message)
            return
        try:
            verdict = await self._preflight(action, entry, now)  # a retry is a new call: check again
        except aws_adapter.AwsError as exc:
            await self._aws_failure(action, entry, exc, now)
            return
        if isinstance(verdict, preflight.Refuse) or verdict.remarks:
            reason = verdict.reason if isinstance(verdict, preflight.Refuse) else SkipReason.TARGET_NOT_MANAGED
            message = verdict.message if isinstance(verdict, preflight.Refuse) else "; ".join(verdict.remarks)
            await self._finish_skipped(action, entry, action.status.model_copy(deep=True), reason,
                                       f"not retried: {message}"[:1000], now)
            return
        status = action.status.model_copy(deep=True)
        status.attempts += 1
        status.intent = intent.model_copy(update={"attempt": status.attempts})
        status.message = f"calling {intent.operation} (attempt {status.attempts})"
        status.next_attempt_at = None
        if not await self._write_action(action, status, cas=True):
            return
        await self._call(action, entry, executor, aws, now)

    async def _aws_failure(self, action: ActionEntry, entry: PolicyEntry, exc: Any, now: float) -> None:
        self.metrics.aws_errors.labels(exc.operation or "unknown", exc.error_class.value).inc()
        status = action.status.model_copy(deep=True)
        status.error_class = exc.error_class
        status.error_code = exc.code
        if exc.request_id:
            status.aws_request_ids = [*status.aws_request_ids, exc.request_id][-50:]
        attempts = max(status.attempts, 1)
        if exc.error_class == ErrorClass.RECOVERABLE and attempts < approvals.MAX_ATTEMPTS:
            delay = approvals.backoff(attempts)
            status.next_attempt_at = _utc(now + delay)
            status.attempts = attempts
            status.message = (f"AWS answered {exc.code} to {exc.operation or 'a call'} (Recoverable); "
                              f"retry {attempts + 1} of {approvals.MAX_ATTEMPTS} in {delay:.0f}s")
            if await self._write_action(action, status):
                await self._event(action.involved, "Warning", notes.EngineEvent.ACTION_RETRYING, status.message)
                policy_status = entry.written.model_copy(deep=True)
                policy_status.recoverable_errors += 1
                policy_status.conditions = conditions.set_condition(
                    policy_status.conditions, PolicyConditionType.DEGRADED, ConditionStatus.TRUE,
                    PolicyReason.AWS_RETRYING, status.message, _utc(now), entry.generation)
                await self._write_policy(entry, policy_status)
            return
        status.phase = ActionPhase.FAILED
        status.completed_at = _utc(now)
        status.next_attempt_at = None
        if exc.error_class == ErrorClass.RECOVERABLE:
            status.message = f"gave up after {attempts} attempts: {exc.code}: {exc.message}"
        else:
            status.message = f"{exc.code} (Terminal, not retried): {exc.message}"
        if await self._write_action(action, status):
            self._count_terminal(action, entry)
            await self._announce(action, notes.EventKind.ACTION_FAILED, status.message)

    async def _finish_skipped(self, action: ActionEntry, entry: PolicyEntry, status: RemediationActionStatus,
                              reason: SkipReason, message: str, now: float) -> None:
        status.phase = ActionPhase.SKIPPED
        status.skip_reason = reason
        status.message = message
        status.completed_at = _utc(now)
        if await self._write_action(action, status, cas=True):
            self._count_terminal(action, entry)
            await self._announce(action, notes.EventKind.ACTION_SKIPPED, f"{reason.value}: {message}")

    async def _write_action(self, action: ActionEntry, status: RemediationActionStatus, cas: bool = False) -> bool:
        """Patch the action's status. With ``cas``, only if nobody changed the object since we read it."""
        body: dict[str, Any] = {"status": status.to_merge_patch()}
        if cas and action.raw_resource_version:
            body["metadata"] = {"resourceVersion": action.raw_resource_version}
        path = f"/apis/{API_VERSION}/namespaces/{action.namespace}/{api_action.PLURAL}/{action.name}/status"
        try:
            updated = await self.kube.request("PATCH", path, body, "application/merge-patch+json")
        except kube.KubeError as exc:
            if exc.status == 409:
                logger.info("action %s/%s changed under us; re-reading it", *action.id)
                fresh = await self.kube.get(path.rsplit("/status", 1)[0])
                if fresh is not None:
                    self.actions[action.id] = ActionEntry.from_body(fresh)
                return False
            if exc.status == 404:
                self.remove_action(*action.id)
                return False
            logger.error("status write for action %s/%s failed: %s", *action.id, exc)
            return False
        replacement = ActionEntry.from_body(updated)
        moved = replacement.phase != action.phase
        self.actions[action.id] = replacement
        action.__dict__.update(replacement.__dict__)
        if moved:
            # The watch event for this write carries a resourceVersion we already hold, so it will not wake
            # the loop: the decider must still see the new phase (a finished step makes the next one due).
            self.wake()
        return True

    def _count_terminal(self, action: ActionEntry, entry: PolicyEntry) -> None:
        if action.spec is None or action.phase is None:
            return
        self.metrics.actions.labels(entry.namespace, entry.name, action.spec.step.kind,
                                    action.phase.value).inc()

    # --- trace: events and notifications ------------------------------------------------------

    async def _event(self, involved: dict[str, Any], type: str, reason: notes.EventKind | notes.EngineEvent,
                     message: str) -> None:
        try:
            await self.kube.post_event(involved, type, reason, message, _utc(self.clock()))
            self.metrics.events.labels(reason).inc()
        except Exception as exc:
            logger.warning("event %s not posted: %r", reason, exc)

    async def _announce(self, action: ActionEntry, kind: notes.EventKind, message: str) -> None:
        """An Event on the action and on its policy, and the policy's notifications."""
        entry = self.policies.get((action.namespace, action.policy))
        await self._event(action.involved, _EVENT_TYPES[kind], kind, message)
        if entry is not None:
            await self._event(entry.involved, _EVENT_TYPES[kind], kind, f"{action.name}: {message}")
        if entry is None or entry.spec is None or entry.spec.notify is None or self.notifier is None:
            return
        assert action.spec is not None
        event = notes.NotificationEvent(
            kind=kind, namespace=action.namespace, policy=action.policy, action=action.name,
            time=_utc(self.clock()), phase=action.phase, step_index=action.spec.step_index,
            step_name=action.spec.step.name, step_kind=action.spec.step.kind,
            targets=tuple(action.spec.targets), reason=action.spec.reason, dry_run=action.spec.dry_run,
            message=message, before=action.status.before, after=action.status.after,
            expires_at=action.status.expires_at,
        )
        deliveries = await self.notifier.notify(action.namespace, entry.spec.notify, event)
        delivered = []
        for delivery in deliveries:
            self.metrics.notifications.labels(delivery.channel.split(" ")[0], "ok" if delivery.ok else "error").inc()
            if delivery.ok:
                delivered.append(f"{delivery.channel.split(' ')[0]}:{kind.value}")
            else:
                await self._event(entry.involved, "Warning", notes.EngineEvent.NOTIFICATION_FAILED,
                                  f"{delivery.channel}: {delivery.error}")
        if delivered:
            status = action.status.model_copy(deep=True)
            status.notified = (status.notified + delivered)[-8:]
            await self._write_action(action, status)

    # --- housekeeping --------------------------------------------------------------------------

    async def _prune(self, entry: PolicyEntry) -> None:
        """Keep the newest N successful and N unsuccessful finished actions, like CronJob's history limits."""
        if entry.spec is None:
            return
        # A scale-back reads what Vigil recorded (the capacity before, what it set): keep those actions while
        # the incident is open or its scale-back runs.
        restoring = entry.written.restoring
        kept = {entry.written.incident, restoring.incident if restoring is not None and restoring.active else None} \
            if any(step.restore is not None for step in entry.spec.actions) else set()
        finished = [a for a in self.actions_of(entry) if a.phase is not None and a.phase.terminal
                    and a.incident not in kept]
        finished.sort(key=lambda a: (to_time(a.status.completed_at) or a.created, a.name), reverse=True)
        good = [a for a in finished if a.phase in _SUCCESSFUL]
        bad = [a for a in finished if a.phase not in _SUCCESSFUL]
        doomed = good[entry.spec.successful_actions_history_limit:] + bad[entry.spec.failed_actions_history_limit:]
        for action in doomed:
            try:
                await self.kube.request(
                    "DELETE", f"/apis/{API_VERSION}/namespaces/{action.namespace}/{api_action.PLURAL}/{action.name}")
            except kube.KubeError as exc:
                if exc.status != 404:
                    logger.warning("pruning %s/%s failed: %s", *action.id, exc)
                    continue
            self.remove_action(*action.id)

    async def _reregister(self, entry: PolicyEntry, now: float) -> None:
        """Put drained targets back once the detectors have been healthy for ``reregisterAfter``."""
        from vigil.adapters import aws as aws_adapter

        if entry.spec is None or entry.spec.paused or entry.written.incident:
            return
        detectors = self._matched(entry, entry.spec)
        for action in self.actions_of(entry):
            if action.phase != ActionPhase.SUCCEEDED or action.spec is None or action.status.intent is None:
                continue
            step = action.spec.step.deregister_target
            after = action.status.after or {}
            if step is None or step.reregister_after is None or after.get("reregisteredAt") \
                    or after.get("reregisterRefused"):
                continue
            wait = step.reregister_after_seconds or 0.0
            healthy = all(self._healthy_since(d) is not None and now - (self._healthy_since(d) or now) >= wait
                          for d in detectors)
            if not detectors or not healthy:
                continue
            executor = executors.EXECUTORS["deregisterTarget"]
            assert isinstance(executor, executors.DeregisterTarget)
            view = action.view()
            policy = preflight.PolicyView(entry.namespace, entry.uid, entry.spec, entry.written.incident)
            # RegisterTargets changes AWS too: the same re-check from the current policy (before any role is
            # assumed) and from the tags observed now.
            refused = preflight.check_reregister(view, policy, self.admin, self.provenance_key, None)
            aws = self.aws_for(action.spec.region, action.spec.role_arn)
            try:
                observed = None if refused is not None else \
                    await self._aws(executors.observe, aws, entry.spec.actions[action.spec.step_index]
                                    if action.spec.step_index < len(entry.spec.actions) else action.spec.step,
                                    [t.id for t in action.spec.targets if t.kind == "Instance"])
                refused = refused or preflight.check_reregister(view, policy, self.admin, self.provenance_key,
                                                                observed)
                if refused is not None:
                    status = action.status.model_copy(deep=True)
                    status.after = {**(status.after or {}), "reregisterRefused": refused[:500]}
                    if await self._write_action(action, status):
                        await self._event(action.involved, "Warning", notes.EngineEvent.REREGISTER_FAILED,
                                          f"not registered again: {refused}"[:1000])
                    continue
                called, gone = await self._aws(executor.reregister, aws, action.status.intent.parameters)
            except aws_adapter.AwsError as exc:
                self.metrics.aws_errors.labels(exc.operation or "RegisterTargets", exc.error_class.value).inc()
                await self._event(action.involved, "Warning", notes.EngineEvent.REREGISTER_FAILED,
                                  f"{exc.code}: {exc.message}")
                continue
            status = action.status.model_copy(deep=True)
            status.after = {**(status.after or {}), "reregisteredAt": _utc(now).isoformat()}
            if gone:
                status.after["notReregistered"] = gone
            status.aws_request_ids = (status.aws_request_ids + called.request_ids)[-50:]
            back = [i for i in action.status.intent.parameters["InstanceIds"] if i not in gone]
            message = (f"registered {', '.join(back)} again after {step.reregister_after} healthy" if back else
                       f"nothing registered again after {step.reregister_after} healthy")
            if gone:
                message += f"; {', '.join(gone)} left out: terminated (replaced)"
            if await self._write_action(action, status):
                await self._event(action.involved, "Normal", notes.EngineEvent.TARGETS_REREGISTERED, message)

    @staticmethod
    def _healthy_since(detector: DetectorEntry) -> float | None:
        status = detector.current
        if status.anomalous is not False:
            return None
        if not conditions.is_true(status.conditions, DetectorCondition.READY):
            return None
        condition = conditions.get(status.conditions, DetectorCondition.ANOMALOUS)
        return condition.last_transition_time.timestamp() if condition else None


def _on_detectors(spec: RemediationPolicySpec | None) -> bool:
    """Whether a policy reads detectors (else only alerts trigger it)."""
    return spec is not None and (spec.detector_selector is not None or bool(spec.detectors))
