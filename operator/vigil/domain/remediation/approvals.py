"""Reading a human's decision off a RemediationAction, and retry timing.

Approval is an annotation (``vigil.dev/approve=true`` or ``vigil.dev/reject=true``)
so that plain ``kubectl annotate`` works. Who may approve is the chart's
ValidatingAdmissionPolicy's call: it admits the annotation only from users
allowed the ``approve`` verb on ``remediationactions`` in the namespace, and
``vigil.dev/decided-by`` only when it equals the requesting user.

What the operator records, and how far each part can be trusted:

* ``at``: the ``time`` of the managedFields entry that wrote the annotation,
  set by the API server (attested), else the moment the operator saw it;
* ``by``: ``vigil.dev/decided-by`` if set (attested only where the admission
  policy runs), else the managedFields manager (chosen by the client: the
  audit log holds the authenticated user);
* ``field_manager``: that manager, kept beside ``by``.

Reject wins over approve.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from vigil.api.v1alpha1.action import ACTOR_ANNOTATION, APPROVE_ANNOTATION, REJECT_ANNOTATION, VIA_ANNOTATION

TRUE = {"true", "yes", "1", "approved"}
#: ``Decision.via`` values that mean a human decided (``policy`` means nobody had to).
APPROVAL_VIAS = frozenset({"annotation", "cli", "dashboard", "slack", "discord"})
#: The tools that say so in ``vigil.dev/decided-via`` (with ``vigil.dev/decided-by``); anything else is
#: recorded as ``annotation``. The tool is the client's word (unattested); who decided is the admission policy's.
STATED_VIAS = APPROVAL_VIAS - {"annotation"}

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
    field_manager: str | None = None


def _writer(managed_fields: Sequence[Mapping[str, Any]], annotation: str) -> tuple[str | None, float | None]:
    """The manager of the newest managedFields entry owning ``annotation``, and the server's time of it."""
    for entry in reversed(managed_fields):
        fields = entry.get("fieldsV1") or {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{annotation}" in annotations:
            when = entry.get("time")
            at = None
            if isinstance(when, str):
                try:
                    at = datetime.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    at = None
            manager = entry.get("manager")
            return (str(manager)[:128] if manager else None), at
    return None, None


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
        manager, written_at = _writer(managed_fields, annotation)
        actor = annotations.get(ACTOR_ANNOTATION, "").strip()[:253]
        stated = annotations.get(VIA_ANNOTATION, "").strip()
        via = stated if actor and stated in STATED_VIAS else "annotation"
        by = actor or (f"{manager} (field manager; the user is in the audit log)" if manager
                       else "unknown (see the audit log)")
        outcome = Outcome.REJECTED if rejected else Outcome.APPROVED
        return ApprovalDecision(outcome, by, written_at or now, via, f"{outcome.value} by {by}", manager)
    if not incident_open:
        return ApprovalDecision(Outcome.EXPIRED, message="the incident ended before anyone approved")
    if now >= created + timeout:
        return ApprovalDecision(Outcome.EXPIRED, message=f"not approved within {timeout:.0f}s")
    return ApprovalDecision(Outcome.PENDING)


def backoff(attempt: int) -> float:
    """Seconds before retrying after the ``attempt``-th Recoverable failure: 5, 10, 20, ... capped at 300."""
    return float(min(300, 5 * 2 ** max(0, attempt - 1)))
