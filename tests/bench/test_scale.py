"""The scale benchmark still runs end to end (tiny N, compressed time), so it cannot rot.

It runs ``python -m bench.scale`` as the coordinator would, against the real peers
(Prometheus, the API emulator or a real kube-apiserver + etcd, ``vigil run``), and checks
the report it writes. The figures themselves are not judged here: speed goals live in
bench/, not in tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(out: pathlib.Path, *extra: str) -> tuple[str, str]:
    """Run the tiny benchmark; (its stdout, the Markdown report)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "-n", "4", "-i", "2", "--window", "12", "--warmup", "1",
         "--output", str(out), *extra],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "live samples: all 20 series scraped" in done.stdout
    return done.stdout, out.read_text()


def _table(report: str, section: str) -> dict[str, str]:
    """The N=4 row of the table under ``## <section>``, by header."""
    lines = [line for line in report.split(f"## {section}", 1)[1].splitlines() if line.startswith("|")]
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [line for line in lines if line.startswith("| 4 |")]
    assert rows, report
    return dict(zip(headers, [c.strip() for c in rows[0].strip("|").split("|")], strict=True))


def _check_results(report: str) -> dict[str, str]:
    rows = [line for line in report.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 4, report  # results, cost curve, peers, garbage collector
    figures = _table(report, "Results")
    assert float(figures["evals/s"]) > 0
    assert float(figures["queries/eval"]) == pytest.approx(1.0, abs=0.25)  # one range query per evaluation
    assert float(figures["status writes/min"]) > 0  # a 12 s window holds a 10 s heartbeat
    return figures


@pytest.mark.slow
def test_scale_bench_runs_against_real_peers(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "scale.md"
    stdout, report = _run(out, "--restart")
    _check_results(report)
    # --restart: a new `vigil run` on the same detectors, timed until all are evaluated, then steady.
    assert re.search(r"restart: all 4 evaluated after [0-9.]+s", stdout), stdout[-3000:]
    assert re.search(r"restart: steady \(p99 lag [0-9.]+s over 10s\) after [0-9.]+s", stdout), stdout[-3000:]
    restarted = json.loads(out.with_suffix(".json").read_text())["results"][0]
    assert 0 < restarted["restart_first_s"] <= restarted["restart_evaluated_s"] <= restarted["restart_steady_s"]
    assert re.search(r"restart: first verdict after [0-9.]+s", stdout), stdout[-3000:]
    assert float(_table(report, "Peers")["emulator cores"]) > 0
    assert json.loads(out.with_suffix(".json").read_text())["config"]["kube"] == "emulator"
    assert (tmp_path / "scale.png").stat().st_size > 10_000
    # The operator's collector, from vigil_gc_pause_seconds: young collections happen in any 12 s window,
    # though at N=4 they add up to well under 0.01 % of it (the table keeps three significant digits).
    assert json.loads(out.with_suffix(".json").read_text())["results"][0]["gc_share"] > 0
    assert float(_table(report, "The operator's garbage collector")["% of wall time in GC"]) > 0
    # A re-render keeps when the run ended, and says it is a re-render.
    raw = json.loads(out.with_suffix(".json").read_text())
    again = tmp_path / "again.md"
    done = subprocess.run([sys.executable, "-m", "bench.scale", "--render", str(out.with_suffix(".json")),
                           "--output", str(again)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Measured {raw['measured_at']} (runs ended; rendered " in again.read_text()


@pytest.mark.slow
def test_scale_bench_runs_against_the_real_api_server(tmp_path: pathlib.Path) -> None:
    """``--kube real``: the writes are counted from kube-apiserver's audit log, its and etcd's CPU reported."""
    out = tmp_path / "scale-real.md"
    stdout, report = _run(out, "--kube", "real")
    assert "against a real kube-apiserver + etcd" in report and "audit log" in report
    figures = _check_results(report)  # status writes/min > 0: read from the audit log
    assert float(figures["other writes/min"]) > 0  # the Lease renewals, by kopf's or vigil's user agent
    peers = _table(report, "Peers")
    assert float(peers["kube-apiserver + etcd cores"]) > 0
    assert float(peers["kube-apiserver cores"]) > 0
    assert float(peers["etcd DB MiB (in use)"].split()[0]) > 0
    assert float(peers["API ms/request"]) > 0
    assert float(peers["ms/status write"]) > 0  # the audit log's received-to-complete of status patches
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["config"]["kube"] == "real" and raw["results"][0]["kube"] == "real"
    assert set(raw["results"][0]["api_cores_by_process"]) == {"kube-apiserver", "etcd"}
    assert "detectors created in the kube-apiserver + etcd" in stdout
    assert (tmp_path / "scale-real.png").stat().st_size > 10_000
