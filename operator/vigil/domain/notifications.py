"""Notification messages for Slack, Discord and generic webhooks, built purely from an event.

No I/O here: :mod:`vigil.adapters.notify` reads the webhook URLs and sends. Keeping
the rendering pure means every limit and every escape is tested without a network,
and the three channels cannot drift apart because they read one
:class:`NotificationEvent`.

Each chat service silently drops (Slack: ``invalid_blocks``) or refuses (Discord:
HTTP 400) a message that exceeds its limits, and a lost approval request is worse
than a truncated one. So every piece of text is clipped to the service's documented
limits here, with an ellipsis, after escaping.

Slack (Block Kit, incoming webhook)::

    {"text": <plain fallback for notifications>,
     "blocks": [header, section(mrkdwn summary), section(fields),
                section(approve/reject commands; ApprovalRequested only), context]}

Discord (webhook, one embed, no mentions ever parsed)::

    {"content": <short line>, "embeds": [{"title", "description", "color", "fields",
     "timestamp", "footer": {"text": "vigil"}}], "allowed_mentions": {"parse": []}}

Generic webhook, schema ``v1`` (every key always present; unknown values are ``null``)::

    {"version": "v1", "kind": <EventKind>, "time": <RFC 3339 UTC>, "dryRun": bool,
     "summary": str, "message": str,
     "policy": {"namespace": str, "name": str},
     "action": {"namespace": str, "name": str, "phase": str|null,
                "step": {"index": int|null, "name": str|null, "kind": str|null},
                "targets": [{"kind": str, "id": str, "group": str|null}],
                "before": object|null, "after": object|null,
                "approval": null | {"expiresAt": str|null,
                                    "approve": {"kubectl": str, "cli": str},
                                    "reject": {"kubectl": str, "cli": str}}},
     "reason": null | {"source": str, "detector": str|null, "alert": object|null,
                       "series": [object], "score": float|null, "threshold": float|null,
                       "anomalousSince": str|null, "time": str}}

Receivers may rely on this shape for ``version: v1``; additions bump nothing,
renames or removals bump the version.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vigil.api.v1alpha1.action import (
    APPROVE_ANNOTATION,
    REJECT_ANNOTATION,
    SHORT_NAMES,
    ActionPhase,
    Reason,
    RemediationActionSpec,
    RemediationActionStatus,
    Target,
)

WEBHOOK_SCHEMA_VERSION = "v1"
ELLIPSIS = "…"


class EventKind(enum.StrEnum):
    ACTION_PROPOSED = "ActionProposed"
    APPROVAL_REQUESTED = "ApprovalRequested"
    ACTION_EXECUTED = "ActionExecuted"
    #: A dry run: everything was decided and checked, nothing changed in AWS.
    ACTION_DRY_RUN = "ActionDryRun"
    ACTION_SKIPPED = "ActionSkipped"
    ACTION_FAILED = "ActionFailed"
    ACTION_REJECTED = "ActionRejected"
    ACTION_EXPIRED = "ActionExpired"


class EngineEvent(enum.StrEnum):
    """Event reasons the remediation engine posts besides the :class:`EventKind` ones (not notified)."""

    ACTION_APPROVED = "ActionApproved"
    ACTION_RETRYING = "ActionRetrying"
    TARGETS_REDUCED = "TargetsReduced"
    NOTIFICATION_FAILED = "NotificationFailed"
    REREGISTER_FAILED = "ReregisterFailed"
    TARGETS_REREGISTERED = "TargetsReregistered"
    COMMAND_SENT = "CommandSent"
    #: The scale-back after an incident reached the recorded capacity (or the group's floor).
    RESTORE_DONE = "RestoreDone"
    #: The scale-back stopped for good (changed outside Vigil, a new incident, a refused step).
    RESTORE_STOPPED = "RestoreStopped"


class ChannelKind(enum.StrEnum):
    """The channels of a policy's ``notify``; the values are its field names."""

    SLACK = "slack"
    DISCORD = "discord"
    WEBHOOK = "webhook"


