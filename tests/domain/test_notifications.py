"""Slack, Discord and webhook messages: exact shapes, escaping, and the services' limits."""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

import pytest

from vigil.api.v1alpha1.action import (
    ActionPhase,
    Reason,
    RemediationActionSpec,
    RemediationActionStatus,
    Target,
)
from vigil.domain import notifications
from vigil.domain.notifications import ChannelKind, DiscordLimits, EventKind, NotificationEvent, SlackLimits

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
APPROVE = "kubectl annotate ra web-latency-7f3k2 vigil.dev/approve=true -n prod"
REJECT = "kubectl annotate ra web-latency-7f3k2 vigil.dev/reject=true -n prod"


def event(**changes: Any) -> NotificationEvent:
    base = NotificationEvent(
        kind=EventKind.APPROVAL_REQUESTED,
        namespace="prod",
        policy="web-latency",
        action="web-latency-7f3k2",
        time=T0,
        phase=ActionPhase.PENDING_APPROVAL,
        step_index=0,
        step_name="scale-up",
        step_kind="scaleAutoScalingGroup",
        targets=(Target(kind="AutoScalingGroup", id="web-asg"),),
        reason=Reason(source="detector", detector="web-p99", series=[{"__name__": "http_p99", "instance": "i-0abc"}],
                      score=0.97, threshold=0.8, time=T0),
        message="p99 latency anomalous for 5m",
        before={"desiredCapacity": 4},
        after={"desiredCapacity": 6},
        expires_at=T0 + datetime.timedelta(minutes=30),
    )
    return dataclasses.replace(base, **changes)


def huge_event(kind: EventKind = EventKind.APPROVAL_REQUESTED) -> NotificationEvent:
    """Every text far over every limit."""
    return event(
        kind=kind,
        policy="p" * 253,
        action="a" * 253,
        step_name="s" * 3000,
        message="m&<>" * 5000,
        targets=tuple(Target(kind="Instance", id=f"i-{n:017x}", group="g" * 2000) for n in range(100)),
        reason=Reason(source="detector", detector="d" * 5000,
                      series=[{"instance": f"i-{n}", "path": "/x" * 1000} for n in range(50)],
                      score=0.5, threshold=0.4, time=T0),
        before={f"k{n}": "v" * 500 for n in range(40)},
        after={f"k{n}": "w" * 500 for n in range(40)},
    )


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]
    for block in message["blocks"]:
        if block["type"] == "section":
            texts += [block["text"]["text"]] if "text" in block else [f["text"] for f in block["fields"]]
        if block["type"] == "context":
            texts += [e["text"] for e in block["elements"]]
    return texts


# --------------------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------------------

def test_slack_approval_request_is_block_kit() -> None:
    message = notifications.slack_message(event())
    assert message == {
        "text": "Approval requested: scale-up on prod/web-latency. p99 latency anomalous for 5m Approve: " + APPROVE,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                        "text": "Approval requested: scale-up on prod/web-latency"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                "`web-latency-7f3k2`: p99 latency anomalous for 5m\n"
                "*Trigger:* detector `web-p99`\n"
                '*Anomalous series:* `http_p99{instance="i-0abc"}`')}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Policy*\n`prod/web-latency`"},
                {"type": "mrkdwn", "text": "*Step*\n#1 scale-up (scaleAutoScalingGroup)"},
                {"type": "mrkdwn", "text": "*Phase*\nPendingApproval"},
                {"type": "mrkdwn", "text": "*Targets*\nAutoScalingGroup `web-asg`"},
                {"type": "mrkdwn", "text": "*Score / threshold*\n0.97 / 0.80"},
                {"type": "mrkdwn", "text": "*Before → After*\ndesiredCapacity: 4 → 6"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*Approve* (before 2024-05-01T12:30:00Z):\n```{APPROVE}```\n"
                "or `vigil approve web-latency-7f3k2 -n prod`\n"
                f"*Reject:*\n```{REJECT}```\nor `vigil reject web-latency-7f3k2 -n prod`")}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": "namespace `prod`"},
                {"type": "mrkdwn", "text": "2024-05-01T12:00:00Z"},
                {"type": "mrkdwn", "text": "live"},
            ]},
        ],
    }


