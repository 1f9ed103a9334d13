"""Build Prometheus history from a labelled NAB series so that *now* falls where we want.

The point is chosen with ``vigil backtest``'s own code path on the whole series,
so a test can pick "inside the labelled incident, where the model flags it" and
"well before it, where the model is quiet", and then check that the live
operator says exactly what the backtest says at the grid point it evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import numpy.typing as npt

from tests.harness import DATA
from vigil import backtest, features
from vigil.adapters import inference
from vigil.domain import resample
from vigil_sandbox import nab
from vigil_sandbox.prometheus import Series

STEP = 300.0
FUTURE_POINTS = 6  # a few samples after "now", so a test running across a 5-minute boundary still has data


@dataclasses.dataclass(frozen=True)
class Scenario:
    series: Series
    offset: float  # shifted time = original time + offset
    point: float  # original timestamp placed at the current grid point
    backtest: backtest.Result  # on the original timeline
    window: tuple[float, float]
    label: float

    def expected_at(self, shifted_grid_time: float) -> tuple[float, bool]:
        """(score, anomalous) the backtest gives at a shifted grid time."""
        original = shifted_grid_time - self.offset
        index = int(np.argmin(np.abs(self.backtest.timestamps - original)))
        assert abs(self.backtest.timestamps[index] - original) < 1, "grid point not in the backtest"
        return float(self.backtest.scores[index]), bool(self.backtest.anomalous[index])


def load(key: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[tuple[float, float]],
                           list[float]]:
    """Grid timestamps and values, the labelled windows and anomaly points (in order) of a NAB series."""
    loaded = nab.load_series(DATA / "nab" / key, strict=False)
    windows = nab.load_windows(DATA / "nab" / "combined_windows.json", key)
    labels = json.loads((DATA / "nab" / "combined_labels.json").read_text())[key]
    grid = resample.to_grid(loaded.timestamps, loaded.values, STEP)
    return grid.timestamps, grid.values, [(w[0], w[1]) for w in windows], [nab.parse_timestamp(x) for x in labels]


def build(key: str, metric: str, labels: dict[str, str], where: str, scorer: inference.Scorer,
          now: float | None = None) -> Scenario:
    """``where``: "incident" (first flagged point after the labelled anomaly, inside its window)
    or "normal" (a quiet point well before the window)."""
    t, v, windows, anomaly_points = load(key)
    result = backtest.run(t, v, scorer)
    # Points whose next two neighbours agree: a test that crosses a 5-minute boundary sees the same verdict.
    flagged = result.anomalous.copy()
    steady_flag = flagged[:-2] & flagged[1:-1] & flagged[2:]
    steady_quiet = ~flagged[:-2] & ~flagged[1:-1] & ~flagged[2:] & np.isfinite(result.scores[:-2])
    # The incident: the first labelled window in which the model flags a steady point.
    window, label = windows[0], anomaly_points[0]
    if where == "incident":
        hits = [np.flatnonzero((t[:-2] >= w[0]) & (t[:-2] <= w[1]) & steady_flag) for w in windows]
        chosen = next((k for k, inside in enumerate(hits) if inside.size), None)
        assert chosen is not None, f"the model flags no steady point of any of {key}'s labelled windows"
        window, label = windows[chosen], anomaly_points[chosen]
        index = int(hits[chosen][0])
    else:
        quiet = np.flatnonzero((t[:-2] < window[0] - 86400) & steady_quiet)
        quiet = quiet[quiet >= features.MIN_POINTS * 4]  # well past warm-up
        assert quiet.size, f"no quiet point before {key}'s window"
        index = int(quiet[quiet.size // 2])
    end = index + 1 + FUTURE_POINTS
    now = time.time() if now is None else now
    grid_now = math.floor(now / STEP) * STEP
    offset = grid_now - t[index]
    keep = np.isfinite(v[:end])
    series = Series(metric, labels, t[:end][keep] + offset, v[:end][keep])
    return Scenario(series, offset, float(t[index]), result, window, label)


#: The NAB series most remediation tests replay: an EC2 CPU trace with a labelled incident.
CPU_KEY = "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv"


def cpu_history(*where: str) -> list[Series]:
    """``nab_cpu{scenario=<w>}`` for each ``w`` ("incident", "normal"), placed so *now* falls there."""
    scorer = inference.Scorer(inference.builtin_bytes())
    return [build(CPU_KEY, "nab_cpu", {"scenario": w}, w, scorer).series for w in where]
