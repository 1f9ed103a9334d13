"""The sharding benchmark still runs end to end (tiny N, short Leases), so it cannot rot.

``python -m bench.shards`` against the real peers; the report's own checks (no detector on
two shards, all covered, standbys idle, a failover) are read back. Speed is not judged here.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_shards_bench_runs_against_real_peers(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "shards.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.shards", "-n", "12", "-i", "2", "--window", "6", "--warmup", "1",
         "--lease-duration", "3", "--output", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text()
    assert "evaluated by two shards during the window: **0**; shards cover 12 of 12." in report, report
    assert "Standbys evaluated 0 detectors (0 evaluations)" in report, report
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert {"one replica", "shard 0", "shard 1", "standby 0", "standby 1"} <= set(rows), report
    assert "the standby held the Lease after" in report
