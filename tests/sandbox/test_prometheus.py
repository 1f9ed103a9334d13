"""The real-Prometheus harness, against the real Debian ``prometheus``/``promtool``.

Each test starts its own Prometheus (about 0.2 s each), so one test's
kill/restart cannot disturb another's data. Waits are polls with deadlines.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import vigil_sandbox.prometheus as prom
from vigil_sandbox import nab
from vigil_sandbox.prometheus import BackfillError, PrometheusServer, Series
from vigil_sandbox.replay import ReplayExporter, ReplaySeries, seamless_start_time, split_for_replay

DATA = Path(__file__).resolve().parent.parent / "data" / "nab"
WINDOWS = DATA / "combined_windows.json"
EC2_KEY = "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"
JUMPSUP_KEY = "artificialWithAnomaly/art_daily_jumpsup.csv"
ROGUE_KEY = "realKnownCause/rogue_agent_key_hold.csv"

pytestmark = pytest.mark.timeout(60)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        with err:
            return err.code


def _csv_rows(path: Path) -> int:
    with path.open() as fh:
        return sum(1 for line in fh if line.strip()) - 1  # minus the header


def _raw_samples(server: PrometheusServer, sel: str, at: float, span_s: int) -> list[tuple[float, float]]:
    """Stored samples (not step-evaluated) of the single series matching ``sel``."""
    result = server.query(f"{sel}[{span_s}s]", at=at)
    assert len(result) == 1, result
    return [(float(t), float(v)) for t, v in result[0]["values"]]


@pytest.fixture
def ec2_shifted() -> Iterator[tuple[nab.LoadedSeries, nab.TimeShift]]:
    loaded = nab.load_series(DATA / EC2_KEY)
    # A whole second: the expected timestamps are then exact in milliseconds.
    yield loaded, nab.shift_to_end_at(loaded.timestamps, end=float(math.floor(time.time())))


# -- backfill ----------------------------------------------------------------


@pytest.mark.slow
def test_backfilled_nab_series_is_stored_exactly(
    ec2_shifted: tuple[nab.LoadedSeries, nab.TimeShift],
) -> None:
    loaded, shift = ec2_shifted
    # ec2_cpu_utilization_825cc2 is clean: the de-dup keeps every CSV row.
    assert loaded.report.clean
    assert loaded.report.kept == _csv_rows(DATA / EC2_KEY) == 4032
    assert loaded.report.gaps == 2  # two 10-minute steps: kept as gaps, not filled
    series = Series("nab_value", {"series": "ec2_cpu_825cc2"}, shift.timestamps, loaded.values)

    with PrometheusServer([series]) as server:
        assert _http_status(f"{server.url}/-/ready") == 200
        assert server.data_dir.is_dir() and server.log_path.is_file()

        # Stored count: the harness already checked it on start; check it independently.
        span_ms = int(series.timestamps_ms[-1] - series.timestamps_ms[0]) + 1
        counted = server.query(f"count_over_time({series.selector}[{span_ms}ms])", at=shift.timestamps[-1])
        assert [float(r["value"][1]) for r in counted] == [4032.0]

        # The last 3 hours at the data's own step: exact values at exact times.
        last = 37
        start, end = float(shift.timestamps[-last]), float(shift.timestamps[-1])
        result = server.query_range(series.selector, start=start, end=end, step=300)
        assert len(result) == 1
        got = [(float(t), float(v)) for t, v in result[0]["values"]]
        want = list(zip(shift.timestamps[-last:].tolist(), loaded.values[-last:].tolist(), strict=True))
        assert got == want

        # Far back in history too (the first day), not only near the head.
        first = _raw_samples(server, series.selector, at=float(shift.timestamps[99]), span_s=100 * 300)
        assert first == list(zip(shift.timestamps[:100].tolist(), loaded.values[:100].tolist(), strict=True))


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "labels", "values", "match"),
    [
        ("ok_metric", {"a": "b"}, [1.0, math.nan, 3.0], "non-finite value"),
        ("ok_metric", {"a": "b"}, [1.0, math.inf, 3.0], "non-finite value"),
        ("ok_metric", {"bad-label": "x"}, [1.0, 2.0, 3.0], "invalid label name 'bad-label'"),
        ("ok_metric", {"__reserved": "x"}, [1.0, 2.0, 3.0], "reserved"),
        ("ok_metric", {"a": ""}, [1.0, 2.0, 3.0], "empty value"),
        ("1bad.metric", {}, [1.0, 2.0, 3.0], "invalid metric name"),
    ],
)
def test_bad_series_rejected_before_promtool(
    name: str, labels: dict[str, str], values: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Series(name, labels, [1e9, 1e9 + 1, 1e9 + 2], values)


def test_timestamps_promtool_would_collapse_are_rejected() -> None:
    # Same millisecond: promtool keeps one and drops the other without a word.
    with pytest.raises(ValueError, match="strictly increase at millisecond resolution"):
        Series("m", {}, [1e9, 1e9 + 0.0001], [1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increase"):
        Series("m", {}, [1e9 + 5, 1e9], [1.0, 2.0])


@pytest.mark.slow
def test_history_beyond_retention_is_rejected() -> None:
    now = time.time()
    old = Series("m", {}, [now - 3651 * 86400.0, now], [1.0, 2.0])
    server = PrometheusServer([old])
    try:
        with pytest.raises(ValueError, match="retention"):
            server.start()
        assert not server.running
    finally:
        server.close()


@pytest.mark.slow
def test_count_check_catches_samples_promtool_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Feed promtool an out-of-order sample (it drops it silently): start() must raise."""
    now = float(math.floor(time.time()))
    series = Series("dropped_metric", {"k": "v"}, now - np.arange(9, -1, -1) * 60.0, np.arange(10.0))
    def write_with_out_of_order_sample(history: list[Series], path: Path) -> None:
        lines = prom.render_openmetrics(history).splitlines()
        # lines[0] is "# TYPE"; move sample 5 to just before sample 3: still valid
        # OpenMetrics, but out of order, which promtool drops without a word.
        head, value, _ = lines[1 + 5].split(" ")
        lines[1 + 5] = f"{head} {value} {int(series.timestamps[3]) - 1}.000"
        path.write_text("\n".join(lines) + "\n")

    monkeypatch.setattr(prom, "write_openmetrics", write_with_out_of_order_sample)
    server = PrometheusServer([series])
    try:
        with pytest.raises(BackfillError, match="wrote 10 samples, Prometheus stores 9") as info:
            server.start()
        assert "last lines of" in str(info.value)  # the log tail comes with the error
        assert not server.running  # a failed start leaves nothing behind
    finally:
        server.close()


