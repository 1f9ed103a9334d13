"""The pure parts of ChatOps, as grids: the identity map, the plan of a decision, the command language,
replay memory, and the messages with and without buttons. No server, no network."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from vigil.chatops import approve, core, identity, messages
from vigil.chatops.approve import ActionRef, ChatUser, Verb
from vigil.chatops.identity import Identity, MapError, Platform
from vigil.domain import notifications
from vigil.domain.notifications import EventKind, NotificationEvent

MAP = identity.parse({
    "slack": [{"user": "U1", "as": {"user": "alice", "groups": ["sre"]}},
              {"group": "S1", "as": {"user": "oncall", "groups": ["sre", "ops"]}},
              {"group": "S2", "as": {"user": "second"}}],
    "discord": [{"user": "111", "as": {"user": "alice"}}, {"role": "222", "as": {"user": "discord-oncall"}}],
})


@pytest.mark.parametrize(("platform", "user", "groups", "expected"), [
    (Platform.SLACK, "U1", (), Identity("alice", ("sre",))),
    (Platform.SLACK, "U1", ("S1",), Identity("alice", ("sre",))),  # the user's own rule wins over a group's
    (Platform.SLACK, "U9", ("S1",), Identity("oncall", ("sre", "ops"))),
    (Platform.SLACK, "U9", ("S2", "S1"), Identity("oncall", ("sre", "ops"))),  # the first group rule in the file
    (Platform.SLACK, "U9", (), None),
    (Platform.SLACK, "111", (), None),  # a Discord id means nothing on Slack
    (Platform.DISCORD, "111", (), Identity("alice")),
    (Platform.DISCORD, "999", ("222",), Identity("discord-oncall")),
    (Platform.DISCORD, "999", ("S1",), None),
])
def test_resolve(platform: Platform, user: str, groups: tuple[str, ...], expected: Identity | None) -> None:
    assert MAP.resolve(platform, user, groups) == expected


def test_the_names_the_chart_grants_impersonation_of() -> None:
    assert MAP.users() == ("alice", "discord-oncall", "oncall", "second")
    assert MAP.all_groups() == ("ops", "sre")
    assert identity.member_groups(Platform.DISCORD, ["5", "222", "7"], MAP) == ("222",)


@pytest.mark.parametrize(("data", "words"), [
    ([], "must be a mapping"),
    ({"teams": []}, "unknown keys ['teams']"),
    ({"slack": [{"user": "U1"}]}, "slack[0].as: must be a mapping"),
    ({"slack": [{"user": "U1", "group": "S1", "as": {"user": "a"}}]}, "name exactly one of user or group"),
    ({"slack": [{"role": "S1", "as": {"user": "a"}}]}, "unknown keys ['role']"),
    ({"discord": [{"group": "1", "as": {"user": "a"}}]}, "unknown keys ['group']"),
    ({"slack": [{"user": "U 1", "as": {"user": "a"}}]}, "slack[0].user: must be a chat id"),
    ({"slack": [{"user": "U1", "as": {"user": "system:admin"}}]}, "system: identity"),
    ({"slack": [{"user": "U1", "as": {"user": "a", "groups": ["system:masters"]}}]}, "system: identity"),
    ({"slack": [{"user": "U1", "as": {"user": "a,b"}}]}, "without spaces, commas"),
    ({"slack": [{"user": "U1", "as": {"user": ""}}]}, "non-empty"),
    ({"slack": [{"user": "U1", "as": {"user": "a", "uid": "x"}}]}, "unknown keys ['uid']"),
    ({"slack": [{"user": "U1", "as": {"user": "a", "groups": ["g"] * 33}}]}, "at most 32"),
])
def test_a_malformed_map_is_refused(data: Any, words: str) -> None:
    with pytest.raises(MapError, match=None) as raised:
        identity.parse(data)
    assert words in str(raised.value)


def test_map_files(tmp_path: Any) -> None:
    path = tmp_path / "map.yaml"
    path.write_text('discord:\n  - user: 80351110224678912\n    as: {user: bob}\n')  # unquoted: still the id
    assert identity.load(path).resolve(Platform.DISCORD, "80351110224678912") == Identity("bob")
    path.write_text("x" * (identity.MAX_MAP_BYTES + 1))
    with pytest.raises(MapError, match="more than"):
        identity.load(path)
    with pytest.raises(MapError, match="No such file"):
        identity.load(tmp_path / "missing.yaml")
    path.write_text("slack: [")
    with pytest.raises(MapError, match="not YAML"):
        identity.load(path)


# --------------------------------------------------------------------------------------------------

def _action(phase: str | None = "PendingApproval", **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "shop", "resourceVersion": "42", "annotations": annotations},
            "status": {"phase": phase} if phase else {}}


CHAT = ChatUser(Platform.SLACK, "U1", "C1", ("S1",), "alice")
WHO = Identity("alice@example.com", ("sre", "ops"))
REF = ActionRef("shop", "a")


def test_the_plan_writes_what_vigil_approve_writes_plus_the_chat_record() -> None:
    assert approve.plan(_action(), Verb.APPROVE, REF, WHO, CHAT) == {"metadata": {
        "resourceVersion": "42",
        "annotations": {"vigil.dev/approve": "true", "vigil.dev/decided-by": "alice@example.com",
                        "vigil.dev/decided-via": "slack", "vigil.dev/chat-user": "slack:U1",
                        "vigil.dev/chat-channel": "C1", "vigil.dev/decided-groups": "sre,ops"}}}
    rejected = approve.plan(_action(), Verb.REJECT, REF, WHO, CHAT)
    assert isinstance(rejected, dict) and "vigil.dev/reject" in rejected["metadata"]["annotations"]


@pytest.mark.parametrize(("obj", "words"), [
    (None, "does not exist"),
    (_action("Succeeded"), "is Succeeded, not waiting for approval"),
    (_action(None), "not initialised yet"),
    (_action(**{"vigil.dev/approve": "true", "vigil.dev/decided-by": "bob"}), "already approved by bob"),
    (_action(**{"vigil.dev/reject": "true"}), "already rejected by someone"),
])
def test_nothing_to_decide(obj: dict[str, Any] | None, words: str) -> None:
    result = approve.plan(obj, Verb.APPROVE, REF, WHO, CHAT)
    assert isinstance(result, approve.Result) and result.status is approve.Status.REFUSED and words in result.text


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("shop/web-1", None, ActionRef("shop", "web-1")),
    ("  shop/web-1 ", None, ActionRef("shop", "web-1")),
    ("web-1", "shop", ActionRef("shop", "web-1")),
    ("web-1", None, approve.BadReference),
    ("Shop/web-1", None, approve.BadReference),
    ("shop/web_1", None, approve.BadReference),
    ("shop/../x", None, approve.BadReference),
    ("a/b/c", None, approve.BadReference),
    ("shop/" + "x" * 254, None, approve.BadReference),
])
def test_action_references(text: str, default: str | None, expected: Any) -> None:
    if isinstance(expected, ActionRef):
        assert approve.parse_ref(text, default) == expected
    else:
        with pytest.raises(expected):
            approve.parse_ref(text, default)


@pytest.mark.parametrize(("text", "kind", "argument"), [
    ("status", core.Kind.STATUS, ""),
    ("why shop/web-1", core.Kind.WHY, "shop/web-1"),
    ("  APPROVE   shop/web-1 ", core.Kind.APPROVE, "shop/web-1"),
    ("reject shop/web-1", core.Kind.REJECT, "shop/web-1"),
    ("history shop/web-policy", core.Kind.HISTORY, "shop/web-policy"),
    ("approve", core.Kind.HELP, ""),
    ("", core.Kind.HELP, ""),
    ("rm -rf /", core.Kind.HELP, ""),
])
def test_commands(text: str, kind: core.Kind, argument: str) -> None:
    command = core.parse_command(text)
    assert (command.kind, command.argument) == (kind, argument)
    assert command.verb == {core.Kind.APPROVE: Verb.APPROVE, core.Kind.REJECT: Verb.REJECT}.get(kind)


def test_replay_memory() -> None:
    now = [1000.0]
    guard = core.ReplayGuard(window=300, max_keys=3, clock=lambda: now[0])
    assert guard.first("sig:a", "trigger:1")
    assert not guard.first("sig:a")  # the same signature
    assert not guard.first("sig:b", "trigger:1")  # the same trigger, signed again
    assert guard.first("", "sig:c")  # empty keys are ignored
    now[0] += 301
    assert guard.first("sig:a")  # forgotten after the window: the timestamp check refuses it by then
    for key in ("k1", "k2", "k3", "k4", "k5"):
        assert guard.first(key)
    assert len(guard._seen) <= 4


# --------------------------------------------------------------------------------------------------

def _event() -> NotificationEvent:
    return NotificationEvent(kind=EventKind.APPROVAL_REQUESTED, namespace="shop", policy="web<!channel>",
                             action="web-1", time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
                             step_name="scale-out", message="waiting")


def test_slack_approval_has_the_buttons_and_decided_has_none() -> None:
    posted = messages.slack_approval(_event())
    [actions] = [b for b in posted["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["value"], e["style"]) for e in actions["elements"]] == [
        ("vigil_approve", "shop/web-1", "primary"), ("vigil_reject", "shop/web-1", "danger")]
    assert posted["blocks"][-1]["type"] == "context"
    assert "web&lt;!channel&gt;" in json.dumps(posted)  # escaped wherever Slack would read mrkdwn
    outcome = messages.Outcome("Approved", by="alice", identity="alice@example.com",
                               at=datetime.datetime(2026, 1, 1, 0, 5, tzinfo=datetime.UTC), via="slack")
    decided = messages.slack_decided(_event(), "shop/web-1", outcome)
    assert not [b for b in decided["blocks"] if b["type"] == "actions"]
    assert "kubectl" not in json.dumps(decided)
    assert decided["text"] == "shop/web-1: Approved by alice as alice@example.com at 2026-01-01T00:05:00Z via slack"
    assert messages.slack_decided(None, "shop/web-1", outcome)["blocks"][0]["type"] == "section"


def test_discord_custom_ids_fit_discords_limit() -> None:
    buttons = messages.discord_buttons("shop", "web-1", "uid-1")[0]["components"]
    assert [b["custom_id"] for b in buttons] == ["vigil_approve:shop/web-1", "vigil_reject:shop/web-1"]
    long = messages.discord_buttons("shop", "x" * 200, "0f0e0d0c-0000-0000-0000-000000000001")[0]["components"]
    assert long[0]["custom_id"] == "vigil_approve:uid:0f0e0d0c-0000-0000-0000-000000000001"
    assert all(len(b["custom_id"]) <= messages.DISCORD_CUSTOM_ID_MAX for b in long)
    decided = messages.discord_decided(_event(), "shop/web-1", messages.Outcome("Rejected", by="bob"))
    assert decided["components"] == [] and decided["embeds"][0]["color"] == notifications.GREY


@pytest.mark.parametrize(("obj", "text"), [
    ({"status": {"phase": "PendingApproval"}}, None),
    ({"status": {"phase": "PendingApproval"}, "metadata": {"annotations": {
        "vigil.dev/approve": "true", "vigil.dev/decided-by": "alice", "vigil.dev/decided-via": "cli"}}},
     "Approved by alice via cli"),
    ({"status": {"phase": "Succeeded", "decision": {"by": "bob", "at": "2026-01-01T00:00:00Z", "via": "discord"}}},
     "Approved by bob at 2026-01-01T00:00:00Z via discord (now Succeeded)"),
    ({"status": {"phase": "Expired"}}, "Expired"),
    ({"status": {"phase": "Nonsense"}}, None),
])
def test_outcome_of_a_stored_action(obj: dict[str, Any], text: str | None) -> None:
    outcome = messages.outcome_of(obj)
    assert (outcome.text() if outcome else None) == text
