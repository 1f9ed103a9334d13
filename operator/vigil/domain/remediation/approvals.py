"""Reading a human's decision off a RemediationAction, and retry timing.

Approval is an annotation (``vigil.dev/approve=true`` or ``vigil.dev/reject=true``)
so that plain ``kubectl annotate`` works and RBAC on ``patch`` governs who may
approve. Who decided is taken from ``vigil.dev/decided-by`` (``vigil approve``
sets it from the kubeconfig user); otherwise from ``metadata.managedFields``,
which names the client that wrote the annotation (the API records no user
there: the audit log has it). Reject wins over approve.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from vigil.api.v1alpha1.action import ACTOR_ANNOTATION, APPROVE_ANNOTATION, REJECT_ANNOTATION

TRUE = {"true", "yes", "1", "approved"}

#: Give up on Recoverable AWS errors after this many attempts (Failed, error class Recoverable).
MAX_ATTEMPTS = 6


class Outcome(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclasses.dataclass(frozen=True)
class ApprovalDecision:
    outcome: Outcome
    by: str = ""
    at: float | None = None
    via: str = ""
    message: str = ""


def _writer(managed_fields: Sequence[Mapping[str, Any]], annotation: str) -> tuple[str, float | None]:
    for entry in reversed(managed_fields):
        fields = entry.get("fieldsV1") or {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{annotation}" in annotations:
            when = entry.get("time")
            at = None
            if isinstance(when, str):
                at = datetime.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
            return f"{entry.get('manager', 'unknown')} (client; user in the audit log)", at
    return "unknown (the API does not record who; see the audit log)", None


def decide(
    annotations: Mapping[str, str],
    managed_fields: Sequence[Mapping[str, Any]],
    created: float,
    timeout: float,
    incident_open: bool,
    now: float,
) -> ApprovalDecision:
    rejected = annotations.get(REJECT_ANNOTATION, "").strip().lower() in TRUE
    approved = annotations.get(APPROVE_ANNOTATION, "").strip().lower() in TRUE
    if rejected or approved:
        annotation = REJECT_ANNOTATION if rejected else APPROVE_ANNOTATION
        actor = annotations.get(ACTOR_ANNOTATION)
        if actor:
            by, at, via = actor, now, "cli" if annotations.get("vigil.dev/decided-via") == "cli" else "annotation"
        else:
            by, found_at = _writer(managed_fields, annotation)
            at, via = found_at or now, "annotation"
        outcome = Outcome.REJECTED if rejected else Outcome.APPROVED
        return ApprovalDecision(outcome, by, at, via, f"{outcome.value} by {by}")
    if not incident_open:
        return ApprovalDecision(Outcome.EXPIRED, message="the incident ended before anyone approved")
    if now >= created + timeout:
        return ApprovalDecision(Outcome.EXPIRED, message=f"not approved within {timeout:.0f}s")
    return ApprovalDecision(Outcome.PENDING)


def backoff(attempt: int) -> float:
    """Seconds before retrying after the ``attempt``-th Recoverable failure: 5, 10, 20, ... capped at 300."""
    return float(min(300, 5 * 2 ** max(0, attempt - 1)))
