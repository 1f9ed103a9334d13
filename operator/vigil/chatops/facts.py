"""The facts an answer is built from, read from the Kubernetes API and nothing else.

Each fact is a small JSON-like dict with a ``kind`` (``action``, ``policy``, ``detector``, ``event``,
``actions``, ``status``, ``notFound``): the deterministic summary renders them, the LLM receives them as
tool results, and the chat message lists them. The summarisers (``*_fact``) are pure; the gatherers
read through a :class:`KubeReader`, which has only ``get`` and ``list``.

Everything here is hostile input: series labels, alert labels and Event messages are chosen by
whoever controls a query, an alert or an Event. They are copied as *data* (bounded, redacted),
never interpreted; :mod:`vigil.chatops.llm` hands them to the model as JSON tool results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol

from vigil.adapters import redaction
from vigil.api.v1alpha1 import action as api_action
from vigil.api.v1alpha1 import detector as api_detector
from vigil.api.v1alpha1 import policy as api_policy
from vigil.api.v1alpha1.common import API_VERSION
from vigil.domain import labels as shown

#: Longest string copied into a fact (a label value, a message, a query).
MAX_TEXT = 512
#: Most Events per object, newest kept.
MAX_EVENTS = 20
#: Most series of a detector listed.
MAX_SERIES = 10
#: Most actions in a history.
MAX_HISTORY = 30


class KubeReader(Protocol):
    """What the facts are read through: only reads. :class:`vigil.chatops.kubeio.ApiReader` is one."""

    async def get(self, api_version: str, plural: str, namespace: str | None,
                  name: str) -> dict[str, Any] | None: ...

    async def list(self, api_version: str, plural: str, namespace: str | None, *, label_selector: str = "",
                   field_selector: str = "", limit: int | None = None) -> list[dict[str, Any]]: ...


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """A bounded, redacted string."""
    cleaned = redaction.redact(str(value))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _data(value: Any, depth: int = 0) -> Any:
    """JSON-like ``value`` with every string bounded and redacted, and nesting and sizes capped."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if depth > 6:
        return "…"
    if isinstance(value, Mapping):
        return {text(k, 64): _data(v, depth + 1) for k, v in list(value.items())[:40]}
    if isinstance(value, (list, tuple)):
        return [_data(v, depth + 1) for v in list(value)[:40]]
    return text(value)


def _labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, Mapping):
        return {}
    bounded = shown.bounded({str(k): str(v) for k, v in labels.items()})
    return {k: redaction.redact(v) for k, v in bounded.items()}


