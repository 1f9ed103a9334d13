"""The local sandbox: every peer of the operator, on 127.0.0.1, with no cluster and no cloud account.

* the Kubernetes API emulator (:mod:`vigil_sandbox.kubeapi`) with Vigil's CRDs;
* a real Prometheus, backfilled with a NAB incident's history and scraping a
  live replay of what follows (:mod:`vigil_sandbox.prometheus`, :mod:`vigil_sandbox.replay`);
* moto in server mode with an Auto Scaling Group (:mod:`vigil_sandbox.moto`);
* a chat capture standing in for Slack, Discord and a webhook (:mod:`vigil_sandbox.chat`): what the
  operator's own notifications would post;
* a Slack Web API stand-in (:mod:`vigil_sandbox.slackapi`) and ``vigil chatops`` in Slack's HTTP mode
  against it: the approval message with Approve / Reject buttons, and the endpoint a press is sent to
  (signed with the stand-in's signing secret, from a Slack user the identity map knows: :data:`SRE`);
* ``vigil run`` as a subprocess, exactly as a user runs it.

The emulator has no RBAC: ``vigil chatops`` impersonates the mapped person there too, but nothing
checks it. tests/chatops/ run the same component against a real kube-apiserver with the chart's RBAC.

The replay compresses time: one NAB point (5 minutes) is served every
``spacing`` seconds, and the detector runs with ``interval = step = spacing``.
The model works on points, so it sees the same series it would see live.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from vigil.api import crdgen
from vigil_sandbox import chat, moto, nab, slackapi
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.ports import free_port
from vigil_sandbox.prometheus import PrometheusServer, pdeathsig_preexec
from vigil_sandbox.replay import ReplayExporter, seamless_start_time, split_for_replay

METRIC = "aws_ec2_cpuutilization_average"
LABELS = {"asg": "web", "instance_name": "web-frontend"}
SERIES_FILE = "ec2_cpu_utilization_fe7f93.csv"
#: The Slack channel ``vigil chatops`` posts approval requests to.
SLACK_CHANNEL = "C0APPROVALS"
#: The Slack user the demo's "human" presses buttons as, and whom the identity map makes them in Kubernetes.
SRE = "U0SRE"
SRE_IDENTITY = "sre@example.com"


@dataclasses.dataclass(frozen=True)
class Replay:
    """Which stretch of the packaged series is replayed, in original point indices."""

    #: First backfilled point: the model's warm-up history (it scores from 48 points, and its long
    #: window compares the present with all of these).
    first: int = 580
    #: First point served live: 38 points (3 h 10 min of series time) before NAB's labelled window
    #: opens at point 698, so a detection before the window would show (and fail the test).
    live_from: int = 660
    #: One past the last point served live: the CPU surge (points 760-787) has passed.
    last: int = 790

    @property
    def live_points(self) -> int:
        return self.last - self.live_from


@dataclasses.dataclass(frozen=True)
class Incident:
    """The packaged series' first labelled incident (NAB label window and anomaly point)."""

    window_start: int  # point indices
    window_end: int
    anomaly: int


def packaged_series() -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]],
                               Incident]:
    data = importlib.resources.files("vigil_sandbox") / "data"
    with importlib.resources.as_file(data / SERIES_FILE) as path:
        loaded = nab.load_series(path)
    labels = json.loads((data / SERIES_FILE.replace(".csv", ".labels.json")).read_text())
    t = loaded.timestamps
    start, end = (nab.parse_timestamp(x) for x in labels["windows"][0])
    anomaly = nab.parse_timestamp(labels["labels"][0])
    incident = Incident(int(np.searchsorted(t, start)), int(np.searchsorted(t, end)),
                        int(np.searchsorted(t, anomaly)))
    return t, loaded.values, incident


