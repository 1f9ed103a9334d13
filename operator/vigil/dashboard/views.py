"""What the pages show, read off raw Kubernetes objects: pure, no I/O, never raises on a bad object.

The objects come from the API server as JSON and anyone who can write one chooses its contents,
so every field is read defensively (a wrong type reads as absent) and every string is bounded.
The CRD schemas hold for objects the API server validated, but a page must still render for an
object written under an older schema, so nothing here trusts more than the JSON types.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vigil.api.v1alpha1 import action as action_api
from vigil.domain.remediation import approvals

#: Longest string shown from an object (a message, a label value); longer ones are cut with "…".
MAX_TEXT = 512
#: Most series labels shown per detector and most timeline entries per policy.
MAX_SERIES = 5
MAX_TIMELINE = 300


def text(value: object, limit: int = MAX_TEXT) -> str:
    """A string field, bounded; anything that is not a string, number or bool reads as ''."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    shown = str(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def shown_time(when: datetime.datetime | None) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def conditions(status: Mapping[str, Any]) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for raw in _list(status.get("conditions"))[:16]:
        raw = _map(raw)
        kind = text(raw.get("type"), 64)
        if kind:
            found[kind] = Condition(kind, text(raw.get("status"), 16), text(raw.get("reason"), 128),
                                    text(raw.get("message")))
    return found


@dataclasses.dataclass(frozen=True)
class Ref:
    namespace: str
    name: str


def ref(obj: Mapping[str, Any]) -> Ref:
    meta = _map(obj.get("metadata"))
    return Ref(text(meta.get("namespace"), 253), text(meta.get("name"), 253))


# --- detectors ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DetectorRow:
    ref: Ref
    verdict: str  # Anomalous, Normal, NotReady, Unknown
    score: float | None
    threshold: float | None
    history: list[float | None]
    since: datetime.datetime | None
    series_count: int | None
    anomalous_series: int | None
    top_series: list[tuple[str, float | None, str]]  # (labels as text, score, state)
    ready: Condition | None
    last_evaluation: datetime.datetime | None
    labels: list[tuple[str, str]]


def series_text(labels: Mapping[str, Any]) -> str:
    """``{k="v", ...}`` as PromQL prints a series (values bounded)."""
    pairs = [f'{text(k, 64)}="{text(v, 128)}"' for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))[:24]]
    return "{" + ", ".join(pairs) + "}"


def detector(obj: Mapping[str, Any]) -> DetectorRow:
    status = _map(obj.get("status"))
    conds = conditions(status)
    ready = conds.get("Ready")
    anomalous = status.get("anomalous")
    if ready is not None and ready.status == "False":
        verdict = "NotReady"
    elif anomalous is True:
        verdict = "Anomalous"
    elif anomalous is False:
        verdict = "Normal"
    else:
        verdict = "Unknown"
    history = [_number(_map(p).get("score")) for p in _list(status.get("scoreHistory"))[-100:]]
    series = [
        (series_text(_map(s.get("labels"))), _number(s.get("score")), text(s.get("state"), 32))
        for s in (_map(s) for s in _list(status.get("series"))[:MAX_SERIES])
    ]
    labels = _map(_map(obj.get("metadata")).get("labels"))
    count, flagged = _number(status.get("seriesCount")), _number(status.get("anomalousSeries"))
    return DetectorRow(
        ref=ref(obj), verdict=verdict, score=_number(status.get("score")),
        threshold=_number(status.get("threshold")), history=history,
        since=parse_time(status.get("anomalousSince")),
        series_count=None if count is None else int(count),
        anomalous_series=None if flagged is None else int(flagged),
        top_series=series, ready=ready, last_evaluation=parse_time(status.get("lastEvaluationTime")),
        labels=sorted((text(k, 64), text(v, 128)) for k, v in list(labels.items())[:24]),
    )


# --- policies -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolicyRow:
    ref: Ref
    phase: str
    allowed: Condition | None
    ready: Condition | None
    guard_rails: list[tuple[str, str]]  # (name, what it says now)
    incident: str
    last_action: str
    matched_detectors: list[str]


