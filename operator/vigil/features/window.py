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

import dataclasses

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Bool = npt.NDArray[np.bool_]

#: Bumped whenever a feature's definition changes; the ONNX metadata must match.
FEATURE_VERSION = "window-v3"

#: Earlier versions whose features this module still computes unchanged: v3 only added the
#: context group, so a model trained on v2 features (the v2 built-in, custom models) still serves.
COMPATIBLE_VERSIONS: dict[str, int] = {"window-v2": 13, "window-v3": 17}

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

#: The context group (feature-v3). A day in points at 5-minute steps: the seasonal period.
PERIOD = 288
#: Seasonal baseline = median of the same time on this many previous periods (robust to one odd day).
SEASON_LAGS = 5
#: Points whose seasonal residuals the context features read (12 h at 5 min): the residuals' robust
#: scale and the CUSUM horizon. SEASON_LAGS * PERIOD + SEASON_SPAN must fit in WINDOW.
SEASON_SPAN = 144
#: CUSUM drift, in robust standard deviations: a shift smaller than this never accumulates.
CUSUM_DRIFT = 1.0
#: Steps of the "recent" volatility in vol_shift (1 h at 5 min).
VOL_RECENT = 12

#: Points of history the context group reads (the rest of a wider window is ignored).
CONTEXT_WIDTH = SEASON_LAGS * PERIOD + SEASON_SPAN

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
    "season_absz",
    "season_absz_recent",
    "season_cusum",
    "vol_shift",
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
    "season_absz": f"log1p(how far |seasonal residual| of the current point lies beyond the largest |residual| "
                   f"of the last {SEASON_SPAN} points before the recent {RECENT}, over that largest); the residual "
                   f"is the value minus the median of the same time on the previous {SEASON_LAGS} days",
    "season_absz_recent": f"the same for the smallest |residual| of the last {RECENT} points: a sustained "
                          f"level that is new for this time of day, not one spike",
    "season_cusum": f"log1p of a two-sided CUSUM (drift {CUSUM_DRIFT}) of the robust-standardised seasonal "
                    f"residuals over the last {SEASON_SPAN} points: evidence of a shift inside the range",
    "vol_shift": f"|log ratio| of mean |first difference| over the last {VOL_RECENT} steps to that over the "
                 f"{SEASON_SPAN - VOL_RECENT} steps before (variance / shape change)",
}
SHORT_FEATURES = 10
LONG_END = 13  # columns [SHORT_FEATURES, LONG_END) are the long group, [LONG_END, ...) the context group


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
    short, _, context = _groups(columns(names))
    if context:
        # The context group (feature-v3) reads its last CONTEXT_WIDTH points one by one.
        return CONTEXT_WIDTH
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
    short, long_, context = _groups(index)
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
            out[:, SHORT_FEATURES:LONG_END] = _long_from(x[:, -b:], lo_b, hi_b, _nanmin_rows(gap),
                                                         _nanmax_rows(gap))
        if context and x.shape[0]:
            # Reads only the last CONTEXT_WIDTH points, which the tail holds (tail_points).
            out[:, LONG_END:] = _context_window(np.ascontiguousarray(x))
    return _select(out, index)


def columns(names: tuple[str, ...]) -> tuple[int, ...]:
    """Column indices of ``names`` in ``FEATURE_NAMES``; ValueError for an unknown or repeated name."""
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown {', '.join(unknown)}" if unknown else "empty or repeated names"
        raise ValueError(f"feature names must be distinct names of {FEATURE_VERSION}: {problem}")
    return tuple(FEATURE_NAMES.index(n) for n in names)


Groups = tuple[bool, bool, bool]
ALL_GROUPS: Groups = (True, True, True)


def _groups(index: tuple[int, ...]) -> Groups:
    """Whether the short, the long and the context feature groups are needed for these columns."""
    return (any(i < SHORT_FEATURES for i in index), any(SHORT_FEATURES <= i < LONG_END for i in index),
            any(i >= LONG_END for i in index))


def _select(out: F32, index: tuple[int, ...]) -> F32:
    if index == tuple(range(len(FEATURE_NAMES))):
        return out
    return np.ascontiguousarray(out[:, index])


def compute(x: F64, recent: int, short: int = SHORT, groups: Groups = ALL_GROUPS) -> F32:
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
            out[:, SHORT_FEATURES:LONG_END] = _long(x)
        if groups[2] and x.shape[1] >= CONTEXT_WIDTH:
            out[:, LONG_END:] = _context_window(x)
    return out


