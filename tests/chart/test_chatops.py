"""The chart's ChatOps component (templates/chatops.yaml): off by default; when on, its own ServiceAccount and
Deployment, read-only RBAC on Vigil objects, and impersonation of exactly the mapped users and groups."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.conftest import RELEASE, Manifest, Render, only, select
from vigil.chatops import identity

NAME = f"{RELEASE}-chatops"
IDENTITIES = {
    "slack": [{"user": "U0ALICE", "as": {"user": "alice@example.com", "groups": ["sre"]}},
              {"group": "S0ONCALL", "as": {"user": "slack-oncall", "groups": ["sre", "ops"]}}],
    "discord": [{"role": "41771983423143936", "as": {"user": "discord-oncall"}}],
}


def _on(**chatops: Any) -> dict[str, Any]:
    return {"chatops": {"enabled": True, "identities": IDENTITIES, "slack": {"existingSecret": "vigil-slack"},
                        **chatops}}


def _mine(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["metadata"]["name"].startswith(NAME)]


def test_off_by_default(render: Render) -> None:
    assert not _mine(render())


def test_its_own_service_account_and_deployment(render: Render) -> None:
    objects = render(_on(slack={"existingSecret": "vigil-slack", "channel": "C0APPROVALS"}))
    deployment = only(objects, "Deployment", NAME)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME and only(objects, "ServiceAccount", NAME)
    [container] = pod["containers"]
    assert container["command"] == ["vigil", "chatops"]
    assert "--slack-mode=socket" in container["args"] and "--slack-channel=C0APPROVALS" in container["args"]
    assert "--slack-app-token-file=/etc/vigil/chatops/slack/app-token" in container["args"]
    assert not [a for a in container["args"] if "signing-secret" in a]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    [slack] = [v for v in pod["volumes"] if v["name"] == "slack"]
    assert slack["secret"]["secretName"] == "vigil-slack"
    assert [i["key"] for i in slack["secret"]["items"]] == ["bot-token", "app-token"]
    # the mounted identity map is the chart's ConfigMap, and the component parses it
    config_map = only(objects, "ConfigMap", f"{NAME}-identities")
    parsed = identity.parse_text(config_map["data"]["identities.yaml"])
    assert parsed.resolve(identity.Platform.SLACK, "U0ALICE") == identity.Identity("alice@example.com", ("sre",))
    # Socket Mode only: nothing listens for Slack, so no Service
    assert not select(objects, "Service", NAME)


def test_the_operators_selectors_never_match_its_pods(render: Render) -> None:
    objects = render(_on())
    labels = only(objects, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    operator = only(objects, "Deployment", RELEASE)["spec"]["selector"]["matchLabels"]
    service = only(objects, "Service", RELEASE)["spec"]["selector"]
    for selector in (operator, service):
        assert not all(labels.get(k) == v for k, v in selector.items())


def test_rbac_reads_vigil_objects_and_impersonates_only_the_mapped_names(render: Render) -> None:
    objects = render(_on())
    read = only(objects, "ClusterRole", f"{NAME}-read")["rules"]
    assert read == [{"apiGroups": ["vigil.dev"],
                     "resources": ["anomalydetectors", "remediationpolicies", "remediationactions"],
                     "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]}]
    impersonate = only(objects, "ClusterRole", f"{NAME}-impersonate")["rules"]
    assert impersonate == [
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
         "resourceNames": ["alice@example.com", "discord-oncall", "slack-oncall"]},
        {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["ops", "sre"]}]
    binding = only(objects, "ClusterRoleBinding", f"{NAME}-impersonate")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": "vigil-system"}]
    # nothing of its own may write Vigil objects (it decides only as the people it impersonates)
    for role in [o for o in _mine(objects) if o["kind"] in ("ClusterRole", "Role")]:
        for rule in role["rules"]:
            if "vigil.dev" in rule["apiGroups"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, role["metadata"]["name"]
    conversations = only(objects, "Role", f"{NAME}-conversations")
    assert conversations["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                       "verbs": ["get", "list", "create", "update", "delete"]}]
    assert not select(render(_on(conversations="memory")), "Role", f"{NAME}-conversations")


def test_no_identities_means_no_impersonation_at_all(render: Render) -> None:
    """Empty resourceNames would mean "anyone": the rule is not rendered instead."""
    objects = render(_on(identities={}))
    assert not select(objects, "ClusterRole", f"{NAME}-impersonate")
    assert not [r for o in _mine(objects) if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]
                if "impersonate" in r["verbs"]]


def test_namespaced_mode_reads_only_the_watched_namespaces(render: Render) -> None:
    objects = render({**_on(), "watchNamespaces": ["team-a", "team-b"]})
    assert not select(objects, "ClusterRole", f"{NAME}-read")
    assert [(o["kind"], o["metadata"]["namespace"]) for o in objects if o["metadata"]["name"] == f"{NAME}-read"] == [
        ("Role", "team-a"), ("RoleBinding", "team-a"), ("Role", "team-b"), ("RoleBinding", "team-b")]
    env = only(objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VIGIL_NAMESPACES", "value": "team-a,team-b"} in env


def test_http_mode_and_discord_get_a_service_and_their_secrets(render: Render) -> None:
    objects = render(_on(slack={"existingSecret": "vigil-slack", "mode": "http"},
                         discord={"existingSecret": "vigil-discord", "channel": "1200000000000000001"},
                         llm={"baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                              "existingSecret": "vigil-llm"}))
    args = only(objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--slack-signing-secret-file=/etc/vigil/chatops/slack/signing-secret" in args
    assert "--discord-public-key-file=/etc/vigil/chatops/discord/public-key" in args
    assert "--discord-channel=1200000000000000001" in args
    assert "--llm-api-key-file=/etc/vigil/chatops/llm/api-key" in args and "--llm-model=gpt-4o-mini" in args
    service = only(objects, "Service", NAME)
    assert service["spec"]["ports"][0]["port"] == 8090


@pytest.mark.parametrize(("values", "words"), [
    ({"chatops": {"enabled": True}}, "chatops.enabled needs chatops.slack.existingSecret"),
    (_on(slack={"existingSecret": "s", "mode": "websocket"}), "mode"),
    (_on(identities={"slack": [{"user": "U0ALICE", "as": {"user": "system:admin"}}]}), "identities"),
    (_on(identities={"discord": [{"user": 80351110224678912, "as": {"user": "bob"}}]}), "user"),
])
def test_bad_values_are_refused(render: Render, values: dict[str, Any], words: str) -> None:
    with pytest.raises(Exception) as raised:
        render(values)
    assert words in str(raised.value)


def test_the_rendered_manifests_are_valid_yaml_documents(render: Render) -> None:
    text = yaml.safe_dump_all(_mine(render(_on(discord={"existingSecret": "d"}))))
    assert len(list(yaml.safe_load_all(text))) == 11  # with its NetworkPolicy


# --- the ChatOps pod's NetworkPolicy (templates/chatops-networkpolicy.yaml) ------------------------------


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _egress_ports(policy: Manifest) -> list[tuple[int, str]]:
    return sorted((p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"])


def test_socket_mode_gets_egress_only(render: Render) -> None:
    objects = render(_on())
    policy = only(objects, "NetworkPolicy", NAME)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert _selects(selector, only(objects, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"])
    assert not _selects(selector, only(objects, "Deployment", RELEASE)["spec"]["template"]["metadata"]["labels"])
    # and the operator's policy does not select the ChatOps pod (policies add up)
    operator = only(objects, "NetworkPolicy", RELEASE)["spec"]["podSelector"]["matchLabels"]
    assert not _selects(operator, only(objects, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []  # an outbound WebSocket: no connection accepted at all
    dns, api, https = policy["spec"]["egress"]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert [(p["port"], p["protocol"]) for p in dns["ports"]] == [(53, "UDP"), (53, "TCP")]
    assert [p["port"] for p in api["ports"]] == [443, 6443] and "to" not in api
    assert https == {"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}
    assert _egress_ports(policy) == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (443, "TCP"), (6443, "TCP")]


@pytest.mark.parametrize("chatops", [
    {"slack": {"existingSecret": "vigil-slack", "mode": "http"}},
    {"slack": {"existingSecret": ""}, "discord": {"existingSecret": "vigil-discord"}},
    {"discord": {"existingSecret": "vigil-discord"}},  # Socket Mode and Discord: Discord still needs it
], ids=["slack-http", "discord", "socket-and-discord"])
def test_ingress_only_on_the_http_port_when_requests_come_in(render: Render, chatops: dict[str, Any]) -> None:
    objects = render(_on(**chatops))
    [rule] = only(objects, "NetworkPolicy", NAME)["spec"]["ingress"]
    assert rule == {"ports": [{"port": "http", "protocol": "TCP"}]}  # any peer unless ingressFrom says
    [container] = only(objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8090)]
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    limited = render(_on(**chatops, networkPolicy={"ingressFrom": peers}))
    [rule] = only(limited, "NetworkPolicy", NAME)["spec"]["ingress"]
    assert rule["from"] == peers


def test_network_policy_values(render: Render) -> None:
    ollama = {"ports": [{"port": 11434, "protocol": "TCP"}],
              "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ollama"}}}]}
    objects = render({**_on(networkPolicy={"httpsCidrs": ["198.51.100.0/24"], "extraEgress": [ollama]}),
                      "networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]}}})
    _dns, api, https, extra = only(objects, "NetworkPolicy", NAME)["spec"]["egress"]
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    assert https["to"] == [{"ipBlock": {"cidr": "198.51.100.0/24"}}] and extra == ollama
    assert not select(render(_on(networkPolicy={"enabled": False})), "NetworkPolicy", NAME)
    assert not select(render({"chatops": {"networkPolicy": {"enabled": True}}}), "NetworkPolicy", NAME)
