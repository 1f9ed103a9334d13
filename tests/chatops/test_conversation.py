"""Conversation history: follow-ups keep their subject, the history survives a restart (a new Asker on a new
connection reads the ConfigMap), and it stays bounded in turns, bytes, age and number of threads."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.chatops import incident
from tests.chatops.conftest import FAKE_KEY, REAL_LLM, writes
from tests.chatops.llm_server import ScriptedLLM, Text
from vigil.adapters import kubeaccess
from vigil.chatops import ask, conversation, kubeio, llm
from vigil.chatops.conversation import Conversation, ConversationStore, HistoryLimits, Subject, Turn
from vigil_sandbox.kubeapi import KubeAPIServer

THREAD = "slack:C0123:1733500000.000100"


def _store(transport: kubeio.Transport, **limits: Any) -> ConversationStore:
    return ConversationStore(kubeio.ConfigMapClient(transport, "default"), HistoryLimits(**limits))


def _threads(kubeapi: KubeAPIServer) -> list[dict[str, Any]]:
    return kubeapi.list("v1", "configmaps", "default", label_selector=conversation.SELECTOR)


def _restart(kubeapi: KubeAPIServer, tmp_path: Any, name: str) -> kubeio.Transport:
    """A new connection, as a restarted component would open."""
    config = kubeapi.write_kubeconfig(tmp_path / name)
    return kubeio.Transport(kubeaccess.load(str(config), in_cluster_first=False))


def test_a_follow_up_keeps_its_subject_across_a_restart(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                        transport: kubeio.Transport, tmp_path: Any) -> None:
    first = ask.Asker(kubeio.ApiReader(transport), store=_store(transport))
    answer = asyncio.run(first.ask(f"why {recorded.succeeded}", conversation=THREAD, user="alice"))
    assert answer.error is None and answer.subject == f"action default/{recorded.succeeded}"
    [stored] = _threads(kubeapi)
    assert stored["metadata"]["name"] == conversation.configmap_name(THREAD)
    assert stored["metadata"]["labels"]["app.kubernetes.io/component"] == "chatops"
    data = json.loads(stored["data"][conversation.DATA_KEY])
    assert [t["role"] for t in data["turns"]] == ["user", "assistant"]
    assert data["subject"] == {"kind": "action", "namespace": "default", "name": recorded.succeeded}

    restarted = _restart(kubeapi, tmp_path, "kubeconfig-2")
    try:
        second = ask.Asker(kubeio.ApiReader(restarted), store=_store(restarted))
        seen = asyncio.run(second.ask("and what did the detector see?", conversation=THREAD))
        guards = asyncio.run(second.ask("which guard rails did it pass?", conversation=THREAD))
        other = asyncio.run(second.ask("and what did the detector see?", conversation="another-thread"))
    finally:
        restarted.close()
    assert seen.subject == f"action default/{recorded.succeeded}"
    assert "Why: detector `web-cpu` scored 0.930 (threshold 0.800)" in seen.text
    assert "Detector `web-cpu` now: anomalous, score 0.930 (threshold 0.800), 1 of 3 series anomalous" in seen.text
    assert f'- `{{instance_id="{recorded.label}", job="node"}}` score 0.930, Anomalous since' in seen.text
    assert "AnomalyDetected" in seen.text and "Before → after" not in seen.text
    assert "Guard rails: none refused it" in guards.text and "cooldown 1h" in guards.text
    assert other.subject is None and "`why <namespace>/<action>`" in other.text
    data = json.loads(_threads(kubeapi)[0]["data"][conversation.DATA_KEY])
    assert len(data["turns"]) == 6


def test_only_configmaps_are_written(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                     transport: kubeio.Transport) -> None:
    before = {plural: writes(kubeapi, plural) for plural in ("remediationactions", "remediationpolicies",
                                                            "anomalydetectors", "events", "configmaps")}
    asker = ask.Asker(kubeio.ApiReader(transport), store=_store(transport))
    for question in (f"why {recorded.succeeded}", "status", "history web-scale-out", "what changed?"):
        asyncio.run(asker.ask(question, conversation=THREAD))
    after = {plural: writes(kubeapi, plural) for plural in before}
    assert after["configmaps"] > before["configmaps"]
    assert {p: after[p] - before[p] for p in before if p != "configmaps"} == dict.fromkeys(
        ("remediationactions", "remediationpolicies", "anomalydetectors", "events"), 0)


def test_history_is_bounded_in_turns_bytes_age_and_threads(kubeapi: KubeAPIServer, transport: kubeio.Transport) -> None:
    now = [1_000_000.0]
    limits = HistoryLimits(max_turns=4, max_bytes=1500, max_age=3600, max_turn_chars=400, max_conversations=2)
    store = ConversationStore(kubeio.ConfigMapClient(transport, "default"), limits, clock=lambda: now[0])

    async def run() -> None:
        for i in range(5):
            now[0] += 10
            await store.append(THREAD, [Turn("user", f"question {i} " + "x" * 600, now[0]),
                                        Turn("assistant", f"answer {i}", now[0])], None)

    asyncio.run(run())
    kept = asyncio.run(store.load(THREAD))
    stored = _threads(kubeapi)[0]["data"][conversation.DATA_KEY]
    assert len(stored.encode()) <= 1500
    assert 0 < len(kept.turns) <= 4 and kept.turns[-1].text == "answer 4"
    assert all(len(t.text) <= 400 for t in kept.turns)
    now[0] += 3601  # idle longer than max_age: forgotten
    assert asyncio.run(store.load(THREAD)).turns == ()

    for key in ("thread-b", "thread-c"):  # at most 2 threads: the least recently used goes first
        now[0] += 10
        asyncio.run(store.append(key, [Turn("user", "hi", now[0])], None))
    names = {cm["metadata"]["name"] for cm in _threads(kubeapi)}
    assert names == {conversation.configmap_name("thread-b"), conversation.configmap_name("thread-c")}


def test_secrets_are_redacted_before_they_are_stored(kubeapi: KubeAPIServer, transport: kubeio.Transport) -> None:
    store = _store(transport)
    leaky = "my key is AKIAABCDEFGHIJKLMNOP and Bearer abc.def-ghi"
    asyncio.run(store.append(THREAD, [Turn("user", leaky, time.time()),
                                      Turn("assistant", f"token {FAKE_KEY}", time.time())], None))
    llm.LLMConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key=FAKE_KEY)  # remembers the key as a secret
    asyncio.run(store.append(THREAD, [Turn("assistant", f"again {FAKE_KEY}", time.time())], None))
    stored = _threads(kubeapi)[0]["data"][conversation.DATA_KEY]
    assert "AKIAABCDEFGHIJKLMNOP" not in stored and "abc.def-ghi" not in stored
    assert f"again {FAKE_KEY}" not in stored and "again <redacted>" in stored


def test_a_corrupt_or_foreign_configmap_starts_a_fresh_thread(kubeapi: KubeAPIServer,
                                                              transport: kubeio.Transport) -> None:
    kubeapi.create({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": conversation.configmap_name(THREAD), "namespace": "default",
                                 "labels": {"app.kubernetes.io/component": "chatops"}},
                    "data": {conversation.DATA_KEY: "{not json"}})
    store = _store(transport)
    assert asyncio.run(store.load(THREAD)) == Conversation(THREAD)
    asyncio.run(store.append(THREAD, [Turn("user", "hello", time.time())], None))
    assert [t.text for t in asyncio.run(store.load(THREAD)).turns] == ["hello"]


def test_two_writers_of_one_thread_keep_both_turns(kubeapi: KubeAPIServer, transport: kubeio.Transport,
                                                   tmp_path: Any) -> None:
    other = _restart(kubeapi, tmp_path, "kubeconfig-other")
    try:
        one, two = _store(transport), _store(other)
        asyncio.run(one.append(THREAD, [Turn("user", "start", time.time())], None))

        async def both() -> None:
            await asyncio.gather(one.append(THREAD, [Turn("user", "from one", time.time())], None),
                                 two.append(THREAD, [Turn("user", "from two", time.time())], None))

        asyncio.run(both())
    finally:
        other.close()
    texts = sorted(t.text for t in asyncio.run(one.load(THREAD)).turns)
    assert texts == ["from one", "from two", "start"]


def test_an_llm_follow_up_sees_the_earlier_turns_and_the_subject(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                                 transport: kubeio.Transport, tmp_path: Any) -> None:
    if REAL_LLM:
        pytest.skip("checks what the scripted server was sent")
    with ScriptedLLM([Text("It scaled web from 2 to 4."), Text("The detector saw instance i-0abc1234 at 0.93.")]) as s:
        config = llm.LLMConfig(base_url=s.base_url, model=s.model, api_key=FAKE_KEY)

        async def ask_twice() -> tuple[ask.Answer, ask.Answer]:
            first = ask.Asker(kubeio.ApiReader(transport), llm_config=config, store=_store(transport))
            one = await first.ask(f"why {recorded.succeeded}", conversation=THREAD)
            await first.close()
            restarted = _restart(kubeapi, tmp_path, "kubeconfig-llm")
            second = ask.Asker(kubeio.ApiReader(restarted), llm_config=config, store=_store(restarted))
            two = await second.ask("and what did the detector see?", conversation=THREAD)
            await second.close()
            restarted.close()
            return one, two

        one, two = asyncio.run(ask_twice())
        assert one.via == two.via == "llm"
        messages = s.requests[1].body["messages"]
        assert [m["role"] for m in messages[:5]] == ["system", "user", "assistant", "user", "assistant"]
        assert messages[1]["content"] == f"why {recorded.succeeded}"
        assert messages[2]["content"] == "It scaled web from 2 to 4."
        assert messages[3]["content"] == ("and what did the detector see?\n"
                                          f"(This conversation is about action default/{recorded.succeeded}.)")
        facts = json.loads(messages[5]["content"])["result"]
        assert facts[0]["name"] == recorded.succeeded and facts[2]["kind"] == "detector"


@pytest.mark.parametrize(("turns", "limits", "expected"), [
    ([("user", "a", 100.0), ("assistant", "b", 100.0)], HistoryLimits(max_turns=1), ["b"]),
    ([("user", "old", 0.0), ("user", "new", 3000.0)], HistoryLimits(max_age=1000), ["new"]),
    ([("user", "x" * 50, 100.0)], HistoryLimits(max_turn_chars=5), ["xxxxx"]),
    ([("user", "x" * 300, 100.0), ("user", "y", 100.0)], HistoryLimits(max_bytes=200), ["y"]),
])
def test_trim(turns: list[tuple[str, str, float]], limits: HistoryLimits, expected: list[str]) -> None:
    kept = conversation.trim(Conversation("k", tuple(Turn(*t) for t in turns), Subject("action", "d", "n"), 3000.0),
                             limits, 3000.0)
    assert [t.text for t in kept.turns] == expected and kept.subject == Subject("action", "d", "n")


def test_a_detector_follow_up_after_history_shows_the_policys_detectors(recorded: incident.Incident,
                                                                        transport: kubeio.Transport) -> None:
    asker = ask.Asker(kubeio.ApiReader(transport), store=_store(transport))
    asyncio.run(asker.ask("history web-scale-out", conversation=THREAD))
    seen = asyncio.run(asker.ask("what do its detectors see?", conversation=THREAD))
    assert seen.subject == "policy default/web-scale-out"
    assert seen.text.splitlines()[:2] == [
        "**RemediationPolicy default/web-scale-out** watches 1 detector(s):",
        "Detector `web-cpu` now: anomalous, score 0.930 (threshold 0.800), 1 of 3 series anomalous; last evaluated "
        + seen.facts[1]["lastEvaluation"] + "; Ready True (Evaluating): `3 series scored`."]
