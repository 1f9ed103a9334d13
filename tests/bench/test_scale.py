"""The scale benchmark still runs end to end (tiny N, compressed time), so it cannot rot.

It runs ``python -m bench.scale`` as the coordinator would, against the real peers
(Prometheus, the API emulator, ``vigil run``), and checks the report it writes. The
figures themselves are not judged here: speed goals live in bench/, not in tests.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scale_bench_runs_against_real_peers(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "scale.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "-n", "4", "-i", "2", "--window", "12", "--warmup", "1",
         "--output", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "live samples: all 20 series scraped" in done.stdout
    report = out.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 3, report  # results, cost curve, peers
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    headers = [h.strip() for h in report.split("## Results", 1)[1].split("\n")[2].strip("|").split("|")]
    figures = dict(zip(headers, cells, strict=True))
    assert float(figures["evals/s"]) > 0
    assert float(figures["queries/eval"]) == pytest.approx(1.0, abs=0.25)  # one range query per evaluation
    assert float(figures["status writes/min"]) > 0  # a 12 s window holds a 10 s heartbeat
    assert (tmp_path / "scale.png").stat().st_size > 10_000
