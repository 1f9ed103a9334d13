"""Ask Vigil without an LLM: why, status, history and not-found, from objects as the operator writes them.

Each test also checks that answering wrote nothing to the API server (the reader only reads).
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import time

from tests.chatops import incident
from tests.chatops.conftest import writes
from vigil.adapters import kubeaccess
from vigil.chatops import ask, kubeio
from vigil_sandbox.kubeapi import KubeAPIServer


def _ask(asker: ask.Asker, text: str, **kwargs: object) -> ask.Answer:
    return asyncio.run(asker.ask(text, **kwargs))  # type: ignore[arg-type]


def test_why_explains_a_succeeded_action_from_its_facts(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                        reader: kubeio.ApiReader) -> None:
    before = writes(kubeapi)
    answer = _ask(ask.Asker(reader), f"why default/{recorded.succeeded}")
    assert answer.via == "deterministic" and answer.error is None
    text = answer.text
    assert f"RemediationAction default/{recorded.succeeded}**: Succeeded" in text
    assert "detector `web-cpu` scored 0.930 (threshold 0.800)" in text
    assert f'instance_id="{recorded.label}"' in text  # the series flagged at decision time
    assert "Step 0 `scale-out` (scaleAutoScalingGroup) on AutoScalingGroup `web`" in text
    assert "Guard rails: none refused it: passed when proposed (paused, cooldown" in text
    assert "Decision: `alice@example.com` via slack" in text
    assert "Before → after: `{'desiredCapacity': 2}` → `{'desiredCapacity': 4}`" in text
    assert "Policy `web-scale-out` now: phase AwaitingApproval; ActionAllowed False (AwaitingApproval)" in text
    for reason in ("ApprovalRequested", "ActionApproved", "ActionExecuted", "AnomalyDetected"):
        assert reason in text
    kinds = [f["kind"] for f in answer.facts]
    assert kinds[:3] == ["action", "policy", "detector"] and kinds.count("event") == 5
    assert answer.subject == f"action default/{recorded.succeeded}"
    assert len(text) <= 3500
    assert writes(kubeapi) == before


def test_why_names_the_guard_rail_that_refused(recorded: incident.Incident, reader: kubeio.ApiReader) -> None:
    answer = _ask(ask.Asker(reader), f"why {recorded.skipped}")  # default namespace
    assert f"{recorded.skipped}**: Skipped" in answer.text
    assert "Guard rails: **refused** by CooldownActive: `cooldown until" in answer.text
    assert "nothing recorded (the action did not reach AWS)" in answer.text
    assert "ActionSkipped" in answer.text


def test_status_lists_verdicts_phases_and_pending_approvals(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                            reader: kubeio.ApiReader) -> None:
    before = writes(kubeapi)
    answer = _ask(ask.Asker(reader), "/vigil status")
    lines = answer.text.splitlines()
    assert lines[0] == "**Detectors** (1):"
    assert lines[1].startswith("- default/web-cpu: **anomalous** since ")
    assert "score 0.930 / threshold 0.800, 1 of 3 series anomalous" in lines[1]
    assert lines[2] == "**Policies** (1):"
    assert lines[3] == (f"- default/web-scale-out: AwaitingApproval, actions not allowed (AwaitingApproval), "
                        f"last action `{recorded.pending}` PendingApproval")
    assert lines[4] == "**Waiting for approval** (1):"
    assert lines[5].startswith(f"- default/{recorded.pending}: `scale-out` on `web` (policy `web-scale-out`), expires ")
    assert answer.facts[0]["kind"] == "status"
    assert writes(kubeapi) == before


def test_status_of_an_empty_namespace(recorded: incident.Incident, reader: kubeio.ApiReader) -> None:
    answer = _ask(ask.Asker(reader), "status other")
    assert answer.text.splitlines() == ["**Detectors** (0):", "**Policies** (0):", "**Waiting for approval**: none."]


def test_history_lists_a_policys_actions_oldest_first(recorded: incident.Incident, reader: kubeio.ApiReader) -> None:
    answer = _ask(ask.Asker(reader), "history default/web-scale-out")
    lines = answer.text.splitlines()
    assert lines[0] == ("**RemediationPolicy default/web-scale-out**: phase AwaitingApproval; 3 action(s) recorded, "
                        "oldest first:")
    assert [line.split(" ")[2].rstrip(":") for line in lines[1:]] == [recorded.succeeded, recorded.skipped,
                                                                      recorded.pending]
    assert "**Succeeded**, decided by `alice@example.com`; Before → after" in lines[1]
    assert "**Skipped** (CooldownActive)" in lines[2]
    assert "**PendingApproval**" in lines[3]
    assert answer.subject == "policy default/web-scale-out"


def test_unknown_objects_get_a_polite_not_found(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                reader: kubeio.ApiReader) -> None:
    asker = ask.Asker(reader)
    answer = _ask(asker, "why default/no-such-action")
    assert answer.text == ("I found no RemediationAction `no-such-action` in namespace `default`. Check the name and "
                           "the namespace (`history <namespace>/<policy>` lists a policy's actions).")
    assert answer.error is None and answer.subject is None
    assert _ask(asker, "history nope").text.startswith("I found no RemediationPolicy `nope` in namespace `default`")
    refused = _ask(asker, "why ../../api/v1/secrets")
    assert refused.text.startswith("I did not understand that: '../../api/v1' is not a valid namespace name.")
    assert refused.facts == []


def test_a_free_question_without_a_subject_gets_help(recorded: incident.Incident, reader: kubeio.ApiReader) -> None:
    answer = _ask(ask.Asker(reader), "what is going on?")
    assert "`why <namespace>/<action>`" in answer.text and answer.facts == []
    named = _ask(ask.Asker(reader), f"tell me about {recorded.skipped} please")  # a free question naming an action
    assert named.subject == f"action default/{recorded.skipped}" and "CooldownActive" in named.text


def test_a_question_too_long_is_refused(reader: kubeio.ApiReader) -> None:
    answer = _ask(ask.Asker(reader), "why " + "a" * 3000)
    assert answer.error == "question too long" and "at most 2000" in answer.text


def test_kubernetes_unreachable_is_one_clear_sentence(kubeapi: KubeAPIServer, tmp_path: pathlib.Path) -> None:
    config = kubeapi.write_kubeconfig(tmp_path / "kubeconfig")
    config.write_text(config.read_text().replace(kubeapi.url, "https://127.0.0.1:1"))  # nothing listens there
    dead = kubeio.Transport(kubeaccess.load(str(config), in_cluster_first=False))
    answer = _ask(ask.Asker(kubeio.ApiReader(dead)), "status")
    dead.close()
    assert answer.text == "I could not read from Kubernetes: cannot reach https://127.0.0.1:1: connection refused"
    assert answer.error == answer.text and answer.facts == []


def test_why_an_alert_triggered_action(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                       reader: kubeio.ApiReader) -> None:
    """An action triggered by an Alertmanager alert: its labels are the evidence, shown as data."""
    body = kubeapi.get("vigil.dev/v1alpha1", "remediationactions", "default", recorded.pending)
    assert body is not None
    spec = body["spec"]
    spec["reason"] = {"source": "alertmanager", "alert": {"alertname": "HighLatency", "summary": "<!here> `rm -rf`"},
                      "time": spec["reason"]["time"]}
    kubeapi.create({"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationAction",
                    "metadata": {"name": "web-scale-out-i-9-s1", "namespace": "default",
                                 "labels": body["metadata"]["labels"]}, "spec": spec})
    answer = asyncio.run(ask.Asker(reader).ask("why web-scale-out-i-9-s1"))
    assert "Why: Alertmanager alert `{alertname=\"HighLatency\", summary=\"\u2039!here> 'rm -rf'\"}`" in answer.text
    assert "Guard rails: the operator has not initialised the action yet." in answer.text
    assert [f["kind"] for f in answer.facts][:2] == ["action", "policy"]  # no detector


def test_a_silent_api_server_is_bounded_by_the_read_deadline(tmp_path: pathlib.Path) -> None:
    """An API server that accepts the connection and never answers: the question ends at the deadline."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the kernel's backlog; nothing ever answers
        port = silent.getsockname()[1]
        config = tmp_path / "silent.kubeconfig"
        config.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]\ncurrent-context: c\n")
        silent_transport = kubeio.Transport(kubeaccess.load(str(config), in_cluster_first=False), timeout=2.0)

        async def timed() -> tuple[ask.Answer, float]:
            started = time.monotonic()
            answer = await ask.Asker(kubeio.ApiReader(silent_transport), read_deadline=0.5).ask("status")
            return answer, time.monotonic() - started

        answer, took = asyncio.run(timed())
        silent_transport.close()
    assert answer.text == "I could not read from Kubernetes: no answer within 0.5s"
    assert took < 1.5
