"""Ask Vigil configured from the environment, as the chat component builds it (``ask.from_environment``)."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from tests.chatops import incident
from tests.chatops.conftest import FAKE_KEY
from tests.chatops.llm_server import ScriptedLLM, Text
from vigil.chatops import ask, asksettings, conversation
from vigil_sandbox.kubeapi import KubeAPIServer


def test_from_environment_builds_the_component_asker(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                      kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> None:
    key = tmp_path / "key"
    key.write_text(FAKE_KEY)
    with ScriptedLLM([Text("All quiet but one detector.")]) as server:
        env = {"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": "default", "VIGIL_ASK_NAMESPACES": "default",
               "VIGIL_LLM_BASE_URL": server.base_url, "VIGIL_LLM_MODEL": server.model,
               "VIGIL_LLM_API_KEY_FILE": str(key), "VIGIL_LLM_MAX_TOOL_ROUNDS": "2"}
        asker = ask.from_environment(env)

        async def run() -> ask.Answer:
            try:
                return await asker.ask("status", conversation="slack:C1:1.0", user="slack:U1")
            finally:
                await asker.close()

        answer = asyncio.run(run())
        assert server.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert (answer.text, answer.via, answer.error) == ("All quiet but one detector.", "llm", None)
    assert asker.namespaces == ("default",) and asker.default_namespace == "default"
    assert kubeapi.get("v1", "configmaps", "default", conversation.configmap_name("slack:C1:1.0")) is not None


@pytest.mark.parametrize(("env", "message"), [
    ({"VIGIL_LLM_BASE_URL": "http://x/v1"}, "VIGIL_LLM_BASE_URL and VIGIL_LLM_MODEL go together"),
    ({"VIGIL_ASK_NAMESPACES": "a,B_ad"}, "VIGIL_ASK_NAMESPACES: 'B_ad' is not a valid namespace name"),
    ({"VIGIL_LLM_BASE_URL": "http://x/v1", "VIGIL_LLM_MODEL": "m", "VIGIL_LLM_TIMEOUT": "soon"},
     "VIGIL_LLM_TIMEOUT='soon' is not a number"),
    ({"VIGIL_ASK_TIMEOUT": "0"}, "VIGIL_ASK_TIMEOUT must be between 0.1 and 300"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        asksettings.from_env(env)
    assert str(refused.value) == message


def test_settings_defaults() -> None:
    assert asksettings.from_env({}) == asksettings.AskSettings()
    chosen = asksettings.from_env({"VIGIL_ASK_NAMESPACES": "team-a, team-b", "VIGIL_CHATOPS_NAMESPACE": "vigil-system",
                                   "POD_NAMESPACE": "ignored", "VIGIL_ASK_CONVERSATIONS": "off"})
    assert (chosen.namespaces, chosen.default_namespace, chosen.store_namespace, chosen.conversations) == (
        ("team-a", "team-b"), "team-a", "vigil-system", False)