_TITLES = {
    EventKind.ACTION_PROPOSED: "Action proposed",
    EventKind.APPROVAL_REQUESTED: "Approval requested",
    EventKind.ACTION_EXECUTED: "Action executed",
    EventKind.ACTION_DRY_RUN: "Dry run",
    EventKind.ACTION_SKIPPED: "Action skipped",
    EventKind.ACTION_FAILED: "Action failed",
    EventKind.ACTION_REJECTED: "Action rejected",
    EventKind.ACTION_EXPIRED: "Approval expired",
}

_DEFAULT_MESSAGES = {
    EventKind.ACTION_PROPOSED: "Vigil decided to act.",
    EventKind.APPROVAL_REQUESTED: "Vigil wants to act and waits for a human to approve.",
    EventKind.ACTION_EXECUTED: "The action completed.",
    EventKind.ACTION_DRY_RUN: "Dry run: Vigil would have acted; nothing was changed in AWS.",
    EventKind.ACTION_SKIPPED: "The action was skipped by a guard rail.",
    EventKind.ACTION_FAILED: "The action failed.",
    EventKind.ACTION_REJECTED: "The action was rejected; nothing was changed.",
    EventKind.ACTION_EXPIRED: "Nobody approved the action in time; nothing was changed.",
}

# Discord embed colours (24-bit RGB), chosen by outcome so a channel can be scanned at a glance.
RED = 0xE01E5A
ORANGE = 0xF2A33A
GREEN = 0x2EB67D
GREY = 0x95A5A6

_COLORS = {
    EventKind.ACTION_PROPOSED: ORANGE,
    EventKind.APPROVAL_REQUESTED: ORANGE,
    EventKind.ACTION_EXECUTED: GREEN,
    EventKind.ACTION_DRY_RUN: GREY,
    EventKind.ACTION_SKIPPED: GREY,
    EventKind.ACTION_FAILED: RED,
    EventKind.ACTION_REJECTED: GREY,
    EventKind.ACTION_EXPIRED: GREY,
}


class SlackLimits:
    """Block Kit limits (api.slack.com/reference/block-kit/blocks)."""

    HEADER_TEXT = 150
    SECTION_TEXT = 3000
    FIELDS = 10
    FIELD_TEXT = 2000
    BLOCKS = 50
    CONTEXT_TEXT = 2000
    FALLBACK_TEXT = 3000


class DiscordLimits:
    """Embed limits (discord.com/developers/docs/resources/message#embed-object-embed-limits)."""

    CONTENT = 2000
    TITLE = 256
    DESCRIPTION = 4096
    FIELDS = 25
    FIELD_NAME = 256
    FIELD_VALUE = 1024
    FOOTER = 2048
    TOTAL = 6000


# How many items of a list are spelled out before "and N more".
MAX_LISTED_TARGETS = 10
MAX_LISTED_SERIES = 5
MAX_LISTED_WHY = 3


@dataclasses.dataclass(frozen=True)
class NotificationEvent:
    """Something that happened to a RemediationAction that humans should hear about.

    Everything a message shows is here, so the builders need nothing else and a
    test can describe any situation in one literal.
    """

    kind: EventKind
    namespace: str
    policy: str
    action: str
    time: datetime.datetime
    phase: ActionPhase | None = None
    step_index: int | None = None
    step_name: str | None = None
    step_kind: str | None = None
    targets: tuple[Target, ...] = ()
    reason: Reason | None = None
    dry_run: bool = False
    message: str = ""
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    expires_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Command:
    """One human decision, spelled for kubectl and for the vigil CLI."""

    kubectl: str
    cli: str


def approve_command(namespace: str, action: str) -> Command:
    return Command(
        kubectl=f"kubectl annotate {SHORT_NAMES[0]} {action} {APPROVE_ANNOTATION}=true -n {namespace}",
        cli=f"vigil approve {action} -n {namespace}",
    )


