"""In-memory views of RemediationPolicy and RemediationAction objects."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pydantic

from vigil.api.v1alpha1.action import (
    INCIDENT_LABEL,
    POLICY_LABEL,
    ActionPhase,
    RemediationActionSpec,
    RemediationActionStatus,
)
from vigil.api.v1alpha1.policy import RemediationPolicySpec, RemediationPolicyStatus
from vigil.domain.remediation.guards import ActionRecord
from vigil.domain.remediation.preflight import ActionView
from vigil.domain.remediation.restore import CapacityRecord

ObjectId = tuple[str, str]


def _errors(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _rv(meta: dict[str, Any]) -> int:
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


def _time(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass
class PolicyEntry:
    namespace: str
    name: str
    uid: str
    generation: int | None
    labels: dict[str, str]
    spec: RemediationPolicySpec | None
    spec_error: str | None
    written: RemediationPolicyStatus
    #: (incident, step, reason) for which a Skipped action was already recorded.
    skips: set[tuple[str, int, str]] = dataclasses.field(default_factory=set)
    #: (incident, step) refused at proposal → (what it depended on, re-check time, backoff seconds): a refused
    #: step is looked at again when the policy, the evidence or the work in flight changes, else after a backoff.
    refused: dict[tuple[str, int], tuple[object, float, float]] = dataclasses.field(default_factory=dict)
    #: When the last pass's decider says something changes on its own (None: only on an event).
    requeue_after: float | None = None
    #: Do not look at AWS for this policy again before this time (after a Recoverable error).
    aws_backoff_until: float = 0.0
    #: resourceVersion of the newest state we know (our own write or a watch event).
    resource_version: int = 0
    #: Why the due step is held back by the blast radius (reported in ActionAllowed), if it is.
    held_back: str | None = None
    #: Whether this replica's shard reconciles it (and drives its actions); others' policies are only held.
    owned: bool = True

    @property
    def id(self) -> ObjectId:
        return (self.namespace, self.name)

    @property
    def involved(self) -> dict[str, Any]:
        return {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy", "namespace": self.namespace,
                "name": self.name, "uid": self.uid}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PolicyEntry:
        meta = body.get("metadata", {})
        spec: RemediationPolicySpec | None = None
        error: str | None = None
        try:
            spec = RemediationPolicySpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            error = _errors(exc)
        try:
            status = RemediationPolicyStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError:
            status = RemediationPolicyStatus()
        return cls(meta.get("namespace", "default"), meta["name"], meta.get("uid", ""), meta.get("generation"),
                   dict(meta.get("labels") or {}), spec, error, status, resource_version=_rv(meta))


@dataclasses.dataclass
class ActionEntry:
    """The latest known state of one RemediationAction (from the watch or our own writes)."""

    namespace: str
    name: str
    uid: str
    resource_version: int
    labels: dict[str, str]
    annotations: dict[str, str]
    managed_fields: list[dict[str, Any]]
    created: float
    spec: RemediationActionSpec | None
    status: RemediationActionStatus
    raw_resource_version: str = ""
    owner_references: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def id(self) -> ObjectId:
        return (self.namespace, self.name)

    @property
    def policy(self) -> str:
        return self.labels.get(POLICY_LABEL, self.spec.policy_ref.name if self.spec else "")

    @property
    def incident(self) -> str:
        return self.labels.get(INCIDENT_LABEL, self.spec.incident if self.spec else "")

    @property
    def phase(self) -> ActionPhase | None:
        return self.status.phase

    @property
    def involved(self) -> dict[str, Any]:
        return {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationAction", "namespace": self.namespace,
                "name": self.name, "uid": self.uid}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ActionEntry:
        meta = body.get("metadata", {})
        try:
            spec: RemediationActionSpec | None = RemediationActionSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError:
            spec = None
        try:
            status = RemediationActionStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError:
            status = RemediationActionStatus()
        return cls(
            namespace=meta.get("namespace", "default"), name=meta["name"], uid=meta.get("uid", ""),
            resource_version=_rv(meta), labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}), managed_fields=list(meta.get("managedFields") or []),
            created=_time(meta.get("creationTimestamp")) or 0.0, spec=spec, status=status,
            raw_resource_version=str(meta.get("resourceVersion") or ""),
            owner_references=[dict(o) for o in meta.get("ownerReferences") or [] if isinstance(o, dict)],
        )

    def view(self) -> ActionView:
        """The execution-time check's view of this action (the spec must have parsed)."""
        assert self.spec is not None
        return ActionView(namespace=self.namespace, name=self.name, incident=self.incident, spec=self.spec,
                          status=self.status, annotations=self.annotations, owner_references=self.owner_references,
                          created=self.created)

    def record(self) -> ActionRecord:
        """The guard rails' view of this action."""
        instances: tuple[tuple[str, str | None], ...] = ()
        if self.spec is not None:
            instances = tuple((t.id, t.group) for t in self.spec.targets if t.kind == "Instance")
        phase = self.status.phase or (
            ActionPhase.PENDING_APPROVAL if self.spec and self.spec.approval_required else ActionPhase.APPROVED)
        completed = _time(self.status.completed_at)
        return ActionRecord(
            name=self.name, incident=self.incident, step_index=self.spec.step_index if self.spec else 0,
            phase=phase, created=_time(self.status.created_at) or self.created, completed=completed,
            instances=instances, error_code=self.status.error_code,
            restore=self.spec.restore.sequence if self.spec is not None and self.spec.restore is not None else 0,
        )

    def capacity(self) -> CapacityRecord | None:
        """The scale-back's view of this action, if it is a scale step (None otherwise)."""
        if self.spec is None or self.spec.step.scale_auto_scaling_group is None:
            return None
        record = self.record()

        def number(found: object) -> int | None:
            return found if isinstance(found, int) and not isinstance(found, bool) else None

        intent = self.status.intent
        return CapacityRecord(
            name=self.name, incident=self.incident, step_index=record.step_index, phase=record.phase,
            created=record.created, completed=record.completed, group=self.spec.step.scale_auto_scaling_group.name,
            before=number((self.status.before or {}).get("desiredCapacity")),
            set_to=number(intent.parameters.get("DesiredCapacity")) if intent is not None else None,
            restore=record.restore, skip_reason=self.status.skip_reason,
        )


def resource_version(body: dict[str, Any]) -> int:
    return _rv(body.get("metadata", {}))


def newer(incoming: dict[str, Any], known: ActionEntry | None) -> bool:
    """Whether a watch event carries a newer state than we hold (our own writes may be ahead of it)."""
    if known is None:
        return True
    return _rv(incoming.get("metadata", {})) >= known.resource_version


def to_time(value: Any) -> float | None:
    return _time(value)
