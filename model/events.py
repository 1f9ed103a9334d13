"""Event metrics of issue 5 ("Detection quality"), implemented exactly as defined there.

Every detector the benchmark compares (``bench/detection.py``) is judged by these
functions and nothing else; the definitions below are the issue's, word for word
where possible, followed by the choices the issue leaves open.

- **Probation.** The first min(floor(0.15 * n), 750) points of a series are not
  scored. Detectors may learn from them.
- **Label windows.** They come from ``labels/combined_windows.json``. Map them to
  index ranges: from the first point whose timestamp is ≥ the start, to the point
  whose timestamp equals the end. Clip them to the scored range.
- **Alert event.** A maximal run of detections in which consecutive detections
  are at most 5 points apart.
- **True-positive window (TPw).** A window that holds at least one detection. It
  counts once, however many times it is hit.
- **False-negative window (FNw).** A window with no detection.
- **False-positive event (FPe).** An alert event with no detection inside any window.
- **Event precision, recall and F1.** P = TPw/(TPw+FPe) and R = TPw/(TPw+FNw);
  F1 is their harmonic mean. Pool by summing the counts over series.
- **False alerts per series-week.** ΣFPe / Σ(scored points * median sampling
  step / 7 days).
- **Detection delay.** The number of points from the window start to the first
  detection in the window, for detected windows only.

Choices where the definitions leave room:

- n is the number of points of the series on its regular grid (the grid the
  detector runs on, missing points included); the scored range is ``[p, n)`` with
  p the probation length, and "scored points" is ``n - p``.
- Detections inside probation are discarded before anything is counted.
- "Consecutive detections at most 5 points apart": detection indices i < j with
  no detection between them belong to one event when ``j - i <= 5``.
- A window end that falls between two grid points (no point equals it) maps to
  the last point before it. A window that lies wholly in probation, or holds no
  grid point, is dropped (it is neither TPw nor FNw).
- P is 0 when there is neither a TPw nor an FPe, R is 0 when there is no window,
  and F1 is 0 when P + R = 0.
- The median sampling step is the median of the positive differences between
  consecutive grid timestamps.
- For the goal "median delay no later than the labelled anomaly point", each
  detected window also gets an *offset*: first detection minus the labelled anomaly
  point (``combined_labels.json``, the first point at or after it), in points;
  negative = before the anomaly point. Windows without a labelled point in them get none.

Pure functions on numpy arrays: no I/O except :func:`read_windows`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vigil.adapters import csvseries

PROBATION_FRACTION = 0.15
PROBATION_MAX = 750
#: Consecutive detections at most this many points apart belong to one alert event.
EVENT_GAP = 5
WEEK_SECONDS = 7 * 24 * 3600.0

Bool = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


def probation(n: int) -> int:
    """Points at the start of a series of ``n`` points that are not scored."""
    return min(math.floor(PROBATION_FRACTION * n), PROBATION_MAX)


def window_ranges(timestamps: Floats, windows: Iterable[tuple[float, float]]) -> list[tuple[int, int]]:
    """Label windows (start, end epoch seconds) as inclusive index ranges, clipped to the scored range."""
    t = np.asarray(timestamps, dtype=np.float64)
    first = probation(len(t))
    out: list[tuple[int, int]] = []
    for start, end in windows:
        i0 = int(np.searchsorted(t, start, side="left"))  # first point with timestamp >= start
        i1 = int(np.searchsorted(t, end, side="right")) - 1  # the point equal to end (else the last before it)
        i0 = max(i0, first)
        if i0 <= i1 and i1 >= 0:
            out.append((i0, i1))
    return out


def alert_events(detections: Bool, gap: int = EVENT_GAP) -> list[tuple[int, int]]:
    """Maximal runs of detections whose consecutive detections are at most ``gap`` points apart (inclusive)."""
    idx = np.flatnonzero(np.asarray(detections, dtype=bool))
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    return [(int(idx[a]), int(idx[b])) for a, b in zip(starts, ends, strict=True)]


@dataclasses.dataclass(frozen=True)
class Counts:
    """Event counts of one series (or pooled over several)."""

    tp_windows: int
    fn_windows: int
    fp_events: int
    events: int
    scored_points: int
    scored_seconds: float  # scored points x median sampling step
    delays: tuple[int, ...]  # one per detected window
    offsets: tuple[int, ...] = ()  # first detection - labelled anomaly point, per detected window with one

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.tp_windows + other.tp_windows,
            self.fn_windows + other.fn_windows,
            self.fp_events + other.fp_events,
            self.events + other.events,
            self.scored_points + other.scored_points,
            self.scored_seconds + other.scored_seconds,
            self.delays + other.delays,
            self.offsets + other.offsets,
        )


EMPTY = Counts(0, 0, 0, 0, 0, 0.0, (), ())


def median_step(timestamps: Floats) -> float:
    diffs = np.diff(np.asarray(timestamps, dtype=np.float64))
    diffs = diffs[diffs > 0]
    return float(np.median(diffs)) if diffs.size else 0.0


def count(timestamps: Floats, detections: Bool, windows: Iterable[tuple[float, float]],
          anomalies: Sequence[float] = ()) -> Counts:
    """TPw, FNw, FPe and delays of one series: ``detections[i]`` is the detector's verdict at point i.

    ``anomalies``: the labelled anomaly points (epoch seconds), for the offsets only.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    d = np.asarray(detections, dtype=bool).copy()
    if d.shape != t.shape:
        raise ValueError(f"detections {d.shape} and timestamps {t.shape} differ in shape")
    first = probation(len(t))
    d[:first] = False
    ranges = window_ranges(t, windows)
    inside = np.zeros(len(t), dtype=bool)
    tp = fn = 0
    delays: list[int] = []
    offsets: list[int] = []
    marks = np.searchsorted(t, np.asarray(sorted(anomalies), dtype=np.float64), side="left")
    for i0, i1 in ranges:
        inside[i0 : i1 + 1] = True
        hits = np.flatnonzero(d[i0 : i1 + 1])
        if hits.size:
            tp += 1
            delays.append(int(hits[0]))
            mark = marks[(marks >= i0) & (marks <= i1)]
            if mark.size:
                offsets.append(i0 + int(hits[0]) - int(mark[0]))
        else:
            fn += 1
    events = alert_events(d)
    hit_inside = np.concatenate([[0], np.cumsum(d & inside)])  # detections inside windows, prefix sums
    fp = sum(1 for a, b in events if hit_inside[b + 1] - hit_inside[a] == 0)
    scored = len(t) - first
    return Counts(tp, fn, fp, len(events), scored, scored * median_step(t), tuple(delays), tuple(offsets))