@pytest.mark.slow
def test_startup_failure_reports_the_log_tail() -> None:
    server = PrometheusServer(extra_args=["--no-such-flag"])
    try:
        with pytest.raises(prom.PrometheusError, match=r"(?s)exited with code 1.*unknown long flag"):
            server.start()
        assert not server.running
    finally:
        server.close()


# -- outage ------------------------------------------------------------------


@pytest.mark.slow
def test_kill_then_restart_keeps_data_and_address() -> None:
    loaded = nab.load_series(DATA / ROGUE_KEY)
    shift = nab.shift_to_end_at(loaded.timestamps, end=float(math.floor(time.time())))
    series = Series("nab_value", {"series": "rogue_agent"}, shift.timestamps, loaded.values)
    with PrometheusServer([series]) as server:
        port, data_dir, pid = server.port, server.data_dir, server.pid
        before = server.query(f"sum_over_time({series.selector}[30d])", at=shift.timestamps[-1])

        server.kill()
        assert not server.running
        with pytest.raises(OSError):
            _http_status(f"{server.url}/-/ready")

        server.restart()  # verifies the backfilled count again before returning
        assert (server.port, server.data_dir) == (port, data_dir)
        assert server.pid != pid
        assert _http_status(f"{server.url}/-/ready") == 200
        after = server.query(f"sum_over_time({series.selector}[30d])", at=shift.timestamps[-1])
        assert after == before
    assert not data_dir.exists()  # close() removes the temp directory


