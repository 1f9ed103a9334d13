"""``spec.sensitivity`` → a threshold, through the calibration table the model ships.

Why a table and not a formula: how many alerts a threshold gives depends on the
model and on the data it was trained on. Training (``model/train.py``) measures,
on every NAB series, the threshold at each sensitivity level and writes the table
into the model's metadata (``vigil.sensitivity_table``) and its card. Users then
tune alert volume by name or number without retraining and without knowing the
score's scale.

Sensitivity is a number in [0, 1]: 0.5 is the recommended threshold (medium),
each step of 0.25 roughly doubles (towards 1) or halves (towards 0) the false
alerts measured in training; ``low``, ``medium`` and ``high`` are 0.25, 0.5 and
0.75. Between table rows the threshold is interpolated linearly. Pure: no I/O.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

#: Named levels, as sensitivity numbers.
LEVELS: dict[str, float] = {"low": 0.25, "medium": 0.5, "high": 0.75}

#: What ``spec.sensitivity`` accepts: a level name or a decimal number in [0, 1].
PATTERN = r"^(low|medium|high|0(\.[0-9]{1,6})?|1(\.0{1,6})?)$"

#: Most rows a model may ship in its table (the metadata is untrusted input).
MAX_ROWS = 32

Table = tuple[tuple[float, float], ...]


def parse_level(text: str) -> float:
    """The sensitivity number of ``text`` (a level name or a number in [0, 1]); ValueError otherwise."""
    if not re.fullmatch(PATTERN, text):
        raise ValueError(f"sensitivity {text[:40]!r} is not low, medium, high or a number in [0, 1]")
    return LEVELS[text] if text in LEVELS else float(text)


def parse_table(text: str) -> Table:
    """``"0:0.4,0.25:0.3,..."`` → ((sensitivity, threshold), ...); ValueError for anything malformed.

    Rows must be strictly increasing in sensitivity and non-increasing in threshold
    (more sensitive never means a higher threshold), both in [0, 1], and cover 0.5.
    """
    rows: list[tuple[float, float]] = []
    for part in text.split(","):
        if len(rows) >= MAX_ROWS:
            raise ValueError(f"more than {MAX_ROWS} rows")
        level, sep, threshold = part.partition(":")
        if not sep:
            raise ValueError(f"row {part[:40]!r} is not sensitivity:threshold")
        row = (float(level), float(threshold))
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in row):
            raise ValueError(f"row {part[:40]!r} is outside [0, 1]")
        if rows and (row[0] <= rows[-1][0] or row[1] > rows[-1][1]):
            raise ValueError("rows must increase in sensitivity and not increase in threshold")
        rows.append(row)
    if not rows or not rows[0][0] <= 0.5 <= rows[-1][0]:
        raise ValueError("the table must cover sensitivity 0.5")
    return tuple(rows)


def format_table(table: Sequence[tuple[float, float]]) -> str:
    return ",".join(f"{s:g}:{t!r}" for s, t in table)


def threshold_for(level: float, table: Table) -> float:
    """The threshold at sensitivity ``level``, interpolated; clamped to the table's ends."""
    if level <= table[0][0]:
        return table[0][1]
    for (s0, t0), (s1, t1) in itertools.pairwise(table):
        if level <= s1:
            return t0 + (t1 - t0) * (level - s0) / (s1 - s0)
    return table[-1][1]


def resolve(threshold: float | None, sensitivity: str | None, table: Table | None, recommended: float) -> float:
    """The effective threshold: ``spec.threshold``, else ``spec.sensitivity`` through the table, else recommended.

    A model without a table (a custom model, vigil-default-v2) knows only its
    recommended threshold, which is "medium"; any other level is a ValueError
    that says so (the caller reports it as an invalid spec).
    """
    if threshold is not None:
        return threshold
    if sensitivity is None:
        return recommended
    level = parse_level(sensitivity)
    if table is None:
        if level == LEVELS["medium"]:
            return recommended
        raise ValueError(f"spec.sensitivity {sensitivity} needs a model with a sensitivity table; this model "
                         "has none (use spec.threshold)")
    return round(threshold_for(level, table), 6)