def test_slack_executed_has_no_approval_section_and_shows_dry_run() -> None:
    message = notifications.slack_message(event(kind=EventKind.ACTION_EXECUTED, phase=ActionPhase.DRY_RUN,
                                                dry_run=True, message=""))
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "context"]
    assert message["blocks"][0]["text"]["text"] == "[dry-run] Action executed: scale-up on prod/web-latency"
    assert message["blocks"][1]["text"]["text"].startswith("`web-latency-7f3k2`: The action completed.\n")
    assert message["blocks"][3]["elements"][2]["text"] == "*dry-run*: nothing changed in AWS"
    assert "approve" not in message["text"].lower()


def test_slack_optional_fields_are_left_out() -> None:
    message = notifications.slack_message(event(kind=EventKind.ACTION_SKIPPED, reason=None, before=None, after=None,
                                                targets=(), phase=ActionPhase.SKIPPED, step_index=None,
                                                step_name=None))
    fields = [f["text"] for f in message["blocks"][2]["fields"]]
    assert fields == ["*Policy*\n`prod/web-latency`", "*Step*\nscaleAutoScalingGroup", "*Phase*\nSkipped",
                      "*Targets*\nnone"]
    assert message["blocks"][1]["text"]["text"] == "`web-latency-7f3k2`: p99 latency anomalous for 5m"


