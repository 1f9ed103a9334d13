"""Read ``timestamp,value`` CSV files strictly, for ``vigil backtest``.

Real exports are messy: junk values, repeated timestamps (daylight saving),
clocks that jump backwards. Every such row is reported with its line number;
by default any of them is an error, and the flags that resolve them (keep the
last duplicate, sort) still report what they did. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import math
import pathlib
import re
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
MISSING_TOKENS = {"", "nan", "NaN", "NAN", "null", "None", "NA"}


class SeriesFileError(ValueError):
    """A file that cannot be read as a series, with every problem listed."""


@dataclasses.dataclass
class SeriesFile:
    path: pathlib.Path
    timestamps: FloatArray  # epoch seconds, strictly increasing
    values: FloatArray  # NaN = explicitly missing
    notes: list[str]  # what was resolved (duplicates merged, rows sorted), for the report


def parse_timestamp(text: str) -> float:
    """Epoch seconds from ISO 8601 (naive = UTC), ``YYYY-MM-DD HH:MM:SS``, or epoch s/ms."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not finite")
        return number / 1000.0 if number > 1e11 else number
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


#: Timestamps numpy parses exactly as :func:`parse_timestamp` does: naive ISO 8601 (= UTC).
_NAIVE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?")


def _parse_timestamps(texts: list[str]) -> FloatArray:
    """Epoch seconds for each text, NaN where it is not a date/time.

    The common case (every stamp naive ISO 8601) is parsed by numpy in one call,
    which ``vigil backtest`` needs for throughput; anything else goes through
    :func:`parse_timestamp` one by one, so both paths accept the same inputs.
    """
    stripped = [text.strip() for text in texts]
    if all(_NAIVE_ISO.fullmatch(text) for text in stripped):
        try:
            micros = np.array(stripped, dtype="datetime64[us]").astype(np.int64)
        except ValueError:
            pass  # e.g. month 13: report it row by row below
        else:
            return micros / 1e6
    out = np.empty(len(texts))
    for i, text in enumerate(texts):
        try:
            out[i] = parse_timestamp(text)
        except ValueError:
            out[i] = math.nan
    return out


@dataclasses.dataclass
class _Values:
    values: FloatArray
    errors: dict[int, str]  # row index -> what is wrong with it


def _parse_values(cells: list[str]) -> _Values:
    """Floats for each cell (NaN for the missing-data tokens), and the rows that are not numbers."""
    try:
        values = np.array(cells, dtype=np.float64)  # fast path: every cell is a plain number
    except ValueError:
        values = np.empty(len(cells))
        errors: dict[int, str] = {}
        for i, cell in enumerate(cells):
            text = cell.strip()
            if text in MISSING_TOKENS:
                values[i] = math.nan
                continue
            try:
                values[i] = float(text)
            except ValueError:
                errors[i] = "is not a number"
                values[i] = math.nan
    else:
        errors = {}
    for index in np.flatnonzero(np.isinf(values)).tolist():
        errors[index] = "is infinite"
    return _Values(values, errors)


#: Rows parsed into arrays at a time: the text of a row lives only until its chunk is parsed, so a
#: file of millions of rows costs its arrays (24 bytes a row), not millions of Python strings.
ROWS_PER_CHUNK = 65_536

#: ``progress(done, total)`` in bytes of the file read so far.
ReadProgress = Callable[[int, int], None]