# -- live replay ---------------------------------------------------------------


@pytest.mark.slow
def test_replay_continues_backfill_seamlessly() -> None:
    loaded = nab.load_series(DATA / JUMPSUP_KEY)
    spacing, live_from = 1.0, 300
    # Far enough ahead that Prometheus scrapes before the first live point (~7.5 s).
    start_time = seamless_start_time(spacing)
    history, live = split_for_replay(
        "nab_replay",
        {"series": "jumpsup"},
        loaded.values[: live_from + 60],
        live_from=live_from,
        start_time=start_time,
        spacing=spacing,
    )
    assert history.timestamps[-1] == start_time
    with (
        ReplayExporter([live], start_time=start_time, spacing=spacing) as exporter,
        PrometheusServer([history], scrape_targets=[exporter.target], scrape_interval="1s") as server,
    ):
        server.wait_for_targets()
        targets_up = time.time()
        wanted_live = 4
        deadline = time.monotonic() + 20
        while True:
            n = server.query(f"count_over_time({history.selector}[1h])")
            if n and float(n[0]["value"][1]) >= live_from + wanted_live:
                break
            assert time.monotonic() < deadline, f"too few live samples: {n}; scrapes={exporter.scrapes}"
            time.sleep(0.1)
        samples = _raw_samples(server, history.selector, at=time.time(), span_s=3600)

    start_ms = round(start_time * 1000) / 1000
    backfilled = [s for s in samples if s[0] <= start_ms]
    scraped = [s for s in samples if s[0] > start_ms]
    # History: every point, in place.
    assert backfilled == list(zip(history.timestamps_ms.astype(float) / 1000, history.values, strict=True))
    # Live: the same series (labels dropped by relabelling), point 0 onwards, one per second.
    assert len(scraped) >= wanted_live
    tolerance = 0.05  # a scrape stamped this close to a point boundary may see either side
    indices = []
    for t, v in scraped:
        offset = (t - start_time) / spacing
        candidates = {math.floor(offset)}
        if offset - math.floor(offset) < tolerance or math.ceil(offset) - offset < tolerance:
            candidates |= {math.floor(offset - tolerance), math.floor(offset + tolerance)}
        matching = [i for i in candidates if 0 <= i < len(live) and live.values[i] == v]
        assert matching, f"live sample {v} at {t} is not point {sorted(candidates)} of the series"
        indices.append(matching[0])
    assert indices[0] == 0, (
        f"the first scraped point must follow the last backfilled one; first scrape stored at "
        f"start{scraped[0][0] - start_time:+.3f}s, targets seen up at start{targets_up - start_time:+.3f}s"
    )
    assert scraped[0][0] - start_time < 2 * spacing
    assert np.all(np.diff(indices) == 1), f"points skipped or repeated: {indices}"
    # The live values are the series' own continuation after the backfilled ones.
    assert [v for _, v in scraped] == loaded.values[live_from : live_from + len(scraped)].tolist()


def test_replay_exporter_serves_by_wall_time() -> None:
    now = [1000.0]
    series = [
        ReplaySeries("m", {"s": "long"}, [1.0, 2.0, 3.0]),
        ReplaySeries("m", {"s": "short"}, [10.0]),
    ]
    with ReplayExporter(series, start_time=1000.0, spacing=2.0, clock=lambda: now[0]) as exporter:
        assert exporter.index_at(990.0) == 0  # before start: the first live point
        assert exporter.index_at(1003.9) == 1
        assert exporter.index_at(1e6) == 2  # clamped to the last point
        with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=2) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert body == '# TYPE m gauge\nm{s="long"} 1.0\nm{s="short"} 10.0\n'
        now[0] = 1004.5
        assert exporter.render() == '# TYPE m gauge\nm{s="long"} 3.0\nm{s="short"} 10.0\n'
        assert not exporter.done
        now[0] = 1006.0
        assert exporter.done
        assert _http_status(f"{exporter.url}/healthz") == 200
        assert _http_status(f"{exporter.url}/nope") == 404
        assert exporter.scrapes == 1
    exporter.stop()  # idempotent


