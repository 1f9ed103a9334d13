"""Slack end to end: approval message with buttons → a signed button press → approved in Kubernetes as the
mapped person (impersonation, RBAC, admission policy, audit log all real) → the message rewritten in place.

Slack itself is vigil_sandbox/slackapi.py, the demo's stand-in too (its Web API, Socket Mode and response
URLs, as documented); the requests "from Slack" are signed with the signing secret exactly as Slack signs
them (v0, HMAC-SHA256 over ``v0:<timestamp>:<body>``, by slack_sdk's own SignatureVerifier). Kubernetes is
the real kube-apiserver with the chart's RBAC and admission policy (tests/chatops/conftest.py).
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chatops.conftest import CHATOPS_USER, ChatopsProcess, Cluster, secret_file
from tests.harness import wait_for
from vigil_sandbox import slackapi
from vigil_sandbox.slackapi import SlackServer, form

CHANNEL = "C0APPROVALS"
HTTP_NS = "chat-slack-http"
SOCKET_NS = "chat-slack-socket"


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackServer]:
    with SlackServer(channels=(CHANNEL,), usergroups={"S0ONCALL": ["U0CAROL", "U0DAVE"]}) as server:
        yield server


def _tokens(directory: pathlib.Path) -> list[str]:
    return ["--slack-bot-token-file", secret_file(directory, "bot-token", slackapi.BOT_TOKEN),
            "--slack-app-token-file", secret_file(directory, "app-token", slackapi.APP_TOKEN),
            "--slack-signing-secret-file", secret_file(directory, "signing-secret", slackapi.SIGNING_SECRET)]


@pytest.fixture(scope="module")
def http_mode(cluster: Cluster, slack: SlackServer,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatopsProcess]:
    workdir = tmp_path_factory.mktemp("slack-http")
    process = ChatopsProcess(cluster, workdir, [
        "-n", cluster.namespace(HTTP_NS), "--slack-mode", "http", "--slack-channel", CHANNEL,
        "--slack-api-url", slack.api_url, *_tokens(workdir)], name="chatops-http").start()
    yield process
    process.stop()
    _no_secret_in(process.log())


def _no_secret_in(log: str) -> None:
    for secret in (slackapi.BOT_TOKEN, slackapi.APP_TOKEN, slackapi.SIGNING_SECRET):
        assert secret not in log


def _posted(slack: SlackServer, namespace: str, name: str) -> dict[str, Any]:
    """The chat.postMessage of this action's approval request (with its buttons)."""
    value = f"{namespace}/{name}"

    def buttons(args: dict[str, Any]) -> bool:
        return any(b.get("type") == "actions" and any(e.get("value") == value for e in b["elements"])
                   for b in args.get("blocks") or [])

    return slack.wait_call("chat.postMessage", buttons)


def _ts_of(slack: SlackServer, namespace: str, name: str) -> str:
    """The ``ts`` of the message posted for this action (first posted, as the component keeps it)."""
    value = json.dumps(f"{namespace}/{name}")
    return min(ts for (_, ts), message in slack.messages.items() if value in json.dumps(message["blocks"]))


def _block_actions(user: str, action_id: str, value: str, ts: str, slack: SlackServer) -> dict[str, Any]:
    """A block_actions payload as Slack sends it when a button of a bot message is pressed."""
    return slackapi.block_actions(user, action_id, value, ts, CHANNEL, slack.response_url())


def _signed(body: str, timestamp: int | None = None) -> dict[str, str]:
    return slackapi.signed(body, timestamp)


def _ephemeral_to(slack: SlackServer, user: str, words: str) -> dict[str, Any]:
    return slack.wait_call("chat.postEphemeral", lambda a: a.get("user") == user and words in a.get("text", ""))