def reject_command(namespace: str, action: str) -> Command:
    return Command(
        kubectl=f"kubectl annotate {SHORT_NAMES[0]} {action} {REJECT_ANNOTATION}=true -n {namespace}",
        cli=f"vigil reject {action} -n {namespace}",
    )


def event_for_action(
    kind: EventKind,
    namespace: str,
    name: str,
    spec: RemediationActionSpec,
    status: RemediationActionStatus | None,
    now: datetime.datetime,
) -> NotificationEvent:
    """The event for a RemediationAction as stored, so callers need not copy fields by hand."""
    status = status or RemediationActionStatus()
    return NotificationEvent(
        kind=kind,
        namespace=namespace,
        policy=spec.policy_ref.name,
        action=name,
        time=now,
        phase=status.phase,
        step_index=spec.step_index,
        step_name=spec.step.name,
        step_kind=spec.step.kind,
        targets=tuple(spec.targets),
        reason=spec.reason,
        dry_run=spec.dry_run,
        message=status.message or "",
        before=status.before,
        after=status.after,
        expires_at=status.expires_at,
    )


# --------------------------------------------------------------------------------------------------
# Text shared by all channels.
# --------------------------------------------------------------------------------------------------

def _utc(t: datetime.datetime) -> datetime.datetime:
    return t.replace(tzinfo=datetime.UTC) if t.tzinfo is None else t.astimezone(datetime.UTC)


