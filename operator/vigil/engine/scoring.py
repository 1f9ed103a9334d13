"""How a window of points becomes a score: shared by the live engine and ``vigil backtest``.

Both paths decide the same way whether a point can be scored (:func:`assess` on a
window, :func:`assess_kept` on what the live engine keeps of it) and call
:mod:`vigil.features` to compute the features, so a backtest reproduces what the
operator would have said live at every point.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from vigil import features
from vigil.domain.detection import Availability
from vigil.domain.history import GridHistory, SeriesKey

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def assess(window: FloatArray, min_points: int = features.MIN_POINTS) -> Availability:
    """Whether the newest point of ``window`` can be scored.

    No value at the evaluation time is *missing* data, whatever came before;
    a value with too little history behind it is *warming up*.
    """
    if not np.isfinite(window[-1]):
        return Availability.MISSING
    if int(np.count_nonzero(np.isfinite(window))) < min_points:
        return Availability.WARMING_UP
    return Availability.SCORED


def assess_kept(grid: GridHistory, key: SeriesKey, min_points: int = features.MIN_POINTS) -> Availability:
    """:func:`assess` of the window ``grid`` keeps for ``key`` (its newest point and its count)."""
    if not math.isfinite(grid.series[key].tail[-1]):
        return Availability.MISSING
    if grid.present(key) < min_points:
        return Availability.WARMING_UP
    return Availability.SCORED


#: What :func:`vigil.features.extract_summaries` reads: the tails and the older extremes.
KeptInputs = tuple[FloatArray, FloatArray, FloatArray]


def kept_inputs(rows: list[tuple[GridHistory, SeriesKey]], names: tuple[str, ...]) -> KeptInputs:
    """Copies of what the features ``names`` read of each (grid, series), so scoring may run in a thread.

    A grid may keep a longer tail than ``names`` read; the points in front of what they
    read count towards the older extremes.
    """
    need = features.tail_points(names)
    tails = np.empty((len(rows), need))
    lows = np.empty(len(rows))
    highs = np.empty(len(rows))
    for i, (grid, key) in enumerate(rows):
        tail = np.frombuffer(grid.series[key].tail)
        lo, hi = grid.older_extremes(key)
        head = tail[: tail.size - need]
        if head.size and np.isfinite(head).any():
            lo, hi = float(np.fmin(lo, np.nanmin(head))), float(np.fmax(hi, np.nanmax(head)))
        tails[i] = tail[tail.size - need :]
        lows[i], highs[i] = lo, hi
    return tails, lows, highs


def kept_features(inputs: KeptInputs, names: tuple[str, ...]) -> npt.NDArray[np.float32]:
    """The features ``names`` from :func:`kept_inputs`.

    Equal to ``features.extract_batch`` of the whole windows, bit for bit
    (``tests/domain/test_history.py`` checks features and the built-in model's scores).
    """
    tails, lows, highs = inputs
    return features.extract_summaries(tails, lows, highs, names)


def kept_row(inputs: KeptInputs, i: int) -> FloatArray:
    """Row ``i`` of :func:`kept_inputs` as a whole window (``features.window.WINDOW`` points), for the
    explanations (``features.evidence.explain``), which read a window.

    The kept tail ends it; the older extremes stand at its first two points and the rest is missing, so
    the older part has the same minimum and maximum, the last point is the same, and everything the
    features read from the tail is the same, as in the whole window the history no longer keeps.
    """
    tails, lows, highs = inputs
    tail = tails[i]
    if tail.size >= features.window.WINDOW - 2:
        return np.array(tail[-features.window.WINDOW:], dtype=np.float64)
    row = np.full(features.window.WINDOW, np.nan)
    row[-tail.size:] = tail
    row[0], row[1] = lows[i], highs[i]
    return row


def availability_masks(values: FloatArray, valid: npt.NDArray[np.bool_]) -> tuple[BoolArray, BoolArray]:
    """(scored, missing) for every point of a series, given ``features.extract_series``' mask.

    A point is scored where ``valid``; missing where it has no value; warming up otherwise.
    """
    return valid, ~np.isfinite(values)

