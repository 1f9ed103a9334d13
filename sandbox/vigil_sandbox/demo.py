"""make demo: the whole loop, from a replayed EC2 CPU incident to a scaled Auto Scaling Group, locally.

    python -m vigil_sandbox.demo [--out demo-out] [--seconds-per-point N] [--plain]

It starts a sandbox (the Kubernetes API emulator, moto with an Auto Scaling
Group 'web' of 2 instances, a real Prometheus, a capture server standing in
for Slack, Discord and a webhook, 'vigil run', and 'vigil chatops' posting to
a Slack Web API stand-in). It applies an
AnomalyDetector and a RemediationPolicy that needs approval, then replays a
labelled incident from the Numenta Anomaly Benchmark (ec2_cpu_utilization_fe7f93)
one 5-minute point per second, starting 38 points before NAB's labelled window.

What happens: the detector flags the first CPU flare inside the labelled
window; the policy asks for approval, 'vigil chatops' posts the approval
message with Approve / Reject buttons to Slack, and the demo presses Approve
as a Slack user the identity map knows (a request signed as Slack signs it);
the message is rewritten in place and the group scales 2 -> 4. The CPU calms
down, the incident closes, and the scale step's restore brings the group back
4 -> 3 -> 2, one RemediationAction per step (direction restore). The surge
that follows opens a second incident inside the cooldown: it is recorded as a
RemediationAction Skipped (CooldownActive). The demo ends with a summary, the
Slack message (with its buttons, then as rewritten) and a `vigil ask why`
answer about the approved action, and writes demo.png, summary.json,
manifests.yaml, actions.yaml, notifications.json, slack.json, ask.txt,
operator.log and chatops.log to --out.

Stop it at any time (Ctrl-C, SIGTERM, SIGHUP): every process it started is
stopped and its temporary files are removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from vigil_sandbox import world
from vigil_sandbox.prometheus import selector
from vigil_sandbox.world import Sandbox

NAMESPACE = "default"
DETECTOR = "web-cpu"
POLICY = "web-scale-out"
AD = ("vigil.dev/v1alpha1", "anomalydetectors")
RP = ("vigil.dev/v1alpha1", "remediationpolicies")
RA = ("vigil.dev/v1alpha1", "remediationactions")

#: The policy's timings, in replayed points (one point = 5 minutes of series time = --seconds-per-point).
#: keepFiringFor: 6 quiet points (30 min of series time) close an incident. The first flare
#: (points 727-732) is followed by 20 quiet points, so its incident closes, and both scale-back steps
#: are done, before a flicker around point 747 can open the next incident (the detector sometimes
#: flags it, depending on where the evaluation grid falls; with 10 points the second step raced it).
KEEP_FIRING_POINTS = 6
#: cooldown: 120 points (10 h of series time) after the scale-out: longer than the demo runs, even up to
#: its deadline. The cooldown must not lift while the second incident is open: the policy would take a
#: new step for it then, refused as RateLimited (the scale-out and its two scale-back steps are 3 actions
#: in the hour), and the demo means to show one reason, the cooldown.
COOLDOWN_POINTS = 120
#: restore: the scale-back starts once the CPU has been quiet this many points (as soon as the incident
#: closes), then one instance per RESTORE_EVERY_POINTS; both steps fit in the quiet spell before the surge.
RESTORE_AFTER_POINTS = KEEP_FIRING_POINTS
RESTORE_EVERY_POINTS = 2
#: The demo approves a pending action once it has waited this many points, as a human would.
APPROVE_AFTER_POINTS = 3
POINT_MINUTES = 5

#: Signals that stop the demo cleanly. SIGKILL cannot be caught: the children die through
#: PR_SET_PDEATHSIG then, but temporary files stay.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised in the main thread by a stop signal, so every ``finally`` runs on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def manifests(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What a user would ``kubectl apply``: the detector, the webhook Secret, the policy."""
    assert sandbox.chat is not None
    step = f"{sandbox.spacing:g}s"
    labels = ",".join(f'{k}="{v}"' for k, v in world.LABELS.items())
    return [
        {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
         "metadata": {"name": DETECTOR, "namespace": NAMESPACE, "labels": {"app": "web"}},
         "spec": {"query": f"{world.METRIC}{{{labels}}}", "interval": step, "step": step, "for": "0s"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-webhooks", "namespace": NAMESPACE},
         "stringData": {"slack": f"{sandbox.chat.url}/slack", "discord": f"{sandbox.chat.url}/discord",
                        "webhook": f"{sandbox.chat.url}/webhook"}},
        {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
         "metadata": {"name": POLICY, "namespace": NAMESPACE},
         "spec": {
             "detectorSelector": {"matchLabels": {"app": "web"}},
             "trigger": {"for": "0s", "keepFiringFor": f"{KEEP_FIRING_POINTS * sandbox.spacing:g}s"},
             # The scale-back needs no approval (restore.approval: false): the scale-out was approved, and
             # undoing it step by step must not wait for a human at night.
             "actions": [{"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 2, "max": 6},
                          "restore": {"after": f"{RESTORE_AFTER_POINTS * sandbox.spacing:g}s", "step": 1,
                                      "every": f"{RESTORE_EVERY_POINTS * sandbox.spacing:g}s", "approval": False}}],
             "aws": {"region": "us-east-1"},
             "approval": {"required": True, "timeout": "10m"},
             "cooldown": f"{COOLDOWN_POINTS * sandbox.spacing:g}s",
             "rateLimit": {"maxActions": 3, "window": "1h"},
             "notify": {name: {"urlSecretRef": {"name": "chat-webhooks", "key": name}}
                        for name in ("slack", "discord", "webhook")},
         }},
    ]


@dataclasses.dataclass
class Sample:
    t: float  # wall time
    position: float  # fractional original point index live at t (floor = the point being served)
    index: int
    value: float
    score: float | None
    anomalous: bool
    desired: int


@dataclasses.dataclass
class Timeline:
    samples: list[Sample] = dataclasses.field(default_factory=list)
    detected_at: float | None = None  # the detector's anomalousSince, the first time
    detection_index: int | None = None  # the newest point Prometheus held then
    approval_requested: float | None = None
    approved: float | None = None
    succeeded: float | None = None
    restored: float | None = None  # the first scale-back step succeeded
    skipped: float | None = None
    action: dict[str, Any] | None = None  # the newest
    actions: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # all, by name
    approved_names: set[str] = dataclasses.field(default_factory=set)
    #: The policy's ActionAllowed reason each time it changed: (wall time, reason).
    allowed_reasons: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    #: The button press sent to `vigil chatops` (Slack's block_actions payload) and its HTTP status.
    pressed: dict[str, Any] | None = None
    press_status: int | None = None


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _series_clock(sandbox: Sandbox, index: float) -> str:
    return datetime.datetime.fromtimestamp(sandbox.series_time(index), datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _press_approve(sandbox: Sandbox, timeline: Timeline, name: str) -> str | None:
    """Press Approve on the action's Slack message, as a human would; None while it is not posted yet."""
    status, payload = sandbox.press(f"{NAMESPACE}/{name}")
    if status == 0:
        return None
    timeline.pressed, timeline.press_status = payload, status
    return (f"approval requested for {name}: {world.SRE} pressed Approve on the Slack message "
            f"(mapped to {world.SRE_IDENTITY}) -> vigil chatops answered HTTP {status}")


def slack_record(sandbox: Sandbox, timeline: Timeline, name: str) -> dict[str, Any]:
    """What Slack saw of the approval of ``name``: the message posted with buttons, the press, the rewrites."""
    if sandbox.slack is None:
        return {}
    value = f"{NAMESPACE}/{name}"
    posted = sandbox.slack.called("chat.postMessage", lambda a: json.dumps(value) in json.dumps(a.get("blocks")))
    # the message's ts, as the press named it (once rewritten, its blocks no longer hold the buttons)
    ts = ((timeline.pressed or {}).get("container") or {}).get("message_ts")
    updates = sandbox.slack.called("chat.update", lambda a: ts is not None and a.get("ts") == ts)
    return {"channel": world.SLACK_CHANNEL, "ts": ts,
            "posted": posted[0] if posted else None,
            "pressed": {"payload": timeline.pressed, "status": timeline.press_status}, "updates": updates}


def render_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """A Block Kit message as a few lines of text: what a reader of the demo's output needs to see."""
    lines = []
    for block in blocks or []:
        kind = block.get("type")
        if kind == "actions":
            buttons = "  ".join(f"[{e['text']['text']}] ({e['action_id']}, {e['value']})"
                                for e in block.get("elements", []))
            lines.append(f"  actions: {buttons}")
        elif kind in ("header", "section"):
            text = (block.get("text") or {}).get("text", "")
            fields = " | ".join(f.get("text", "") for f in block.get("fields") or [])
            lines.append(f"  {kind}: {' '.join((text + ' ' + fields).split())[:220]}")
        elif kind == "context":
            lines.append("  context: " + " ".join(e.get("text", "") for e in block.get("elements", []))[:220])
    return lines


def _ask_why(sandbox: Sandbox, name: str) -> str:
    """``vigil ask why NAME`` as a user runs it (deterministic: the demo configures no LLM)."""
    done = subprocess.run(
        [sys.executable, "-m", "vigil", "ask", "why", name, "-n", NAMESPACE, "--kubeconfig", str(sandbox.kubeconfig)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    return done.stdout.strip() if done.returncode == 0 else f"vigil ask failed: {done.stderr.strip()[:300]}"


def point_seen_at(sandbox: Sandbox, when: float) -> int:
    """The newest point Prometheus held at wall time ``when``: all an evaluation then could see.

    Asks Prometheus for the sample's timestamp and value as of ``when`` (never later data),
    and maps it back to the original point index.
    """
    assert sandbox.prometheus is not None and sandbox.exporter is not None
    fallback = sandbox.point_index(when)
    try:
        query = selector(world.METRIC, world.LABELS)
        stamp = sandbox.prometheus.query(f"timestamp({query})", at=when)
        value = sandbox.prometheus.query(query, at=when)
        ts, seen = float(stamp[0]["value"][1]), float(value[0]["value"][1])
    except Exception:  # Prometheus gone or the series absent: the point being served then
        return fallback
    guess = sandbox.replay.live_from + sandbox.exporter.index_at(ts)
    for index in (guess, guess - 1, guess + 1):  # a scrape stamped just before its point's interval
        if 0 <= index < sandbox.values.size and math.isclose(float(sandbox.values[index]), seen):
            return index
    return guess


def observe(sandbox: Sandbox, timeline: Timeline, say: Callable[[str], None]) -> Sample:
    assert sandbox.kube is not None and sandbox.moto is not None and sandbox.estate is not None
    now = time.time()
    index = sandbox.point_index(now)
    detector = sandbox.kube.get(*AD, NAMESPACE, DETECTOR) or {}
    detector_status = detector.get("status") or {}
    anomalous = bool(detector_status.get("anomalous"))
    score = sandbox.metric("vigil_detector_max_score", namespace=NAMESPACE, detector=DETECTOR)
    desired = sandbox.estate.desired(sandbox.moto)
    if anomalous and timeline.detected_at is None:
        timeline.detected_at = _epoch(detector_status.get("anomalousSince")) or now
        timeline.detection_index = point_seen_at(sandbox, timeline.detected_at)
    policy = sandbox.kube.get(*RP, NAMESPACE, POLICY) or {}
    for condition in (policy.get("status") or {}).get("conditions", []):
        if condition.get("type") == "ActionAllowed":
            reason = str(condition.get("reason", ""))
            if not timeline.allowed_reasons or timeline.allowed_reasons[-1][1] != reason:
                timeline.allowed_reasons.append((now, reason))
    actions = sorted(sandbox.kube.list(*RA, NAMESPACE), key=lambda a: a["metadata"]["creationTimestamp"])
    for each in actions:
        name = each["metadata"]["name"]
        phase = (each.get("status") or {}).get("phase", "")
        timeline.actions[name] = each
        if phase == "PendingApproval" and timeline.approval_requested is None:
            timeline.approval_requested = now
        restoring = bool((each.get("spec") or {}).get("restore"))
        if phase == "Succeeded" and timeline.succeeded is None and not restoring:
            timeline.succeeded = now
        if phase == "Succeeded" and restoring and timeline.restored is None:
            timeline.restored = now
            say(f"{name}: scaled back after the incident: {(each.get('status') or {}).get('message', '')}")
        if phase == "Skipped" and timeline.skipped is None:
            timeline.skipped = now
            say(f"{name}: Skipped ({(each.get('status') or {}).get('skipReason')}): "
                f"{(each.get('status') or {}).get('message', '')}")
        if (phase == "PendingApproval" and name not in timeline.approved_names
                and now - (timeline.approval_requested or now) >= APPROVE_AFTER_POINTS * sandbox.spacing):
            note = _press_approve(sandbox, timeline, name)
            if note is not None:
                timeline.approved_names.add(name)
                timeline.notes.append(note)
                timeline.approved = time.time()
                say(note)
    if actions:
        timeline.action = actions[-1]
    position = sandbox.replay.live_from + (now - sandbox.start_time) / sandbox.spacing
    sample = Sample(now, position, index, float(sandbox.values[min(index, len(sandbox.values) - 1)]), score,
                    anomalous, desired)
    timeline.samples.append(sample)
    return sample


def _bar(score: float | None, width: int = 24) -> str:
    if score is None:
        return "." * width
    filled = round(score * width)
    return "#" * filled + "." * (width - filled)


def _where(sandbox: Sandbox, index: int) -> str:
    incident = sandbox.incident
    assert incident is not None
    if index < incident.window_start:
        return "before the labelled window"
    return "in the labelled window" if index <= incident.window_end else "after the labelled window"


def render_lines(sandbox: Sandbox, sample: Sample, timeline: Timeline, threshold: float | None) -> list[str]:
    policy = (sandbox.kube.get(*RP, NAMESPACE, POLICY) if sandbox.kube else None) or {}
    policy_status = policy.get("status") or {}
    conditions = {c["type"]: c for c in policy_status.get("conditions", [])}
    allowed = conditions.get("ActionAllowed", {})
    action = timeline.action or {}
    status = action.get("status") or {}
    lines = [
        f"replay   point {sample.index - sandbox.replay.live_from + 1:>3}/{sandbox.replay.live_points} "
        f"(NAB point {sample.index}, {_series_clock(sandbox, sample.index)}, {_where(sandbox, sample.index)})   "
        f"CPU {sample.value:6.2f} %",
        f"detector {DETECTOR:<14} score {'' if sample.score is None else f'{sample.score:.3f}':>5} "
        f"[{_bar(sample.score)}] threshold {threshold if threshold is not None else '?'}  "
        + ("ANOMALOUS" if sample.anomalous else "normal"),
        f"policy   {POLICY:<14} phase {policy_status.get('phase', '-'):<16} "
        f"ActionAllowed={allowed.get('status', '-')} ({allowed.get('reason', '-')})  "
        f"incident {policy_status.get('incident') or '-'}",
        f"action   {action.get('metadata', {}).get('name', '-'):<26} {status.get('phase', '-'):<16} "
        f"{status.get('message', '')[:70]}",
        f"AWS      Auto Scaling Group web: desired capacity {sample.desired}",
        f"chat     {len(sandbox.chat.received()) if sandbox.chat else 0} notification(s) received "
        "(Slack, Discord, webhook stand-ins)",
    ]
    return lines + [f"note     {note}" for note in timeline.notes[-2:]]


def plain_line(sandbox: Sandbox, sample: Sample, timeline: Timeline) -> str:
    """One line per update when there is no terminal for the live view (CI logs, pipes)."""
    action = timeline.action or {}
    score = "-" if sample.score is None else f"{sample.score:.3f}"
    reason = timeline.allowed_reasons[-1][1] if timeline.allowed_reasons else "-"
    return (f"point {sample.index - sandbox.replay.live_from + 1:>3}/{sandbox.replay.live_points} "
            f"(NAB {sample.index}) CPU {sample.value:6.2f}% | score {score} "
            f"{'ANOMALOUS' if sample.anomalous else 'normal   '} | ActionAllowed {reason:<16} | "
            f"action {(action.get('status') or {}).get('phase', '-'):<15} | ASG desired {sample.desired}")


def plot(sandbox: Sandbox, timeline: Timeline, path: pathlib.Path, threshold: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    incident = sandbox.incident
    assert incident is not None
    r = sandbox.replay
    samples = [s for s in timeline.samples if s.position >= r.live_from]  # polls before point 0 was served

    def when(index: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(sandbox.series_time(index), datetime.UTC)

    def position(wall: float) -> float:
        return r.live_from + (wall - sandbox.start_time) / sandbox.spacing

    fig, (ax_value, ax_score, ax_capacity) = plt.subplots(
        3, 1, figsize=(13, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.4]})
    served = min(r.last, max((s.index for s in samples), default=r.live_from) + 1)
    ax_value.plot([when(i) for i in range(r.first, r.live_from)], sandbox.values[r.first:r.live_from],
                  color="tab:gray", linewidth=1.0, label="backfilled history (the model's warm-up)")
    ax_value.plot([when(i) for i in range(r.live_from - 1, served)], sandbox.values[r.live_from - 1:served],
                  color="tab:blue", linewidth=1.2, label="replayed live, one point per "
                  f"{sandbox.spacing:g} s")
    ax_value.set_yscale("log")
    ax_value.set_yticks([1, 2, 3, 5, 10, 20, 50, 100])
    ax_value.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax_value.yaxis.set_minor_formatter(NullFormatter())
    ax_value.set_ylim(1.5, 100)
    ax_value.set_ylabel("EC2 CPU utilisation (%, log scale)")

    window = (when(incident.window_start), when(incident.window_end))
    for ax in (ax_value, ax_score, ax_capacity):
        ax.axvspan(*window, color="tab:red", alpha=0.08, label="NAB labelled anomaly window" if ax is ax_value
                   else None)
        ax.axvline(when(incident.anomaly), color="tab:red", linestyle=":", linewidth=1.2,
                   label="NAB labelled anomaly point" if ax is ax_value else None)
        ax.axvline(when(r.live_from - 0.5), color="tab:gray", linestyle=(0, (1, 3)), linewidth=0.8,
                   label="live replay starts" if ax is ax_value else None)
        ax.grid(True, axis="y", alpha=0.3)

    # (where, short label on the plot, legend text, line style)
    events: list[tuple[float, str, str, dict[str, Any]]] = []
    if timeline.detection_index is not None:
        i = timeline.detection_index
        events.append((float(i), "1 detected", f"1 detected: point {i}, {when(i):%H:%M}, "
                       f"{_relative(i - incident.anomaly)} the labelled point",
                       {"color": "tab:red", "linestyle": "-", "linewidth": 1.6}))
    for wall, short, text, style in (
        (timeline.approval_requested, "2 approval requested", "2 approval requested (Slack, Discord, webhook)",
         {"color": "tab:orange", "linestyle": "--", "linewidth": 1.3}),
        (timeline.approved, "3 approved", "3 approved with the Slack button",
         {"color": "tab:purple", "linestyle": "--", "linewidth": 1.3}),
        (timeline.succeeded, "4 scaled 2 → 4", "4 scaled out: desired capacity 2 → 4 (SetDesiredCapacity)",
         {"color": "tab:green", "linestyle": "-", "linewidth": 1.8}),
        (timeline.restored, "5 scaled back", "5 incident over: scaled back 4 → 3 → 2 (restore, one step per "
         f"{RESTORE_EVERY_POINTS} points)", {"color": "tab:cyan", "linestyle": "-", "linewidth": 1.6}),
        (timeline.skipped, "6 skipped: CooldownActive", "6 second incident inside the cooldown: "
         "Skipped (CooldownActive)", {"color": "black", "linestyle": "-.", "linewidth": 1.6}),
    ):
        if wall is not None:
            events.append((position(wall), short, f"{text}, {when(position(wall)):%H:%M}", style))
    for row, (at, short, text, style) in enumerate(events):
        for ax in (ax_value, ax_score, ax_capacity):
            ax.axvline(when(at), label=text if ax is ax_value else None, **style)
        # Staggered labels in the score panel's empty lower half: the first four are minutes apart.
        ax_score.annotate(short, (mdates.date2num(when(at)), 0.40 - 0.07 * (row % 6)),  # type: ignore[no-untyped-call]
                          xytext=(3, 0),
                          textcoords="offset points", fontsize=8, va="center", color=style["color"],
                          bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                "alpha": 0.85})
    ax_value.set_title("Vigil sandbox demo: a labelled EC2 CPU incident (NAB ec2_cpu_utilization_fe7f93) "
                       "replayed live\nVigil detects it, asks for approval, scales the Auto Scaling Group out, "
                       "scales it back once the incident is over, and skips a second incident inside the cooldown",
                       fontsize=11)
    ax_value.legend(loc="upper left", fontsize=8, framealpha=0.9)

    xs = [when(s.position) for s in samples]
    ax_score.plot(xs, [s.score if s.score is not None else float("nan") for s in samples], color="tab:orange",
                  linewidth=1.2, label="detector score (operator /metrics, as polled)")
    if threshold is not None:
        ax_score.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.9, label=f"threshold {threshold:g}")
    ax_score.fill_between(xs, 0, 1.02, where=[s.anomalous for s in samples], color="tab:red", alpha=0.25,
                          step="post", label="detector verdict: anomalous (status, as polled)")
    ax_score.set_ylim(0, 1.02)
    ax_score.set_ylabel("anomaly score (0-1)")
    ax_score.legend(loc="upper left", fontsize=8, framealpha=0.9)

    ax_capacity.step(xs, [s.desired for s in samples], where="post", color="tab:green", linewidth=1.8,
                     label="desired capacity (read from moto)")
    if timeline.succeeded is not None:
        start = position(timeline.succeeded)
        ax_capacity.axvspan(when(start), when(min(start + COOLDOWN_POINTS, r.last + 3)), facecolor="none",
                            edgecolor="tab:blue", hatch="///", alpha=0.35, linewidth=0,
                            label=f"policy cooldown ({COOLDOWN_POINTS} points after the scale-out)")
    low = min((s.desired for s in samples), default=2)
    high = max((s.desired for s in samples), default=4)
    ax_capacity.set_ylim(low - 0.7, high + 0.9)
    ax_capacity.set_yticks(range(low, high + 1))
    ax_capacity.set_ylabel("ASG 'web'\n(instances)")
    ax_capacity.legend(loc="upper left", fontsize=8, framealpha=0.9)
    ax_capacity.xaxis.set_major_formatter(mdates.DateFormatter("%b %d %H:%M"))  # type: ignore[no-untyped-call]
    ax_capacity.set_xlabel(f"series time (UTC, NAB timestamps; 1 point = {POINT_MINUTES} min, replayed every "
                           f"{sandbox.spacing:g} s of wall time)")
    ax_capacity.set_xlim(when(r.first - 1), when(max(served, position(samples[-1].t) if samples else served) + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _relative(points: int) -> str:
    minutes = abs(points) * POINT_MINUTES
    span = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    if points == 0:
        return "at"
    return f"{abs(points)} point(s) / {span} {'after' if points > 0 else 'before'}"


def report(sandbox: Sandbox, timeline: Timeline, desired: tuple[int, int]) -> tuple[list[str], dict[str, Any]]:
    """The printed summary and summary.json: what the README promises, as it happened."""
    incident = sandbox.incident
    assert incident is not None
    r = sandbox.replay
    lines = ["", "Summary"]
    lines.append(f"- replay: NAB points {r.first}-{r.live_from - 1} backfilled as history, {r.live_from}-{r.last - 1} "
                 f"served live ({_series_clock(sandbox, r.live_from)} to {_series_clock(sandbox, r.last - 1)}); "
                 f"labelled window {incident.window_start}-{incident.window_end} "
                 f"({_series_clock(sandbox, incident.window_start)} to {_series_clock(sandbox, incident.window_end)}), "
                 f"labelled anomaly point {incident.anomaly} ({_series_clock(sandbox, incident.anomaly)})")
    detection: dict[str, Any] | None = None
    i = timeline.detection_index
    if i is None:
        lines.append("- the detector never flagged the incident")
    else:
        inside = incident.window_start <= i <= incident.window_end
        detection = {"index": i, "time": _series_clock(sandbox, i), "cpu": float(sandbox.values[i]),
                     "points_after_labelled_anomaly": i - incident.anomaly,
                     "points_after_window_start": i - incident.window_start, "inside_window": inside}
        lines.append(f"- detected at NAB point {i} ({_series_clock(sandbox, i)}, CPU {sandbox.values[i]:.2f} %): "
                     f"{_relative(i - incident.anomaly)} NAB's labelled anomaly point {incident.anomaly}, "
                     f"{_relative(i - incident.window_start)} the labelled window opens: "
                     f"{'inside' if inside else 'OUTSIDE'} the labelled window")
    actions = sorted(timeline.actions.values(), key=lambda a: a["metadata"]["creationTimestamp"])
    if not actions:
        lines.append("- no RemediationAction was created")
    summarised = []
    for action in actions:
        status = action.get("status") or {}
        decision = status.get("decision") or {}
        summarised.append({"name": action["metadata"]["name"], "incident": (action.get("spec") or {}).get("incident"),
                           "direction": "restore" if (action.get("spec") or {}).get("restore") else "remediate",
                           "phase": status.get("phase"), "skipReason": status.get("skipReason"),
                           "message": status.get("message"), "before": status.get("before"),
                           "after": status.get("after"), "decision": decision or None})
        lines.append(f"- RemediationAction {action['metadata']['name']} ("
                     + ("scale-back after incident " if (action.get("spec") or {}).get("restore") else "incident ")
                     + f"{(action.get('spec') or {}).get('incident')}): {status.get('phase')}"
                     + (f" ({status['skipReason']})" if status.get("skipReason") else "")
                     + f" - {status.get('message', '')}")
        if decision and status.get("phase") == "Succeeded":
            lines.append(f"  approved by {decision.get('by')} via {decision.get('via')}")
    reasons = [reason for _, reason in timeline.allowed_reasons]
    lines.append(f"- policy ActionAllowed reasons over the run: {' → '.join(reasons) or 'none seen'}")
    lines.append(f"- Auto Scaling Group web (moto): desired capacity {desired[0]} at the start, "
                 f"{desired[1]} at the end")
    notifications: dict[str, list[str]] = {}
    if sandbox.chat is not None:
        for received in sandbox.chat.received():
            body = received.body if isinstance(received.body, dict) else {}
            notifications.setdefault(received.path, []).append(str(body.get("kind", "")))
        lines.append(f"- {len(sandbox.chat.received())} notification(s) delivered: "
                     + ", ".join(f"{len(v)} to {k}" for k, v in sorted(notifications.items()))
                     + (f" (webhook kinds: {', '.join(notifications['/webhook'])})" if "/webhook" in notifications
                        else ""))
    data = {
        "replay": {"first_backfilled": r.first, "live_from": r.live_from, "last_live": r.last - 1,
                   "seconds_per_point": sandbox.spacing},
        "labelled": {"window_start": incident.window_start, "window_end": incident.window_end,
                     "anomaly": incident.anomaly},
        "detection": detection,
        "actions": summarised,
        "action_allowed_reasons": reasons,
        "asg_desired": {"start": desired[0], "end": desired[1]},
        "notifications": {k: len(v) for k, v in notifications.items()},
        "webhook_kinds": notifications.get("/webhook", []),
    }
    return lines, data


def problems(data: dict[str, Any]) -> list[str]:
    """What the README promises that did not happen (empty: the demo showed it all)."""
    found = []
    detection = data["detection"]
    if detection is None or not detection["inside_window"]:
        found.append("no detection inside the labelled window")
    if not any(a["phase"] == "Succeeded" and (a["decision"] or {}).get("via") == "slack" for a in data["actions"]):
        found.append("no scale-out approved in Slack and successful")
    slack = data.get("slack") or {}
    buttons = [b for b in ((slack.get("posted") or {}).get("blocks") or []) if b.get("type") == "actions"]
    if not buttons:
        found.append("no Slack approval message with buttons")
    if (slack.get("pressed") or {}).get("status") != 200:
        found.append("the Approve button press was not taken")
    if not slack.get("updates") or any(b.get("type") == "actions" for b in slack["updates"][-1].get("blocks") or []):
        found.append("the Slack message was not rewritten without its buttons")
    back = [a for a in data["actions"] if a["direction"] == "restore" and a["phase"] == "Succeeded"]
    steps = [((a["before"] or {}).get("desiredCapacity"), (a["after"] or {}).get("desiredCapacity")) for a in back]
    if steps != [(4, 3), (3, 2)]:
        found.append(f"the scale-back went {steps}, not 4 -> 3 -> 2")
    if (data["asg_desired"]["start"], data["asg_desired"]["end"]) != (2, 2):
        found.append(f"the group went {data['asg_desired']['start']} -> {data['asg_desired']['end']}, not back to 2")
    if not any(a["phase"] == "Skipped" and a["skipReason"] == "CooldownActive" for a in data["actions"]):
        found.append("no Skipped (CooldownActive) action")
    return found


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold stop signals while cleaning up; one that arrives meanwhile is delivered afterwards."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = pathlib.Path(args.out)
    plain = args.plain or not sys.stdout.isatty()
    for binary in ("prometheus", "promtool"):
        if shutil.which(binary) is None:
            print(f"vigil demo: `{binary}` is not on PATH. Install the Debian package `prometheus` "
                  "(make demo does it for you), then run this again.", file=sys.stderr)
            return 2
    sandbox = Sandbox(out, spacing=float(args.seconds_per_point))
    timeline = Timeline()
    live: Any = None

    def say(text: str) -> None:
        if live is not None:
            live.console.print(f"[demo] {text}", markup=False, highlight=False)
        else:
            print(f"[demo] {text}", flush=True)

    try:
        sandbox.start(say)
        assert sandbox.kube is not None and sandbox.exporter is not None
        assert sandbox.moto is not None and sandbox.estate is not None
        desired_start = sandbox.estate.desired(sandbox.moto)
        objects = manifests(sandbox)
        (out / "manifests.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        for obj in objects:
            sandbox.kube.create(obj)
        say(f"applied AnomalyDetector/{DETECTOR}, Secret/chat-webhooks and RemediationPolicy/{POLICY} "
            f"(see {out / 'manifests.yaml'}); keepFiringFor {KEEP_FIRING_POINTS} points, cooldown "
            f"{COOLDOWN_POINTS} points")
        say(f"the replay starts at NAB point {sandbox.replay.live_from}, "
            f"{sandbox.incident.window_start - sandbox.replay.live_from if sandbox.incident else '?'} points before "
            "the labelled window; the policy needs approval, which this demo grants like a human would")
        threshold: float | None = None
        deadline = sandbox.start_time + (sandbox.replay.live_points + 20) * sandbox.spacing + 30
        finished_at: float | None = None
        if not plain:
            try:
                from rich.console import Console
                from rich.live import Live
                from rich.text import Text

                live = Live(Text(""), console=Console(), refresh_per_second=4)
                live.start()
            except ImportError:
                plain = True
        last_print = 0.0
        while time.time() < deadline:
            sample = observe(sandbox, timeline, say)
            if threshold is None:
                status = (sandbox.kube.get(*AD, NAMESPACE, DETECTOR) or {}).get("status") or {}
                threshold = status.get("threshold")
            if live is not None:
                from rich.text import Text

                live.update(Text("\n".join(render_lines(sandbox, sample, timeline, threshold))))
            elif time.time() - last_print >= max(2.0, 2 * sandbox.spacing):
                print(plain_line(sandbox, sample, timeline), flush=True)
                last_print = time.time()
            if finished_at is None and sandbox.exporter.done:
                finished_at = time.time()
            if finished_at is not None and time.time() - finished_at > 3 * sandbox.spacing:
                break
            time.sleep(0.5)
        if live is not None:
            live.stop()
            live = None
        desired_end = sandbox.estate.desired(sandbox.moto)
        final = sorted(sandbox.kube.list(*RA, NAMESPACE), key=lambda a: a["metadata"]["creationTimestamp"])
        timeline.actions = {a["metadata"]["name"]: a for a in final}  # the final state, not the last poll's
        if final:
            (out / "actions.yaml").write_text(yaml.safe_dump_all(final, sort_keys=False))
        png = out / "demo.png"
        plot(sandbox, timeline, png, threshold)
        lines, data = report(sandbox, timeline, (desired_start, desired_end))
        for line in lines:
            print(line)
        print(f"- plot: {png}\n- operator log: {sandbox.operator_log}\n- chatops log: {sandbox.chatops_log}\n"
              f"- manifests: {out / 'manifests.yaml'}")
        asked = [n for n in timeline.actions if n in timeline.approved_names]
        if asked:  # the approval as Slack saw it: the message with buttons, the press, the message rewritten
            record = slack_record(sandbox, timeline, asked[0])
            data["slack"] = record
            (out / "slack.json").write_text(json.dumps(record, indent=2) + "\n")
            posted = record.get("posted") or {}
            print(f"\nSlack #{world.SLACK_CHANNEL}: vigil chatops posted (chat.postMessage, ts {record.get('ts')}):")
            print("\n".join(render_blocks(posted.get("blocks") or [])))
            if record["updates"]:
                print(f"{world.SRE} pressed Approve (a signed block_actions request, HTTP "
                      f"{(record.get('pressed') or {}).get('status')}); the message now reads (chat.update, "
                      f"{len(record['updates'])} rewrite(s), the last):")
                print("\n".join(render_blocks(record["updates"][-1].get("blocks") or [])))
            print(f"- the whole exchange: {out / 'slack.json'}")
        if asked:  # Ask Vigil about the approved action, as an SRE would after the fact
            answer = _ask_why(sandbox, asked[0])
            (out / "ask.txt").write_text(f"$ vigil ask why {asked[0]}\n{answer}\n")
            print(f"\n$ vigil ask why {asked[0]}\n{answer}\n")
        if sandbox.chat is not None:
            slack = [r.body for r in sandbox.chat.received("/slack")]
            if slack:
                print(f"- first webhook Slack message (Block Kit fallback text): {slack[0].get('text', '')[:160]!r}")
            (out / "notifications.json").write_text(json.dumps(
                [{"path": r.path, "body": r.body} for r in sandbox.chat.received()], indent=2))
        missing = problems(data)
        data["problems"] = missing
        data["wall_seconds"] = round(time.monotonic() - started, 1)
        (out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
        if missing:
            print(f"\nDemo finished at {datetime.datetime.now():%H:%M:%S} after {data['wall_seconds']:.0f} s, "
                  f"but: {'; '.join(missing)}.")
            return 1
        print(f"\nDemo complete at {datetime.datetime.now():%H:%M:%S} after {data['wall_seconds']:.0f} s.")
        return 0
    finally:
        with _signals_held():
            if live is not None:
                live.stop()
            sandbox.stop()


def _on_signal(signum: int, frame: object) -> None:
    for each in STOP_SIGNALS:  # the first one stops the demo; the rest must not interrupt the cleanup
        signal.signal(each, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vigil_sandbox.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-out", help="folder for the plot, logs and manifests (default demo-out)")
    parser.add_argument("--seconds-per-point", type=int, default=1, choices=range(1, 11), metavar="N",
                        help="wall seconds per replayed 5-minute point, 1-10 (default 1: about 2.5 minutes in all)")
    parser.add_argument("--plain", action="store_true", help="plain log lines instead of the live view")
    args = parser.parse_args(argv)
    for each in STOP_SIGNALS:
        signal.signal(each, _on_signal)
    try:
        return run(args)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        try:
            print(f"\ndemo interrupted ({name}): stopped every process it started", file=sys.stderr, flush=True)
        except OSError:  # SIGHUP: the terminal may be gone
            pass
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
