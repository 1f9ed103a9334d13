"""The scheduler's view of the AnomalyDetector objects, fed by kopf watch events."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from vigil.api.v1alpha1.detector import AnomalyDetectorSpec, AnomalyDetectorStatus, SeriesState
from vigil.domain import detection, durations, history
from vigil.domain import status as statuses
from vigil.domain.history import GridHistory, SeriesKey

DetectorId = tuple[str, str]  # (namespace, name)


@dataclasses.dataclass
class DetectorEntry:
    """One detector: what the user asked for, and what the engine remembers about it."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: AnomalyDetectorSpec | None
    spec_error: str | None
    #: The last status we know is on the server (read from the object, then what we wrote).
    written: AnomalyDetectorStatus
    #: The newest composed status; differs from ``written`` by what was not worth a write yet.
    current: AnomalyDetectorStatus
    last_write: float | None = None
    next_due: float = 0.0
    grid: GridHistory | None = None
    grid_identity: tuple[Any, ...] | None = None
    verdicts: dict[SeriesKey, detection.SeriesVerdict] = dataclasses.field(default_factory=dict)
    labels: dict[SeriesKey, dict[str, str]] = dataclasses.field(default_factory=dict)
    #: The object's own metadata.labels (RemediationPolicy.detectorSelector matches them).
    object_labels: dict[str, str] = dataclasses.field(default_factory=dict)
    #: resourceVersion of the newest state we know (our own status write or a watch event).
    resource_version: int = 0
    #: Whether this replica's shard evaluates it; other shards' detectors are only read (policies).
    owned: bool = True
    #: Consecutive evaluations refused for the size of Prometheus' answer (the back-off's count).
    refused: int = 0
    #: Whether this process has evaluated it yet (start-up progress: ``vigil_detectors_unevaluated``).
    evaluated: bool = False
    #: ``statuses.significant`` of the statuses last asked about (current and written are often one object).
    _significant: list[tuple[AnomalyDetectorStatus, object]] = dataclasses.field(default_factory=list, repr=False)

    def significant(self, status: AnomalyDetectorStatus) -> object:
        """``statuses.significant(status)``, computed once per status object (two remembered).

        The engine compares the newest status with the current one and with the written one on
        every evaluation; both were the newest once, so each status is summarised once, not three times.
        """
        for known, value in self._significant:
            if known is status:
                return value
        value = statuses.significant(status)
        self._significant = [*self._significant[-1:], (status, value)]
        return value

    @property
    def id(self) -> DetectorId:
        return (self.namespace, self.name)

    @property
    def involved(self) -> dict[str, Any]:
        return {
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "AnomalyDetector",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }

    def phase(self, interval: float) -> float:
        """A stable offset in [0, interval) that spreads detectors over the interval."""
        digest = hashlib.sha256(self.uid.encode()).digest()
        return (int.from_bytes(digest[:8], "big") / 2**64) * interval

    def schedule_after(self, now: float, interval: float) -> None:
        """Next due time: the next point of this detector's phase grid after ``now``."""
        phase = self.phase(interval)
        self.next_due = math.floor((now - phase) / interval + 1) * interval + phase


def _seed_verdicts(status: AnomalyDetectorStatus, for_seconds: float) -> dict[SeriesKey, detection.SeriesVerdict]:
    """Restore series verdicts from the stored status, so a restart does not reset 'for' timers.

    Like Prometheus restoring alert state: a series that was Anomalous stays Anomalous
    if it is still above the threshold at the first evaluation after a restart.
    """
    seeded = {}
    for series in status.series:
        if series.since is None:
            continue
        since = series.since.timestamp()
        pending_since: float | None = None
        if series.state == SeriesState.PENDING:
            pending_since = since
        elif series.state == SeriesState.ANOMALOUS or (series.state == SeriesState.MISSING and series.anomalous):
            pending_since = since - for_seconds
        seeded[history.series_key(series.labels)] = detection.SeriesVerdict(
            state=series.state, since=since, anomalous=series.anomalous,
            pending_since=pending_since, score=series.score,
        )
    return seeded