def read(path: pathlib.Path, duplicates: str = "error", unordered: str = "error", max_listed: int = 10,
         progress: ReadProgress | None = None) -> SeriesFile:
    """Parse one file. ``duplicates``: error|first|last|mean. ``unordered``: error|sort.

    Every :class:`SeriesFileError` message starts with the file (``path:`` or ``path:line:``),
    so callers print it as it is.
    """
    problems: list[tuple[int, str]] = []  # (line, message), reported in file order
    stamps: list[str] = []
    cells: list[str] = []
    lines: list[int] = []
    parts_t: list[FloatArray] = []
    parts_v: list[FloatArray] = []
    parts_line: list[npt.NDArray[np.int64]] = []
    size = path.stat().st_size

    def flush() -> None:
        times = _parse_timestamps(stamps)
        numbers = _parse_values(cells)
        keep = np.ones(len(lines), dtype=bool)
        for index in np.flatnonzero(np.isnan(times)).tolist():
            problems.append((lines[index], f"{path}:{lines[index]}: timestamp {stamps[index]!r} is not a date/time"))
            keep[index] = False
        for i, error in numbers.errors.items():
            if keep[i]:
                problems.append((lines[i], f"{path}:{lines[i]}: value {cells[i]!r} {error}"))
            keep[i] = False
        parts_t.append(times)
        parts_v.append(numbers.values)
        parts_line.append(np.array(lines, dtype=np.int64))
        stamps.clear()
        cells.clear()
        lines.clear()

    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise SeriesFileError(f"{path}: empty file")
        names = [h.strip().lower() for h in header]
        if len(names) < 2 or names[0] != "timestamp" or names[1] != "value":
            raise SeriesFileError(f"{path}:1: header must be 'timestamp,value', found {','.join(header)!r}")
        for row in reader:
            line = reader.line_num
            if len(row) >= 2 and row[0].strip():  # the common case, checked cheaply first
                stamps.append(row[0])
                cells.append(row[1])
                lines.append(line)
                if len(lines) >= ROWS_PER_CHUNK:
                    flush()
                    if progress:
                        progress(min(raw.tell(), size), size)  # the byte layer's position
                continue
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines carry no sample
            if len(row) < 2:
                problems.append((line, f"{path}:{line}: expected 2 columns, found {len(row)}: {','.join(row)!r}"))
                continue
            stamps.append(row[0])
            cells.append(row[1])
            lines.append(line)
        flush()
        if progress:
            progress(size, size)

    if problems:
        shown = [message for _, message in sorted(problems)[:max_listed]]
        more = f"\n... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise SeriesFileError(f"{path}: {len(problems)} bad row(s), nothing was scored:\n" + "\n".join(shown)
                              + more)
    times = np.concatenate(parts_t)
    if not times.size:
        raise SeriesFileError(f"{path}: no data rows")

    t = times
    v = np.concatenate(parts_v)
    line_no = np.concatenate(parts_line)
    notes: list[str] = []

    backwards = np.flatnonzero(np.diff(t) < 0)
    if backwards.size:
        where = ", ".join(f"line {line_no[i + 1]}" for i in backwards[:max_listed])
        if unordered == "error":
            raise SeriesFileError(
                f"{path}: timestamps go backwards at {where} ({backwards.size} place(s)); "
                "fix the file or pass --unordered sort"
            )
        order = np.argsort(t, kind="stable")
        t, v, line_no = t[order], v[order], line_no[order]
        notes.append(f"sorted: timestamps went backwards at {where}")

    same = np.flatnonzero(np.diff(t) == 0)
    if same.size:
        where = ", ".join(f"line {line_no[i + 1]}" for i in same[:max_listed])
        if duplicates == "error":
            raise SeriesFileError(
                f"{path}: {same.size} repeated timestamp(s) at {where}; "
                "fix the file or pass --duplicates last|first|mean"
            )
        unique, start, counts = np.unique(t, return_index=True, return_counts=True)
        merged = np.empty(unique.size)
        for i, (s, c) in enumerate(zip(start, counts, strict=True)):
            group = v[s : s + c]
            if duplicates == "first":
                merged[i] = group[0]
            elif duplicates == "last":
                merged[i] = group[-1]
            else:
                merged[i] = np.nanmean(group) if np.isfinite(group).any() else np.nan
        notes.append(f"merged {same.size} repeated timestamp(s) ({duplicates}) at {where}")
        t, v = unique, merged
    return SeriesFile(path=path, timestamps=t, values=v, notes=notes)