# -- NAB loading -------------------------------------------------------------


def test_load_series_reports_junk_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "junk.csv"
    path.write_text(
        "timestamp,value\n"
        "2014-02-14 14:30:00,1.0\n"  # line 2
        "2014-02-14 14:35:00,2.0\n"  # line 3
        "2014-02-14 14:40:00,oops\n"  # line 4: non-numeric
        "2014-02-14 14:35:00,2.5\n"  # line 5: duplicate of line 3 (and a backwards jump)
        "2014-02-14 14:45:00,nan\n"  # line 6: not finite
        "2014-02-14 14:50:00,5.0\n"  # line 7
    )
    with pytest.raises(nab.NabFormatError) as info:
        nab.load_series(path)
    message = str(info.value)
    assert "line 4: value 'oops' is not a finite number" in message
    assert "line 6: value 'nan'" in message
    assert "2 bad line(s)" in message

    loaded = nab.load_series(path, strict=False)
    report = loaded.report
    assert report.non_numeric == (4, 6)
    assert report.duplicates == (3,)  # the later line 5 wins
    assert report.backwards == (5,)
    assert (report.rows, report.kept) == (6, 3)
    assert not report.clean
    assert "line" in report.summary()
    ts, values = loaded
    assert values.tolist() == [1.0, 2.5, 5.0]
    assert ts.tolist() == [1392388200.0, 1392388500.0, 1392389400.0]  # UTC


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("time,value\n2014-02-14 14:30:00,1\n", "expected header"),
        ("timestamp,value\n2014-02-14 14:30:00,1,2\n", "line 2: expected 2 columns"),
        ("timestamp,value\nyesterday,1\n", "line 2: bad timestamp 'yesterday'"),
        ("timestamp,value\n", "no data rows"),
    ],
)
def test_load_series_rejects_malformed_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(nab.NabFormatError, match=match):
        nab.load_series(path)


def test_windows_follow_the_shift() -> None:
    loaded = nab.load_series(DATA / EC2_KEY)
    windows = nab.load_windows(WINDOWS, EC2_KEY)
    assert windows == [(nab.parse_timestamp("2014-04-15 07:24:00"), nab.parse_timestamp("2014-04-16 11:54:00"))]
    assert nab.load_windows(WINDOWS, "artificialNoAnomaly/art_daily_small_noise.csv") == []
    with pytest.raises(KeyError, match="did you mean"):
        nab.load_windows(WINDOWS, "ec2_cpu_utilization_825cc2.csv")

    # Window edges sit on data points, and stay on the same points after any shift.
    lo, hi = (int(np.flatnonzero(loaded.timestamps == edge)[0]) for edge in windows[0])
    for spacing in (None, 1.0):
        shift = nab.shift_to_end_at(loaded.timestamps, end=2e9, spacing=spacing)
        assert shift.timestamps[-1] == 2e9
        assert shift.windows(windows) == [(shift.timestamps[lo], shift.timestamps[hi])]
    compressed = nab.shift_to_end_at(loaded.timestamps, end=2e9, spacing=1.0)
    assert np.all(np.diff(compressed.timestamps) == 1.0)  # gaps close up at rank spacing
    # Outside the series, time keeps its proportion (1 s per original 5 min).
    assert compressed(float(loaded.timestamps[-1]) + 600) == 2e9 + 2.0


def test_truncate_inside_window_and_shift_to_now() -> None:
    loaded = nab.load_series(DATA / ROGUE_KEY)
    windows = nab.load_windows(WINDOWS, ROGUE_KEY)
    cut = nab.point_in_window(loaded.timestamps, windows[1], fraction=0.25)
    ts, values = nab.truncate_at(loaded.timestamps, loaded.values, cut)
    assert ts[-1] == cut and windows[1][0] <= cut <= windows[1][1]
    now = 1.8e9
    shift = nab.shift_to_end_at(ts, end=now)
    (w0, w1) = shift.windows(windows)
    assert w0[1] < now  # the first anomaly is history
    assert w1[0] < now < w1[1]  # "now" is inside the second one
    assert values.size == ts.size < loaded.values.size