def written_at(status: AnomalyDetectorStatus, now: float) -> float | None:
    """When a stored status was written, as far as the object tells: its ``lastEvaluationTime``.

    The engine writes a status together with the evaluation time it carries, so a new process (a
    restart, an upgrade, a takeover) can continue the heartbeat from there instead of rewriting every
    detector's unchanged status at once (10,000 writes in the first minutes at N=10,000). A time in
    the future (clock skew, a hand-edited status) is not trusted: the first evaluation then writes.
    """
    if status.last_evaluation_time is None:
        return None
    at = status.last_evaluation_time.timestamp()
    return at if at <= now else None


def resource_version(meta: dict[str, Any]) -> int:
    """resourceVersion as a number, for ordering what we wrote against what the watch brings."""
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


def _status(body: dict[str, Any]) -> AnomalyDetectorStatus:
    try:
        return AnomalyDetectorStatus.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        return AnomalyDetectorStatus()


def _for_seconds(spec: AnomalyDetectorSpec | None) -> float:
    try:
        return durations.parse(spec.for_) if spec is not None else 0.0
    except ValueError:
        return 0.0


#: Whether this replica's shard owns an object: (namespace, name, labels) -> bool.
Owns = Callable[[str, str, Mapping[str, str]], bool]


class Registry:
    """Detectors by (namespace, name). Only the engine's task touches it (single event loop).

    It holds every detector the watch sees, including other shards' ones: a policy may match
    detectors of any shard and reads their verdicts from here (kept current by the watch). Only
    ``owned`` entries are ever due.
    """

    def __init__(self, owns: Owns | None = None) -> None:
        self.entries: dict[DetectorId, DetectorEntry] = {}
        self._owns = owns

    def _own(self, entry: DetectorEntry) -> None:
        entry.owned = self._owns is None or self._owns(entry.namespace, entry.name, entry.object_labels)

    def upsert(self, body: dict[str, Any], now: float) -> DetectorEntry:
        """Track a new or changed object. A new generation is evaluated at once."""
        meta = body.get("metadata", {})
        key = (meta.get("namespace", "default"), meta["name"])
        generation = meta.get("generation")
        entry = self.entries.get(key)
        version = resource_version(meta)
        if entry is not None and entry.uid == meta.get("uid") and version > entry.resource_version:
            # A status newer than ours was written elsewhere (the previous leader, while we stood by):
            # adopt it, so a takeover continues the verdicts instead of starting over.
            entry.resource_version = version
            stored = _status(body)
            if stored.model_dump() != entry.written.model_dump():
                entry.written = entry.current = stored
                entry.last_write = written_at(stored, now)
                entry.verdicts = _seed_verdicts(stored, _for_seconds(entry.spec))
        if entry is not None and entry.uid == meta.get("uid") and entry.generation == generation:
            labels = dict(meta.get("labels") or {})
            if labels != entry.object_labels:
                entry.object_labels = labels
                self._own(entry)  # a label change may move it into or out of a selector shard
            return entry  # our own status write, or a metadata-only change
        spec: AnomalyDetectorSpec | None = None
        error: str | None = None
        try:
            spec = AnomalyDetectorSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            error = "; ".join(
                f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
        stored = _status(body)
        if entry is None or entry.uid != meta.get("uid"):
            entry = DetectorEntry(
                namespace=key[0], name=key[1], uid=meta.get("uid", ""), generation=generation,
                spec=spec, spec_error=error, written=stored, current=stored, resource_version=version,
                last_write=written_at(stored, now),
            )
            if spec is not None:
                entry.verdicts = _seed_verdicts(stored, _for_seconds(spec))
                entry.labels = {history.series_key(s.labels): dict(s.labels) for s in stored.series}
            self.entries[key] = entry
            entry.object_labels = dict(meta.get("labels") or {})
        else:
            entry.object_labels = dict(meta.get("labels") or {})
            entry.generation = generation
            entry.spec = spec
            entry.spec_error = error
            entry.refused = 0  # an edited spec is tried at once, without the back-off
        self._own(entry)
        entry.next_due = now  # evaluate new and changed detectors right away
        return entry

    def remove(self, namespace: str, name: str) -> DetectorEntry | None:
        return self.entries.pop((namespace, name), None)

    def due(self, now: float, limit: int) -> list[DetectorEntry]:
        ready = [e for e in self.entries.values() if e.next_due <= now and e.owned]
        ready.sort(key=lambda e: e.next_due)
        return ready[:limit]

    def next_due(self) -> float | None:
        return min((e.next_due for e in self.entries.values() if e.owned), default=None)


def utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
