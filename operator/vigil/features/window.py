"""Window → features: the only feature code, shared by training and serving.

Contract: numpy only, no I/O, no clock, no model runtime. ``model/`` imports this
module to build training rows and the operator's engine calls it once per tick, so
a model can never see features computed two different ways.

A window is the last ``WINDOW`` points of one series, oldest → newest, NaN where a
point is missing. Two scales read it:

- the *short* window, its last ``SHORT`` points (8 hours at 5-minute steps), split
  into a *reference* part (all but the last ``RECENT`` points) and a *recent* part.
  The reference supplies a robust location (median) and scale (MAD); the ten
  short features of feature-v1 are computed on it unchanged;
- the *long* window, all ``WINDOW`` points (a week at 5-minute steps): is the
  present a new extreme against everything the window has seen? Its features use
  only the minimum and maximum of the long reference, so they cost O(WINDOW) per
  point and no sort. Measured on NAB (``bench/detection.py``), "beyond the range
  of the last week" separates incidents from daily and weekly cycles far better
  than any short-window statistic.

Every feature compares the present with the past of the same window only: causal
by construction, stateless (a pure function of the fetched window, so a restart
changes nothing), and no per-series global statistics.

Every feature is invariant to ``a * x + b`` for ``a > 0``, so one model serves CPU
percent, bytes per second and request counts alike. Ratios whose denominator is
zero (flatlines are common in metrics) map to 0 when the numerator is 0 too and to
the clip bound otherwise, and all outputs are clipped, so the model never sees
inf or NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Bool = npt.NDArray[np.bool_]

#: Bumped whenever a feature's definition changes; the ONNX metadata must match.
FEATURE_VERSION = "window-v2"

#: Points of history one score reads, including the current point: one week of
#: 5-minute samples. Fewer are fine (missing = NaN) once MIN_POINTS are there.
WINDOW = 2016

#: The short window: the last SHORT points, 8 hours of 5-minute samples (feature-v1's window).
SHORT = 96

#: The long features compare the current point with the long window minus its last
#: LONG_RECENT points (two references: a change a few points old still counts as new).
LONG_RECENT = (3, 6)

#: The newest points, compared with the rest of the window (30 minutes at 5 min).
RECENT = 6

#: Fewest non-missing points in the window needed to score; fewer = warming up.
MIN_POINTS = SHORT // 2

#: Bound on robust z-scores and other unbounded ratios.
Z_CLIP = 20.0
#: Bound on log ratios of volatilities (e**5 ~ 150x).
LOG_CLIP = 5.0

# Consistency constants that make MAD and the mean absolute deviation estimate
# the standard deviation of Gaussian data, so z-scores read in familiar units.
_MAD_TO_SD = 1.4826
_MEAN_AD_TO_SD = 1.2533

#: Feature names, in model input column order. Each measures how unusual the present
#: is, two-sided (a drop is as unusual as a rise), and is 0 for a flat window, so a
#: model may be constrained to be non-decreasing in all of them: then a flatline
#: gets the lowest score the model can give.
FEATURE_NAMES: tuple[str, ...] = (
    "absz_last",
    "absz_recent_mean",
    "absz_recent_max",
    "absz_diff_last",
    "rank_extremeness",
    "abs_range_pos",
    "z_excess_last",
    "recent_outside_frac",
    "abs_log_vol_ratio",
    "absz_half_shift",
    "long_excess_3",
    "long_excess_6",
    "long_range_pos",
)

#: One line per feature, for the model card and the docs.
FEATURE_DESCRIPTIONS: dict[str, str] = {
    "absz_last": "|robust z-score| of the current point against the reference (median, MAD)",
    "absz_recent_mean": f"|robust z-score| of the mean of the last {RECENT} points",
    "absz_recent_max": f"largest |robust z-score| among the last {RECENT} points",
    "absz_diff_last": "|last first difference| over the median |first difference| of the reference",
    "rank_extremeness": "2 * |percentile rank of the current point among the reference - 0.5| (0..1)",
    "abs_range_pos": "|current point - reference mid-range| over half the reference range (> 1 = new extreme)",
    "z_excess_last": "how far the current point lies beyond the reference min/max, over the reference scale",
    "recent_outside_frac": f"fraction of the last {RECENT} points outside the reference min/max",
    "abs_log_vol_ratio": f"|log ratio| of mean |first difference| over the last {RECENT} steps to the reference's",
    "absz_half_shift": "|median of the newer half - median of the older half| over the reference scale",
    "long_excess_3": f"log1p(how far the current point lies beyond the min/max of the long window minus its "
                     f"last {LONG_RECENT[0]} points, over that range)",
    "long_excess_6": f"log1p(largest excess of the last {LONG_RECENT[1]} points beyond the min/max of the long "
                     f"window minus those points, over that range)",
    "long_range_pos": f"log1p(|current point - mid-range| over half the range of the long window minus its last "
                      f"{LONG_RECENT[0]} points); > log(2) = new extreme of the week",
}
SHORT_FEATURES = len(FEATURE_NAMES) - 3


def extract_batch(windows: npt.ArrayLike, names: tuple[str, ...] = FEATURE_NAMES) -> F32:
    """Features ``names`` (default: all, in ``FEATURE_NAMES`` order) of N windows at once.

    ``windows`` is float [N, WINDOW], oldest → newest, NaN = missing. The caller
    guarantees the last column is finite and each row has at least ``MIN_POINTS``
    finite values. Returns float32 [N, len(names)], all finite. Only the feature
    groups ``names`` draws on are computed: a model that reads the three long
    features skips the short window's medians entirely (see :func:`columns`).
    """
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != WINDOW:
        raise ValueError(f"expected windows of shape [N, {WINDOW}], got {x.shape}")
    index = columns(names)
    return _select(compute(x, RECENT, groups=_groups(index)), index)


def tail_points(names: tuple[str, ...] = FEATURE_NAMES) -> int:
    """How many of the newest points the features ``names`` read one by one.

    The short features read only the last ``SHORT`` points; the long ones read the last
    ``LONG_RECENT[1]`` points and, of everything older in the window, only its minimum and
    maximum. So a history that keeps this many points as they are, plus the extremes of
    the rest (:func:`extract_summaries`), gives the same features as the whole window.
    """
    short, _ = _groups(columns(names))
    return SHORT if short else LONG_RECENT[1]


def extract_summaries(tails: npt.ArrayLike, older_lo: npt.ArrayLike, older_hi: npt.ArrayLike,
                      names: tuple[str, ...] = FEATURE_NAMES) -> F32:
    """:func:`extract_batch` from a bounded history instead of whole windows.

    ``tails`` is float [N, T] with ``tail_points(names) <= T <= WINDOW``: the newest T points of
    each window; ``older_lo``/``older_hi`` [N] are the minimum and maximum of the window's finite
    points older than the tail (NaN when there are none). With ``tails = windows[:, -T:]`` and the
    extremes taken over ``windows[:, :-T]``, the result equals ``extract_batch(windows, names)``
    bit for bit: the short features read the same last ``SHORT`` points, and the long ones take
    the same minima and maxima (min and max are exact, whatever the order they are taken in).
    """
    x = np.asarray(tails, dtype=np.float64)
    index = columns(names)
    short, long_ = _groups(index)
    need = tail_points(names)
    if x.ndim != 2 or not need <= x.shape[1] <= WINDOW:
        raise ValueError(f"expected tails of shape [N, {need}..{WINDOW}], got {x.shape}")
    lo = np.asarray(older_lo, dtype=np.float64)
    hi = np.asarray(older_hi, dtype=np.float64)
    if lo.shape != (x.shape[0],) or hi.shape != (x.shape[0],):
        raise ValueError(f"expected {x.shape[0]} older extremes, got {lo.shape} and {hi.shape}")
    out = np.zeros((x.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if short:
            out[:, :SHORT_FEATURES] = _compute(np.ascontiguousarray(x[:, -SHORT:]), RECENT)
        if long_ and x.shape[0]:
            a, b = LONG_RECENT
            head, gap = x[:, : x.shape[1] - b], x[:, x.shape[1] - b : x.shape[1] - a]
            lo_b = np.fmin(lo, _nanmin_rows(head))
            hi_b = np.fmax(hi, _nanmax_rows(head))
            out[:, SHORT_FEATURES:] = _long_from(x[:, -b:], lo_b, hi_b, _nanmin_rows(gap), _nanmax_rows(gap))
    return _select(out, index)


def columns(names: tuple[str, ...]) -> tuple[int, ...]:
    """Column indices of ``names`` in ``FEATURE_NAMES``; ValueError for an unknown or repeated name."""
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown {', '.join(unknown)}" if unknown else "empty or repeated names"
        raise ValueError(f"feature names must be distinct names of {FEATURE_VERSION}: {problem}")
    return tuple(FEATURE_NAMES.index(n) for n in names)


def _groups(index: tuple[int, ...]) -> tuple[bool, bool]:
    """Whether the short and the long feature groups are needed for these columns."""
    return any(i < SHORT_FEATURES for i in index), any(i >= SHORT_FEATURES for i in index)


def _select(out: F32, index: tuple[int, ...]) -> F32:
    if index == tuple(range(len(FEATURE_NAMES))):
        return out
    return np.ascontiguousarray(out[:, index])


def compute(x: F64, recent: int, short: int = SHORT, groups: tuple[bool, bool] = (True, True)) -> F32:
    """Features of windows of any width > ``short`` > 2 * ``recent``; :func:`extract_batch` fixes the width.

    Kept separate so the training pipeline can study other window widths with the
    exact same code. Rows are independent: no statistic mixes two rows. ``groups``
    says whether to compute the short and the long features; columns of a skipped
    group are 0.
    """
    out = np.zeros((x.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    # Values near the float64 limit overflow to inf; the final clips handle that.
    with np.errstate(over="ignore", invalid="ignore"):
        if groups[0]:
            out[:, :SHORT_FEATURES] = _compute(np.ascontiguousarray(x[:, -short:]), recent)
        if groups[1]:
            out[:, SHORT_FEATURES:] = _long(x)
    return out


def _long(x: F64) -> F32:
    """The long-window features: the current point against the range of the rest of the window."""
    a, b = LONG_RECENT
    older, gap = x[:, :-b], x[:, -b:-a]
    return _long_from(x[:, -b:], _nanmin_rows(older), _nanmax_rows(older), _nanmin_rows(gap), _nanmax_rows(gap))


def _long_from(recent: F64, lo_b: F64, hi_b: F64, gap_lo: F64, gap_hi: F64) -> F32:
    """:func:`_long` given each row's last ``LONG_RECENT[1]`` points and the extremes it needs.

    ``lo_b``/``hi_b``: min/max of the window minus its last b points; ``gap_lo``/``gap_hi``:
    of the points between the last b and the last a. Split out so a whole series can get
    its extremes from a sliding minimum (:func:`_long_series`) with the same arithmetic.
    """
    n_rows = recent.shape[0]
    out = np.zeros((n_rows, 3), dtype=np.float64)
    if n_rows == 0:
        return out.astype(np.float32)
    last = recent[:, -1]
    lo_a, hi_a = np.fmin(lo_b, gap_lo), np.fmax(hi_b, gap_hi)
    excess = np.maximum(np.maximum(last - hi_a, lo_a - last), 0.0)
    out[:, 0] = _safe_ratio(np.where(np.isfinite(excess), excess, 0.0), hi_a - lo_a, Z_CLIP)
    # The largest excess among the last b points: a new extreme stays visible for b points, so an
    # incident gives a steady run of flags rather than a single one (one alert event either way).
    beyond = np.maximum(np.maximum(recent - hi_b[:, None], lo_b[:, None] - recent), 0.0)
    excess_b = _nanmax_rows(np.where(np.isfinite(beyond), beyond, np.nan))
    out[:, 1] = _safe_ratio(np.where(np.isfinite(excess_b), excess_b, 0.0), hi_b - lo_b, Z_CLIP)
    mid_dev = np.abs(last - 0.5 * (lo_a + hi_a))
    out[:, 2] = _safe_ratio(np.where(np.isfinite(mid_dev), mid_dev, 0.0), 0.5 * (hi_a - lo_a), Z_CLIP)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=Z_CLIP, neginf=-Z_CLIP)
    # log1p: ratios of a range are heavy-tailed; on a log scale a linear model separates a new
    # extreme twice the range away from one just past the edge (measured: +0.05 event F1 on NAB).
    return np.log1p(out).astype(np.float32)


def _nanmin_rows(a: F64) -> F64:
    """Row minima over finite values, NaN for rows without any (no warnings)."""
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    m: F64 = np.fmin.reduce(a, axis=1)  # fmin skips NaN; NaN only where the whole row is NaN
    return m


def _nanmax_rows(a: F64) -> F64:
    """Row maxima over finite values, NaN for rows without any (no warnings)."""
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    m: F64 = np.fmax.reduce(a, axis=1)
    return m


def _compute(x: F64, recent: int) -> F32:
    n_rows, width = x.shape
    if width <= 2 * recent:
        raise ValueError(f"window width {width} must exceed 2 * recent = {2 * recent}")
    out = np.empty((n_rows, SHORT_FEATURES), dtype=np.float64)
    if n_rows == 0:
        return out.astype(np.float32)

    ref = x[:, : width - recent]
    rec = x[:, width - recent :]
    last = x[:, -1]

    # Robust location and scale of the reference part.
    n_ref = np.isfinite(ref).sum(axis=1)
    med = _row_median(ref, n_ref)
    dev = np.abs(ref - med[:, None])
    mad = _row_median(dev, n_ref)
    scale = np.where(mad > 0, _MAD_TO_SD * mad, _MEAN_AD_TO_SD * _nanmean(dev))

    rec_dev = np.abs(rec - med[:, None])
    out[:, 0] = _safe_ratio(np.abs(last - med), scale, Z_CLIP)
    out[:, 1] = _safe_ratio(np.abs(_nanmean(rec - med[:, None])), scale, Z_CLIP)
    out[:, 2] = _safe_ratio(np.max(np.where(np.isfinite(rec_dev), rec_dev, 0.0), axis=1), scale, Z_CLIP)

    # First differences: the last step against the typical step of the reference.
    ref_diff = np.abs(np.diff(ref, axis=1))
    n_diff = np.isfinite(ref_diff).sum(axis=1)
    diff_mean = _nanmean(ref_diff)
    diff_median = _row_median(ref_diff, n_diff)
    diff_scale = np.where(diff_median > 0, diff_median, diff_mean)
    prev = _previous_finite(x)
    step = np.where(np.isfinite(prev), np.abs(last - prev), 0.0)
    out[:, 3] = _safe_ratio(step, diff_scale, Z_CLIP)

    # Where the current point sits among the reference points, and beyond them.
    below = (ref < last[:, None]).sum(axis=1)
    tied = (ref == last[:, None]).sum(axis=1)
    out[:, 4] = np.abs((below + 0.5 * tied) / np.maximum(n_ref, 1) - 0.5) * 2.0
    lo, hi = _row_min_max(ref, n_ref)
    out[:, 5] = _safe_ratio(np.abs(last - 0.5 * (lo + hi)), 0.5 * (hi - lo), Z_CLIP)
    excess = np.maximum(np.maximum(last - hi, lo - last), 0.0)
    out[:, 6] = _safe_ratio(excess, scale, Z_CLIP)
    outside = ((rec > hi[:, None]) | (rec < lo[:, None])).sum(axis=1)
    out[:, 7] = outside / np.maximum(np.isfinite(rec).sum(axis=1), 1)

    # Volatility now against volatility before (mean |first difference|): a burst of
    # noise and a flatline are both unusual.
    rec_vol = _nanmean(np.abs(np.diff(x[:, width - recent - 1 :], axis=1)))
    out[:, 8] = np.abs(_safe_log_ratio(rec_vol, diff_mean, LOG_CLIP))

    # Slow level shift: newer half against older half of the whole window.
    half = width // 2
    older, newer = x[:, :half], x[:, half:]
    med_old = _row_median(older, np.isfinite(older).sum(axis=1))
    med_new = _row_median(newer, np.isfinite(newer).sum(axis=1))
    shift = np.where(np.isfinite(med_old), np.abs(med_new - med_old), 0.0)
    out[:, 9] = _safe_ratio(shift, scale, Z_CLIP)

    np.nan_to_num(out, copy=False, nan=0.0, posinf=Z_CLIP, neginf=-Z_CLIP)
    return out.astype(np.float32)


def windows_of(values: npt.ArrayLike, width: int = WINDOW) -> F64:
    """Read-only [T, width] view: row t is the window ending at t, left-padded with NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"expected a 1-d series, got shape {v.shape}")
    if len(v) == 0:
        return np.empty((0, width), dtype=np.float64)
    padded = np.concatenate([np.full(width - 1, np.nan), v])
    return np.lib.stride_tricks.sliding_window_view(padded, width)


