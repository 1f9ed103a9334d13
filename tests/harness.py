"""Test harness: run ``vigil run`` as a user would (a subprocess), and poll with deadlines.

Tests never sleep blindly: :func:`wait_for` polls a condition until a deadline
and fails with the last value seen, which is what you need to debug a flake.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from vigil_sandbox.ports import free_port

T = TypeVar("T")
ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


#: What a check raises while the state it reads is not there yet: an assert, a missing key or index
#: (``status["conditions"]`` before the first write), ``None`` subscripted or without the attribute.
NOT_YET = (AssertionError, LookupError, TypeError, AttributeError)


def wait_for(condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except NOT_YET as exc:  # e.g. a status or condition the operator has not written yet
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            error = AssertionError(f"timed out after {timeout}s waiting for {what or condition}: last {last!r}")
            raise error from (last if isinstance(last, BaseException) else None)
        time.sleep(interval)


def steady(check: Callable[[], object], progress: Callable[[], float], more: float = 3, seconds: float = 2.0,
           timeout: float = 60.0, what: str = "") -> None:
    """Assert ``check()`` keeps holding until ``progress()`` has risen by ``more`` (and ``seconds`` passed).

    For "nothing more happens": a watch of fixed length cannot catch an event that comes after it, and
    on a loaded machine the operator may not even have looked at the new state yet. ``progress`` is the
    operator's own count of decisions (``OperatorProcess.passes``, evaluations): once it has moved by
    ``more``, the operator has decided that many times on the state the check reads. If it does not move
    within ``timeout`` the operator stalled, which proves nothing, so that fails too.
    """
    start, began = progress(), time.monotonic()
    while True:
        assert check(), what or getattr(check, "__doc__", None) or "condition stopped holding"
        moved = progress() - start
        if moved >= more and time.monotonic() - began >= seconds:
            return
        if time.monotonic() - began > timeout:
            raise AssertionError(f"the operator made {moved} of {more} passes in {timeout}s: cannot tell "
                                 f"that {what or 'nothing'} stays so")
        time.sleep(0.2)


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

    def passes(self) -> float:
        """Completed passes of the remediation engine (counts only while this replica leads)."""
        return self.value("vigil_remediation_ticks_total") or 0.0

    def evaluations(self) -> float:
        return self.value("vigil_evaluations_total", result="evaluated") or 0.0

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