def _guard_rails(spec: Mapping[str, Any], status: Mapping[str, Any]) -> list[tuple[str, str]]:
    rails: list[tuple[str, str]] = []
    if spec.get("dryRun") is True:
        rails.append(("dry run", "decides and records, changes nothing in AWS"))
    approval = _map(spec.get("approval"))
    if approval.get("required") is True:
        rails.append(("approval", f"required, expires after {text(approval.get('timeout') or '30m', 32)}"))
    else:
        rails.append(("approval", "not required"))
    cooldown = text(spec.get("cooldown") or "10m", 32)
    until = parse_time(status.get("cooldownUntil"))
    rails.append(("cooldown", f"{cooldown}" + (f", until {shown_time(until)}" if until else "")))
    rate = _map(spec.get("rateLimit"))
    if rate:
        used = _number(status.get("actionsInWindow"))
        rails.append(("rate limit", f"{'?' if used is None else int(used)} of {text(rate.get('maxActions'), 16)} "
                                    f"actions per {text(rate.get('window') or '1h', 32)}"))
    blast = _map(spec.get("blastRadius"))
    if blast:
        parts = []
        if blast.get("maxInstances") is not None:
            parts.append(f"at most {text(blast.get('maxInstances'), 16)} instances")
        if blast.get("maxPercent") is not None:
            parts.append(f"at most {text(blast.get('maxPercent'), 16)}% of a group")
        rails.append(("blast radius", ", ".join(parts)))
    guard = _map(spec.get("targetGuard"))
    key = text(guard.get("tagKey") or "vigil.dev/managed", 128)
    rails.append(("target guard", f"targets must carry {key}={text(guard.get('tagValue') or 'true', 256)}"))
    in_flight = _number(status.get("inFlight"))
    if in_flight:
        rails.append(("in flight", f"{int(in_flight)} action(s) pending approval or executing"))
    return rails


def policy(obj: Mapping[str, Any]) -> PolicyRow:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    conds = conditions(status)
    last = _map(status.get("lastAction"))
    last_text = ""
    if last:
        last_text = f"{text(last.get('name'), 253)} ({text(last.get('phase'), 32)}, " \
                    f"{shown_time(parse_time(last.get('time')))})"
    return PolicyRow(
        ref=ref(obj), phase=text(status.get("phase"), 32) or "Unknown", allowed=conds.get("ActionAllowed"),
        ready=conds.get("Ready"), guard_rails=_guard_rails(spec, status), incident=text(status.get("incident"), 128),
        last_action=last_text, matched_detectors=[text(d, 253) for d in _list(status.get("matchedDetectors"))[:100]],
    )


# --- actions --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ActionRow:
    ref: Ref
    policy: str
    incident: str
    step: str
    operation: str
    phase: str
    message: str
    dry_run: bool
    approval_required: bool
    created: datetime.datetime | None
    expires: datetime.datetime | None
    started: datetime.datetime | None
    completed: datetime.datetime | None
    decision: str
    decided_at: datetime.datetime | None
    before: list[tuple[str, str, str]]  # (field, before, after)
    reason: str
    #: A decision written (annotations) that the operator has not acted on yet, e.g. "approved by alice".
    requested: str = ""

    @property
    def pending(self) -> bool:
        return self.phase == action_api.ActionPhase.PENDING_APPROVAL.value