def _conditions(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = status.get("conditions")
    if not isinstance(found, list):
        return []
    return [{"type": text(c.get("type"), 64), "status": text(c.get("status"), 16),
             "reason": text(c.get("reason"), 128), "message": text(c.get("message") or ""),
             "since": c.get("lastTransitionTime")}
            for c in found[:8] if isinstance(c, Mapping)]


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def action_fact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A RemediationAction: the step and targets, the evidence, the guard rails' verdict, before/after."""
    namespace, name = _meta(obj)
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    step = _dict(spec.get("step"))
    kind = next((k for k in api_policy.STEP_KINDS if k in step), None)
    reason = _dict(spec.get("reason"))
    decision = _dict(status.get("decision"))
    annotations = _dict(_dict(obj.get("metadata")).get("annotations"))
    phase = status.get("phase")
    return {
        "kind": "action", "namespace": namespace, "name": name,
        "created": status.get("createdAt") or _dict(obj.get("metadata")).get("creationTimestamp"),
        "policy": text(_dict(spec.get("policyRef")).get("name") or "", 253),
        "incident": text(spec.get("incident") or "", 128),
        "step": {"index": spec.get("stepIndex"), "name": text(step.get("name") or "", 253), "kind": kind,
                 "settings": _data(step.get(kind)) if kind else None},
        "targets": [_data(t) for t in (spec.get("targets") or [])[:20] if isinstance(t, Mapping)],
        "dryRun": bool(spec.get("dryRun")),
        "approvalRequired": bool(spec.get("approvalRequired")),
        "region": text(spec.get("region") or "", 32),
        "evidence": {
            "source": text(reason.get("source") or "", 32),
            "detector": text(reason.get("detector") or "", 253) or None,
            "alert": _labels(reason.get("alert")) or None,
            "series": [_labels(s) for s in (reason.get("series") or [])[:MAX_SERIES]],
            "score": reason.get("score"), "threshold": reason.get("threshold"),
            "anomalousSince": reason.get("anomalousSince"), "decidedAt": reason.get("time"),
            # The detector's explanation of its verdict (issue 15), e.g. "change point 12 min ago".
            "why": [text(w, 120) for w in (reason.get("why") or [])[:9] if isinstance(w, str)],
        },
        "phase": phase,
        "message": text(status.get("message") or ""),
        "skipReason": status.get("skipReason"),
        "guardRails": guard_verdict(phase, status.get("skipReason"), status.get("message")),
        "approval": {
            "required": bool(spec.get("approvalRequired")),
            "expiresAt": status.get("expiresAt"),
            "decidedBy": text(decision.get("by") or "", 253) or None,
            "decidedAt": decision.get("at"), "via": text(decision.get("via") or "", 64) or None,
            "requestedVia": text(annotations.get("vigil.dev/decided-via") or "", 64) or None,
        },
        "before": _data(status.get("before")) if status.get("before") is not None else None,
        "after": _data(status.get("after")) if status.get("after") is not None else None,
        "intent": _data({k: v for k, v in _dict(status.get("intent")).items() if k in ("operation", "attempt")}),
        "startedAt": status.get("startedAt"), "completedAt": status.get("completedAt"),
        "attempts": status.get("attempts"),
        "error": ({"class": status.get("errorClass"), "code": text(status.get("errorCode") or "", 128)}
                  if status.get("errorClass") or status.get("errorCode") else None),
        "conditions": _conditions(status),
    }


#: What the engine checks when it proposes an action (engine/remediation/engine.py) and just before the AWS
#: call (domain/remediation/preflight.py); a failure of either ends the action Skipped with the reason.
PROPOSAL_CHECKS = "paused, cooldown, rate limit, blast radius, detector freshness, target tags"
PREFLIGHT_CHECKS = ("provenance, the policy's step unchanged, the incident still open, the approval, the admin's "
                    "limits, target tags, cooldown, rate limit, blast radius")
_CALLED = frozenset({api_action.ActionPhase.EXECUTING.value, api_action.ActionPhase.SUCCEEDED.value,
                     api_action.ActionPhase.FAILED.value, api_action.ActionPhase.DRY_RUN.value})


def guard_verdict(phase: Any, skip_reason: Any, message: Any) -> dict[str, Any]:
    """Which guard rail refused the action, or which checks it has passed so far (from its phase)."""
    if phase == api_action.ActionPhase.SKIPPED.value:
        return {"refused": True, "by": text(skip_reason or "unknown", 64), "message": text(message or "")}
    if phase is None:
        return {"refused": False, "note": "the operator has not initialised the action yet"}
    if phase in _CALLED:
        return {"refused": False, "passed": [PROPOSAL_CHECKS, PREFLIGHT_CHECKS],
                "note": f"none refused it: passed when proposed ({PROPOSAL_CHECKS}) and just before the AWS call "
                        f"({PREFLIGHT_CHECKS})"}
    if phase in (api_action.ActionPhase.REJECTED.value, api_action.ActionPhase.EXPIRED.value):
        return {"refused": False, "passed": [PROPOSAL_CHECKS],
                "note": f"passed when proposed ({PROPOSAL_CHECKS}); it never reached the checks before the AWS call"}
    return {"refused": False, "passed": [PROPOSAL_CHECKS],
            "note": f"passed when proposed ({PROPOSAL_CHECKS}); checked again just before the AWS call "
                    f"({PREFLIGHT_CHECKS})"}


def policy_fact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A RemediationPolicy: phase, conditions, and the guard rails it sets."""
    namespace, name = _meta(obj)
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    approval = _dict(spec.get("approval"))
    last = _dict(status.get("lastAction"))
    steps = []
    for step in (spec.get("actions") or [])[:10]:
        if isinstance(step, Mapping):
            kind = next((k for k in api_policy.STEP_KINDS if k in step), None)
            steps.append({"name": text(step.get("name") or "", 253), "kind": kind})
    return {
        "kind": "policy", "namespace": namespace, "name": name,
        "phase": status.get("phase"),
        "conditions": _conditions(status),
        "detectors": [text(d, 253) for d in (spec.get("detectors") or [])[:20]],
        "detectorSelector": _data(spec.get("detectorSelector")) if spec.get("detectorSelector") else None,
        "alertSelector": _data(spec.get("alertSelector")) if spec.get("alertSelector") else None,
        "matchedDetectors": [text(d, 253) for d in (status.get("matchedDetectors") or [])[:20]],
        "steps": steps,
        "guardRails": {
            "paused": bool(spec.get("paused")), "dryRun": bool(spec.get("dryRun")),
            "approvalRequired": bool(approval.get("required")), "approvalTimeout": approval.get("timeout", "30m"),
            "cooldown": spec.get("cooldown", "10m"), "rateLimit": _data(spec.get("rateLimit")),
            "blastRadius": _data(spec.get("blastRadius")), "targetGuard": _data(spec.get("targetGuard")),
            "trigger": _data(spec.get("trigger")),
        },
        "cooldownUntil": status.get("cooldownUntil"),
        "incident": status.get("incident"), "incidentSince": status.get("incidentSince"),
        "escalationStep": status.get("escalationStep"), "inFlight": status.get("inFlight"),
        "lastAction": ({"name": text(last.get("name") or "", 253), "phase": last.get("phase"),
                        "time": last.get("time")} if last else None),
    }


def detector_fact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An AnomalyDetector: verdict, score against threshold, and its top series as status records them."""
    namespace, name = _meta(obj)
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    series = []
    for entry in (status.get("series") or [])[:MAX_SERIES]:
        if isinstance(entry, Mapping):
            series.append({"labels": _labels(entry.get("labels")), "score": entry.get("score"),
                           "state": entry.get("state"), "anomalous": entry.get("anomalous"),
                           "since": entry.get("since")})
    return {
        "kind": "detector", "namespace": namespace, "name": name,
        "query": text(spec.get("query") or ""),
        "interval": spec.get("interval"), "for": spec.get("for"),
        "anomalous": status.get("anomalous"), "anomalousSince": status.get("anomalousSince"),
        "score": status.get("score"), "threshold": status.get("threshold"),
        "lastEvaluation": status.get("lastEvaluationTime"),
        "seriesCount": status.get("seriesCount"), "anomalousSeries": status.get("anomalousSeries"),
        "missingSeries": status.get("missingSeries"),
        "series": series,
        "model": text(_dict(status.get("model")).get("name") or "", 128) or None,
        "conditions": _conditions(status),
    }


def event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
               or _dict(event.get("metadata")).get("creationTimestamp") or "")