def pooled(counts: Iterable[Counts]) -> Counts:
    total = EMPTY
    for c in counts:
        total = total + c
    return total


def scores(c: Counts) -> dict[str, float | int | None]:
    """Event precision, recall, F1, false alerts per series-week and median delay of (pooled) counts."""
    p = c.tp_windows / (c.tp_windows + c.fp_events) if c.tp_windows + c.fp_events else 0.0
    r = c.tp_windows / (c.tp_windows + c.fn_windows) if c.tp_windows + c.fn_windows else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    weeks = c.scored_seconds / WEEK_SECONDS
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "tp_windows": c.tp_windows,
        "fn_windows": c.fn_windows,
        "fp_events": c.fp_events,
        "false_alerts_per_series_week": c.fp_events / weeks if weeks > 0 else None,
        "median_delay_points": float(np.median(c.delays)) if c.delays else None,
        "median_offset_from_anomaly_points": float(np.median(c.offsets)) if c.offsets else None,
    }


def read_windows(path: Path) -> dict[str, list[tuple[float, float]]]:
    """``combined_windows.json`` as {"<folder>/<file>.csv": [(start, end) epoch seconds, ...]}."""
    raw: dict[str, list[list[str]]] = json.loads(path.read_text())
    return {
        name: [(csvseries.parse_timestamp(a), csvseries.parse_timestamp(b)) for a, b in pairs]
        for name, pairs in raw.items()
    }


#: Largest share of scored points a threshold may flag to compete in :func:`best_threshold`.
MAX_FLAGGED_FRACTION = 0.01


def read_anomalies(path: Path) -> dict[str, list[float]]:
    """``combined_labels.json`` as {"<folder>/<file>.csv": [anomaly point epoch seconds, ...]}."""
    raw: dict[str, list[str]] = json.loads(path.read_text())
    return {name: [csvseries.parse_timestamp(a) for a in points] for name, points in raw.items()}


def best_threshold(
    candidates: Sequence[float], series: Sequence[tuple[Floats, Floats, Sequence[tuple[float, float]]]],
    max_false_alerts: float | None = None, max_flagged_fraction: float = MAX_FLAGGED_FRACTION,
) -> float:
    """The candidate threshold with the best pooled event F1 over ``series`` ((timestamps, scores, windows)).

    Detections are ``score >= threshold`` (NaN never detects). Only thresholds that flag at
    most ``max_flagged_fraction`` of the scored points compete: the event metrics reward a
    detector that alerts all the time (one endless event per series covers every window and
    is never a false-positive event), and such a detector is useless. With
    ``max_false_alerts``, thresholds above that many false alerts per series-week compete
    only if none is within it. Ties go to the higher threshold (fewer alerts). Used on
    training folds only. If no candidate passes the flagged-share cap, the highest wins.
    """
    best: tuple[float, float] | None = None
    fallback: tuple[float, float] | None = None
    ordered = sorted(candidates, reverse=True)
    if not ordered:
        raise ValueError("no candidate thresholds")
    for threshold in ordered:
        flagged = scored = 0
        counts = []
        for t, s, w in series:
            d = s >= threshold
            first = probation(len(t))
            flagged += int(d[first:].sum())
            scored += len(t) - first
            counts.append(count(t, d, w))
        if scored and flagged > max_flagged_fraction * scored:
            break  # lower thresholds flag even more
        figures = scores(pooled(counts))
        f1 = float(figures["f1"] or 0.0)
        fa = figures["false_alerts_per_series_week"]
        if fallback is None or f1 > fallback[0]:
            fallback = (f1, threshold)
        if max_false_alerts is not None and fa is not None and fa > max_false_alerts:
            continue
        if best is None or f1 > best[0]:
            best = (f1, threshold)
    chosen = best or fallback
    return chosen[1] if chosen else ordered[0]