def test_slack_mrkdwn_is_escaped() -> None:
    hostile = event(
        message="<!channel> ping & <https://evil.example|click>",
        reason=Reason(source="alertmanager", alert={"alertname": "High<Latency>", "team": "a&b"},
                      series=[{"path": "/<script>", "q": "a`b"}], time=T0),
        targets=(Target(kind="Instance", id="i-0123456789abcdef0", group="grp<1>"),),
        before={"note": "<old>"}, after={"note": "a & b"},
    )
    message = notifications.slack_message(hostile)
    for text in mrkdwn_texts(message):
        assert "<" not in text and ">" not in text, text
        assert re.fullmatch(r"([^&]|&amp;|&lt;|&gt;)*", text, re.S), text
    summary = message["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt; ping &amp; &lt;https://evil.example|click&gt;" in summary
    assert "*Trigger:* alert `High&lt;Latency&gt;`" in summary
    assert "`{path=\"/&lt;script&gt;\", q=\"a'b\"}`" in summary  # a backtick would end the code span
    fields = [f["text"] for f in message["blocks"][2]["fields"]]
    assert "*Targets*\nInstance `i-0123456789abcdef0` in `grp&lt;1&gt;`" in fields
    assert "*Before → After*\nnote: &lt;old&gt; → a &amp; b" in fields
    # The header is plain_text, which Slack shows verbatim: no entities there.
    assert notifications.slack_message(event(step_name="a&b"))["blocks"][0]["text"]["text"].startswith(
        "Approval requested: a&b on")


@pytest.mark.parametrize("kind", list(EventKind))
def test_slack_limits_hold_for_huge_inputs(kind: EventKind) -> None:
    message = notifications.slack_message(huge_event(kind))
    blocks = message["blocks"]
    assert len(blocks) <= SlackLimits.BLOCKS
    header = blocks[0]["text"]["text"]
    assert len(header) == SlackLimits.HEADER_TEXT and header.endswith("…")
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= SlackLimits.SECTION_TEXT
        if block["type"] == "section" and "fields" in block:
            assert 1 <= len(block["fields"]) <= SlackLimits.FIELDS
            assert all(len(f["text"]) <= SlackLimits.FIELD_TEXT for f in block["fields"])
        if block["type"] == "context":
            assert all(len(e["text"]) <= SlackLimits.CONTEXT_TEXT for e in block["elements"])
    assert len(message["text"]) <= SlackLimits.FALLBACK_TEXT
    summary = blocks[1]["text"]["text"]
    # Up to 4 characters shorter: a cut "&amp;" is dropped whole.
    assert SlackLimits.SECTION_TEXT - 5 < len(summary) <= SlackLimits.SECTION_TEXT and summary.endswith("…")
    for text in mrkdwn_texts(message):  # clipping never leaves half an entity behind
        assert re.fullmatch(r"([^&]|&amp;|&lt;|&gt;)*", text, re.S), text[-20:]
    targets = next(f["text"] for f in blocks[2]["fields"] if f["text"].startswith("*Targets*"))
    assert len(targets) <= SlackLimits.FIELD_TEXT and targets.endswith("…")


def test_slack_lists_are_shortened_with_a_count() -> None:
    many = event(targets=tuple(Target(kind="Instance", id=f"i-{n:017x}") for n in range(12)),
                 reason=Reason(source="detector", detector="d", series=[{"i": str(n)} for n in range(7)], time=T0))
    message = notifications.slack_message(many)
    assert message["blocks"][1]["text"]["text"].endswith('`{i="4"}`, and 2 more')
    targets = message["blocks"][2]["fields"][3]["text"]
    assert targets.count("Instance `i-") == 10 and targets.endswith("\nand 2 more")


def test_clip_mrkdwn_drops_a_cut_entity() -> None:
    assert notifications.clip_mrkdwn("ab&amp;cd", 5) == "ab…"
    assert notifications.clip_mrkdwn("ab&amp;cd", 8) == "ab&amp;…"
    assert notifications.clip_mrkdwn("short", 5) == "short"
    assert notifications.clip("abcdef", 4) == "abc…"


# --------------------------------------------------------------------------------------------------
# Discord
# --------------------------------------------------------------------------------------------------

def test_discord_approval_request_is_one_embed() -> None:
    message = notifications.discord_message(event())
    assert message == {
        "content": "Vigil: Approval requested: scale-up on prod/web-latency",
        "embeds": [{
            "title": "Approval requested: scale-up on prod/web-latency",
            "description": "p99 latency anomalous for 5m\n**Trigger:** detector `web-p99`\n"
                           '**Anomalous series:** `http_p99{instance="i-0abc"}`',
            "color": 0xF2A33A,
            "fields": [
                {"name": "Policy", "value": "`prod/web-latency`", "inline": True},
                {"name": "Action", "value": "`web-latency-7f3k2`", "inline": True},
                {"name": "Step", "value": "#1 scale-up (scaleAutoScalingGroup)", "inline": True},
                {"name": "Phase", "value": "PendingApproval", "inline": True},
                {"name": "Targets", "value": "AutoScalingGroup `web-asg`", "inline": False},
                {"name": "Score / threshold", "value": "0.97 / 0.80", "inline": True},
                {"name": "Before → After", "value": "desiredCapacity: 4 → 6", "inline": False},
                {"name": "Approve (before 2024-05-01T12:30:00Z)",
                 "value": f"`{APPROVE}`\nor `vigil approve web-latency-7f3k2 -n prod`", "inline": False},
                {"name": "Reject", "value": f"`{REJECT}`\nor `vigil reject web-latency-7f3k2 -n prod`",
                 "inline": False},
                {"name": "Mode", "value": "live", "inline": True},
            ],
            "timestamp": "2024-05-01T12:00:00Z",
            "footer": {"text": "vigil"},
        }],
        "allowed_mentions": {"parse": []},
    }


@pytest.mark.parametrize(("kind", "color"), [
    (EventKind.ACTION_FAILED, notifications.RED),
    (EventKind.APPROVAL_REQUESTED, notifications.ORANGE),
    (EventKind.ACTION_PROPOSED, notifications.ORANGE),
    (EventKind.ACTION_EXECUTED, notifications.GREEN),
    (EventKind.ACTION_SKIPPED, notifications.GREY),
    (EventKind.ACTION_REJECTED, notifications.GREY),
    (EventKind.ACTION_EXPIRED, notifications.GREY),
])
def test_discord_colour_follows_the_outcome(kind: EventKind, color: int) -> None:
    embed = notifications.discord_message(event(kind=kind))["embeds"][0]
    assert embed["color"] == color
    names = [f["name"] for f in embed["fields"]]
    assert any(n.startswith("Approve") for n in names) is (kind == EventKind.APPROVAL_REQUESTED)
    assert (notifications.RED, notifications.ORANGE, notifications.GREEN, notifications.GREY) == (
        0xE01E5A, 0xF2A33A, 0x2EB67D, 0x95A5A6)


def test_discord_markdown_is_escaped_and_mentions_never_ping() -> None:
    message = notifications.discord_message(event(message="@everyone **bold** [click](https://evil.example) _x_"))
    embed = message["embeds"][0]
    assert embed["description"].startswith(r"@everyone \*\*bold\*\* \[click\](https://evil.example) \_x\_")
    assert message["allowed_mentions"] == {"parse": []}
    hostile_id = notifications.discord_message(event(targets=(Target(kind="Instance", id="i-`x`"),)))
    assert hostile_id["embeds"][0]["fields"][4]["value"] == "Instance `i-'x'`"


@pytest.mark.parametrize("kind", list(EventKind))
def test_discord_limits_hold_for_huge_inputs(kind: EventKind) -> None:
    message = notifications.discord_message(huge_event(kind))
    assert len(message["content"]) <= DiscordLimits.CONTENT
    (embed,) = message["embeds"]
    assert len(embed["title"]) == DiscordLimits.TITLE and embed["title"].endswith("…")
    assert len(embed["description"]) <= DiscordLimits.DESCRIPTION
    assert 1 <= len(embed["fields"]) <= DiscordLimits.FIELDS
    for field in embed["fields"]:
        assert 1 <= len(field["name"]) <= DiscordLimits.FIELD_NAME
        assert 1 <= len(field["value"]) <= DiscordLimits.FIELD_VALUE
    assert notifications.embed_size(embed) <= DiscordLimits.TOTAL
    assert embed["footer"] == {"text": "vigil"} and embed["timestamp"] == "2024-05-01T12:00:00Z"
    # The essentials survive the squeeze: who, what, and (for approvals) how to approve.
    names = [f["name"] for f in embed["fields"]]
    assert names[:3] == ["Policy", "Action", "Step"]
    if kind == EventKind.APPROVAL_REQUESTED:
        approve = next(f["value"] for f in embed["fields"] if f["name"].startswith("Approve"))
        assert "vigil.dev/approve=true -n prod`" in approve and not approve.endswith("…")


def test_embed_fitting_prefers_the_description_over_the_fields() -> None:
    embed: dict[str, Any] = {"title": "t", "description": "d" * 4000, "footer": {"text": "vigil"},
                             "fields": [{"name": "n", "value": "v" * 1000, "inline": True} for _ in range(4)]}
    notifications._fit_embed(embed)
    assert notifications.embed_size(embed) == DiscordLimits.TOTAL
    assert len(embed["description"]) < 4000 and all(len(f["value"]) == 1000 for f in embed["fields"])


# --------------------------------------------------------------------------------------------------
# Generic webhook
# --------------------------------------------------------------------------------------------------

def test_webhook_body_schema_v1() -> None:
    assert notifications.webhook_body(event()) == {
        "version": "v1",
        "kind": "ApprovalRequested",
        "time": "2024-05-01T12:00:00Z",
        "dryRun": False,
        "summary": "Approval requested: scale-up on prod/web-latency",
        "message": "p99 latency anomalous for 5m",
        "policy": {"namespace": "prod", "name": "web-latency"},
        "action": {
            "namespace": "prod",
            "name": "web-latency-7f3k2",
            "phase": "PendingApproval",
            "step": {"index": 0, "name": "scale-up", "kind": "scaleAutoScalingGroup"},
            "targets": [{"kind": "AutoScalingGroup", "id": "web-asg", "group": None}],
            "before": {"desiredCapacity": 4},
            "after": {"desiredCapacity": 6},
            "approval": {
                "expiresAt": "2024-05-01T12:30:00Z",
                "approve": {"kubectl": APPROVE, "cli": "vigil approve web-latency-7f3k2 -n prod"},
                "reject": {"kubectl": REJECT, "cli": "vigil reject web-latency-7f3k2 -n prod"},
            },
        },
        "reason": {
            "source": "detector", "detector": "web-p99", "alert": None,
            "series": [{"__name__": "http_p99", "instance": "i-0abc"}],
            "score": 0.97, "threshold": 0.8, "anomalousSince": None, "why": [], "time": "2024-05-01T12:00:00Z",
        },
    }


def test_the_detectors_evidence_is_in_every_channel() -> None:
    """Issue 15: the top evidence of the detector reaches Slack, Discord and the webhook, escaped."""
    why = ["change point 12 min ago (downward shift against the daily pattern)", "level *4.1* SDs below <!channel>"]
    reason = Reason(source="detector", detector="web-p99", series=[{"instance": "i-0abc"}], score=0.9,
                    threshold=0.5, why=why, time=datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC))
    e = event(reason=reason)
    assert notifications.webhook_body(e)["reason"]["why"] == why
    slack = "\n".join(mrkdwn_texts(notifications.slack_message(e)))
    assert ("*Why:* change point 12 min ago (downward shift against the daily pattern); level *4.1* SDs below "
            "&lt;!channel&gt;") in slack and "<!channel>" not in slack
    discord = notifications.discord_message(e)["embeds"][0]["description"]
    assert "**Why:** change point 12 min ago" in discord and "\\*4.1\\*" in discord


