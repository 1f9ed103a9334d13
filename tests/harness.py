"""Test harness: run ``vigil run`` as a user would (a subprocess), and poll with deadlines.

Tests never sleep blindly: :func:`wait_for` polls a condition until a deadline
and fails with the last value seen, which is what you need to debug a flake.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def wait_for(condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: last {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class OperatorProcess:
    """``python -m vigil run`` in a subprocess, with its log in a file and its /metrics at hand."""

    def __init__(self, kubeconfig: pathlib.Path, workdir: pathlib.Path, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, name: str = "operator") -> None:
        self.kubeconfig = kubeconfig
        self.args = list(args)
        self.env = dict(env or {})
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 60.0) -> OperatorProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "VIGIL_"))}
        env.update(AWS_ENV)
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "vigil", "run", "--kubeconfig", str(self.kubeconfig),
                   "--http-port", str(self.port), "--http-host", "127.0.0.1", "--log-format", "full", *self.args]
        log = self.log_path.open("ab")
        self.starts += 1
        log.write(f"\n===== start {self.starts}: {' '.join(command)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        log.close()
        wait_for(self._ready, timeout=ready_timeout, what=f"{self.name} /readyz")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """All samples of one exposition name, e.g. ``vigil_detector_score`` or ``vigil_actions_total``."""
        out = []
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name:
                    out.append((dict(sample.labels), float(sample.value)))
        return out

    def value(self, name: str, **labels: str) -> float | None:
        for got, value in self.samples(name):
            if all(got.get(k) == v for k, v in labels.items()):
                return value
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, with no cleanup and no lease release."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def errors(self) -> list[str]:
        """Log lines at ERROR level or tracebacks, for asserting a clean run."""
        lines = self.log().splitlines()
        return [line for line in lines if "[ERROR" in line or "Traceback" in line]