def _flat(value: object, prefix: str = "", depth: int = 0) -> dict[str, str]:
    """A nested before/after document as dotted keys -> text, bounded in depth and size."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping) and depth < 4:
        for key, item in list(value.items())[:50]:
            out.update(_flat(item, f"{prefix}.{text(key, 64)}" if prefix else text(key, 64), depth + 1))
    elif isinstance(value, list):
        out[prefix] = text(", ".join(text(v, 128) for v in value[:20]) + (" …" if len(value) > 20 else ""))
    else:
        out[prefix] = text(value)
    return out


def before_after(status: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    before, after = _flat(status.get("before") or {}), _flat(status.get("after") or {})
    keys = list(dict.fromkeys([*before, *after]))[:60]
    return [(k, before.get(k, ""), after.get(k, "")) for k in keys if k]


def _step(spec: Mapping[str, Any]) -> tuple[str, str]:
    step = _map(spec.get("step"))
    kinds = [k for k in step if k not in ("name", "after")]
    kind = text(kinds[0], 64) if kinds else ""
    return text(step.get("name"), 253) or kind, kind


def _requested(annotations: Mapping[str, Any]) -> str:
    """What the decision annotations say (reject wins, as for the operator), or ''."""
    for annotation, verb in ((action_api.REJECT_ANNOTATION, "rejected"), (action_api.APPROVE_ANNOTATION, "approved")):
        if text(annotations.get(annotation), 32).strip().lower() in approvals.TRUE:
            who = text(annotations.get(action_api.ACTOR_ANNOTATION), 253) or "someone"
            via = text(annotations.get(action_api.VIA_ANNOTATION), 32)
            return f"{verb} by {who}" + (f" via {via}" if via else "")
    return ""


def action(obj: Mapping[str, Any]) -> ActionRow:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    labels = _map(_map(obj.get("metadata")).get("labels"))
    annotations = _map(_map(obj.get("metadata")).get("annotations"))
    step, kind = _step(spec)
    decision = _map(status.get("decision"))
    decided = ""
    if decision:
        decided = f"{text(decision.get('via'), 32)}: {text(decision.get('by'), 253)}"
    reason = _map(spec.get("reason"))
    why = text(reason.get("detector"), 253) or text(reason.get("source"), 64)
    score = _number(reason.get("score"))
    if score is not None:
        why += f" (score {score:.3f})"
    return ActionRow(
        ref=ref(obj), policy=text(_map(spec.get("policyRef")).get("name"), 253) or text(labels.get("vigil.dev/policy")),
        incident=text(spec.get("incident"), 128), step=step, operation=kind,
        phase=text(status.get("phase"), 32) or "New", message=text(status.get("message"), 1024),
        dry_run=spec.get("dryRun") is True, approval_required=spec.get("approvalRequired") is True,
        created=parse_time(status.get("createdAt")) or parse_time(_map(obj.get("metadata")).get("creationTimestamp")),
        expires=parse_time(status.get("expiresAt")), started=parse_time(status.get("startedAt")),
        completed=parse_time(status.get("completedAt")), decision=decided,
        decided_at=parse_time(decision.get("at")), before=before_after(status), reason=why,
        requested=_requested(annotations),
    )


def newest_first(rows: Iterable[ActionRow]) -> list[ActionRow]:
    epoch = datetime.datetime.fromtimestamp(0, datetime.UTC)
    return sorted(rows, key=lambda r: (r.created or epoch, r.ref.name), reverse=True)


# --- the incident timeline ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    at: datetime.datetime
    kind: str  # the object's kind
    name: str
    what: str  # an Event reason, or the action's milestone
    message: str
    warning: bool


def timeline(policy_name: str, policy_status: Mapping[str, Any], actions: Sequence[Mapping[str, Any]],
             events: Sequence[Mapping[str, Any]]) -> list[TimelineEntry]:
    """A policy's incidents in time order: its actions' milestones and the Events of the policy, its
    actions and the detectors it matched. ``actions`` are those labelled with the policy."""
    entries: list[TimelineEntry] = []
    names = {("RemediationPolicy", policy_name)}
    for raw in actions:
        row = action(raw)
        names.add(("RemediationAction", row.ref.name))
        milestones = [
            (row.created, "Proposed", f"step {row.step}" + (", needs approval" if row.approval_required else "")
             + (f"; trigger: {row.reason}" if row.reason else "")),
            (row.decided_at, "Decided", row.decision),
            (row.started, "Started", row.operation),
            (row.completed, row.phase, row.message),
        ]
        for at, what, message in milestones:
            if at is not None:
                entries.append(TimelineEntry(at, "RemediationAction", row.ref.name, what, message,
                                             what in ("Failed", "Expired", "Rejected")))
    for detector_name in _list(policy_status.get("matchedDetectors"))[:100]:
        names.add(("AnomalyDetector", text(detector_name, 253)))
    for raw in events:
        involved = _map(raw.get("involvedObject")) or _map(raw.get("regarding"))
        key = (text(involved.get("kind"), 64), text(involved.get("name"), 253))
        if key not in names:
            continue
        at = (parse_time(raw.get("lastTimestamp")) or parse_time(raw.get("eventTime"))
              or parse_time(raw.get("firstTimestamp"))
              or parse_time(_map(raw.get("metadata")).get("creationTimestamp")))
        if at is None:
            continue
        count = _number(raw.get("count"))
        message = text(raw.get("message") or raw.get("note"), 1024)
        if count and count > 1:
            message += f" (x{int(count)})"
        entries.append(TimelineEntry(at, key[0], key[1], text(raw.get("reason"), 128), message,
                                     raw.get("type") == "Warning"))
    # An action's end is both a milestone and the operator's Event of the same words: show it once.
    unique = list(dict.fromkeys(entries))
    unique.sort(key=lambda e: (e.at, e.kind, e.name))
    return unique[-MAX_TIMELINE:]
