"""How a window of points becomes a score: shared by the live engine and ``vigil backtest``.

Both paths call :func:`assess` to decide whether a point can be scored, and
:mod:`vigil.features` to compute the features, so a backtest reproduces what
the operator would have said live at every point.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vigil import features
from vigil.domain.detection import Availability

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


def availability_masks(values: FloatArray, valid: npt.NDArray[np.bool_]) -> tuple[BoolArray, BoolArray]:
    """(scored, missing) for every point of a series, given ``features.extract_series``' mask.

    A point is scored where ``valid``; missing where it has no value; warming up otherwise.
    """
    return valid, ~np.isfinite(values)

