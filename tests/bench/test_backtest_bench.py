"""bench/backtest.py runs end to end on the shipped series, so it cannot rot (figures are not checked)."""

from __future__ import annotations

import os
import pathlib

import pytest

from bench import backtest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a benchmark run, even a short one
def test_backtest_bench_runs_and_writes_its_report(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "backtest.md"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    cpus = os.sched_getaffinity(0)
    try:
        code = backtest.main(["--data", str(ROOT / "tests/data/nab"), "--repeat", "1", "--models", "2",
                              "--write", str(out), "--tmp", str(scratch)])
    finally:
        os.sched_setaffinity(0, cpus)  # the bench pins itself to one CPU; the rest of the suite must not be
    assert code == 0
    assert list(scratch.iterdir()) == [], "bench/backtest.py left its scored CSVs behind"
    text = out.read_text()
    assert "| **end to end** (`backtest.main`) |" in text and "per loaded session" in text
