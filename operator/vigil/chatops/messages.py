"""The approval messages the ChatOps component posts, with buttons, and what they become once decided.

Built on :mod:`vigil.domain.notifications` (the same text, escaping and limits as the operator's
webhook messages), plus the interactive parts only a bot may post:

* Slack: an ``actions`` block (``block_id`` :data:`SLACK_BLOCK_ID`) with two buttons,
  ``action_id`` ``vigil_approve`` / ``vigil_reject``, ``value`` ``<namespace>/<action>``;
* Discord: one action row of two buttons, ``custom_id`` ``vigil_approve:<namespace>/<action>``
  (or ``vigil_approve:uid:<uid>`` when that would pass Discord's 100 characters).

Once decided (here, by CLI, or expired) the message is rebuilt without the buttons and the
kubectl commands, with one line saying who decided, as whom, when and how. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import pydantic

from vigil.api.v1alpha1 import action as api_action
from vigil.domain import notifications
from vigil.domain.notifications import EventKind, NotificationEvent
from vigil.domain.remediation import approvals

APPROVE_ID = "vigil_approve"
REJECT_ID = "vigil_reject"
SLACK_BLOCK_ID = "vigil_decision"
#: Discord's limit on a component's ``custom_id``.
DISCORD_CUSTOM_ID_MAX = 100
UID_PREFIX = "uid:"

#: Phases after a decision, and how a message names them.
_OUTCOMES = {
    api_action.ActionPhase.APPROVED: "Approved",
    api_action.ActionPhase.EXECUTING: "Approved",
    api_action.ActionPhase.SUCCEEDED: "Approved",
    api_action.ActionPhase.FAILED: "Approved",
    api_action.ActionPhase.REJECTED: "Rejected",
    api_action.ActionPhase.EXPIRED: "Expired",
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a decided message says: ``Approved by <who> as <identity> at <when> via <how>``."""

    verb: str
    by: str = ""
    identity: str = ""
    at: datetime.datetime | None = None
    via: str = ""
    phase: str = ""

    def text(self) -> str:
        parts = [self.verb]
        if self.by:
            parts.append(f"by {self.by}")
        if self.identity and self.identity != self.by:
            parts.append(f"as {self.identity}")
        if self.at is not None:
            parts.append(f"at {notifications.iso(self.at)}")
        if self.via:
            parts.append(f"via {self.via}")
        line = " ".join(parts)
        return f"{line} (now {self.phase})" if self.phase and self.phase != self.verb else line


def event_from_object(obj: Mapping[str, Any], now: datetime.datetime) -> NotificationEvent | None:
    """The notification event of a stored RemediationAction, or None when its spec does not parse."""
    metadata = obj.get("metadata") or {}
    try:
        spec = api_action.RemediationActionSpec.model_validate(obj.get("spec") or {})
        status = api_action.RemediationActionStatus.model_validate(obj.get("status") or {})
    except pydantic.ValidationError:
        return None
    return notifications.event_for_action(EventKind.APPROVAL_REQUESTED, str(metadata.get("namespace") or ""),
                                          str(metadata.get("name") or ""), spec, status, now)


def outcome_of(obj: Mapping[str, Any]) -> Outcome | None:
    """How a stored action was decided: from its status, or from the annotations while the operator has
    not acted on them yet (None while it still waits)."""
    status = obj.get("status") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if status.get("phase") == api_action.ActionPhase.PENDING_APPROVAL.value:
        for annotation, done in ((api_action.REJECT_ANNOTATION, "Rejected"),
                                 (api_action.APPROVE_ANNOTATION, "Approved")):
            if str(annotations.get(annotation, "")).strip().lower() in approvals.TRUE:
                return Outcome(done, by=str(annotations.get(api_action.ACTOR_ANNOTATION) or "")[:128],
                               via=str(annotations.get(api_action.VIA_ANNOTATION) or "annotation")[:32])
        return None
    try:
        phase = api_action.ActionPhase(str(status.get("phase") or ""))
    except ValueError:
        return None
    verb = _OUTCOMES.get(phase)
    if verb is None:
        return None
    decision = status.get("decision") or {}
    at = None
    if isinstance(decision.get("at"), str):
        try:
            at = datetime.datetime.fromisoformat(decision["at"].replace("Z", "+00:00"))
        except ValueError:
            at = None
    return Outcome(verb, by=str(decision.get("by") or "")[:128], at=at, via=str(decision.get("via") or "")[:32],
                   phase=phase.value)


# --------------------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------------------

