"""``make demo``: the whole loop, from a replayed incident to a scaled Auto Scaling Group, on your laptop.

    python -m vigil.sandbox.demo [--out demo-out] [--seconds-per-point 1] [--plain]

It starts the sandbox (:mod:`vigil.sandbox.world`), applies an AnomalyDetector
and a RemediationPolicy that needs approval, and shows live what the operator
sees and does while a real EC2 CPU incident from the Numenta Anomaly Benchmark
plays back. When the policy asks for approval, the demo approves it the way a
human would (``vigil approve``), and shows that it did. It ends with a summary
and a PNG plot in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

import yaml

from vigil.sandbox import world
from vigil.sandbox.world import Sandbox

NAMESPACE = "default"
DETECTOR = "web-cpu"
POLICY = "web-scale-out"
AD = ("vigil.dev/v1alpha1", "anomalydetectors")
RP = ("vigil.dev/v1alpha1", "remediationpolicies")
RA = ("vigil.dev/v1alpha1", "remediationactions")


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
             "trigger": {"for": "0s", "keepFiringFor": f"{20 * sandbox.spacing:g}s"},
             "actions": [{"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 2, "max": 6}}],
             "aws": {"region": "us-east-1"},
             "approval": {"required": True, "timeout": "10m"},
             "cooldown": "30m",
             "rateLimit": {"maxActions": 3, "window": "1h"},
             "notify": {name: {"urlSecretRef": {"name": "chat-webhooks", "key": name}}
                        for name in ("slack", "discord", "webhook")},
         }},
    ]


@dataclasses.dataclass
class Sample:
    t: float
    index: int
    value: float
    score: float | None
    anomalous: bool
    desired: int
    phase: str


@dataclasses.dataclass
class Timeline:
    samples: list[Sample] = dataclasses.field(default_factory=list)
    first_anomalous: float | None = None
    approval_requested: float | None = None
    approved: float | None = None
    succeeded: float | None = None
    action: dict[str, Any] | None = None  # the newest
    actions: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # all, by name
    notes: list[str] = dataclasses.field(default_factory=list)


def _approve(sandbox: Sandbox, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vigil", "approve", name, "-n", NAMESPACE, "--kubeconfig", str(sandbox.kubeconfig),
         "--by", "demo (auto-approved)"],
        capture_output=True, text=True, timeout=60,
    )
    return (done.stdout or done.stderr).strip()


def observe(sandbox: Sandbox, timeline: Timeline) -> Sample:
    assert sandbox.kube is not None and sandbox.moto is not None and sandbox.estate is not None
    now = time.time()
    index = sandbox.point_index(now)
    detector = sandbox.kube.get(*AD, NAMESPACE, DETECTOR) or {}
    anomalous = bool((detector.get("status") or {}).get("anomalous"))
    score = sandbox.metric("vigil_detector_max_score", namespace=NAMESPACE, detector=DETECTOR)
    actions = sandbox.kube.list(*RA, NAMESPACE)
    action = max(actions, key=lambda a: a["metadata"]["creationTimestamp"], default=None)
    phase = ((action or {}).get("status") or {}).get("phase", "")
    desired = sandbox.estate.desired(sandbox.moto)
    if anomalous and timeline.first_anomalous is None:
        timeline.first_anomalous = now
    for each in actions:
        timeline.actions[each["metadata"]["name"]] = each
    if action is not None:
        timeline.action = action
        if phase == "PendingApproval" and timeline.approval_requested is None:
            timeline.approval_requested = now
        if phase == "PendingApproval" and now - (timeline.approval_requested or now) >= 3 * sandbox.spacing:
            note = (f"approval requested for {action['metadata']['name']}: running `vigil approve "
                    f"{action['metadata']['name']}` -> " + _approve(sandbox, action["metadata"]["name"]))
            timeline.notes.append(note)
            timeline.approved = time.time()
            if not sys.stdout.isatty():
                print(f"[demo] {note}", flush=True)
        if phase == "Succeeded" and timeline.succeeded is None:
            timeline.succeeded = now
    sample = Sample(now, index, float(sandbox.values[min(index, len(sandbox.values) - 1)]), score, anomalous,
                    desired, phase)
    timeline.samples.append(sample)
    return sample


def _bar(score: float | None, width: int = 24) -> str:
    if score is None:
        return "." * width
    filled = round(score * width)
    return "#" * filled + "." * (width - filled)


def render_lines(sandbox: Sandbox, sample: Sample, timeline: Timeline, threshold: float | None) -> list[str]:
    incident = sandbox.incident
    assert incident is not None
    where = ("in the labelled incident window" if incident.window_start <= sample.index <= incident.window_end
             else "before the labelled incident" if sample.index < incident.window_start else "after it")
    policy = (sandbox.kube.get(*RP, NAMESPACE, POLICY) if sandbox.kube else None) or {}
    conditions = {c["type"]: c for c in (policy.get("status") or {}).get("conditions", [])}
    allowed = conditions.get("ActionAllowed", {})
    action = timeline.action or {}
    status = action.get("status") or {}
    lines = [
        f"replay   point {sample.index - sandbox.replay.live_from + 1:>3}/{sandbox.replay.live_points} "
        f"(NAB index {sample.index}, {where})   CPU {sample.value:6.2f} %",
        f"detector {DETECTOR:<14} score {'' if sample.score is None else f'{sample.score:.3f}':>5} "
        f"[{_bar(sample.score)}] threshold {threshold if threshold is not None else '?'}  "
        + ("ANOMALOUS" if sample.anomalous else "normal"),
        f"policy   {POLICY:<14} phase {(policy.get('status') or {}).get('phase', '-'):<16} "
        f"ActionAllowed={allowed.get('status', '-')} ({allowed.get('reason', '-')})",
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
    return (f"point {sample.index - sandbox.replay.live_from + 1:>3}/{sandbox.replay.live_points} "
            f"CPU {sample.value:6.2f}% | score {score} {'ANOMALOUS' if sample.anomalous else 'normal   '} | "
            f"action {(action.get('status') or {}).get('phase', '-'):<15} | ASG desired {sample.desired}")


def plot(sandbox: Sandbox, timeline: Timeline, path: pathlib.Path, threshold: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    incident = sandbox.incident
    assert incident is not None
    r = sandbox.replay
    t0 = sandbox.start_time
    samples = timeline.samples
    fig, (ax_value, ax_score, ax_capacity) = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    served = min(r.last, max((s.index for s in samples), default=r.live_from) + 1)
    history_x = [sandbox.wall_time(i) - t0 for i in range(r.first, r.live_from)]
    live_x = [sandbox.wall_time(i) - t0 for i in range(r.live_from, served)]
    ax_value.plot(history_x, sandbox.values[r.first:r.live_from], color="tab:gray", linewidth=0.8,
                  label="backfilled history")
    ax_value.plot(live_x, sandbox.values[r.live_from:served], color="tab:blue", linewidth=1.0,
                  label="replayed live")
    for ax in (ax_value, ax_score, ax_capacity):
        ax.axvspan(sandbox.wall_time(incident.window_start) - t0, sandbox.wall_time(incident.window_end) - t0,
                   color="tab:red", alpha=0.08)
        ax.axvline(sandbox.wall_time(incident.anomaly) - t0, color="tab:red", linestyle=":", linewidth=0.8)
    ax_value.set_ylabel("EC2 CPU %")
    ax_value.set_title("Vigil sandbox: NAB ec2_cpu_utilization_fe7f93 replayed (shaded: labelled incident window)")
    ax_value.legend(loc="upper left", fontsize=8)
    xs = [s.t - t0 for s in samples]
    ax_score.plot(xs, [s.score if s.score is not None else float("nan") for s in samples], color="tab:orange",
                  label="detector score")
    if threshold is not None:
        ax_score.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label=f"threshold {threshold}")
    ax_score.fill_between(xs, 0, 1, where=[s.anomalous for s in samples], color="tab:red", alpha=0.2,
                          step="post", label="anomalous")
    ax_score.set_ylim(0, 1.02)
    ax_score.set_ylabel("score")
    ax_score.legend(loc="upper left", fontsize=8)
    ax_capacity.step(xs, [s.desired for s in samples], where="post", color="tab:green")
    ax_capacity.set_ylim(min(s.desired for s in samples) - 0.5, max(s.desired for s in samples) + 1.5)
    top = ax_capacity.get_ylim()[1]
    for row, (when, text) in enumerate(((timeline.approval_requested, "approval requested"),
                                        (timeline.approved, "approved (vigil approve)"),
                                        (timeline.succeeded, "SetDesiredCapacity done"))):
        if when is not None:
            ax_capacity.axvline(when - t0, color="black", linewidth=0.6)
            ax_capacity.annotate(text, (when - t0, top - 0.35 * (row + 1)), fontsize=7, xytext=(4, 0),
                                 textcoords="offset points", va="center")
    ax_capacity.set_ylabel("ASG desired")
    ax_capacity.set_xlabel(f"seconds since the live replay started (1 point = 5 min of NAB time, played every "
                           f"{sandbox.spacing:g}s)")
    ax_capacity.set_xlim(history_x[0] - 2, (samples[-1].t - t0 if samples else live_x[-1]) + 2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(sandbox: Sandbox, timeline: Timeline) -> list[str]:
    assert sandbox.incident is not None
    incident = sandbox.incident
    lines = ["", "Summary"]
    if timeline.first_anomalous is not None:
        index = min((s.index for s in timeline.samples if s.anomalous), default=None)
        if index is not None:
            relative = index - incident.anomaly
            inside = incident.window_start <= index <= incident.window_end
            lines.append(f"- first flagged at NAB point {index}, {'inside' if inside else 'OUTSIDE'} the labelled "
                         f"incident window ({incident.window_start}..{incident.window_end}), {abs(relative)} point(s) "
                         f"({abs(relative) * 5} min of series time) {'after' if relative >= 0 else 'before'} "
                         "NAB's labelled anomaly point")
    else:
        lines.append("- the detector never flagged the incident")
    if not timeline.actions:
        lines.append("- no RemediationAction was created")
    for action in sorted(timeline.actions.values(), key=lambda a: a["metadata"]["creationTimestamp"]):
        status = action.get("status") or {}
        decision = status.get("decision") or {}
        lines.append(f"- RemediationAction {action['metadata']['name']}: {status.get('phase')} - "
                     f"{status.get('message', '')}")
        if decision and status.get("phase") == "Succeeded":
            lines.append(f"  approved by {decision.get('by')} via {decision.get('via')}")
        if status.get("before") and status.get("after"):
            lines.append(f"  Auto Scaling Group web: desired capacity {status['before'].get('desiredCapacity')} -> "
                         f"{status['after'].get('desiredCapacity')}")
    if sandbox.chat is not None:
        paths = sorted({r.path for r in sandbox.chat.received()})
        lines.append(f"- {len(sandbox.chat.received())} notification(s) delivered to {', '.join(paths) or 'nobody'}")
    return lines


def run(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.out)
    plain = args.plain or not sys.stdout.isatty()
    for binary in ("prometheus", "promtool"):
        if shutil.which(binary) is None:
            print(f"vigil demo: `{binary}` is not on PATH. Install the Debian package `prometheus` "
                  "(make demo does it for you), then run this again.", file=sys.stderr)
            return 2
    sandbox = Sandbox(out, spacing=float(args.seconds_per_point))
    timeline = Timeline()
    def say(text: str) -> None:
        print(f"[demo] {text}", flush=True)

    try:
        sandbox.start(say)
        assert sandbox.kube is not None and sandbox.exporter is not None
        objects = manifests(sandbox)
        (out / "manifests.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        for obj in objects:
            sandbox.kube.create(obj)
        say(f"applied AnomalyDetector/{DETECTOR}, Secret/chat-webhooks and RemediationPolicy/{POLICY} "
            f"(see {out / 'manifests.yaml'})")
        say("the incident plays back now; the policy needs approval, which this demo grants like a human would")
        threshold: float | None = None
        deadline = sandbox.start_time + (sandbox.replay.live_points + 20) * sandbox.spacing + 30
        finished_at: float | None = None
        live = None
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
            sample = observe(sandbox, timeline)
            if threshold is None:
                status = (sandbox.kube.get(*AD, NAMESPACE, DETECTOR) or {}).get("status") or {}
                threshold = status.get("threshold")
            lines = render_lines(sandbox, sample, timeline, threshold)
            if live is not None:
                from rich.text import Text

                live.update(Text("\n".join(lines)))
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
        png = out / "demo.png"
        plot(sandbox, timeline, png, threshold)
        final = sorted(sandbox.kube.list(*RA, NAMESPACE), key=lambda a: a["metadata"]["creationTimestamp"])
        timeline.actions = {a["metadata"]["name"]: a for a in final}  # the final state, not the last poll's
        if final:
            (out / "actions.yaml").write_text(yaml.safe_dump_all(final, sort_keys=False))
        for line in summary(sandbox, timeline):
            print(line)
        print(f"- plot: {png}\n- operator log: {sandbox.operator_log}\n- manifests: {out / 'manifests.yaml'}")
        if sandbox.chat is not None:
            slack = [r.body for r in sandbox.chat.received("/slack")]
            if slack:
                print(f"- first Slack message (Block Kit fallback text): {slack[0].get('text', '')[:160]!r}")
            (out / "notifications.json").write_text(json.dumps(
                [{"path": r.path, "body": r.body} for r in sandbox.chat.received()], indent=2))
        ok = any((a.get("status") or {}).get("phase") == "Succeeded" for a in timeline.actions.values())
        print(f"\nDemo {'complete' if ok else 'finished without a successful action'} at "
              f"{datetime.datetime.now().strftime('%H:%M:%S')}.")
        return 0 if ok else 1
    finally:
        sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vigil.sandbox.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-out", help="folder for the plot, logs and manifests (default demo-out)")
    parser.add_argument("--seconds-per-point", type=int, default=1, choices=range(1, 11), metavar="N",
                        help="wall seconds per replayed 5-minute point, 1-10 (default 1: about 2 minutes in all)")
    parser.add_argument("--plain", action="store_true", help="plain log lines instead of the live view")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
