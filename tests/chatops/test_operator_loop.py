"""Issue 13's "done when", with the operator running: an anomaly → the operator proposes an action that needs
approval → ``vigil chatops`` posts the approval message with buttons → a mapped person presses Approve (a
request signed as Slack or Discord signs it) → approved by impersonation → the operator executes it in AWS →
the message is rewritten in place, and again once the operator reports the action Succeeded.

Every peer is real or speaks the documented protocol: Prometheus (a recorded NAB incident), moto behind the
fault proxy (which counts each ``SetDesiredCapacity``), the real kube-apiserver with the chart's RBAC and
admission policy (tests/chatops/conftest.py: the operator runs as the chart's ServiceAccount, so only it may
create the action; the component runs as ``vigil-chatops`` and may only impersonate), and the local Slack and
Discord servers. One operator serves the module; each platform has its own namespace and Auto Scaling group.

Refusals come first, while the action waits: an unmapped person's press and a replayed press (a correctly
signed request captured ten minutes ago) change nothing, in Kubernetes or in AWS. After the approval, the
exact request sent again is refused and no second scaling call is made.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import nacl.signing
import pytest

from tests.chatops import discordapi
from tests.chatops.conftest import CHATOPS_USER, DISCORD_ALICE, ChatopsProcess, Cluster, secret_file
from tests.chatops.discordapi import DiscordServer, sign
from tests.chatops.test_discord import _press, _send
from tests.chatops.test_slack import _block_actions, _posted, _signed, _tokens, _ts_of
from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import aws_world, scenario
from tests.integration.aws_world import Moto
from vigil_sandbox import slackapi
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.prometheus import PrometheusServer
from vigil_sandbox.slackapi import SlackServer, form

SLACK_NS = "loop-slack"
DISCORD_NS = "loop-discord"
SLACK_CHANNEL = "C0APPROVALS"
DISCORD_CHANNEL = "1200000000000000001"
#: The Auto Scaling groups the two namespaces may act on (each tagged with its namespace).
SLACK_GROUP = "web"
DISCORD_GROUP = "shop"
INCIDENT = 'nab_cpu{scenario="incident"}'
RAS = "/apis/vigil.dev/v1alpha1/namespaces/{ns}/remediationactions"


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident")) as server:
        yield server


@pytest.fixture(scope="module")
def aws(moto: Moto) -> Iterator[tuple[aws_world.Estate, FaultProxy]]:
    """``web`` for the Slack namespace (the sandbox's estate) and ``shop`` for the Discord one."""
    moto.reset()
    estate = aws_world.build(moto, namespace=SLACK_NS)
    owner = {"Key": "vigil.dev/namespace", "Value": DISCORD_NS}
    moto.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=DISCORD_GROUP, LaunchTemplate={"LaunchTemplateName": "web"}, MinSize=1, MaxSize=10,
        DesiredCapacity=2, AvailabilityZones=[f"{aws_world.REGION}a"],
        Tags=[{**t, "PropagateAtLaunch": True, "ResourceId": DISCORD_GROUP, "ResourceType": "auto-scaling-group"}
              for t in (aws_world.TAG, owner)])
    with FaultProxy(moto.url) as proxy:
        yield estate, proxy


