"""``make demo`` runs the way a user runs it: the module as a subprocess, every peer real, no cluster, no cloud."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import yaml


@pytest.mark.slow
def test_demo_runs_the_full_loop(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo-out"
    done = subprocess.run([sys.executable, "-m", "vigil.sandbox.demo", "--out", str(out), "--plain"],
                          capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    assert "inside the labelled incident window" in text
    assert "Succeeded - SetDesiredCapacity done: desiredCapacity 2 → 4" in text
    assert "approved by demo (auto-approved) via cli" in text
    assert "running `vigil approve" in text  # the approval is shown, not hidden

    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000
    actions = list(yaml.safe_load_all((out / "actions.yaml").read_text()))
    done_actions = [a for a in actions if a["status"]["phase"] == "Succeeded"]
    assert len(done_actions) == 1  # one scale-out; later flares of the same incident are guarded
    assert done_actions[0]["status"]["decision"]["via"] == "cli"
    assert all(a["status"]["phase"] in ("Succeeded", "Skipped") for a in actions)

    notifications = json.loads((out / "notifications.json").read_text())
    by_path: dict[str, list[dict[str, object]]] = {}
    for item in notifications:
        by_path.setdefault(item["path"], []).append(item["body"])
    slack = by_path["/slack"][0]
    assert slack["blocks"][0]["type"] == "header" and "Approval requested" in slack["blocks"][0]["text"]["text"]
    assert "vigil.dev/approve=true" in json.dumps(slack)
    discord = by_path["/discord"][0]
    assert discord["embeds"][0]["title"] and isinstance(discord["embeds"][0]["color"], int)
    webhook_kinds = [body["kind"] for body in by_path["/webhook"]]
    assert webhook_kinds[:2] == ["ApprovalRequested", "ActionExecuted"]
    assert by_path["/webhook"][1]["action"]["after"] == {"desiredCapacity": 4, "inService": 4}
    # The webhook URLs live in a Secret; they never reach the operator's log.
    log = (out / "operator.log").read_text()
    assert "/slack" not in log and "/webhook" not in log and "Traceback" not in log