def test_webhook_body_keeps_every_key_when_values_are_unknown() -> None:
    body = notifications.webhook_body(NotificationEvent(
        kind=EventKind.ACTION_FAILED, namespace="ns", policy="p", action="a",
        time=datetime.datetime(2024, 5, 1, 14, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        dry_run=True))
    assert body == {
        "version": "v1", "kind": "ActionFailed", "time": "2024-05-01T12:00:00Z", "dryRun": True,
        "summary": "[dry-run] Action failed: a on ns/p", "message": "The action failed.",
        "policy": {"namespace": "ns", "name": "p"},
        "action": {"namespace": "ns", "name": "a", "phase": None, "step": {"index": None, "name": None, "kind": None},
                   "targets": [], "before": None, "after": None, "approval": None},
        "reason": None,
    }


def test_payload_dispatches_by_channel() -> None:
    e = event()
    assert notifications.payload(ChannelKind.SLACK, e) == notifications.slack_message(e)
    assert notifications.payload(ChannelKind.DISCORD, e) == notifications.discord_message(e)
    assert notifications.payload(ChannelKind.WEBHOOK, e) == notifications.webhook_body(e)


# --------------------------------------------------------------------------------------------------
# From a RemediationAction
# --------------------------------------------------------------------------------------------------

def test_event_for_action_reads_spec_and_status() -> None:
    spec = RemediationActionSpec.model_validate({
        "policyRef": {"name": "web-latency", "uid": "u-1"},
        "incident": "inc-1",
        "stepIndex": 1,
        "step": {"name": "replace", "replaceInstance": {"targets": {"fromLabel": "instance_id"}}},
        "targets": [{"kind": "Instance", "id": "i-0123456789abcdef0", "group": "web-asg"}],
        "reason": {"source": "alertmanager", "alert": {"alertname": "HostDown"}, "time": "2024-05-01T12:00:00Z"},
        "dryRun": True,
        "approvalRequired": True,
        "region": "eu-west-1",
    })
    status = RemediationActionStatus.model_validate({
        "phase": "Failed", "message": "AccessDenied", "before": {"health": "Healthy"},
        "after": {"health": "Unhealthy"},
    })
    e = notifications.event_for_action(EventKind.ACTION_FAILED, "prod", "web-latency-x1", spec, status, T0)
    assert e == NotificationEvent(
        kind=EventKind.ACTION_FAILED, namespace="prod", policy="web-latency", action="web-latency-x1", time=T0,
        phase=ActionPhase.FAILED, step_index=1, step_name="replace", step_kind="replaceInstance",
        targets=(Target(kind="Instance", id="i-0123456789abcdef0", group="web-asg"),), reason=spec.reason,
        dry_run=True, message="AccessDenied", before={"health": "Healthy"}, after={"health": "Unhealthy"},
    )
    slack = notifications.slack_message(e)
    assert "*Trigger:* alert `HostDown`" in slack["blocks"][1]["text"]["text"]
    assert notifications.event_for_action(EventKind.ACTION_PROPOSED, "prod", "x", spec, None, T0).phase is None