def iso(t: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Kubernetes writes times."""
    return _utc(t).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in an ellipsis when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS if limit > 0 else ""


def title(event: NotificationEvent) -> str:
    """E.g. ``[dry-run] Approval requested: scale-up on prod/web-latency``."""
    prefix = "[dry-run] " if event.dry_run else ""
    return f"{prefix}{_TITLES[event.kind]}: {step_label(event)} on {event.namespace}/{event.policy}"


def step_label(event: NotificationEvent) -> str:
    return event.step_name or event.step_kind or event.action


def message(event: NotificationEvent) -> str:
    return event.message.strip() or _DEFAULT_MESSAGES[event.kind]


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def changes(event: NotificationEvent) -> list[tuple[str, str, str]]:
    """``(key, before, after)`` for every key of before/after, ``-`` where one side lacks it."""
    before, after = event.before or {}, event.after or {}
    keys = list(before) + [k for k in after if k not in before]
    return [(k, _value(before[k]) if k in before else "-", _value(after[k]) if k in after else "-") for k in keys]


def series_text(labels: Mapping[str, str]) -> str:
    """Prometheus notation: ``metric{a="1", b="2"}``."""
    name = labels.get("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def trigger_text(reason: Reason) -> tuple[str, str] | None:
    """``("detector", name)`` or ``("alert", alertname)``: what fired, for one line of text."""
    if reason.detector:
        return "detector", reason.detector
    if reason.alert is not None:
        return "alert", reason.alert.get("alertname") or series_text(reason.alert)
    return None


def score_text(reason: Reason | None) -> str | None:
    if reason is None or reason.score is None:
        return None
    if reason.threshold is None:
        return f"{reason.score:.2f}"
    return f"{reason.score:.2f} / {reason.threshold:.2f}"


def _more(shown: int, total: int) -> list[str]:
    return [f"and {total - shown} more"] if total > shown else []


def summary(event: NotificationEvent) -> str:
    """One plain line: the title and the message."""
    return f"{title(event)}. {message(event)}"


# --------------------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------------------

def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters (api.slack.com/reference/surfaces/formatting#escaping).

    Unescaped, ``<...>`` in a label value would become a link or a ``<!channel>`` ping.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def clip_mrkdwn(text: str, limit: int) -> str:
    """Like :func:`clip`, but never leaves half an ``&amp;``-style entity before the ellipsis."""
    if len(text) <= limit:
        return text
    head = _PARTIAL_ENTITY.sub("", text[: max(limit - 1, 0)])
    return head + ELLIPSIS


def _slack_code(text: str) -> str:
    # A backtick inside would end the code span early; Slack has no escape for it.
    return "`" + escape_mrkdwn(text.replace("`", "'")) + "`"


def _slack_field(name: str, value: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip_mrkdwn(f"*{name}*\n{value}", SlackLimits.FIELD_TEXT)}


def _slack_targets(targets: tuple[Target, ...]) -> str:
    if not targets:
        return "none"
    lines = [
        f"{escape_mrkdwn(t.kind)} {_slack_code(t.id)}" + (f" in {_slack_code(t.group)}" if t.group else "")
        for t in targets[:MAX_LISTED_TARGETS]
    ]
    return "\n".join(lines + _more(MAX_LISTED_TARGETS, len(targets)))


def _slack_step(event: NotificationEvent) -> str:
    number = f"#{event.step_index + 1} " if event.step_index is not None else ""
    kind = f" ({escape_mrkdwn(event.step_kind)})" if event.step_kind and event.step_name else ""
    return number + escape_mrkdwn(step_label(event)) + kind


def _slack_summary(event: NotificationEvent) -> str:
    lines = [f"{_slack_code(event.action)}: {escape_mrkdwn(message(event))}"]
    if event.reason is not None:
        trigger = trigger_text(event.reason)
        if trigger is not None:
            lines.append(f"*Trigger:* {trigger[0]} {_slack_code(trigger[1])}")
        if event.reason.series:
            shown = [_slack_code(series_text(s)) for s in event.reason.series[:MAX_LISTED_SERIES]]
            lines.append("*Anomalous series:* " + ", ".join(shown + _more(MAX_LISTED_SERIES, len(event.reason.series))))
        if event.reason.why:
            lines.append("*Why:* " + escape_mrkdwn("; ".join(event.reason.why[:MAX_LISTED_WHY])))
    return clip_mrkdwn("\n".join(lines), SlackLimits.SECTION_TEXT)


def _slack_fields(event: NotificationEvent) -> list[dict[str, Any]]:
    fields = [
        _slack_field("Policy", _slack_code(f"{event.namespace}/{event.policy}")),
        _slack_field("Step", _slack_step(event)),
        _slack_field("Phase", escape_mrkdwn(event.phase.value) if event.phase else "-"),
        _slack_field("Targets", _slack_targets(event.targets)),
    ]
    score = score_text(event.reason)
    if score is not None:
        fields.append(_slack_field("Score / threshold", score))
    diff = changes(event)
    if diff:
        fields.append(_slack_field("Before → After", "\n".join(
            f"{escape_mrkdwn(k)}: {escape_mrkdwn(b)} → {escape_mrkdwn(a)}" for k, b, a in diff)))
    return fields[: SlackLimits.FIELDS]


def _slack_approval(event: NotificationEvent) -> dict[str, Any]:
    approve, reject = approve_command(event.namespace, event.action), reject_command(event.namespace, event.action)
    deadline = f" (before {iso(event.expires_at)})" if event.expires_at else ""
    text = (
        f"*Approve*{deadline}:\n```{escape_mrkdwn(approve.kubectl)}```\nor {_slack_code(approve.cli)}\n"
        f"*Reject:*\n```{escape_mrkdwn(reject.kubectl)}```\nor {_slack_code(reject.cli)}"
    )
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip_mrkdwn(text, SlackLimits.SECTION_TEXT)}}


def slack_message(event: NotificationEvent) -> dict[str, Any]:
    """A Slack incoming-webhook payload with Block Kit blocks and a plain fallback ``text``."""
    context = [
        f"namespace {_slack_code(event.namespace)}",
        escape_mrkdwn(iso(event.time)),
        "*dry-run*: nothing changed in AWS" if event.dry_run else "live",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title(event), SlackLimits.HEADER_TEXT),
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_summary(event)}},
        {"type": "section", "fields": _slack_fields(event)},
    ]
    fallback = summary(event)
    if event.kind == EventKind.APPROVAL_REQUESTED:
        blocks.append(_slack_approval(event))
        fallback += f" Approve: {approve_command(event.namespace, event.action).kubectl}"
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": clip_mrkdwn(text, SlackLimits.CONTEXT_TEXT)} for text in context]})
    return {
        "text": clip_mrkdwn(escape_mrkdwn(fallback), SlackLimits.FALLBACK_TEXT),
        "blocks": blocks[: SlackLimits.BLOCKS],
    }


# --------------------------------------------------------------------------------------------------
# Discord
# --------------------------------------------------------------------------------------------------

_DISCORD_MARKDOWN = re.compile(r"([\\*_~|`>#\[\]])")


def escape_markdown(text: str) -> str:
    """Backslash Discord's markdown characters, so label values cannot format or fake links."""
    return _DISCORD_MARKDOWN.sub(r"\\\1", text)


def _discord_code(text: str) -> str:
    # Backslashes are literal inside code spans, so only the delimiter needs taking out.
    return "`" + text.replace("`", "'") + "`"


def _discord_field(name: str, value: str, inline: bool = True) -> dict[str, Any]:
    return {
        "name": clip(name, DiscordLimits.FIELD_NAME),
        "value": clip(value or "-", DiscordLimits.FIELD_VALUE),
        "inline": inline,
    }


def _discord_fields(event: NotificationEvent) -> list[dict[str, Any]]:
    number = f"#{event.step_index + 1} " if event.step_index is not None else ""
    kind = f" ({event.step_kind})" if event.step_kind and event.step_name else ""
    targets = [
        f"{escape_markdown(t.kind)} {_discord_code(t.id)}" + (f" in {_discord_code(t.group)}" if t.group else "")
        for t in event.targets[:MAX_LISTED_TARGETS]
    ] + _more(MAX_LISTED_TARGETS, len(event.targets))
    fields = [
        _discord_field("Policy", _discord_code(f"{event.namespace}/{event.policy}")),
        _discord_field("Action", _discord_code(event.action)),
        _discord_field("Step", number + escape_markdown(step_label(event) + kind)),
        _discord_field("Phase", event.phase.value if event.phase else "-"),
        _discord_field("Targets", "\n".join(targets) or "none", inline=False),
    ]
    score = score_text(event.reason)
    if score is not None:
        fields.append(_discord_field("Score / threshold", score))
    diff = changes(event)
    if diff:
        fields.append(_discord_field(
            "Before → After", "\n".join(f"{escape_markdown(k)}: {b} → {a}" for k, b, a in diff), inline=False))
    if event.kind == EventKind.APPROVAL_REQUESTED:
        approve, reject = approve_command(event.namespace, event.action), reject_command(event.namespace, event.action)
        deadline = f" (before {iso(event.expires_at)})" if event.expires_at else ""
        fields.append(_discord_field(f"Approve{deadline}", f"{_discord_code(approve.kubectl)}\nor "
                                     f"{_discord_code(approve.cli)}", inline=False))
        fields.append(_discord_field("Reject", f"{_discord_code(reject.kubectl)}\nor {_discord_code(reject.cli)}",
                                     inline=False))
    fields.append(_discord_field("Mode", "dry-run: nothing changed in AWS" if event.dry_run else "live"))
    return fields[: DiscordLimits.FIELDS]


def _discord_description(event: NotificationEvent) -> str:
    lines = [escape_markdown(message(event))]
    if event.reason is not None:
        trigger = trigger_text(event.reason)
        if trigger is not None:
            lines.append(f"**Trigger:** {trigger[0]} {_discord_code(trigger[1])}")
        if event.reason.series:
            shown = [_discord_code(series_text(s)) for s in event.reason.series[:MAX_LISTED_SERIES]]
            lines.append("**Anomalous series:** " + ", ".join(
                shown + _more(MAX_LISTED_SERIES, len(event.reason.series))))
        if event.reason.why:
            lines.append("**Why:** " + escape_markdown("; ".join(event.reason.why[:MAX_LISTED_WHY])))
    return clip("\n".join(lines), DiscordLimits.DESCRIPTION)


def embed_size(embed: Mapping[str, Any]) -> int:
    """The characters Discord counts towards the 6000 total of an embed."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += len(embed.get("footer", {}).get("text", ""))
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    return size


def _fit_embed(embed: dict[str, Any]) -> None:
    """Shrink the description, then the longest field values, then drop fields, to the total limit."""
    fields: list[dict[str, Any]] = embed["fields"]
    while (excess := embed_size(embed) - DiscordLimits.TOTAL) > 0:
        description = embed.get("description", "")
        longest = max(fields, key=lambda f: len(f["value"]), default=None)
        if len(description) > 256:
            embed["description"] = clip(description, max(len(description) - excess, 256))
        elif longest is not None and len(longest["value"]) > 64:
            longest["value"] = clip(longest["value"], max(len(longest["value"]) - excess, 64))
        elif fields:
            fields.pop()
        else:
            embed["description"] = clip(description, max(len(description) - excess, 0))


def discord_message(event: NotificationEvent) -> dict[str, Any]:
    """A Discord webhook payload: a short ``content`` line and one embed; mentions are never parsed."""
    embed: dict[str, Any] = {
        "title": clip(title(event), DiscordLimits.TITLE),
        "description": _discord_description(event),
        "color": _COLORS[event.kind],
        "fields": _discord_fields(event),
        "timestamp": iso(event.time),
        "footer": {"text": "vigil"},
    }
    _fit_embed(embed)
    return {
        "content": clip(f"Vigil: {escape_markdown(title(event))}", DiscordLimits.CONTENT),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }


# --------------------------------------------------------------------------------------------------
# Generic webhook
# --------------------------------------------------------------------------------------------------

def _command(command: Command) -> dict[str, str]:
    return {"kubectl": command.kubectl, "cli": command.cli}


def _reason(reason: Reason | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    return {
        "source": reason.source,
        "detector": reason.detector,
        "alert": dict(reason.alert) if reason.alert is not None else None,
        "series": [dict(s) for s in reason.series],
        "score": reason.score,
        "threshold": reason.threshold,
        "anomalousSince": iso(reason.anomalous_since) if reason.anomalous_since else None,
        "why": list(reason.why),
        "time": iso(reason.time),
    }


def _targets(targets: Iterable[Target]) -> list[dict[str, Any]]:
    return [{"kind": t.kind, "id": t.id, "group": t.group} for t in targets]


def webhook_body(event: NotificationEvent) -> dict[str, Any]:
    """The generic webhook body, schema ``v1`` (see the module docstring)."""
    approval = None
    if event.kind == EventKind.APPROVAL_REQUESTED:
        approval = {
            "expiresAt": iso(event.expires_at) if event.expires_at else None,
            "approve": _command(approve_command(event.namespace, event.action)),
            "reject": _command(reject_command(event.namespace, event.action)),
        }
    return {
        "version": WEBHOOK_SCHEMA_VERSION,
        "kind": event.kind.value,
        "time": iso(event.time),
        "dryRun": event.dry_run,
        "summary": title(event),
        "message": message(event),
        "policy": {"namespace": event.namespace, "name": event.policy},
        "action": {
            "namespace": event.namespace,
            "name": event.action,
            "phase": event.phase.value if event.phase else None,
            "step": {"index": event.step_index, "name": event.step_name, "kind": event.step_kind},
            "targets": _targets(event.targets),
            "before": dict(event.before) if event.before is not None else None,
            "after": dict(event.after) if event.after is not None else None,
            "approval": approval,
        },
        "reason": _reason(event.reason),
    }


def payload(channel: ChannelKind, event: NotificationEvent) -> dict[str, Any]:
    """The body to POST to a channel of the given kind."""
    match channel:
        case ChannelKind.SLACK:
            return slack_message(event)
        case ChannelKind.DISCORD:
            return discord_message(event)
        case ChannelKind.WEBHOOK:
            return webhook_body(event)
    raise ValueError(f"unknown channel kind {channel!r}")  # pragma: no cover - the enum is exhaustive
