"""Shared fixtures: the Kubernetes API emulator, a kubeconfig, and operator subprocesses.

Real peers only: the emulator is our kmock-based API server (``vigil_sandbox.kubeapi``),
Prometheus is the real binary, AWS is moto in server mode. Nothing is monkeypatched.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.harness import OperatorProcess
from tests.realkube import RealKube, RealKubeAPI, binaries, ensure_crds, install_crds
from vigil.api import crdgen
from vigil_sandbox import moto as sandbox_moto
from vigil_sandbox import ports
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.moto import MotoServer

#: Fixtures that start a real peer or process: the API emulator, the real API server (etcd +
#: kube-apiserver, ``real_kube``), moto, `vigil run`, and (by the
#: convention of tests/integration/) a module's ``prometheus`` fixture. A test whose fixture closure
#: holds one of these is marked ``slow`` at collection, so ``pytest -m "not slow"`` (``make test-fast``)
#: runs the pure tests without any peer, and a new test using them cannot land in the fast loop by
#: forgetting a mark. Tests that start a peer inline carry an explicit ``@pytest.mark.slow``.
PEER_FIXTURES = frozenset({"kubeapi", "kubeconfig", "real_kube", "own_real_kube", "run_operator", "moto", "moto_url",
                           "prometheus"})
PROMETHEUS_BINARIES = ("prometheus", "promtool")


#: Where the session's real API server writes its audit log, when set (`make test` sets it): one file per
#: pytest-xdist worker, read after the run by tests/security/test_suite_rbac.py, with ``suite.json`` saying
#: whether the run was the whole suite.
AUDIT_DIR = os.environ.get("VIGIL_AUDIT_DIR", "")
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker starts its own peers: give each its own slice of ports, so two
    workers (and the processes they start, which inherit the variable) never draw the same one."""
    if WORKER and "VIGIL_PORT_RANGE" not in os.environ:
        count, index = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), int(WORKER.removeprefix("gw"))
        low, high = ports.span()
        width = (high - low + 1) // count
        os.environ["VIGIL_PORT_RANGE"] = f"{low + index * width}-{low + (index + 1) * width - 1}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The controller (not an xdist worker) records what ran, for the audit-log check that runs after."""
    if AUDIT_DIR and not hasattr(session.config, "workerinput"):
        config = session.config
        whole = (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.option.keyword
                 and config.option.markexpr in ("", "not suite_last") and not config.option.deselect
                 and not getattr(config.option, "lf", False))
        record = {"whole": whole, "exitstatus": int(exitstatus), "tests": session.testscollected,
                  "markexpr": config.option.markexpr}
        pathlib.Path(AUDIT_DIR, "suite.json").write_text(json.dumps(record))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marks must be there when it looks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # `suite_last` tests read what the whole run left behind (the real API server's audit log): last.
    items.sort(key=lambda item: item.get_closest_marker("suite_last") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail the run, loudly, when a selected peer test would need a Prometheus that is not there.

    Checked after `-m` deselection, so the fast loop (`-m "not slow"`) runs without Prometheus,
    while `make test` and CI stop with this message instead of skipping anything.
    """
    missing = [name for name in PROMETHEUS_BINARIES if shutil.which(name) is None]
    slow = [item for item in session.items if item.get_closest_marker("slow")]
    if missing and slow:
        raise pytest.UsageError(
            f"{' and '.join(missing)} not on PATH, and {len(slow)} selected tests are `slow` (real peers: "
            "Prometheus, moto, the API emulator, `vigil run`). Run `make test` (it installs the Debian package "
            "`prometheus`) or install it yourself; `make test-fast` runs only the tests that need no peer."
        )


#: Which Kubernetes API the ``kubeapi`` fixture gives: ``real`` (default, what `make test` and CI run: the
#: session's kube-apiserver, tests/realkube.py, cleaned after each test) or ``emulator``
#: (vigil_sandbox.kubeapi, one per test: the fast local loop). Tests marked ``emulator`` need the emulator's
#: own controls (stopping it, its request log) and get it either way.
TEST_KUBE = os.environ.get("VIGIL_TEST_KUBE", "real")
if TEST_KUBE not in ("emulator", "real"):
    raise pytest.UsageError(f"VIGIL_TEST_KUBE must be 'emulator' or 'real', not {TEST_KUBE!r}")


@pytest.fixture
def kubeapi(request: pytest.FixtureRequest) -> Iterator[KubeAPIServer]:
    if TEST_KUBE == "real" and request.node.get_closest_marker("emulator") is None:
        real: RealKube = request.getfixturevalue("real_kube")
        ensure_crds(real)
        api = RealKubeAPI(real)
        yield api  # type: ignore[misc]  # the emulator's accessors, on the real server
        api.close()
        return
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


@pytest.fixture
def estate(moto: MotoServer) -> sandbox_moto.Estate:
    """The sandbox's AWS estate in a freshly reset moto (group ``web`` tagged for namespace default)."""
    moto.reset()
    return sandbox_moto.build(moto)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto: counts every AWS call the operator makes, fails chosen ones."""
    with FaultProxy(moto.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture(scope="session")
def moto_url(moto: MotoServer) -> str:
    return moto.url


@pytest.fixture(scope="session")
def real_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKube]:
    """A real kube-apiserver (and etcd) for the run, from scripts/kube-bins.sh: built on first use
    (a cold build takes many minutes), then cached outside the clone. Tests share it: each works in
    its own namespace or on its own object names, and cleans up what would disturb the others."""
    kube_bin, etcd_bin = binaries()
    audit_log = pathlib.Path(AUDIT_DIR, f"{WORKER or 'main'}-{os.getpid()}.audit.log") if AUDIT_DIR else None
    with RealKube(tmp_path_factory.mktemp("realkube"), kube_bin, etcd_bin, audit_log=audit_log) as server:
        yield server


@pytest.fixture
def own_real_kube(tmp_path: pathlib.Path) -> Iterator[RealKube]:
    """A real kube-apiserver (and etcd) of this test alone, for a test that restarts it or compacts etcd
    under the operator's watches, which the session's ``real_kube`` must not suffer."""
    kube_bin, etcd_bin = binaries()
    workdir = tmp_path / "realkube"
    workdir.mkdir()
    with RealKube(workdir, kube_bin, etcd_bin) as server:
        install_crds(server)
        yield server


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
