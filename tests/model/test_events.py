"""The event metrics of issue 5 on tiny hand-made series (pure, no data, no server)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from model import events

STEP = 300.0  # 5 minutes


def grid(n: int, step: float = STEP) -> np.ndarray:
    return 1_000_000.0 + step * np.arange(n)


def flags(n: int, at: list[int]) -> np.ndarray:
    d = np.zeros(n, dtype=bool)
    d[at] = True
    return d


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (6, 0), (7, 1), (100, 15), (4999, 749), (5000, 750),
                                             (5007, 750), (100_000, 750)])
def test_probation_is_min_of_15_percent_and_750(n: int, expected: int) -> None:
    assert events.probation(n) == expected


def test_window_maps_first_point_at_or_after_start_to_point_equal_to_end() -> None:
    t = grid(100)  # probation 15
    # start between points 40 and 41 -> 41; end exactly on point 50.
    assert events.window_ranges(t, [(t[40] + 1.0, t[50])]) == [(41, 50)]
    # start exactly on a point is included.
    assert events.window_ranges(t, [(t[40], t[50])]) == [(40, 50)]
    # end between points -> the last point before it.
    assert events.window_ranges(t, [(t[40], t[50] + 1.0)]) == [(40, 50)]


def test_windows_are_clipped_to_the_scored_range() -> None:
    t = grid(100)  # probation 15: scored range 15..99
    assert events.window_ranges(t, [(t[10], t[20])]) == [(15, 20)]
    assert events.window_ranges(t, [(t[0], t[14])]) == []  # wholly in probation: dropped
    assert events.window_ranges(t, [(t[90], t[99] + 10 * STEP)]) == [(90, 99)]


@pytest.mark.parametrize(("at", "expected"), [
    ([], []),
    ([3], [(3, 3)]),
    ([3, 8], [(3, 8)]),          # 5 apart: one event
    ([3, 9], [(3, 3), (9, 9)]),  # 6 apart: two events
    ([1, 2, 3, 8, 13, 19, 20], [(1, 13), (19, 20)]),
])
def test_alert_events_join_detections_at_most_5_points_apart(at: list[int], expected: list[tuple[int, int]]) -> None:
    assert events.alert_events(flags(30, at)) == expected


def test_counts_on_a_hand_made_series() -> None:
    t = grid(200)  # probation 30
    windows = [(t[50], t[60]), (t[100], t[110]), (t[150], t[160])]
    d = flags(200, [
        5,             # in probation: ignored
        40,            # FPe (alone)
        53, 54, 58,    # window 1, delay 3; one event, inside a window
        70, 74,        # one event outside windows: FPe
        108, 112,      # event straddling window 2's end: has a detection inside, not an FPe; delay 8
        190,           # FPe
    ])
    c = events.count(t, d, windows)
    assert (c.tp_windows, c.fn_windows, c.fp_events, c.events) == (2, 1, 3, 5)
    assert c.delays == (3, 8)
    assert c.scored_points == 170
    assert c.scored_seconds == 170 * STEP
    s = events.scores(c)
    assert s["precision"] == pytest.approx(2 / 5)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert s["false_alerts_per_series_week"] == pytest.approx(3 / (170 * STEP / (7 * 86400)))
    assert s["median_delay_points"] == 5.5


def test_a_window_hit_many_times_counts_once() -> None:
    t = grid(100)
    c = events.count(t, flags(100, [40, 41, 49, 57]), [(t[40], t[60])])
    assert (c.tp_windows, c.fn_windows, c.fp_events, c.delays) == (1, 0, 0, (0,))


def test_pooling_sums_counts_before_dividing() -> None:
    t1, t2 = grid(100), grid(1000, step=60.0)
    a = events.count(t1, flags(100, [50]), [(t1[50], t1[60])])               # TPw, no FPe
    b = events.count(t2, flags(1000, [400, 700, 900]), [(t2[200], t2[220])])  # FNw, 3 FPe
    total = events.pooled([a, b])
    s = events.scores(total)
    assert (total.tp_windows, total.fn_windows, total.fp_events) == (1, 1, 3)
    assert s["precision"] == pytest.approx(1 / 4) and s["recall"] == pytest.approx(1 / 2)
    weeks = (85 * 300.0 + 850 * 60.0) / (7 * 86400)
    assert s["false_alerts_per_series_week"] == pytest.approx(3 / weeks)
    # Pooled, not the mean of per-series F1s.
    assert s["f1"] != pytest.approx((events.scores(a)["f1"] + events.scores(b)["f1"]) / 2)  # type: ignore[operator]


def test_nothing_detected_gives_zero_not_nan() -> None:
    t = grid(100)
    s = events.scores(events.count(t, flags(100, []), [(t[40], t[60])]))
    assert (s["precision"], s["recall"], s["f1"], s["median_delay_points"]) == (0.0, 0.0, 0.0, None)
    assert s["false_alerts_per_series_week"] == 0.0


def test_median_step_ignores_gaps() -> None:
    t = np.concatenate([grid(10), grid(10)[-1] + 3600.0 + STEP * np.arange(10)])
    assert events.median_step(t) == STEP


def test_best_threshold_maximises_f1_and_respects_the_false_alert_cap() -> None:
    t = grid(1000)
    w = [(t[500], t[510])]
    s = np.zeros(1000)
    s[505] = 0.8  # the window
    s[300] = 0.9  # a false alarm scored higher than the window
    s[800] = 0.5
    assert events.best_threshold([0.4, 0.7, 0.85, 0.95], [(t, s, w)]) == 0.7
    # A cap no threshold that detects anything meets: the F1-best still wins over nothing.
    assert events.best_threshold([0.7, 0.95], [(t, s, w)], max_false_alerts=0.0) == 0.95


def test_best_threshold_refuses_to_alert_all_the_time() -> None:
    """Flagging every point is one endless event: every window detected, no FPe. The cap rules it out."""
    t = grid(1000)
    w = [(t[300], t[320]), (t[700], t[720])]
    s = np.full(1000, 0.1)
    s[310] = 0.9  # one window detected by a real score
    s[500] = 0.95  # and one false alarm
    always = events.scores(events.count(t, s >= 0.1, w))
    assert always["f1"] == 1.0  # the loophole
    assert events.best_threshold([0.1, 0.9], [(t, s, w)]) == 0.9


def test_read_windows(tmp_path: Path) -> None:
    path = tmp_path / "combined_windows.json"
    path.write_text(json.dumps({"a/b.csv": [["2014-02-19 10:50:00.000000", "2014-02-20 03:30:00.000000"]]}))
    [(start, end)] = events.read_windows(path)["a/b.csv"]
    assert end - start == math.floor(16 * 3600 + 40 * 60)


def test_offsets_from_the_labelled_anomaly_point() -> None:
    t = grid(200)  # probation 30
    windows = [(t[50], t[70]), (t[100], t[120]), (t[150], t[170])]
    anomalies = [t[60], t[110] - 1.0, t[160]]  # the second between two points: the next point (110)
    c = events.count(t, flags(200, [55, 115]), windows, anomalies)
    assert c.delays == (5, 15)
    assert c.offsets == (-5, 5)  # detected before its anomaly point, then after
    assert events.scores(c)["median_offset_from_anomaly_points"] == 0.0
    assert events.count(t, flags(200, [55]), windows).offsets == ()  # no labels given: no offsets