def _button(action_id: str, label: str, style: str, value: str, confirm: str) -> dict[str, Any]:
    return {
        "type": "button", "action_id": action_id, "style": style, "value": value,
        "text": {"type": "plain_text", "text": label},
        "confirm": {"title": {"type": "plain_text", "text": f"{label}?"},
                    "text": {"type": "plain_text", "text": notifications.clip(confirm, 300)},
                    "confirm": {"type": "plain_text", "text": label},
                    "deny": {"type": "plain_text", "text": "Cancel"}},
    }


def slack_buttons(namespace: str, name: str) -> dict[str, Any]:
    value = f"{namespace}/{name}"
    return {"type": "actions", "block_id": SLACK_BLOCK_ID, "elements": [
        _button(APPROVE_ID, "Approve", "primary", value, f"Vigil will act on {value} as your Kubernetes identity."),
        _button(REJECT_ID, "Reject", "danger", value, f"Nothing will be changed for {value}."),
    ]}


def slack_approval(event: NotificationEvent) -> dict[str, Any]:
    """``chat.postMessage`` arguments (text, blocks) of an approval request with buttons."""
    message = notifications.slack_message(event)
    blocks: list[dict[str, Any]] = message["blocks"]
    # before the trailing context block; Block Kit allows 50 blocks, the builder uses at most 5
    blocks.insert(len(blocks) - 1, slack_buttons(event.namespace, event.action))
    return {"text": message["text"], "blocks": blocks[: notifications.SlackLimits.BLOCKS]}


def slack_decided(event: NotificationEvent | None, ref: str, outcome: Outcome) -> dict[str, Any]:
    """``chat.update`` arguments: the message without buttons or commands, with the outcome."""
    line = notifications.escape_mrkdwn(outcome.text())
    if event is None:
        text = f"{notifications.escape_mrkdwn(ref)}: {line}"
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
    decided = dataclasses.replace(event, kind=EventKind.ACTION_PROPOSED)  # no commands, no approval section
    message = notifications.slack_message(decided)
    blocks: list[dict[str, Any]] = message["blocks"]
    blocks[0] = {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": notifications.clip(
        f"{outcome.verb}: {notifications.step_label(event)} on {event.namespace}/{event.policy}",
        notifications.SlackLimits.HEADER_TEXT)}}
    blocks.insert(len(blocks) - 1, {"type": "section", "text": {"type": "mrkdwn", "text": notifications.clip_mrkdwn(
        f"*{line}*", notifications.SlackLimits.SECTION_TEXT)}})
    return {"text": notifications.clip_mrkdwn(f"{ref}: {line}", notifications.SlackLimits.FALLBACK_TEXT),
            "blocks": blocks}


# --------------------------------------------------------------------------------------------------
# Discord
# --------------------------------------------------------------------------------------------------

def discord_custom_id(verb_id: str, namespace: str, name: str, uid: str) -> str:
    """``vigil_approve:ns/name``, or ``vigil_approve:uid:<uid>`` when that is too long for Discord."""
    custom = f"{verb_id}:{namespace}/{name}"
    return custom if len(custom) <= DISCORD_CUSTOM_ID_MAX else f"{verb_id}:{UID_PREFIX}{uid}"


def discord_buttons(namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
    # type 1: action row; type 2: button; style 3 success (green), 4 danger (red)
    return [{"type": 1, "components": [
        {"type": 2, "style": 3, "label": "Approve", "custom_id": discord_custom_id(APPROVE_ID, namespace, name, uid)},
        {"type": 2, "style": 4, "label": "Reject", "custom_id": discord_custom_id(REJECT_ID, namespace, name, uid)},
    ]}]


def discord_approval(event: NotificationEvent, uid: str) -> dict[str, Any]:
    """The body of ``POST /channels/{id}/messages``: the webhook message plus the buttons."""
    message = notifications.discord_message(event)
    message["components"] = discord_buttons(event.namespace, event.action, uid)
    return message


def discord_decided(event: NotificationEvent | None, ref: str, outcome: Outcome) -> dict[str, Any]:
    """The message once decided: no buttons (``components: []``), no commands, the outcome on top."""
    line = notifications.escape_markdown(outcome.text())
    if event is None:
        return {"content": notifications.clip(f"{notifications.escape_markdown(ref)}: {line}",
                                              notifications.DiscordLimits.CONTENT),
                "embeds": [], "components": [], "allowed_mentions": {"parse": []}}
    message = notifications.discord_message(dataclasses.replace(event, kind=EventKind.ACTION_PROPOSED))
    embed = message["embeds"][0]
    embed["title"] = notifications.clip(f"{outcome.verb}: {notifications.step_label(event)} on "
                                        f"{event.namespace}/{event.policy}", notifications.DiscordLimits.TITLE)
    embed["color"] = notifications.GREEN if outcome.verb == "Approved" else notifications.GREY
    message["content"] = notifications.clip(f"Vigil: **{line}**", notifications.DiscordLimits.CONTENT)
    message["components"] = []
    return message
