"""Discord end to end: approval message with buttons → a button press signed with Ed25519 → approved in
Kubernetes as the mapped person → the message updated (interaction response type 7) → ``/vigil``.

Discord is tests/chatops/discordapi.py (its REST API, as documented); interactions are signed here with a
key pair generated for the test, exactly as Discord signs them (Ed25519 over timestamp + body), and the
component is given the public key. Kubernetes is the real kube-apiserver with the chart's RBAC and
admission policy (tests/chatops/conftest.py).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import nacl.signing
import pytest
import yaml

from tests.chatops import discordapi
from tests.chatops.conftest import (
    CHATOPS_USER,
    DISCORD_ALICE,
    DISCORD_ONCALL_ROLE,
    ChatopsProcess,
    Cluster,
    secret_file,
)
from tests.chatops.discordapi import DiscordServer, sign
from tests.chatops.slowlink import SlowLink

CHANNEL = "1200000000000000001"
GUILD = "1000000000000000001"
NS = "chat-discord"
_ids = itertools.count(1400000000000000001)


@pytest.fixture(scope="module")
def key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


@pytest.fixture(scope="module")
def discord() -> Iterator[DiscordServer]:
    with DiscordServer(channels=(CHANNEL,)) as server:
        yield server


@pytest.fixture(scope="module")
def component(cluster: Cluster, discord: DiscordServer, key: nacl.signing.SigningKey,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatopsProcess]:
    workdir = tmp_path_factory.mktemp("discord")
    process = ChatopsProcess(cluster, workdir, [
        "-n", cluster.namespace(NS), "--discord-channel", CHANNEL, "--discord-api-url", discord.api_url,
        "--discord-public-key-file", secret_file(workdir, "public-key", key.verify_key.encode().hex()),
        "--discord-bot-token-file", secret_file(workdir, "bot-token", discordapi.BOT_TOKEN)],
        name="chatops-discord").start()
    yield process
    process.stop()
    assert discordapi.BOT_TOKEN not in process.log()


def _interaction(kind: int, discord: DiscordServer, user: str, roles: list[str], data: dict[str, Any],
                 message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(next(_ids)), "application_id": discordapi.APPLICATION_ID, "type": kind, "token": discord.token(),
        "version": 1, "guild_id": GUILD, "channel_id": CHANNEL, "channel": {"id": CHANNEL, "type": 0},
        "member": {"user": {"id": user, "username": f"user{user[-3:]}", "global_name": f"User {user[-3:]}"},
                   "roles": roles, "permissions": "2147483648"},
        "data": data, "locale": "en-GB", "app_permissions": "0",
    }
    if message is not None:
        body["message"] = {"id": message, "channel_id": CHANNEL, "type": 0}
    return body


def _press(discord: DiscordServer, user: str, roles: list[str], custom_id: str, message: str) -> dict[str, Any]:
    return _interaction(3, discord, user, roles, {"custom_id": custom_id, "component_type": 2}, message)


def _send(component: ChatopsProcess, key: nacl.signing.SigningKey, body: dict[str, Any] | bytes,
          timestamp: float | None = None) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = component.post("/discord/interactions", raw, sign(key, raw, timestamp))
    try:
        return status, json.loads(answer)
    except ValueError:
        return status, answer


def test_ping_and_signatures(component: ChatopsProcess, key: nacl.signing.SigningKey,
                             discord: DiscordServer) -> None:
    ping = {"id": str(next(_ids)), "application_id": discordapi.APPLICATION_ID, "type": 1, "token": "t", "version": 1}
    assert _send(component, key, ping) == (200, {"type": 1})
    raw = json.dumps({**ping, "id": str(next(_ids))}).encode()
    other = nacl.signing.SigningKey.generate()
    assert component.post("/discord/interactions", raw, sign(other, raw))[0] == 401
    assert component.post("/discord/interactions", raw, {"Content-Type": "application/json"})[0] == 401
    headers = sign(key, raw)
    assert component.post("/discord/interactions", raw + b" ", headers)[0] == 401  # body changed after signing


def test_button_press_approves_as_the_mapped_identity(cluster: Cluster, component: ChatopsProcess,
                                                      key: nacl.signing.SigningKey, discord: DiscordServer) -> None:
    name = "web-scale-out-i-1-s1"
    cluster.pending(NS, name)
    posted = discord.wait_call("POST", f"/channels/{CHANNEL}/messages",
                               lambda b: f"{NS}/{name}" in json.dumps(b.get("components")))
    [row] = posted["components"]
    assert [(c["label"], c["custom_id"]) for c in row["components"]] == [
        ("Approve", f"vigil_approve:{NS}/{name}"), ("Reject", f"vigil_reject:{NS}/{name}")]
    assert posted["allowed_mentions"] == {"parse": []}
    message = next(m["id"] for m in discord.messages.values() if m["components"] == posted["components"])

    # unmapped (no mapped role): an ephemeral refusal, nothing changes
    status, answer = _send(component, key, _press(discord, "90000000000000001", ["5"], f"vigil_approve:{NS}/{name}",
                                                  message))
    assert status == 200 and answer["type"] == 4 and answer["data"]["flags"] == 64
    assert "not mapped to a Kubernetes identity" in answer["data"]["content"]
    assert "vigil.dev/approve" not in cluster.annotations(NS, name) and not cluster.audit(NS, name)

    # a member holding the on-call role: decided as discord-oncall, the message updated in place (type 7)
    press = _press(discord, "90000000000000002", ["5", DISCORD_ONCALL_ROLE], f"vigil_approve:{NS}/{name}", message)
    raw = json.dumps(press).encode()
    headers = sign(key, raw)
    status, answer = component.post("/discord/interactions", raw, headers)
    assert status == 200
    update = json.loads(answer)
    assert update["type"] == 7 and update["data"]["components"] == []
    assert "Approved by User 002 as discord-oncall at " in update["data"]["content"]
    assert update["data"]["embeds"][0]["title"].startswith("Approved: scale-out on ")
    annotations = cluster.annotations(NS, name)
    assert {k: v for k, v in annotations.items() if k != "vigil.dev/provenance"} == {
        "vigil.dev/approve": "true", "vigil.dev/decided-by": "discord-oncall", "vigil.dev/decided-via": "discord",
        "vigil.dev/chat-user": "discord:90000000000000002", "vigil.dev/chat-channel": CHANNEL,
        "vigil.dev/decided-groups": "sre"}
    [patch] = cluster.audit(NS, name)
    assert patch["user"]["username"] == CHATOPS_USER
    assert patch["impersonatedUser"]["username"] == "discord-oncall" and "sre" in patch["impersonatedUser"]["groups"]

    # replays: the same signed request again, and a correctly signed press from ten minutes ago
    assert component.post("/discord/interactions", raw, headers)[0] == 401
    stale = _press(discord, "90000000000000002", [DISCORD_ONCALL_ROLE], f"vigil_reject:{NS}/{name}", message)
    assert _send(component, key, stale, timestamp=time.time() - 600)[0] == 401
    assert "vigil.dev/reject" not in cluster.annotations(NS, name) and len(cluster.audit(NS, name)) == 1


def test_slash_command_rejects_through_the_interaction_webhook(cluster: Cluster, component: ChatopsProcess,
                                                               key: nacl.signing.SigningKey,
                                                               discord: DiscordServer) -> None:
    name = "web-scale-out-i-2-s1"
    cluster.pending(NS, name)
    posted = discord.wait_call("POST", f"/channels/{CHANNEL}/messages",
                               lambda b: f"{NS}/{name}" in json.dumps(b.get("components")))
    message = next(m["id"] for m in discord.messages.values() if m["components"] == posted["components"])
    # the action approved in the previous test waits for the operator now, not for chat: posted once only
    # (the board posted this one in a later pass than the approval)
    assert len(discord.called("POST", f"/channels/{CHANNEL}/messages",
                              lambda b: f"{NS}/web-scale-out-i-1-s1" in json.dumps(b.get("components")))) == 1
    data = {"id": "1500000000000000001", "name": "vigil", "type": 1,
            "options": [{"name": "reject", "type": 1, "options": [{"name": "action", "type": 3,
                                                                   "value": f"{NS}/{name}"}]}]}
    command = _interaction(2, discord, DISCORD_ALICE, [], data)
    assert _send(component, key, command) == (200, {"type": 5, "data": {"flags": 64}})
    edit = discord.wait_call("PATCH", f"/webhooks/{discordapi.APPLICATION_ID}/{command['token']}/messages/@original")
    assert edit["content"] == f"Rejected {NS}/{name} as alice@example.com."
    annotations = cluster.annotations(NS, name)
    assert annotations["vigil.dev/reject"] == "true" and annotations["vigil.dev/decided-by"] == "alice@example.com"
    # the approval message the board posted loses its buttons
    rewritten = discord.wait_call("PATCH", f"/channels/{CHANNEL}/messages/{message}")
    assert rewritten["components"] == [] and "Rejected by User 912 as alice@example.com" in rewritten["content"]


def test_a_slow_decision_is_deferred_then_the_message_edited(cluster: Cluster, discord: DiscordServer,
                                                             key: nacl.signing.SigningKey,
                                                             tmp_path: pathlib.Path) -> None:
    """Discord waits 3 s for an answer: a decision slower than the budget answers DEFERRED_UPDATE_MESSAGE
    (type 6) at once and edits the message through the interaction webhook when it is done."""
    namespace = cluster.namespace("chat-discord-slow")
    with SlowLink("127.0.0.1", int(cluster.kube.url.rsplit(":", 1)[1])) as link:
        config = yaml.safe_load(cluster.chatops_kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{link.port}"  # in the certificate's SANs
        kubeconfig = tmp_path / "slow.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        process = ChatopsProcess(cluster, tmp_path, [
            "-n", namespace, "--discord-channel", CHANNEL, "--discord-api-url", discord.api_url,
            "--discord-public-key-file", secret_file(tmp_path, "public-key", key.verify_key.encode().hex()),
            "--discord-bot-token-file", secret_file(tmp_path, "bot-token", discordapi.BOT_TOKEN)],
            name="chatops-slow", kubeconfig=kubeconfig).start()
        try:
            name = "web-scale-out-i-9-s1"
            cluster.pending(namespace, name)
            posted = discord.wait_call("POST", f"/channels/{CHANNEL}/messages",
                                       lambda b: f"{namespace}/{name}" in json.dumps(b.get("components")))
            message = next(m["id"] for m in discord.messages.values() if m["components"] == posted["components"])
            link.delay = 1.5  # each answer of the API server now takes 1.5 s: a GET and a PATCH pass the budget
            press = _press(discord, "90000000000000003", [DISCORD_ONCALL_ROLE], f"vigil_approve:{namespace}/{name}",
                           message)
            began = time.monotonic()
            assert _send(process, key, press) == (200, {"type": 6})
            assert time.monotonic() - began < 3.0  # within Discord's deadline
            original = f"/webhooks/{discordapi.APPLICATION_ID}/{press['token']}/messages/@original"
            edit = discord.wait_call("PATCH", original)
            assert edit["components"] == [] and "Approved by User 003 as discord-oncall" in edit["content"]
            assert cluster.annotations(namespace, name)["vigil.dev/decided-by"] == "discord-oncall"
        finally:
            link.delay = 0.0
            process.stop()
