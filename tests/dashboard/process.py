"""``vigil dashboard`` as a subprocess on a free loopback port, as a user would start it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import urllib.request

from tests.harness import wait_for
from vigil_sandbox.ports import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


class DashboardProcess:
    def __init__(self, kubeconfig: pathlib.Path, log: pathlib.Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vigil", "dashboard", "--kubeconfig", str(kubeconfig),
                 "--port", str(self.port), *extra], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        wait_for(self._ready, timeout=30, what=f"vigil dashboard on {self.url} (log {log})")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"vigil dashboard exited {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