def test_http_mode_button_press_approves_as_the_mapped_identity(cluster: Cluster, slack: SlackServer,
                                                                http_mode: ChatopsProcess) -> None:
    name = "web-scale-out-i-1-s1"
    cluster.pending(HTTP_NS, name)
    posted = _posted(slack, HTTP_NS, name)
    assert posted["channel"] == CHANNEL
    actions = next(b for b in posted["blocks"] if b["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == ["vigil_approve", "vigil_reject"]
    ts = _ts_of(slack, HTTP_NS, name)
    value = f"{HTTP_NS}/{name}"

    # unmapped: a polite refusal only that person sees; nothing changes in Kubernetes
    body = form(_block_actions("U0MALLORY", "vigil_approve", value, ts, slack))
    assert http_mode.post("/slack/events", body.encode(), _signed(body))[0] == 200
    refusal = _ephemeral_to(slack, "U0MALLORY", "not mapped to a Kubernetes identity")
    assert refusal["channel"] == CHANNEL
    # mapped to bob, whom RBAC grants nothing: Kubernetes refuses, and says so
    body = form(_block_actions("U0BOB", "vigil_approve", value, ts, slack))
    assert http_mode.post("/slack/events", body.encode(), _signed(body))[0] == 200
    assert "Kubernetes refused to let bob@example.com approve" in _ephemeral_to(slack, "U0BOB", "refused")["text"]
    assert "vigil.dev/approve" not in cluster.annotations(HTTP_NS, name)
    assert not cluster.audit(HTTP_NS, name)  # neither got as far as a patch

    # alice, mapped to alice@example.com in the group sre (bound to the approver role)
    press = form(_block_actions("U0ALICE", "vigil_approve", value, ts, slack))
    headers = _signed(press)
    assert http_mode.post("/slack/events", press.encode(), headers)[0] == 200
    annotations = wait_for(lambda: (a := cluster.annotations(HTTP_NS, name)).get("vigil.dev/approve") and a,
                           what="the approval annotation")
    assert {k: v for k, v in annotations.items() if k != "vigil.dev/provenance"} == {
        "vigil.dev/approve": "true", "vigil.dev/decided-by": "alice@example.com",
        "vigil.dev/decided-via": "slack", "vigil.dev/chat-user": "slack:U0ALICE",
        "vigil.dev/chat-channel": CHANNEL, "vigil.dev/decided-groups": "sre"}
    # the audit log: sent by the component's ServiceAccount, as alice (impersonated), admitted
    [patch] = cluster.audit(HTTP_NS, name)
    assert patch["user"]["username"] == CHATOPS_USER
    assert patch["impersonatedUser"]["username"] == "alice@example.com"
    assert "sre" in patch["impersonatedUser"]["groups"]
    assert patch["responseStatus"]["code"] == 200
    managers = {e["manager"] for e in cluster.action(HTTP_NS, name)["metadata"]["managedFields"]}
    assert "vigil-chatops" in managers

    # the message, rewritten in place: no buttons, who decided as whom and when
    update = slack.wait_call("chat.update", lambda a: a.get("ts") == ts)
    assert update["channel"] == CHANNEL
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    assert "Approved by u0alice as alice@example.com at " in update["text"] and "via slack" in update["text"]
    assert "kubectl annotate" not in json.dumps(update["blocks"])

    # replays: the same request again (Bolt would take it, the timestamp is fresh), and a correctly signed
    # press from ten minutes ago: both refused with 401 before any handler runs
    updates = len(slack.called("chat.update"))
    assert http_mode.post("/slack/events", press.encode(), headers) == (401, b"replayed request")
    stale = form(_block_actions("U0ALICE", "vigil_reject", value, ts, slack))
    assert http_mode.post("/slack/events", stale.encode(), _signed(stale, int(time.time()) - 600))[0] == 401
    forged = form(_block_actions("U0ALICE", "vigil_reject", value, ts, slack))
    assert http_mode.post("/slack/events", forged.encode(), {**_signed(forged), "X-Slack-Signature": "v0=" + "0" * 64}
                          )[0] == 401
    assert "vigil.dev/reject" not in cluster.annotations(HTTP_NS, name)
    assert len(cluster.audit(HTTP_NS, name)) == 1 and len(slack.called("chat.update")) == updates


def test_http_mode_slash_command_by_a_user_group_member(cluster: Cluster, slack: SlackServer,
                                                        http_mode: ChatopsProcess) -> None:
    """``/vigil reject`` from carol, who is mapped through the user group S0ONCALL (usergroups.users.list)."""
    name = "web-scale-out-i-2-s1"
    cluster.pending(HTTP_NS, name)
    _posted(slack, HTTP_NS, name)
    ts = _ts_of(slack, HTTP_NS, name)
    # the action approved in the previous test waits for the operator now, not for chat: posted once only
    # (the board posted this one in a later pass than the approval)
    assert len([m for m in slack.messages.values() if f"{HTTP_NS}/web-scale-out-i-1-s1" in json.dumps(m)]) == 1
    response_url = slack.response_url()
    command = {"token": "unused", "team_id": slackapi.TEAM, "team_domain": "vigil-test", "channel_id": CHANNEL,
               "channel_name": "approvals", "user_id": "U0CAROL", "user_name": "carol", "command": "/vigil",
               "text": f"reject {HTTP_NS}/{name}", "api_app_id": "A0VIGIL", "response_url": response_url,
               "trigger_id": f"{time.time():.0f}.{uuid.uuid4().hex}"}
    body = urllib.parse.urlencode(command)
    status, _ = http_mode.post("/slack/events", body.encode(), _signed(body))
    assert status == 200
    annotations = wait_for(lambda: (a := cluster.annotations(HTTP_NS, name)).get("vigil.dev/reject") and a,
                           what="the reject annotation")
    assert annotations["vigil.dev/decided-by"] == "slack-oncall"
    assert annotations["vigil.dev/chat-user"] == "slack:U0CAROL"
    answer = wait_for(lambda: next((b for i, b in slack.responses if response_url.endswith(i)), None),
                      what="the response_url answer")
    assert answer == {"text": f"Rejected {HTTP_NS}/{name} as slack-oncall.", "response_type": "ephemeral"}
    # the approval message the board posted is rewritten too
    update = slack.wait_call("chat.update", lambda a: a.get("ts") == ts)
    assert "Rejected by" in update["text"] and "as slack-oncall" in update["text"]
    # asking: the Asker's answer (vigil.chatops.ask) through the response URL, the thread kept in a ConfigMap
    # of the release namespace (the chart's conversations Role)
    response_url = slack.response_url()
    body = urllib.parse.urlencode({**command, "text": f"why {HTTP_NS}/{name}", "response_url": response_url,
                                   "trigger_id": uuid.uuid4().hex})
    assert http_mode.post("/slack/events", body.encode(), _signed(body))[0] == 200
    why = wait_for(lambda: next((b for i, b in slack.responses if response_url.endswith(i)), None),
                   what="the why answer")
    assert name in why["text"] and why["response_type"] == "ephemeral"
    # in Slack's mrkdwn (summary.slack_mrkdwn), not the standard markdown the Asker writes: *bold*, and
    # &, <, > escaped as Slack documents (else "<!channel>" in a label would ping, "<url|x>" would link)
    assert why["text"].startswith(f"*RemediationAction {HTTP_NS}/{name}*: ")
    assert "**" not in why["text"] and "<" not in why["text"] and ">" not in why["text"]
    status, listed = cluster.kube.request(
        "GET", "/api/v1/namespaces/vigil-system/configmaps?labelSelector=app.kubernetes.io%2Fcomponent%3Dchatops")
    assert status == 200 and any(f"why {HTTP_NS}/{name}" in json.dumps(c.get("data")) for c in listed["items"])
    # an unmapped user is not answered
    response_url = slack.response_url()
    body = urllib.parse.urlencode({**command, "user_id": "U0MALLORY", "text": "status", "response_url": response_url,
                                   "trigger_id": uuid.uuid4().hex})
    assert http_mode.post("/slack/events", body.encode(), _signed(body))[0] == 200
    refused = wait_for(lambda: next((b for i, b in slack.responses if response_url.endswith(i)), None),
                       what="the refusal")
    assert "not mapped to a Kubernetes identity" in refused["text"]
    # help, without touching anything
    body = urllib.parse.urlencode({**command, "text": "dance", "trigger_id": f"{uuid.uuid4().hex}"})
    status, text = http_mode.post("/slack/events", body.encode(), _signed(body))
    assert status == 200 and b"Usage: /vigil status" in text


def test_socket_mode_button_press_and_refusal(cluster: Cluster, slack: SlackServer,
                                              tmp_path: pathlib.Path) -> None:
    """Socket Mode: apps.connections.open → the local WebSocket → hello → envelopes, acknowledged."""
    namespace = cluster.namespace(SOCKET_NS)
    process = ChatopsProcess(cluster, tmp_path, [
        "-n", namespace, "--slack-channel", CHANNEL, "--slack-api-url", slack.api_url,
        "--slack-bot-token-file", secret_file(tmp_path, "bot", slackapi.BOT_TOKEN),
        "--slack-app-token-file", secret_file(tmp_path, "app", slackapi.APP_TOKEN)], name="chatops-socket").start()
    try:
        assert slack.called("apps.connections.open") and slack.connections >= 1
        name = "web-scale-out-i-3-s1"
        cluster.pending(namespace, name)
        _posted(slack, namespace, name)
        ts = _ts_of(slack, namespace, name)

        refused = slack.envelope("interactive", _block_actions("U0MALLORY", "vigil_reject", f"{namespace}/{name}",
                                                               ts, slack))
        wait_for(lambda: refused in slack.acks, what="the ack of the unmapped press")
        _ephemeral_to(slack, "U0MALLORY", "not mapped")
        assert "vigil.dev/reject" not in cluster.annotations(namespace, name)

        pressed = slack.envelope("interactive", _block_actions("U0ALICE", "vigil_approve", f"{namespace}/{name}",
                                                               ts, slack))
        wait_for(lambda: pressed in slack.acks, what="the ack of the envelope")
        annotations = wait_for(lambda: (a := cluster.annotations(namespace, name)).get("vigil.dev/approve") and a,
                               what="the approval")
        assert annotations["vigil.dev/decided-by"] == "alice@example.com"
        assert cluster.audit(namespace, name)[0]["impersonatedUser"]["username"] == "alice@example.com"
        update = slack.wait_call("chat.update", lambda a: a.get("ts") == ts)
        assert "Approved by" in update["text"] and not [b for b in update["blocks"] if b["type"] == "actions"]

        # a slash command envelope: the answer rides on the acknowledgement
        command = slack.envelope("slash_commands", {
            "token": "unused", "team_id": slackapi.TEAM, "channel_id": CHANNEL, "user_id": "U0ALICE",
            "user_name": "alice", "command": "/vigil", "text": "help", "api_app_id": "A0VIGIL",
            "response_url": slack.response_url(), "trigger_id": uuid.uuid4().hex})
        ack = wait_for(lambda: slack.acks.get(command), what="the ack of the command")
        assert ack["payload"]["text"].startswith("Usage: /vigil status")
    finally:
        process.stop()
    _no_secret_in(process.log())
