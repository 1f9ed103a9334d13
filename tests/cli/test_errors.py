"""The CLI as a user meets it (issue 10): every mistake or missing peer is one line on stderr and an exit code.

Each command runs as a subprocess, the way a user types it; peers are real (the
Kubernetes API emulator, a closed port). The contract: exit 2 for a command line
that cannot work, 1 for a failure at run time, one ``vigil <command>: ...`` line on
stderr, and never a traceback.
"""

from __future__ import annotations

import gc
import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.conftest import OperatorFactory
from tests.harness import DATA, ROOT, free_port, wait_for
from vigil import __version__, features
from vigil.api import crdgen
from vigil_sandbox.kubeapi import KubeAPIServer

SERIES = DATA / "nab" / "realAWSCloudwatch" / "ec2_cpu_utilization_fe7f93.csv"


def vigil(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBERNETES_", "VIGIL_"))}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "vigil", *args], capture_output=True, text=True, timeout=timeout,
                          env=clean, cwd=str(ROOT))


def one_line_error(done: subprocess.CompletedProcess[str], code: int, prefix: str, *parts: str) -> str:
    """Assert the contract and return the line."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{prefix}: "), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def closed_kubeconfig(tmp_path: pathlib.Path) -> tuple[pathlib.Path, int]:
    port = free_port()
    path = tmp_path / "closed.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]\n"
        "current-context: c\n")
    return path, port


# ---- vigil run: fail fast at start-up ----------------------------------------------------------------------


def test_run_without_any_kubeconfig(tmp_path: pathlib.Path) -> None:
    done = vigil("run", "--http-port", "0", env={"HOME": str(tmp_path)}, timeout=60)
    one_line_error(done, 1, "vigil run", "no Kubernetes credentials", "--kubeconfig")


def test_run_with_a_kubeconfig_that_does_not_exist(tmp_path: pathlib.Path) -> None:
    done = vigil("run", "--kubeconfig", str(tmp_path / "nope"), timeout=60)
    one_line_error(done, 2, "vigil run", f"kubeconfig {tmp_path / 'nope'}: no such file")


def test_run_refuses_a_compression_it_does_not_know_from_the_environment(tmp_path: pathlib.Path) -> None:
    """argparse checks --prometheus-compression's choices, not its default from VIGIL_PROMETHEUS_COMPRESSION."""
    done = vigil("run", "--kubeconfig", str(tmp_path / "nope"), env={"VIGIL_PROMETHEUS_COMPRESSION": "zip"},
                 timeout=60)
    one_line_error(done, 2, "vigil run", "--prometheus-compression must be none or gzip, not 'zip'")


def test_run_against_a_closed_port_exits_quickly(tmp_path: pathlib.Path) -> None:
    config, port = closed_kubeconfig(tmp_path)
    started = time.monotonic()
    done = vigil("run", "--kubeconfig", str(config), "--startup-timeout", "1", "--http-port", "0", timeout=60)
    one_line_error(done, 1, "vigil run", f"cannot reach http://127.0.0.1:{port}: connection refused",
                   "--startup-timeout")
    assert time.monotonic() - started < 30  # interpreter start-up on a loaded machine, plus the 1 s budget
    assert "vigil started" not in done.stdout


def test_run_without_the_crds(tmp_path: pathlib.Path) -> None:
    with KubeAPIServer(crds=[]) as bare:
        config = bare.write_kubeconfig(tmp_path / "kubeconfig")
        done = vigil("run", "--kubeconfig", str(config), "--startup-timeout", "0.5", "--http-port", "0", timeout=60)
    one_line_error(done, 1, "vigil run", "CRDs not installed", "kubectl apply -f crds/")