@pytest.fixture(scope="module")
def operator(cluster: Cluster, prometheus: PrometheusServer, aws: tuple[aws_world.Estate, FaultProxy],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """``vigil run`` as the chart's ServiceAccount (its TokenRequest token), watching both namespaces."""
    workdir = tmp_path_factory.mktemp("loop-operator")
    for namespace in (SLACK_NS, DISCORD_NS):
        cluster.namespace(namespace)
    config = cluster.kube.write_kubeconfig(workdir / "operator.kubeconfig", cluster.operator_token, user="operator")
    process = OperatorProcess(config, workdir, [
        "-n", SLACK_NS, "-n", DISCORD_NS, "--prometheus-url", prometheus.url, "--aws-endpoint-url", aws[1].url,
        "--no-leader-election", "--remediation-resync", "0.5"], name="loop-operator")
    process.start()
    yield process
    process.stop()
    assert not process.errors(), process.errors()


def _incident(cluster: Cluster, namespace: str, group: str) -> None:
    """A detector on the recorded incident and a policy scaling ``group`` out by one, with approval."""
    api = f"/apis/vigil.dev/v1alpha1/namespaces/{namespace}"
    detector = {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
                "metadata": {"name": "cpu", "namespace": namespace, "labels": {"app": "web"}},
                "spec": {"query": INCIDENT, "interval": "1s", "step": "5m"}}
    policy = {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
              "metadata": {"name": "web", "namespace": namespace},
              "spec": {"detectorSelector": {"matchLabels": {"app": "web"}}, "aws": {"region": aws_world.REGION},
                       "actions": [{"name": "scale-out", "after": "0s",
                                    "scaleAutoScalingGroup": {"name": group, "by": 1, "min": 1, "max": 10}}],
                       "approval": {"required": True, "timeout": "30m"}, "cooldown": "1h"}}
    for path, body in ((f"{api}/anomalydetectors", detector), (f"{api}/remediationpolicies", policy)):
        status, answer = cluster.kube.request("POST", path, body)
        assert status == 201, answer


def _actions(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    status, listed = cluster.kube.request("GET", RAS.format(ns=namespace))
    assert status == 200, listed
    return list(listed["items"])


def _proposed(cluster: Cluster, namespace: str) -> str:
    """The name of the action the operator proposed, once it waits for approval."""
    found = wait_for(lambda: [a for a in _actions(cluster, namespace)
                              if (a.get("status") or {}).get("phase") == "PendingApproval"],
                     timeout=90, what=f"an action PendingApproval in {namespace}")
    [action] = found
    # created by the operator's ServiceAccount (the admission policy lets no one else)
    assert action["metadata"]["annotations"].get("vigil.dev/provenance")
    return str(action["metadata"]["name"])


def _phase(cluster: Cluster, namespace: str, name: str) -> str:
    return str((cluster.action(namespace, name).get("status") or {}).get("phase") or "")


def _still_waiting(cluster: Cluster, namespace: str, name: str, proxy: FaultProxy, operator: OperatorProcess,
                   group: str, moto: Moto, estate: aws_world.Estate) -> None:
    """The action still PendingApproval over several operator passes, no decision annotation, no AWS call."""
    steady(lambda: _phase(cluster, namespace, name) == "PendingApproval", operator.passes,
           what=f"{name} still PendingApproval")
    annotations = cluster.annotations(namespace, name)
    assert "vigil.dev/approve" not in annotations and "vigil.dev/reject" not in annotations
    assert proxy.hits("SetDesiredCapacity") == 0 and estate.desired(moto, group) == 2


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackServer]:
    with SlackServer(channels=(SLACK_CHANNEL,)) as server:
        yield server


def test_slack_button_press_lets_the_operator_scale_out(cluster: Cluster, operator: OperatorProcess,
                                                        slack: SlackServer, aws: tuple[aws_world.Estate, FaultProxy],
                                                        moto: Moto, tmp_path: pathlib.Path) -> None:
    estate, proxy = aws
    chatops = ChatopsProcess(cluster, tmp_path, [
        "-n", SLACK_NS, "--slack-mode", "http", "--slack-channel", SLACK_CHANNEL, "--slack-api-url", slack.api_url,
        *_tokens(tmp_path)], name="loop-slack").start()
    try:
        _incident(cluster, SLACK_NS, SLACK_GROUP)
        name = _proposed(cluster, SLACK_NS)
        posted = _posted(slack, SLACK_NS, name)
        actions = next(b for b in posted["blocks"] if b["type"] == "actions")
        assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
            ("vigil_approve", f"{SLACK_NS}/{name}"), ("vigil_reject", f"{SLACK_NS}/{name}")]
        assert f"`{SLACK_GROUP}`" in json.dumps(posted["blocks"])  # the target, named in the message
        ts = _ts_of(slack, SLACK_NS, name)
        value = f"{SLACK_NS}/{name}"
        hits_before = proxy.hits("SetDesiredCapacity")
        assert hits_before == 0

        # an unmapped person: 200 with a refusal only they see; nothing changes
        body = form(_block_actions("U0MALLORY", "vigil_approve", value, ts, slack))
        mallory = _signed(body)
        assert chatops.post("/slack/events", body.encode(), mallory)[0] == 200
        slack.wait_call("chat.postEphemeral", lambda a: a.get("user") == "U0MALLORY"
                        and "not mapped to a Kubernetes identity" in a.get("text", ""))
        # a replay inside the signature window: the same request again, refused before any handler runs
        assert chatops.post("/slack/events", body.encode(), mallory) == (401, b"replayed request")
        # a replay: alice's press, correctly signed, captured ten minutes ago
        old = form(_block_actions("U0ALICE", "vigil_approve", value, ts, slack))
        assert chatops.post("/slack/events", old.encode(), _signed(old, int(time.time()) - 600))[0] == 401
        _still_waiting(cluster, SLACK_NS, name, proxy, operator, SLACK_GROUP, moto, estate)
        assert not cluster.audit(SLACK_NS, name) and not slack.called("chat.update")

        # alice presses Approve: approved as alice@example.com (impersonated), then executed by the operator
        press = form(_block_actions("U0ALICE", "vigil_approve", value, ts, slack))
        headers = _signed(press)
        assert chatops.post("/slack/events", press.encode(), headers)[0] == 200
        wait_for(lambda: _phase(cluster, SLACK_NS, name) == "Succeeded", timeout=60, what=f"{name} Succeeded")
        done = cluster.action(SLACK_NS, name)
        assert done["status"]["decision"]["by"] == "alice@example.com"
        [patch] = cluster.audit(SLACK_NS, name)
        assert patch["user"]["username"] == CHATOPS_USER
        assert patch["impersonatedUser"]["username"] == "alice@example.com"
        assert estate.desired(moto, SLACK_GROUP) == 3 and estate.desired(moto, DISCORD_GROUP) == 2
        steady(lambda: proxy.hits("SetDesiredCapacity") == 1, operator.passes, what="one SetDesiredCapacity")

        # the message, rewritten in place: no buttons, who approved as whom; then again once executed
        update = slack.wait_call("chat.update", lambda a: a.get("ts") == ts)
        assert not [b for b in update["blocks"] if b["type"] == "actions"]
        assert "Approved by u0alice as alice@example.com at " in update["text"] and "via slack" in update["text"]
        executed = slack.wait_call("chat.update", lambda a: a.get("ts") == ts and "(now Succeeded)" in a["text"])
        assert executed["text"].startswith(update["text"].removesuffix("*"))
        assert not [b for b in executed["blocks"] if b["type"] == "actions"]
        assert slack.messages[(SLACK_CHANNEL, ts)]["blocks"] == executed["blocks"]

        # the same request again: refused, and no second scaling call
        assert chatops.post("/slack/events", press.encode(), headers) == (401, b"replayed request")
        steady(lambda: proxy.hits("SetDesiredCapacity") == 1, operator.passes, what="still one SetDesiredCapacity")
        assert len(cluster.audit(SLACK_NS, name)) == 1
    finally:
        chatops.stop()
    for secret in (slackapi.BOT_TOKEN, slackapi.APP_TOKEN, slackapi.SIGNING_SECRET):
        assert secret not in chatops.log()