def seasonal_residuals(cur: F64, lags: list[F64]) -> F64:
    """``cur`` minus the median of the SEASON_LAGS ``lags`` (same shape), elementwise; NaN = no residual.

    The median of five by a min/max network (elementwise, no sort: a few passes per point).
    Missing lags count as -inf, +inf, -inf, ... in turn, so the result is a middle value
    of the lags that are there (the lower one of an even count); with no lag at all
    there is no residual.
    """
    if len(lags) != 5:
        raise ValueError("the median network is written for five lags")
    missing = [np.isnan(lag) for lag in lags]
    rank = np.zeros(missing[0].shape, dtype=np.int8)
    filled = []
    for lag, gone in zip(lags, missing, strict=True):
        filled.append(np.where(gone, np.where(rank % 2 == 0, -np.inf, np.inf), lag))
        rank = rank + gone
    a, b, c, d, e = filled
    # Of the four values a..d, the smallest and the largest cannot be the median of five; the
    # median of five is then the median of the two middle ones and e.
    low_ab, high_ab = np.minimum(a, b), np.maximum(a, b)
    low_cd, high_cd = np.minimum(c, d), np.maximum(c, d)
    u, w = np.maximum(low_ab, low_cd), np.minimum(high_ab, high_cd)
    med = np.maximum(np.minimum(u, w), np.minimum(np.maximum(u, w), e))
    out: F64 = np.where(np.isfinite(med), cur - med, np.nan)
    return out


def _context(resid: F64, steps: F64) -> F32:
    """The context group from the seasonal residuals of the last SEASON_SPAN points and the steps between them.

    ``resid`` [n, SEASON_SPAN] (see :func:`seasonal_residuals`, NaN = none) and
    ``steps`` [n, SEASON_SPAN - 1] (|first differences| of the same points). Rows
    are independent and go through the same operations whatever the batch, so the
    series path (:func:`_context_series`, which gathers the same spans from
    sliding views of residual and step series computed once) gives the same bits.
    Residuals are centred by construction (the baseline is a median), so the scale
    is the mean |residual| before the recent part: one pass, no sort.
    """
    n_rows, span = resid.shape
    out = np.zeros((n_rows, 4), dtype=np.float64)
    if n_rows == 0:
        return out.astype(np.float32)
    finite = np.isfinite(resid)
    ref_abs = np.abs(resid[:, : span - RECENT])
    n_ref = finite[:, : span - RECENT].sum(axis=1)
    scale = _MEAN_AD_TO_SD * _nanmean(ref_abs)
    have = n_ref >= RECENT  # too few residuals: no seasonal evidence (those features stay 0)

    # Novelty of the residual, like the long features' novelty of the value: how far the current
    # residual, and the smallest of the recent ones (a sustained excursion, not one spike), lie beyond
    # the largest |residual| of the reference part, over that largest.
    ref_max = _nanmax_rows(np.where(np.isfinite(ref_abs), ref_abs, np.nan))
    rec_abs = np.abs(resid[:, span - RECENT :])
    last_abs = rec_abs[:, -1]
    out[:, 0] = _safe_ratio(np.maximum(np.where(np.isfinite(last_abs), last_abs, 0.0) - ref_max, 0.0), ref_max,
                            Z_CLIP)
    sustained = _nanmin_rows(np.where(np.isfinite(rec_abs), rec_abs, np.nan))
    out[:, 1] = _safe_ratio(np.maximum(np.where(np.isfinite(sustained), sustained, 0.0) - ref_max, 0.0), ref_max,
                            Z_CLIP)
    out[:, :2] = np.log1p(np.where(np.isfinite(ref_max)[:, None], out[:, :2], 0.0))

    # Two-sided CUSUM over the span, restarted at its start: S = C_end - min(0, min C) with C the
    # running sum of (|z| - drift) on each side; missing points add nothing. Equals Page's recursion
    # S_t = max(0, S_t-1 + z_t - drift) run over the span.
    z = _safe_ratio(np.where(finite, resid, 0.0), scale[:, None], Z_CLIP)
    best = np.zeros(n_rows)
    for sign in (1.0, -1.0):
        c = np.cumsum(np.where(finite, sign * z - CUSUM_DRIFT, 0.0), axis=1)
        best = np.maximum(best, c[:, -1] - np.minimum(c.min(axis=1), 0.0))
    out[:, 2] = np.log1p(best)
    out[:, :3] = np.where(have[:, None], out[:, :3], 0.0)

    # Variance / shape: recent mean |first difference| against the rest of the span.
    out[:, 3] = np.abs(_safe_log_ratio(_nanmean(steps[:, -VOL_RECENT:]), _nanmean(steps[:, :-VOL_RECENT]), LOG_CLIP))
    np.nan_to_num(out, copy=False, nan=0.0, posinf=Z_CLIP, neginf=0.0)
    return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ContextDetail:
    """The signed, human-sized quantities behind the context features of one window (for explanations)."""

    z_last: float | None  # seasonal residual of the current point, in robust SDs (signed)
    z_recent: float | None  # mean residual of the last RECENT points, in robust SDs (signed)
    change_age: int | None  # points since the CUSUM's current run began (the change point)
    change_up: bool  # direction of that run
    vol_ratio: float | None  # recent over older mean |first difference|


