"""``vigil backtest`` run the way a user runs it: the console script, real files, real output."""

from __future__ import annotations

import csv
import pathlib
import shutil
import subprocess
import sys

import numpy as np

from tests.harness import DATA
from vigil import features
from vigil.adapters import inference
from vigil.domain import detection, history
from vigil.engine import scoring

SERIES = DATA / "nab" / "realAWSCloudwatch" / "ec2_cpu_utilization_fe7f93.csv"


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil", "backtest", "--no-progress", *args],
                          capture_output=True, text=True, timeout=120)


def read(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_scores_a_nab_series_and_plots(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "scored.csv"
    png = tmp_path / "plot.png"
    done = vigil(str(SERIES), "--output", str(out), "--plot", str(png), "--for", "2")
    assert done.returncode == 0, done.stderr
    rows = read(out)
    assert list(rows[0]) == ["timestamp", "value", "score", "anomalous", "state"]
    assert len(rows) == 4032  # one row per 5-minute grid point, in order; this file has no gaps
    assert all(r["value"] for r in rows)
    assert rows[0]["score"] == "" and rows[0]["state"] == "WarmingUp"
    scored = [r for r in rows if r["score"]]
    assert len(scored) == 4032 - features.MIN_POINTS + 1
    assert any(r["anomalous"] == "true" for r in rows)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "4032 points at step 5m" in done.stdout


def test_backtest_equals_the_operator_scoring_path(tmp_path: pathlib.Path) -> None:
    """Score point t with the live engine's path (history grid -> window -> assess -> extract_batch -> scorer)
    and compare with the backtest at t: they must agree exactly."""
    out = tmp_path / "scored.csv"
    assert vigil(str(SERIES), "--output", str(out)).returncode == 0
    rows = read(out)
    scorer = inference.Scorer(inference.builtin_bytes())
    values = np.array([float(r["value"]) if r["value"] else np.nan for r in rows])
    stamps = np.arange(values.size, dtype=float) * 300.0 + 1_000_000_200.0
    names = scorer.info.feature_names
    grid = history.GridHistory(step=300.0, capacity=features.WINDOW, window=features.WINDOW,
                               tail=features.tail_points(names), min_points=scorer.info.min_points)
    key = history.series_key({"a": "b"})
    for index in (features.MIN_POINTS * 4, 1500, 2500, 3000, values.size - 1):
        fetch = grid.next_fetch(stamps[index] + 1)
        lo = int(np.searchsorted(stamps, fetch.start))
        part = slice(lo, index + 1)
        present = np.isfinite(values[part])  # Prometheus returns no sample for a gap
        grid.merge(fetch, [history.Samples({"a": "b"}, stamps[part][present], values[part][present])])
        assert rows[index]["score"], "pick points the backtest scored"
        assert scoring.assess_kept(grid, key) == detection.Availability.SCORED
        live = float(scorer.score(scoring.kept_features(scoring.kept_inputs([(grid, key)], names), names))[0])
        assert float(rows[index]["score"]) == round(live, 6)


def test_junk_duplicates_and_folders(tmp_path: pathlib.Path) -> None:
    junk = tmp_path / "in" / "junk.csv"
    junk.parent.mkdir()
    junk.write_text("timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,oops\n")
    dup = tmp_path / "in" / "dup.csv"
    lines = SERIES.read_text().splitlines()
    dup.write_text("\n".join([*lines[:200], lines[199], *lines[200:400]]) + "\n")
    done = vigil(str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert done.returncode == 1
    assert f"{junk}:3: value 'oops' is not a number" in done.stderr
    assert "repeated timestamp" in done.stderr and "--duplicates" in done.stderr
    fixed = vigil(str(dup), "--output", str(tmp_path / "dup.csv"), "--duplicates", "last")
    assert fixed.returncode == 0, fixed.stderr
    assert "merged 1 repeated timestamp(s) (last) at line 201" in fixed.stdout


def test_gaps_and_irregular_timestamps_are_reported(tmp_path: pathlib.Path) -> None:
    lines = SERIES.read_text().splitlines()
    body = lines[1:600]
    del body[300:310]  # a 55-minute gap
    body[100] = body[100].replace(":00,", ":07,", 1) if ":00," in body[100] else body[100]
    gappy = tmp_path / "gappy.csv"
    gappy.write_text("\n".join([lines[0], *body]) + "\n")
    out = tmp_path / "gappy.scored.csv"
    done = vigil(str(gappy), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "grid point(s) with no sample (gaps): missing data" in done.stdout
    rows = read(out)
    assert any(r["state"] == "Missing" and r["value"] == "" for r in rows)


def test_custom_model_errors_are_clear(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    done = vigil(str(SERIES), "--output", str(tmp_path / "o.csv"), "--model", str(bad))
    assert done.returncode == 2 and "ModelInvalid" in done.stderr


def test_console_script_is_installed() -> None:
    assert shutil.which("vigil", path=str(pathlib.Path(sys.executable).parent))
