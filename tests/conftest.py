"""Shared fixtures: the Kubernetes API emulator, a kubeconfig, and operator subprocesses.

Real peers only: the emulator is our kmock-based API server (``vigil.sandbox.kubeapi``),
Prometheus is the real binary, AWS is moto in server mode. Nothing is monkeypatched.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.harness import OperatorProcess
from vigil.api import crdgen
from vigil.sandbox.kubeapi import KubeAPIServer
from vigil.sandbox.moto import MotoServer


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if missing:
        raise pytest.UsageError(
            f"{' and '.join(missing)} not on PATH: the tests run a real Prometheus. "
            "Run `make test` (it installs the Debian package `prometheus`) or install it yourself."
        )


@pytest.fixture
def kubeapi() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(crds=crdgen.all_crds(), bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def kubeconfig(kubeapi: KubeAPIServer, tmp_path: pathlib.Path) -> pathlib.Path:
    return kubeapi.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server for the run: moto keeps its state per process, so several servers would share
    it anyway. Tests that build AWS state reset it first (``POST /moto-api/reset``)."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_url(moto: MotoServer) -> str:
    return moto.url


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def run_operator(kubeconfig: pathlib.Path, tmp_path: pathlib.Path,
                 request: pytest.FixtureRequest) -> Iterator[OperatorFactory]:
    """Start ``vigil run`` subprocesses; all are stopped at teardown, and their logs shown on failure."""
    started: list[OperatorProcess] = []

    def start(*args: str, name: str = "operator", env: dict[str, str] | None = None,
              config: pathlib.Path | None = None) -> OperatorProcess:
        process = OperatorProcess(config or kubeconfig, tmp_path, args, env, name=f"{name}-{len(started)}")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for process in started:
            print(f"\n----- {process.name} log (tail) -----\n{process.log()[-6000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def detector(name: str, query: str, namespace: str = "default", **spec: object) -> dict[str, object]:
    body: dict[str, object] = {"query": query, **spec}
    return {
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def conditions_of(obj: dict[str, object] | None) -> dict[str, dict[str, str]]:
    status = (obj or {}).get("status") or {}
    assert isinstance(status, dict)
    return {c["type"]: c for c in status.get("conditions", [])}


__all__: Sequence[str] = ("conditions_of", "detector")