def context_detail(row: F64) -> ContextDetail:
    """:class:`ContextDetail` of one window [width >= CONTEXT_WIDTH], same definitions as :func:`_context`."""
    x = np.asarray(row, dtype=np.float64)[None, :]
    if x.shape[1] < CONTEXT_WIDTH:
        return ContextDetail(None, None, None, False, None)
    width = x.shape[1]
    cur = x[:, -SEASON_SPAN:]
    lags = [x[:, width - j * PERIOD - SEASON_SPAN : width - j * PERIOD] for j in range(1, SEASON_LAGS + 1)]
    resid = seasonal_residuals(cur, lags)[0]
    finite = np.isfinite(resid)
    ref = np.abs(resid[: SEASON_SPAN - RECENT])
    scale = float(_MEAN_AD_TO_SD * _nanmean(ref[None, :])[0])
    steps = np.abs(np.diff(cur[0]))
    recent_vol, older_vol = _nanmean(steps[None, -VOL_RECENT:])[0], _nanmean(steps[None, :-VOL_RECENT])[0]
    vol = float(recent_vol / older_vol) if older_vol > 0 and recent_vol > 0 else None
    if not (np.isfinite(scale) and scale > 0) or finite[: SEASON_SPAN - RECENT].sum() < RECENT:
        return ContextDetail(None, None, None, False, vol)
    z = np.clip(np.where(finite, resid, 0.0) / scale, -Z_CLIP, Z_CLIP)
    z_last = float(z[-1]) if finite[-1] else None
    recent = resid[-RECENT:][finite[-RECENT:]]
    z_recent = float(np.clip(recent.mean() / scale, -Z_CLIP, Z_CLIP)) if recent.size else None
    best: tuple[float, int, bool] = (0.0, 0, True)
    for sign in (1.0, -1.0):
        c = np.concatenate([[0.0], np.cumsum(np.where(finite, sign * z - CUSUM_DRIFT, 0.0))])
        start = int(np.argmin(c))
        if c[-1] - c[start] > best[0]:
            best = (float(c[-1] - c[start]), len(c) - 1 - start, sign > 0)
    return ContextDetail(z_last, z_recent, best[1] if best[0] > 0 else None, best[2], vol)


def _context_window(x: F64) -> F32:
    """:func:`_context` of windows [n, width >= CONTEXT_WIDTH]."""
    width = x.shape[1]
    cur = x[:, -SEASON_SPAN:]
    lags = [x[:, width - j * PERIOD - SEASON_SPAN : width - j * PERIOD] for j in range(1, SEASON_LAGS + 1)]
    return _context(seasonal_residuals(cur, lags), np.abs(np.diff(cur, axis=1)))


def _context_series(v: F64, width: int, rows: npt.NDArray[np.intp]) -> F32:
    """:func:`_context` of the windows ending at ``rows`` of series ``v``: residuals and steps computed once."""
    if width < CONTEXT_WIDTH:
        return np.zeros((len(rows), 4), dtype=np.float32)
    padded = np.concatenate([np.full(SEASON_LAGS * PERIOD, np.nan), v])
    n = len(v)
    lags = [padded[SEASON_LAGS * PERIOD - j * PERIOD : SEASON_LAGS * PERIOD - j * PERIOD + n]
            for j in range(1, SEASON_LAGS + 1)]
    resid_spans = windows_of(seasonal_residuals(v, lags), SEASON_SPAN)
    step_spans = windows_of(np.abs(np.diff(np.concatenate([[np.nan], v]))), SEASON_SPAN - 1)
    out = np.empty((len(rows), 4), dtype=np.float32)
    for start in range(0, len(rows), _CONTEXT_CHUNK):
        idx = rows[start : start + _CONTEXT_CHUNK]
        out[start : start + len(idx)] = _context(np.ascontiguousarray(resid_spans[idx]),
                                                 np.ascontiguousarray(step_spans[idx]))
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
                    groups: Groups = ALL_GROUPS) -> tuple[F32, Bool]:
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
            out[rows, SHORT_FEATURES:LONG_END] = _long_series(v, width, rows)
        if groups[2]:
            out[rows, LONG_END:] = _context_series(v, width, rows)
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
#: Rows per batch of the context group: its [rows, SEASON_SPAN] temporaries stay in cache (measured ~2x faster).
_CONTEXT_CHUNK = 512


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