@pytest.mark.emulator
# The emulator runs in this process and is stopped under live connections on purpose: the transports it
# drops then may warn from __del__. The operator runs in a subprocess and cannot raise these; the test
# collects them itself (gc below) so they are never blamed on the next test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_api_outage_after_start_is_one_line_each_way(run_operator: OperatorFactory, kubeapi: KubeAPIServer) -> None:
    """Stop the API server under a running operator: the log grows by a few lines, not a traceback a second."""
    operator = run_operator()
    port = kubeapi.port
    kubeapi.stop()
    wait_for(lambda: " unreachable (" in operator.log(), timeout=30, what="the outage line")
    before = len(operator.log().splitlines())
    # Watch the log for a while (kopf retries every 1-2 s, the lease every 2 s): it must stay put.
    window = time.monotonic() + 6
    while time.monotonic() < window:
        grown = len(operator.log().splitlines()) - before
        assert grown <= 3, operator.log()[-3000:]
        time.sleep(0.2)
    assert "Traceback" not in operator.log()
    with KubeAPIServer(crds=crdgen.all_crds(), port=port):
        wait_for(lambda: "reachable again" in operator.log(), timeout=30, what="the recovery line")
        log = operator.log()
        operator.stop()  # before the server: its connections end from the client side
    assert log.count(" unreachable (") == 1
    gc.collect()


# ---- vigil approve / reject --------------------------------------------------------------------------------


def test_approve_with_the_api_server_down(tmp_path: pathlib.Path) -> None:
    config, port = closed_kubeconfig(tmp_path)
    done = vigil("approve", "foo", "--kubeconfig", str(config), timeout=60)
    one_line_error(done, 1, "vigil approve", f"cannot reach http://127.0.0.1:{port}: connection refused")


def test_approve_with_a_kubeconfig_that_does_not_exist(tmp_path: pathlib.Path) -> None:
    done = vigil("reject", "foo", "--kubeconfig", "/nope", timeout=60)
    one_line_error(done, 2, "vigil reject", "kubeconfig /nope: no such file")


def test_approve_an_action_that_does_not_exist(kubeconfig: pathlib.Path) -> None:
    done = vigil("approve", "foo", "--kubeconfig", str(kubeconfig), timeout=60)
    one_line_error(done, 1, "vigil approve", "RemediationAction default/foo not found")


# ---- vigil backtest ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "says"), [
    ("banana", "not a duration: 'banana'"),
    ("0s", "must be more than 0s"),
    ("-5m", "not a duration: '-5m'"),
])
def test_backtest_refuses_a_bad_step(tmp_path: pathlib.Path, step: str, says: str) -> None:
    done = vigil("backtest", str(SERIES), "-o", str(tmp_path / "o.csv"), f"--step={step}")
    one_line_error(done, 2, "vigil backtest", "argument --step", says)
    assert not (tmp_path / "o.csv").exists()


def test_backtest_with_a_model_that_does_not_exist(tmp_path: pathlib.Path) -> None:
    done = vigil("backtest", str(SERIES), "-o", str(tmp_path / "o.csv"), "--model", "nope.onnx")
    one_line_error(done, 2, "vigil backtest", "--model nope.onnx: No such file or directory")


def test_backtest_to_an_unwritable_output(tmp_path: pathlib.Path) -> None:
    started = time.monotonic()
    done = vigil("backtest", str(SERIES), "-o", "/proc/x.csv")
    one_line_error(done, 1, "vigil backtest", "cannot write /proc/x.csv")
    assert time.monotonic() - started < 60


def test_backtest_refuses_to_overwrite_its_input(tmp_path: pathlib.Path) -> None:
    same = tmp_path / "same.csv"
    same.write_bytes(SERIES.read_bytes())
    done = vigil("backtest", str(same), "-o", str(tmp_path / "." / "same.csv"))
    one_line_error(done, 2, "vigil backtest", "is the input", "refusing to overwrite")
    assert same.read_bytes() == SERIES.read_bytes()