def valid_mask(values: npt.ArrayLike, width: int = WINDOW, min_points: int = MIN_POINTS) -> Bool:
    """valid[t]: values[t] is finite and the window ending at t has >= min_points finite values."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    counts = np.cumsum(finite, dtype=np.int64)
    in_window = counts - np.concatenate([np.zeros(width, dtype=np.int64), counts[:-width]])[: len(v)]
    valid: Bool = finite & (in_window >= min_points)
    return valid


def extract_series(values: npt.ArrayLike, names: tuple[str, ...] = FEATURE_NAMES) -> tuple[F32, Bool]:
    """Features ``names`` for every point of a whole series, each from ``values[: t + 1]`` only.

    Returns ``(X, valid)``: X float32 [T, len(names)] and valid bool [T] as in
    :func:`valid_mask`. Valid rows equal :func:`extract_batch` of the window ending
    at t with the same ``names``; invalid rows are 0.
    """
    index = columns(names)
    x, valid = series_features(values, WINDOW, RECENT, MIN_POINTS, groups=_groups(index))
    return _select(x, index), valid


def series_features(values: npt.ArrayLike, width: int, recent: int, min_points: int,
                    groups: tuple[bool, bool] = (True, True)) -> tuple[F32, Bool]:
    """:func:`extract_series` for any window geometry (used by the window study in training).

    Row t equals ``compute(windows_of(values, width)[t], recent)``, but cheaper: the
    short features read only the last ``SHORT`` points of each window, and the long
    ones take their extremes from a sliding minimum/maximum over the series (exact,
    O(1) per point) instead of reducing ``width`` points per row.
    """
    v = np.asarray(values, dtype=np.float64)
    valid = valid_mask(v, width, min_points)
    out = np.zeros((len(v), len(FEATURE_NAMES)), dtype=np.float32)
    rows = np.flatnonzero(valid)
    if rows.size == 0:
        return out, valid
    with np.errstate(over="ignore", invalid="ignore"):
        if groups[0]:
            short_windows = windows_of(v, min(SHORT, width))
            for start in range(0, len(rows), _CHUNK):
                idx = rows[start : start + _CHUNK]
                out[idx, :SHORT_FEATURES] = _compute(np.ascontiguousarray(short_windows[idx]), recent)
        if groups[1]:
            out[rows, SHORT_FEATURES:] = _long_series(v, width, rows)
    return out, valid


def _long_series(v: F64, width: int, rows: npt.NDArray[np.intp]) -> F32:
    """:func:`_long` of the windows ending at ``rows`` of series ``v`` (left-padded like :func:`windows_of`)."""
    a, b = LONG_RECENT
    padded = np.concatenate([np.full(width - 1, np.nan), v])
    # In padded coordinates the window ending at t covers padded[t : t + width].
    lo_b, hi_b = _sliding_nan_extremes(padded, width - b)
    tail = padded[width - b :]
    gap_lo, gap_hi = _sliding_nan_extremes(tail, b - a)
    recent = np.lib.stride_tricks.sliding_window_view(tail, b)
    return _long_from(np.ascontiguousarray(recent[rows]), lo_b[rows], hi_b[rows], gap_lo[rows], gap_hi[rows])


def _sliding_nan_extremes(p: F64, length: int) -> tuple[F64, F64]:
    """(fmin, fmax) over every run ``p[j : j + length]``: NaN skipped, NaN only where the run is all NaN.

    van Herk / Gil-Werman: within blocks of ``length``, prefix and suffix running
    extremes; a run spans at most two blocks, so its extreme is the suffix extreme
    of its first point combined with the prefix extreme of its last. Min and max
    are exact, so the features equal the per-window reduction bit for bit.
    """
    runs = len(p) - length + 1
    if runs <= 0:
        empty = np.empty(0)
        return empty, empty
    present = ~np.isnan(p)
    counts = np.concatenate([[0], np.cumsum(present)])
    none = (counts[length:] - counts[:-length]) == 0
    blocks = -(-len(p) // length)
    result = []
    for fill, accumulate in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        q = np.full(blocks * length, fill)
        q[: len(p)] = np.where(present, p, fill)
        grid = q.reshape(blocks, length)
        prefix = accumulate.accumulate(grid, axis=1).ravel()
        suffix = accumulate.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
        run = accumulate(suffix[:runs], prefix[length - 1 : length - 1 + runs])
        result.append(np.where(none, np.nan, run))
    return result[0], result[1]


#: Rows per batch of short windows in :func:`series_features` (bounds its working memory).
_CHUNK = 8192


def _row_median(a: F64, n: npt.NDArray[np.int64]) -> F64:
    """Row medians over finite values (NaN if none), given each row's finite count.

    Rows without a missing value (nearly all of them) use one ``np.partition``
    (selection, several times cheaper than a sort); the others are sorted with NaN
    last. Both pick the same two middle values, so the result is identical.
    """
    width = a.shape[1]
    out = np.empty(a.shape[0])
    full = n == width
    if full.any():
        rows = a if full.all() else a[full]
        upper = width // 2
        part = np.partition(rows, upper, axis=1)
        high = part[:, upper]
        low = high if width % 2 else part[:, :upper].max(axis=1)
        out[full] = 0.5 * (low + high)
    if not full.all():
        out[~full] = _median_of_sorted(np.sort(a[~full], axis=1), n[~full])
    return out


def _row_min_max(a: F64, n: npt.NDArray[np.int64]) -> tuple[F64, F64]:
    """Per row, the first and the n-th value in sorted order (NaN last): min and max of complete rows."""
    lo, hi = np.empty(a.shape[0]), np.empty(a.shape[0])
    full = n == a.shape[1]
    rows = a if full.all() else a[full]
    lo[full], hi[full] = rows.min(axis=1), rows.max(axis=1)
    if not full.all():
        ordered = np.sort(a[~full], axis=1)
        lo[~full] = ordered[:, 0]
        hi[~full] = np.take_along_axis(ordered, np.maximum(n[~full] - 1, 0)[:, None], axis=1)[:, 0]
    return lo, hi


def _median_of_sorted(s: F64, n: npt.NDArray[np.int64]) -> F64:
    """Row medians of rows sorted with NaN last, given each row's finite count (NaN if 0)."""
    lo = np.maximum((n - 1) // 2, 0)
    hi = n // 2
    a = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    b = np.take_along_axis(s, np.minimum(hi, s.shape[1] - 1)[:, None], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (a + b), np.nan)


def _nanmean(a: F64) -> F64:
    """Row means over finite values, NaN for rows without any (and without warnings)."""
    finite = np.isfinite(a)
    n = finite.sum(axis=1)
    total = np.where(finite, a, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _safe_ratio(num: F64, den: F64, bound: float) -> F64:
    """num / den clipped to ±bound; 0 / 0 = 0 and x / 0 = ±bound (flatlines)."""
    ok = den > 0
    ratio = np.divide(num, den, out=np.zeros_like(num), where=ok)
    ratio = np.where(ok, ratio, np.sign(num) * bound)
    return np.clip(ratio, -bound, bound)


def _safe_log_ratio(num: F64, den: F64, bound: float) -> F64:
    """log(num / den) for non-negative inputs clipped to ±bound; 0 / 0 and missing = 0."""
    both = (num > 0) & (den > 0)
    ratio = np.divide(num, den, out=np.ones_like(num), where=both)
    logs = np.log(ratio)
    logs = np.where(both, logs, np.where(num > 0, bound, np.where(den > 0, -bound, 0.0)))
    logs = np.where(np.isnan(num) | np.isnan(den), 0.0, logs)
    return np.clip(logs, -bound, bound)


def _previous_finite(x: F64) -> F64:
    """Per row, the last finite value before the last column (NaN if none)."""
    body = x[:, :-1]
    cols = np.where(np.isfinite(body), np.arange(body.shape[1]), -1)
    idx = cols.max(axis=1)
    picked = np.take_along_axis(body, np.maximum(idx, 0)[:, None], axis=1)[:, 0]
    return np.where(idx >= 0, picked, np.nan)
