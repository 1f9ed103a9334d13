"""Detection metrics shared by ``model/train.py`` and ``bench/detection.py``.

Scores live on each series' grid, NaN where the detector does not score (warming
up, or the point is missing). Definitions, used everywhere the card or the
benchmark prints a figure:

- point ROC-AUC / PR-AUC: over scored points with a label, i.e. the excluded
  pre-anomaly part of each window left out;
- window recall: a window is detected if any scored point from its anomaly point
  to its end is flagged (score >= threshold);
- detection delay: grid points from the anomaly point to the first flag;
- false alarm: an alarm onset (a flagged point whose previous grid point is not
  flagged) at a scored point outside every window; the rate is per 1,000 scored
  points outside windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from sklearn import metrics

from model import dataset
from vigil.features import window

#: Threshold rule: the lowest threshold whose pooled false-alarm rate stays within this budget.
FALSE_ALARM_BUDGET = 1.0  # alarm onsets per 1,000 scored points outside windows (~2 a week at 5 min)


@dataclasses.dataclass(frozen=True)
class Scored:
    """One series' scores next to its labels."""

    name: str
    group: str
    labels: npt.NDArray[np.int8]
    scores: npt.NDArray[np.float64]  # NaN = not scored
    windows: tuple[dataset.Window, ...]


def point_metrics(items: Sequence[Scored]) -> dict[str, float | int | None]:
    """ROC-AUC and PR-AUC over scored, labelled points (None when a class is absent)."""
    y, s = _labelled(items)
    n_pos = int(y.sum())
    both = 0 < n_pos < len(y)
    return {
        "roc_auc": float(metrics.roc_auc_score(y, s)) if both else None,
        "pr_auc": float(metrics.average_precision_score(y, s)) if both else None,
        "positive_points": n_pos,
        "negative_points": len(y) - n_pos,
    }


def event_metrics(items: Sequence[Scored], threshold: float) -> dict[str, float | int | None]:
    """Window recall, false alarms per 1,000 points outside windows and median delay at a threshold."""
    return event_metrics_at([(item, threshold) for item in items])


def event_metrics_at(pairs: Sequence[tuple[Scored, float]]) -> dict[str, float | int | None]:
    """:func:`event_metrics` with a threshold per series (pooled over the pairs)."""
    n_windows = detected = false_alarms = outside = 0
    delays: list[int] = []
    for item, threshold in pairs:
        flags = item.scores >= threshold  # NaN compares False
        onset = flags & ~np.concatenate([[False], flags[:-1]])
        negative = np.isfinite(item.scores) & (item.labels == dataset.NEGATIVE)
        false_alarms += int((onset & negative).sum())
        outside += int(negative.sum())
        for w in item.windows:
            n_windows += 1
            hits = np.flatnonzero(flags[w.anomaly : w.end + 1])
            if len(hits):
                detected += 1
                delays.append(int(hits[0]))
    recall = detected / n_windows if n_windows else None
    return {
        "windows": n_windows,
        "detected": detected,
        "window_recall": recall,
        # Binomial standard error: how far apart two recalls must be to mean anything.
        "window_recall_se": math.sqrt(recall * (1 - recall) / n_windows) if recall is not None else None,
        "false_alarms": false_alarms,
        "points_outside_windows": outside,
        "false_alarms_per_1000": 1000.0 * false_alarms / outside if outside else None,
        "median_delay_points": float(np.median(delays)) if delays else None,
    }


def false_alarm_curve(items: Sequence[Scored]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Exact pooled false-alarm rate at every candidate threshold (ascending).

    Candidates are the distinct scores of points outside windows, plus one just
    above the largest. A point is an onset at threshold t iff its score >= t and
    its predecessor's < t, i.e. score >= t minus min(score, previous) >= t.
    """
    now, both = [], []
    for item in items:
        negative = np.isfinite(item.scores) & (item.labels == dataset.NEGATIVE)
        prev = np.concatenate([[-math.inf], item.scores[:-1]])
        prev = np.where(np.isfinite(prev), prev, -math.inf)
        now.append(item.scores[negative])
        both.append(np.minimum(item.scores, prev)[negative])
    scores, paired = np.sort(np.concatenate(now)), np.sort(np.concatenate(both))
    if len(scores) == 0:
        raise ValueError("no scored points outside windows to set a threshold on")
    candidates = np.append(np.unique(scores), np.nextafter(scores[-1], math.inf))
    onsets = np.searchsorted(paired, candidates, "left") - np.searchsorted(scores, candidates, "left")
    return candidates, 1000.0 * onsets / len(scores)


def choose_threshold(items: Sequence[Scored], budget: float = FALSE_ALARM_BUDGET, decimals: int = 4) -> float:
    """The lowest threshold at and above which the pooled false-alarm rate stays within ``budget``.

    Uses only the scores of points outside windows. Rounded up to ``decimals``
    so the number written into the model is the number the figures are computed at.
    """
    candidates, rates = false_alarm_curve(items)
    within = np.logical_and.accumulate((rates <= budget)[::-1])[::-1]
    chosen = float(candidates[int(np.argmax(within))])
    return math.ceil(chosen * 10**decimals) / 10**decimals if decimals else chosen


def baseline_scores(values: npt.NDArray[np.float64], width: int, min_points: int) -> npt.NDArray[np.float64]:
    """Baseline detector: |robust z-score| of the last point over the same window (NaN = not scored).

    Median and MAD of the whole window, falling back to the mean absolute
    deviation for flat windows; unclipped. Scored where the model scores.
    """
    valid = window.valid_mask(values, width, min_points)
    scores = np.full(len(values), np.nan)
    if not valid.any():
        return scores
    x = window.windows_of(values, width)[valid]
    med = np.nanmedian(x, axis=1)
    dev = np.abs(x - med[:, None])
    mad = 1.4826 * np.nanmedian(dev, axis=1)
    scale = np.where(mad > 0, mad, 1.2533 * np.nanmean(dev, axis=1))
    z = np.abs(x[:, -1] - med)
    scores[valid] = np.divide(z, scale, out=np.zeros_like(z), where=scale > 0)
    return scores


def chance_scores(values: npt.NDArray[np.float64], width: int, min_points: int,
                  rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Reference: uniform noise wherever the model scores, i.e. the recall a false-alarm rate buys for free."""
    valid = window.valid_mask(values, width, min_points)
    return np.where(valid, rng.random(len(values)), np.nan)


def summary(items: Sequence[Scored], threshold: float) -> dict[str, float | int | None]:
    """Point metrics and event metrics at ``threshold`` in one flat dict."""
    return {**point_metrics(items), **event_metrics(items, threshold)}


def _labelled(items: Sequence[Scored]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    ys, ss = [], []
    for item in items:
        keep = np.isfinite(item.scores) & (item.labels != dataset.EXCLUDED)
        ys.append(item.labels[keep] == dataset.POSITIVE)
        ss.append(item.scores[keep])
    return np.concatenate(ys), np.concatenate(ss)