class Sandbox:
    """Start everything with :meth:`start`, stop everything with :meth:`stop` (or use ``with``)."""

    def __init__(self, out: pathlib.Path, spacing: float = 1.0, replay: Replay = Replay(),
                 operator_args: tuple[str, ...] = ()) -> None:
        self.out = out
        self.spacing = spacing
        self.replay = replay
        self.operator_args = operator_args
        self.kube: KubeAPIServer | None = None
        self.moto: moto.MotoServer | None = None
        self.estate: moto.Estate | None = None
        self.chat: chat.ChatCapture | None = None
        self.prometheus: PrometheusServer | None = None
        self.exporter: ReplayExporter | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.slack: slackapi.SlackServer | None = None
        self.chatops: subprocess.Popen[bytes] | None = None
        self.chatops_port = free_port()
        self.chatops_log = out / "chatops.log"
        self._secrets: pathlib.Path | None = None  # token files and the identity map, removed at stop
        self.http_port = free_port()
        self.kubeconfig = out / "kubeconfig"
        self.operator_log = out / "operator.log"
        self.values: np.ndarray[Any, np.dtype[np.float64]] = np.empty(0)
        self.timestamps: np.ndarray[Any, np.dtype[np.float64]] = np.empty(0)  # NAB's, epoch seconds
        self.incident: Incident | None = None
        self.start_time = 0.0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, say: Any = print) -> Sandbox:
        self.out.mkdir(parents=True, exist_ok=True)
        say("starting the Kubernetes API emulator (kmock-based, with Vigil's CRDs)")
        self.kube = KubeAPIServer(crds=crdgen.all_crds()).start()
        self.kube.write_kubeconfig(self.kubeconfig)
        say("starting moto (AWS) with Auto Scaling Group 'web' (2 instances, tagged vigil.dev/managed=true "
            "and vigil.dev/namespace=default)")
        self.moto = moto.MotoServer().start()
        self.estate = moto.build(self.moto, desired=2, min_size=2, max_size=6)
        self.chat = chat.ChatCapture().start()

        self.timestamps, values, self.incident = packaged_series()
        self.values = values
        r = self.replay
        self.start_time = seamless_start_time(self.spacing)
        history, live = split_for_replay(METRIC, LABELS, values[r.first:r.last], live_from=r.live_from - r.first,
                                         start_time=self.start_time, spacing=self.spacing)
        self.exporter = ReplayExporter([live], self.start_time, self.spacing)
        say(f"starting Prometheus: {len(history)} points of history, then {r.live_points} live points "
            f"(one 5-minute NAB point every {self.spacing:g}s)")
        self.prometheus = PrometheusServer(history=[history], scrape_targets=[self.exporter.target],
                                           scrape_interval=f"{self.spacing:g}s")
        self.prometheus.start()
        say("starting `vigil run`")
        self._start_operator()
        say(f"starting a Slack Web API stand-in and `vigil chatops` (HTTP mode, channel {SLACK_CHANNEL}; "
            f"Slack user {SRE} is mapped to {SRE_IDENTITY})")
        self._start_chatops()
        return self

    @staticmethod
    def _env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "VIGIL_", "SLACK_"))}
        env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": moto.REGION, "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                    "PYTHONUNBUFFERED": "1"})
        return env

    def _spawn(self, command: list[str], log_path: pathlib.Path, ready_url: str, name: str) -> subprocess.Popen[bytes]:
        """A child in its own process group, until ``ready_url`` answers 200.

        Its own group: a Ctrl-C in the terminal reaches the demo, which stops the child with SIGTERM (a
        clean shutdown) instead of both racing. PR_SET_PDEATHSIG kills it should the demo itself be
        SIGKILLed, which leaves no chance to clean up.
        """
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                       stdin=subprocess.DEVNULL, process_group=0, preexec_fn=pdeathsig_preexec())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as response:
                    if response.status == 200:
                        return process
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        process.kill()
        raise RuntimeError(f"{name} did not become ready within 60s; see {log_path}")

    def _start_chatops(self) -> None:
        self.slack = slackapi.SlackServer(channels=(SLACK_CHANNEL,)).__enter__()
        self._secrets = pathlib.Path(tempfile.mkdtemp(prefix="vigil-chatops-"))
        files = {"bot-token": slackapi.BOT_TOKEN, "signing-secret": slackapi.SIGNING_SECRET,
                 "identities.yaml": json.dumps({"slack": [{"user": SRE, "as": {"user": SRE_IDENTITY,
                                                                                "groups": ["sre"]}}]})}
        for name, value in files.items():
            (self._secrets / name).write_text(value + "\n")
            (self._secrets / name).chmod(0o600)
        command = [sys.executable, "-m", "vigil", "chatops", "--kubeconfig", str(self.kubeconfig),
                   "-n", "default", "--identity-map", str(self._secrets / "identities.yaml"),
                   "--http-host", "127.0.0.1", "--http-port", str(self.chatops_port),
                   "--poll-interval", f"{min(self.spacing, 1.0):g}", "--conversations", "memory",
                   "--slack-mode", "http", "--slack-channel", SLACK_CHANNEL, "--slack-api-url", self.slack.api_url,
                   "--slack-bot-token-file", str(self._secrets / "bot-token"),
                   "--slack-signing-secret-file", str(self._secrets / "signing-secret")]
        self.chatops = self._spawn(command, self.chatops_log, f"{self.chatops_url}/readyz", "vigil chatops")

    @property
    def chatops_url(self) -> str:
        return f"http://127.0.0.1:{self.chatops_port}"

    def press(self, value: str, action_id: str = "vigil_approve") -> tuple[int, dict[str, Any]]:
        """Press a button of the approval message for ``value`` (``namespace/name``) as :data:`SRE`:
        the request Slack would send, signed with the stand-in's signing secret. Returns the HTTP status
        ``vigil chatops`` answered and the payload sent; (0, {}) while no such message was posted."""
        assert self.slack is not None
        posted = self.slack.message_with_value(value)
        if posted is None:
            return 0, {}
        channel, ts, _ = posted
        payload = slackapi.block_actions(SRE, action_id, value, ts, channel, self.slack.response_url())
        body = slackapi.form(payload).encode()
        request = urllib.request.Request(f"{self.chatops_url}/slack/events", data=body, method="POST",
                                         headers=slackapi.signed(body.decode()))
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                return int(answer.status), payload
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), payload

    def _start_operator(self) -> None:
        assert self.prometheus is not None and self.moto is not None
        command = [sys.executable, "-m", "vigil", "run", "--kubeconfig", str(self.kubeconfig),
                   "--prometheus-url", self.prometheus.url, "--aws-endpoint-url", self.moto.url,
                   "--http-host", "127.0.0.1", "--http-port", str(self.http_port), "--no-leader-election",
                   "--log-format", "full", *self.operator_args]
        self.operator = self._spawn(command, self.operator_log, f"http://127.0.0.1:{self.http_port}/readyz",
                                    "vigil run")

    def stop(self) -> None:
        """Stop every peer and remove Prometheus' temporary directory. Idempotent."""
        for child in (self.chatops, self.operator):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if self._secrets is not None:
            shutil.rmtree(self._secrets, ignore_errors=True)
        closers: list[Any] = [(lambda: self.slack.__exit__()) if self.slack else None,
                              self.exporter.stop if self.exporter else None,
                              self.prometheus.close if self.prometheus else None,  # close: stop + rm its dir
                              self.chat.stop if self.chat else None, self.moto.stop if self.moto else None,
                              self.kube.stop if self.kube else None]
        for closer in closers:
            if closer is not None:
                try:
                    closer()
                except Exception:  # best effort: keep stopping the others
                    pass

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- observation ------------------------------------------------------------------------------

    @property
    def operator_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def metric(self, name: str, **labels: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"{self.operator_url}/metrics", timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None

    def point_index(self, now: float | None = None) -> int:
        """The original index of the point being served live at ``now`` (clamped to the replay)."""
        assert self.exporter is not None
        return self.replay.live_from + self.exporter.index_at(time.time() if now is None else now)

    def series_time(self, index: float) -> float:
        """NAB's timestamp (epoch seconds) of original point ``index``; fractions interpolate."""
        return float(np.interp(index, np.arange(self.timestamps.size), self.timestamps))

    def wall_time(self, index: int) -> float:
        """When original point ``index`` is (or was) the newest point."""
        return self.start_time + (index - self.replay.live_from + 1) * self.spacing
