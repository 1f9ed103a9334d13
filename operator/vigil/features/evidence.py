"""Why a point scored high: exact per-feature contributions of a linear model, in words.

For a logistic regression the score's logit is ``b + Σ coef_i * x_i``, so
``coef_i * (x_i - typical_i)`` is exactly how much feature i moved this point's
logit away from a typical point's (``typical``: the mean of the training
negatives, shipped in the model's metadata). The largest positive contributions
are the evidence; each is put in words from the window itself (direction,
size, age of a change), so a status reads "level 4.1 SDs below the same time
on previous days" rather than "season_absz=4.1".

Pure and numpy only, like the rest of :mod:`vigil.features`; called only for
series at or above their threshold, so its cost does not count per point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vigil.features import window

#: Longest text of one piece of evidence (SeriesStatus.why bounds it too).
MAX_TEXT = 120


def contributions(values: Sequence[float], names: Sequence[str],
                  linear: Sequence[tuple[str, float, float]]) -> list[tuple[str, float]]:
    """(name, contribution to the logit) for every feature that raised it, largest first."""
    index = {n: i for i, n in enumerate(names)}
    out = [(n, coef * (float(values[index[n]]) - typical)) for n, coef, typical in linear if n in index]
    return sorted(((n, c) for n, c in out if c > 0), key=lambda p: -p[1])


def explain(row: npt.NDArray[np.float64], values: Sequence[float], names: Sequence[str],
            linear: Sequence[tuple[str, float, float]], step_seconds: float, top: int = 3) -> tuple[str, ...]:
    """Up to ``top`` short sentences for the window ``row`` [WINDOW] whose features are ``values``."""
    ranked = contributions(values, names, linear)
    if not ranked:
        return ()
    detail = window.context_detail(row) if any(n.startswith(("season", "vol")) for n, _ in ranked[:top]) else None
    texts: list[str] = []
    seen: set[str] = set()
    for name, _ in ranked:
        text = _phrase(name, row, detail, step_seconds)
        if text and text not in seen:
            seen.add(text)
            texts.append(text[:MAX_TEXT])
        if len(texts) >= top:
            break
    return tuple(texts)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _phrase(name: str, row: npt.NDArray[np.float64], detail: window.ContextDetail | None,
            step_seconds: float) -> str:
    if name.startswith("long_"):
        older = row[: -window.LONG_RECENT[0]]
        finite = older[np.isfinite(older)]
        last = row[-1]
        if finite.size == 0 or not np.isfinite(last):
            return ""
        lo, hi = float(finite.min()), float(finite.max())
        span = hi - lo
        days = len(row) * step_seconds / 86400
        period = f"the last {days:.0f} days" if days >= 1.5 else f"the last {_duration(len(row) * step_seconds)}"
        if last > hi:
            return (f"value above the maximum of {period}" +
                    (f" by {100 * (last - hi) / span:.0f}% of its range" if span > 0 else ""))
        if last < lo:
            return (f"value below the minimum of {period}" +
                    (f" by {100 * (lo - last) / span:.0f}% of its range" if span > 0 else ""))
        return f"value near the {'top' if last > (lo + hi) / 2 else 'bottom'} of the range of {period}"
    if detail is None:
        return ""
    if name == "season_absz" and detail.z_last is not None:
        return (f"level {abs(detail.z_last):.1f} SDs {'above' if detail.z_last > 0 else 'below'} the same time "
                f"on previous days")
    if name == "season_absz_recent" and detail.z_recent is not None:
        return (f"last {_duration(window.RECENT * step_seconds)} {abs(detail.z_recent):.1f} SDs "
                f"{'above' if detail.z_recent > 0 else 'below'} the same time on previous days")
    if name == "season_cusum" and detail.change_age is not None:
        return (f"change point {_duration(detail.change_age * step_seconds)} ago "
                f"({'upward' if detail.change_up else 'downward'} shift against the daily pattern)")
    if name == "vol_shift" and detail.vol_ratio is not None:
        ratio = detail.vol_ratio
        return (f"volatility of the last {_duration(window.VOL_RECENT * step_seconds)} "
                f"{ratio if ratio >= 1 else 1 / ratio:.1f}x {'higher' if ratio >= 1 else 'lower'} than before")
    return ""