def _sequence(event: Mapping[str, Any]) -> int:
    """The order the API server stored Events in, to order those of the same second (Event times are in
    seconds). resourceVersion is opaque by contract; an unreadable one sorts first and changes nothing else."""
    try:
        return int(str(_dict(event.get("metadata")).get("resourceVersion") or 0))
    except ValueError:
        return 0


def event_fact(event: Mapping[str, Any]) -> dict[str, Any]:
    involved = _dict(event.get("involvedObject") or event.get("regarding"))
    return {
        "kind": "event", "object": f"{text(involved.get('kind') or '', 64)}/{text(involved.get('name') or '', 253)}",
        "type": text(event.get("type") or "", 16), "reason": text(event.get("reason") or "", 128),
        "message": text(event.get("message") or event.get("note") or ""),
        "count": event.get("count"), "time": event_time(event), "sequence": _sequence(event),
    }


def not_found(kind: str, namespace: str, name: str) -> dict[str, Any]:
    return {"kind": "notFound", "object": kind, "namespace": namespace, "name": name}


# --- gatherers (read through the reader) ---------------------------------------------------------------

async def _together(*reads: Awaitable[Any]) -> list[Any]:
    """Run ``reads`` concurrently; when some fail, raise the first failure *in argument order*, so the
    answer names the same missing permission whichever request the server happened to answer first."""
    results = await asyncio.gather(*reads, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


async def events_about(reader: KubeReader, kind: str, namespace: str, name: str,
                       limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
    """The newest ``limit`` Events about one object, oldest first."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    found = await reader.list("v1", "events", namespace, field_selector=selector)
    mine = [e for e in found if _dict(e.get("involvedObject")).get("name") == name
            and _dict(e.get("involvedObject")).get("kind") == kind]
    mine.sort(key=lambda e: (event_time(e), _sequence(e)))
    return [event_fact(e) for e in mine[-limit:]]


async def get_action(reader: KubeReader, namespace: str, name: str) -> dict[str, Any] | None:
    obj = await reader.get(API_VERSION, api_action.PLURAL, namespace, name)
    return action_fact(obj) if obj is not None else None


async def get_policy(reader: KubeReader, namespace: str, name: str) -> dict[str, Any] | None:
    obj = await reader.get(API_VERSION, api_policy.PLURAL, namespace, name)
    return policy_fact(obj) if obj is not None else None


async def get_detector(reader: KubeReader, namespace: str, name: str) -> dict[str, Any] | None:
    obj = await reader.get(API_VERSION, api_detector.PLURAL, namespace, name)
    return detector_fact(obj) if obj is not None else None


def _created(obj: Mapping[str, Any]) -> str:
    """When the operator proposed it (status.createdAt; the object's creation time before the first status)."""
    return str(_dict(obj.get("status")).get("createdAt") or _dict(obj.get("metadata")).get("creationTimestamp") or "")


async def list_actions(reader: KubeReader, namespace: str, policy: str | None = None,
                       limit: int = MAX_HISTORY) -> list[dict[str, Any]]:
    """The newest ``limit`` actions (of one policy, if given), oldest first."""
    selector = f"{api_action.POLICY_LABEL}={policy[:63]}" if policy else ""
    found = await reader.list(API_VERSION, api_action.PLURAL, namespace, label_selector=selector)
    if policy:
        found = [a for a in found if _dict(_dict(a.get("spec")).get("policyRef")).get("name") == policy]
    found.sort(key=_created)
    return [action_fact(a) for a in found[-limit:]]


async def why(reader: KubeReader, namespace: str, name: str) -> list[dict[str, Any]]:
    """Everything that explains one action: itself, its policy, its detector, and their Events.

    The action is read first (it names the rest); the other reads run concurrently.
    """
    action = await get_action(reader, namespace, name)
    if action is None:
        return [not_found(api_action.KIND, namespace, name)]
    policy_name, detector_name = action["policy"], action["evidence"]["detector"]

    async def nothing() -> Any:
        return None

    (action_events, policy, policy_events, detector, detector_events) = await _together(
        events_about(reader, api_action.KIND, namespace, name),
        get_policy(reader, namespace, policy_name) if policy_name else nothing(),
        events_about(reader, api_policy.KIND, namespace, policy_name) if policy_name else nothing(),
        get_detector(reader, namespace, detector_name) if detector_name else nothing(),
        events_about(reader, api_detector.KIND, namespace, detector_name, limit=10) if detector_name else nothing(),
    )
    facts: list[dict[str, Any]] = [action]
    events: list[dict[str, Any]] = list(action_events)
    if policy_name:
        facts.append(policy if policy is not None else not_found(api_policy.KIND, namespace, policy_name))
        # The policy's Events about this action start with its name (engine: "NAME: message").
        events += [e for e in policy_events if e["message"].startswith(f"{name}:")]
    if detector_name:
        facts.append(detector if detector is not None else not_found(api_detector.KIND, namespace, detector_name))
        events += detector_events
    events.sort(key=lambda e: (str(e["time"]), e["sequence"]))
    facts += events[-MAX_EVENTS * 2:]
    return facts


async def history(reader: KubeReader, namespace: str, policy: str) -> list[dict[str, Any]]:
    found = await get_policy(reader, namespace, policy)
    if found is None:
        return [not_found(api_policy.KIND, namespace, policy)]
    actions = await list_actions(reader, namespace, policy)
    return [found, {"kind": "actions", "namespace": namespace, "policy": policy, "items": actions}]


async def status(reader: KubeReader, namespaces: Iterable[str | None]) -> list[dict[str, Any]]:
    """Detectors with their verdicts, policies with their phase, and the actions waiting for approval."""
    detectors: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for namespace in namespaces:
        found_detectors, found_policies, found_actions = await _together(
            reader.list(API_VERSION, api_detector.PLURAL, namespace),
            reader.list(API_VERSION, api_policy.PLURAL, namespace),
            reader.list(API_VERSION, api_action.PLURAL, namespace))
        detectors += [detector_fact(o) for o in found_detectors]
        policies += [policy_fact(o) for o in found_policies]
        pending += [action_fact(o) for o in found_actions
                    if _dict(o.get("status")).get("phase") == api_action.ActionPhase.PENDING_APPROVAL.value]
    return [{"kind": "status", "detectors": detectors, "policies": policies, "pendingApprovals": pending}]


async def policy_detectors(reader: KubeReader, namespace: str, policy: str, limit: int = 5) -> list[dict[str, Any]]:
    """A policy and the detectors it watches (its status' matched detectors, else the names in its spec)."""
    found = await get_policy(reader, namespace, policy)
    if found is None:
        return [not_found(api_policy.KIND, namespace, policy)]
    names = (found["matchedDetectors"] or found["detectors"])[:limit]
    detectors = await _together(*(get_detector(reader, namespace, n) for n in names))
    return [found, *[d if d is not None else not_found(api_detector.KIND, namespace, n)
                     for n, d in zip(names, detectors, strict=True)]]
