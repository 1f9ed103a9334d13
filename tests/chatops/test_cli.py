"""``vigil ask`` as a user types it: a subprocess with a kubeconfig, answers on stdout, one-line errors on stderr."""

from __future__ import annotations

import json
import pathlib

from tests.chatops import incident
from tests.chatops.conftest import FAKE_KEY
from tests.chatops.llm_server import Fail, ScriptedLLM, Text
from tests.cli.test_errors import closed_kubeconfig, one_line_error, vigil
from vigil.chatops import conversation
from vigil_sandbox.kubeapi import KubeAPIServer


def test_vigil_ask_answers_and_remembers_a_conversation(kubeapi: KubeAPIServer, recorded: incident.Incident,
                                                       kubeconfig: pathlib.Path) -> None:
    done = vigil("ask", "--kubeconfig", str(kubeconfig), "why", recorded.succeeded, "--conversation", "cli-1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"**RemediationAction default/{recorded.succeeded}**: Succeeded")
    assert done.stderr == ""
    follow = vigil("ask", "--kubeconfig", str(kubeconfig), "--conversation", "cli-1", "-o", "json",
                   "what did the detector see?")
    assert follow.returncode == 0, follow.stderr
    answer = json.loads(follow.stdout)
    assert answer["via"] == "deterministic" and answer["subject"] == f"action default/{recorded.succeeded}"
    assert "Detector `web-cpu` now: anomalous" in answer["text"]
    assert kubeapi.get("v1", "configmaps", "default", conversation.configmap_name("cli-1")) is not None


def test_vigil_ask_with_an_llm_and_its_fallback(recorded: incident.Incident, kubeconfig: pathlib.Path,
                                                tmp_path: pathlib.Path) -> None:
    key = tmp_path / "llm-key"
    key.write_text(FAKE_KEY + "\n")
    with ScriptedLLM([Text("One detector is anomalous."), Fail(503, {"error": {"message": f"down {FAKE_KEY}"}})]) as s:
        flags = ["--llm-base-url", s.base_url, "--llm-model", s.model, "--llm-api-key-file", str(key)]
        done = vigil("ask", "--kubeconfig", str(kubeconfig), *flags, "status")
        assert (done.returncode, done.stdout, done.stderr) == (0, "One detector is anomalous.\n", "")
        failed = vigil("ask", "--kubeconfig", str(kubeconfig), *flags, "status")
        assert s.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"
    host = s.base_url.split("/")[2]
    assert failed.returncode == 0
    assert failed.stdout.startswith(f"_(The LLM at {host} answered HTTP 503; this is Vigil's own summary.)_\n"
                                    "**Detectors** (1):")
    assert failed.stderr == f"vigil ask: note: the LLM at {host} answered HTTP 503\n"
    assert FAKE_KEY not in failed.stdout + failed.stderr + done.stdout


def test_vigil_ask_errors_are_one_line(tmp_path: pathlib.Path, kubeconfig: pathlib.Path) -> None:
    closed, port = closed_kubeconfig(tmp_path)
    one_line_error(vigil("ask", "--kubeconfig", str(closed), "status"), 1, "vigil ask",
                   f"cannot reach http://127.0.0.1:{port}: connection refused")
    one_line_error(vigil("ask", "--kubeconfig", str(tmp_path / "missing"), "status"), 2, "vigil ask", "no such file")
    one_line_error(vigil("ask", "--kubeconfig", str(kubeconfig), "--llm-base-url", "http://127.0.0.1:1/v1",
                         "status"), 2, "vigil ask", "--llm-base-url and --llm-model go together")
    one_line_error(vigil("ask", "--kubeconfig", str(kubeconfig), "--llm-base-url", "http://127.0.0.1:1/v1",
                         "--llm-model", "m", "--llm-api-key-file", str(tmp_path / "nokey"), "status"), 2,
                   "vigil ask", "No such file or directory")
