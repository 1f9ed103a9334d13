"""``make demo`` runs the way a user runs it: the module as a subprocess, every peer real, no cluster, no cloud."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import yaml

from vigil_sandbox import slackapi


@pytest.mark.slow
def test_demo_shows_what_the_readme_promises(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo-out"
    done = subprocess.run([sys.executable, "-m", "vigil_sandbox.demo", "--out", str(out), "--plain"],
                          capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == []

    # The live replay starts well before NAB's labelled window, so a detection before it would show.
    labelled, replay = summary["labelled"], summary["replay"]
    assert replay["live_from"] <= labelled["window_start"] - 30
    detection = summary["detection"]
    assert detection is not None, text[-3000:]
    assert labelled["window_start"] <= detection["index"] <= labelled["window_end"]
    assert detection["points_after_labelled_anomaly"] == detection["index"] - labelled["anomaly"]
    assert f"detected at NAB point {detection['index']}" in text
    assert "NAB's labelled anomaly point" in text and "inside the labelled window" in text

    # Approval, shown, then 2 -> 4: in the action's status and in moto's own state.
    assert "U0SRE pressed Approve on the Slack message (mapped to sre@example.com) -> vigil chatops answered HTTP 200" \
        in text
    assert "approved by sre@example.com via slack" in text
    assert "Succeeded - SetDesiredCapacity done: desiredCapacity 2 → 4" in text
    # ... then back 4 → 3 → 2 once the incident is over (restore), and moto ends where it started.
    assert summary["asg_desired"] == {"start": 2, "end": 2}
    assert "scaled back after the incident" in text

    # The first incident closed; a second one, inside the cooldown, was recorded as skipped.
    actions = list(yaml.safe_load_all((out / "actions.yaml").read_text()))
    restored = sorted([a for a in actions if a["spec"].get("restore")], key=lambda a: a["spec"]["restore"]["sequence"])
    succeeded = [a for a in actions if a["status"]["phase"] == "Succeeded" and a not in restored]
    skipped = [a for a in actions if a["status"]["phase"] == "Skipped"]
    assert len(succeeded) == 1 and succeeded[0]["status"]["decision"]["via"] == "slack"
    assert succeeded[0]["status"]["after"]["desiredCapacity"] == 4

    # The scale-back: two actions of the same incident, direction restore, no approval (restore.approval: false),
    # each read back from moto after its call, after the scale-out and before the second incident.
    assert [(a["status"]["phase"], a["status"]["before"]["desiredCapacity"], a["status"]["after"]["desiredCapacity"])
            for a in restored] == [("Succeeded", 4, 3), ("Succeeded", 3, 2)]
    for action in restored:
        assert action["spec"]["incident"] == succeeded[0]["spec"]["incident"]
        assert action["metadata"]["labels"]["vigil.dev/direction"] == "restore"
        assert action["spec"]["restore"]["scaleAction"] == succeeded[0]["metadata"]["name"]
        assert action["status"]["decision"]["via"] == "policy"
        assert action["status"]["createdAt"] > succeeded[0]["status"]["completedAt"]
    assert all(a["metadata"]["creationTimestamp"] <= s["metadata"]["creationTimestamp"]
               for a in restored for s in skipped)
    assert skipped and all(a["status"]["skipReason"] == "CooldownActive" for a in skipped), [
        (a["metadata"]["name"], a["status"].get("skipReason"), a["status"].get("message")) for a in skipped]
    assert {a["spec"]["incident"] for a in skipped}.isdisjoint({succeeded[0]["spec"]["incident"]})
    assert all(a["metadata"]["creationTimestamp"] >= succeeded[0]["metadata"]["creationTimestamp"] for a in skipped)
    assert {a["status"]["phase"] for a in actions} == {"Succeeded", "Skipped"}
    assert "CooldownActive" in summary["action_allowed_reasons"]
    assert "Skipped (CooldownActive)" in text

    # Ask Vigil about the approved action, as `vigil ask` answers it.
    name = succeeded[0]["metadata"]["name"]
    asked = (out / "ask.txt").read_text()
    assert asked.startswith(f"$ vigil ask why {name}\n**RemediationAction default/{name}**: Succeeded")
    assert "Decision: `sre@example.com` via slack" in asked and "→ `{'desiredCapacity': 4" in asked
    assert asked in text

    # The approval in Slack: vigil chatops posted the message with buttons to the sandbox's Slack stand-in,
    # the demo's "human" pressed Approve (a signed block_actions request), and the message was rewritten.
    exchange = json.loads((out / "slack.json").read_text())
    value = f"default/{name}"
    [buttons] = [b for b in exchange["posted"]["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in buttons["elements"]] == [
        ("vigil_approve", value, "Approve"), ("vigil_reject", value, "Reject")]
    assert exchange["posted"]["channel"] == "C0APPROVALS"
    pressed = exchange["pressed"]
    assert pressed["status"] == 200 and pressed["payload"]["user"]["id"] == "U0SRE"
    assert pressed["payload"]["actions"][0]["value"] == value and pressed["payload"]["container"]["message_ts"] == \
        exchange["ts"]
    first, last = exchange["updates"][0], exchange["updates"][-1]
    assert "Approved by u0sre as sre@example.com at " in first["text"] and "via slack" in first["text"]
    assert "(now Succeeded)" in last["text"]
    assert not [b for u in exchange["updates"] for b in u["blocks"] if b["type"] == "actions"]
    assert f"  actions: [Approve] (vigil_approve, {value})  [Reject] (vigil_reject, {value})" in text
    assert text.index("vigil chatops posted (chat.postMessage") < text.index("the message now reads") < \
        text.index(f"$ vigil ask why {name}")
    chatops_log = (out / "chatops.log").read_text()
    assert f"Approved {value} as sre@example.com for slack:U0SRE" in chatops_log
    assert slackapi.BOT_TOKEN not in chatops_log and slackapi.SIGNING_SECRET not in chatops_log

    notifications = json.loads((out / "notifications.json").read_text())
    by_path: dict[str, list[dict[str, object]]] = {}
    for item in notifications:
        by_path.setdefault(item["path"], []).append(item["body"])
    assert set(by_path) == {"/slack", "/discord", "/webhook"}
    slack = by_path["/slack"][0]
    assert slack["blocks"][0]["type"] == "header" and "Approval requested" in slack["blocks"][0]["text"]["text"]
    assert "vigil.dev/approve=true" in json.dumps(slack)
    discord = by_path["/discord"][0]
    assert discord["embeds"][0]["title"] and isinstance(discord["embeds"][0]["color"], int)
    webhook_kinds = [body["kind"] for body in by_path["/webhook"]]
    # One ActionSkipped per skipped action: the surge may flare again after keepFiringFor of quiet, which
    # opens another incident, skipped for the same cooldown.
    assert webhook_kinds == ["ApprovalRequested", "ActionExecuted", "ActionProposed", "ActionExecuted",
                             "ActionProposed", "ActionExecuted"] + ["ActionSkipped"] * len(skipped)
    assert by_path["/webhook"][1]["action"]["after"] == {"desiredCapacity": 4, "inService": 4}

    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000
    assert (out / "manifests.yaml").is_file()
    # The webhook URLs live in a Secret; they never reach the operator's log.
    log = (out / "operator.log").read_text()
    assert "/slack" not in log and "/webhook" not in log and "Traceback" not in log


def test_help_is_plain_text() -> None:
    done = subprocess.run([sys.executable, "-m", "vigil_sandbox.demo", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert "--seconds-per-point" in done.stdout and "--plain" in done.stdout
    for markup in ("``", ":mod:", ":func:", ":class:", ":meth:"):
        assert markup not in done.stdout


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = _cmdline(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stopped_demo_leaves_nothing_behind(tmp_path: pathlib.Path, signum: signal.Signals) -> None:
    out = tmp_path / "demo-out"
    proc = subprocess.Popen([sys.executable, "-m", "vigil_sandbox.demo", "--out", str(out), "--plain"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until `vigil run` is up: the demo is then as far as it gets before the replay.
        deadline = time.monotonic() + 120
        children: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            children = _descendants(proc.pid)
            if any(" vigil run " in cmd and str(out) in cmd for cmd in children.values()) and any(
                    "prometheus" in cmd and "--storage.tsdb.path=" in cmd for cmd in children.values()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"vigil run never started (demo exit code {proc.poll()})")
        data_dirs = [pathlib.Path(arg.split("=", 1)[1]).parent for cmd in children.values() for arg in cmd.split()
                     if arg.startswith("--storage.tsdb.path=")]
        assert data_dirs and all(d.name.startswith("vigil-prometheus-") and d.is_dir() for d in data_dirs)

        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, stdout[-2000:] + stderr[-2000:]
    assert f"demo interrupted ({signum.name})" in stderr
    assert "Traceback" not in stderr + stdout and "KeyboardInterrupt" not in stderr
    # Every process it started is gone (they may take a moment to be reaped by init), and so are its files.
    until = time.monotonic() + 20
    while time.monotonic() < until and any(_alive(pid) and _cmdline(pid) == cmd for pid, cmd in children.items()):
        time.sleep(0.2)
    assert not [cmd for pid, cmd in children.items() if _alive(pid) and _cmdline(pid) == cmd]
    assert not [d for d in data_dirs if d.exists()]
    assert "Traceback" not in (out / "operator.log").read_text()