def test_backtest_refuses_an_output_folder_holding_an_input(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_bytes(SERIES.read_bytes())
    (data / "b.csv").write_bytes(SERIES.read_bytes())
    done = vigil("backtest", str(data / "a.csv"), str(data / "b.csv"), "-o", str(data))
    one_line_error(done, 2, "vigil backtest", f"--output {data} holds the input")
    done = vigil("backtest", str(data), "-o", str(data / "scored"))
    one_line_error(done, 2, "vigil backtest", "inside the input folder")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.csv").write_bytes(SERIES.read_bytes())
    done = vigil("backtest", str(data / "a.csv"), str(other / "a.csv"), "-o", str(tmp_path / "out"))
    one_line_error(done, 2, "vigil backtest", "would both be written to")
    assert sorted(p.name for p in data.iterdir()) == ["a.csv", "b.csv"]


def test_backtest_of_a_series_too_short_to_score(tmp_path: pathlib.Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text("\n".join(SERIES.read_text().splitlines()[: features.MIN_POINTS]) + "\n")
    done = vigil("backtest", "--no-progress", str(short), "-o", str(tmp_path / "o.csv"))
    one_line_error(done, 1, "vigil backtest", f"{short}: nothing scored",
                   f"{features.MIN_POINTS - 1} point(s)", f"at least {features.MIN_POINTS} points")
    assert not (tmp_path / "o.csv").exists()


def test_backtest_of_an_empty_file_names_it_once(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    done = vigil("backtest", "--no-progress", str(empty), "-o", str(tmp_path / "o.csv"))
    line = one_line_error(done, 1, "vigil backtest", "empty file")
    assert line == f"vigil backtest: {empty}: empty file"


def test_backtest_of_a_missing_input(tmp_path: pathlib.Path) -> None:
    done = vigil("backtest", str(tmp_path / "gone.csv"), "-o", str(tmp_path / "o.csv"))
    one_line_error(done, 2, "vigil backtest", "does not exist")


# ---- version and usage -----------------------------------------------------------------------------------


def test_version_flag_and_command() -> None:
    done = vigil("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"vigil {__version__}"
    done = vigil("version")
    assert done.returncode == 0, done.stderr
    assert f"features {features.FEATURE_VERSION}" in done.stdout and " vwindow" not in done.stdout


def test_usage_errors_are_one_line() -> None:
    done = vigil("backtest")
    one_line_error(done, 2, "vigil backtest", "required", "--help")
    done = vigil("nonsense")
    one_line_error(done, 2, "vigil", "invalid choice")


def test_every_option_has_help_with_its_default() -> None:
    """Walk the parser: every option says what it does, and any option with a default says which."""
    import argparse

    from vigil import cli

    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [parser]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    found.extend(parsers(child))
        return found

    problems = []
    for parser in parsers(cli.parser()):
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings)}"
            if not action.help:
                problems.append(f"{name}: no help")
            elif action.default is not None and action.default is not argparse.SUPPRESS \
                    and "default" not in action.help.lower():
                problems.append(f"{name}: default {action.default!r} not mentioned")
    assert not problems, problems


def test_backtest_progress_moves_through_each_phase(tmp_path: pathlib.Path) -> None:
    """--progress draws the bar without a terminal: reading, scoring and writing each show, then it is cleared."""
    import numpy as np

    n = 400_000
    stamps = np.datetime_as_string(np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(5, "m"),
                                   unit="s")
    values = 50 + 10 * np.sin(np.arange(n) / 100)
    big = tmp_path / "big.csv"
    with big.open("w") as handle:
        handle.write("timestamp,value\n")
        handle.writelines(f"{t.replace('T', ' ')},{v:.3f}\n" for t, v in zip(stamps.tolist(), values.tolist(),
                                                                             strict=True))
    done = vigil("backtest", "--progress", str(big), "-o", str(tmp_path / "o.csv"))
    assert done.returncode == 0, done.stderr
    frames = [f for f in done.stderr.splitlines() if "%" in f]  # text mode turns each "\r" into a line break
    phases = {frame.split()[1] for frame in frames}
    assert {"reading", "scoring", "writing"} <= phases, phases
    assert done.stderr.splitlines()[-1] == "\x1b[K" and "Traceback" not in done.stderr  # the bar is cleared
    quiet = vigil("backtest", str(SERIES), "-o", str(tmp_path / "q.csv"))  # not a terminal, not forced: no bar
    assert quiet.returncode == 0 and quiet.stderr == ""