def test_discord_button_press_lets_the_operator_scale_out(cluster: Cluster, operator: OperatorProcess,
                                                          aws: tuple[aws_world.Estate, FaultProxy], moto: Moto,
                                                          tmp_path: pathlib.Path) -> None:
    estate, proxy = aws
    already = proxy.hits("SetDesiredCapacity")  # the Slack test's, if it ran
    key = nacl.signing.SigningKey.generate()
    with DiscordServer(channels=(DISCORD_CHANNEL,)) as discord:
        chatops = ChatopsProcess(cluster, tmp_path, [
            "-n", DISCORD_NS, "--discord-channel", DISCORD_CHANNEL, "--discord-api-url", discord.api_url,
            "--discord-public-key-file", secret_file(tmp_path, "public-key", key.verify_key.encode().hex()),
            "--discord-bot-token-file", secret_file(tmp_path, "bot-token", discordapi.BOT_TOKEN)],
            name="loop-discord").start()
        try:
            _incident(cluster, DISCORD_NS, DISCORD_GROUP)
            name = _proposed(cluster, DISCORD_NS)
            custom = f"vigil_approve:{DISCORD_NS}/{name}"
            posted = discord.wait_call("POST", f"/channels/{DISCORD_CHANNEL}/messages",
                                       lambda b: custom in json.dumps(b.get("components")))
            [row] = posted["components"]
            assert [c["label"] for c in row["components"]] == ["Approve", "Reject"]
            message = next(m["id"] for m in discord.messages.values() if m["components"] == posted["components"])

            unmapped = json.dumps(_press(discord, "90000000000000001", ["5"], custom, message)).encode()
            signature = sign(key, unmapped)
            status, raw = chatops.post("/discord/interactions", unmapped, signature)
            assert status == 200 and "not mapped to a Kubernetes identity" in json.loads(raw)["data"]["content"]
            assert chatops.post("/discord/interactions", unmapped, signature)[0] == 401  # replayed at once
            stale = _press(discord, DISCORD_ALICE, [], custom, message)
            assert _send(chatops, key, stale, timestamp=time.time() - 600)[0] == 401
            steady(lambda: _phase(cluster, DISCORD_NS, name) == "PendingApproval", operator.passes,
                   what=f"{name} still PendingApproval")
            assert "vigil.dev/approve" not in cluster.annotations(DISCORD_NS, name)
            assert proxy.hits("SetDesiredCapacity") == already and estate.desired(moto, DISCORD_GROUP) == 2

            press = json.dumps(_press(discord, DISCORD_ALICE, [], custom, message)).encode()
            headers = sign(key, press)
            status, raw = chatops.post("/discord/interactions", press, headers)
            assert status == 200
            update = json.loads(raw)  # type 7: the pressed message, updated in place
            assert update["type"] == 7 and update["data"]["components"] == []
            assert "Approved by User 912 as alice@example.com at " in update["data"]["content"]
            wait_for(lambda: _phase(cluster, DISCORD_NS, name) == "Succeeded", timeout=60, what=f"{name} Succeeded")
            assert cluster.action(DISCORD_NS, name)["status"]["decision"]["by"] == "alice@example.com"
            [patch] = cluster.audit(DISCORD_NS, name)
            assert patch["user"]["username"] == CHATOPS_USER
            assert patch["impersonatedUser"]["username"] == "alice@example.com"
            assert estate.desired(moto, DISCORD_GROUP) == 3
            steady(lambda: proxy.hits("SetDesiredCapacity") == already + 1, operator.passes,
                   what="one more SetDesiredCapacity")

            executed = discord.wait_call("PATCH", f"/channels/{DISCORD_CHANNEL}/messages/{message}",
                                         lambda b: "(now Succeeded)" in b.get("content", ""))
            assert "Approved by User 912 as alice@example.com at " in executed["content"]
            assert executed["components"] == [] and discord.messages[message]["content"] == executed["content"]

            assert chatops.post("/discord/interactions", press, headers)[0] == 401  # the same request again
            steady(lambda: proxy.hits("SetDesiredCapacity") == already + 1, operator.passes,
                   what="still one more SetDesiredCapacity")
        finally:
            chatops.stop()
    assert discordapi.BOT_TOKEN not in chatops.log()
