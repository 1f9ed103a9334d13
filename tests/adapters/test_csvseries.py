"""Strict CSV reading: every problem has a line number, nothing is dropped silently."""

from __future__ import annotations

import datetime
import pathlib

import numpy as np
import pytest

from vigil.adapters import csvseries


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "s.csv"
    path.write_text(text)
    return path


def test_reads_nab_style_and_iso_and_epoch(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "timestamp,value\n2014-02-14 14:30:00,1.5\n2014-02-14T14:35:00Z,2\n1392389100,3\n")
    series = csvseries.read(path)
    assert series.timestamps.tolist() == [1392388200.0, 1392388500.0, 1392389100.0]
    assert series.values.tolist() == [1.5, 2.0, 3.0] and series.notes == []


def test_junk_is_an_error_with_line_numbers(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,abc\nnot-a-date,2\n"
                           "2014-01-01 00:15:00,inf\n")
    with pytest.raises(csvseries.SeriesFileError) as error:
        csvseries.read(path)
    text = str(error.value)
    assert "3 bad row(s)" in text
    assert f"{path}:3: value 'abc' is not a number" in text
    assert f"{path}:4: timestamp 'not-a-date'" in text
    assert f"{path}:5: value 'inf' is infinite" in text


def test_empty_and_nan_values_are_missing_not_junk(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "timestamp,value\n2014-01-01 00:00:00,\n2014-01-01 00:05:00,NaN\n2014-01-01 00:10:00,1\n")
    series = csvseries.read(path)
    assert np.isnan(series.values[:2]).all() and series.values[2] == 1


def test_duplicates_error_by_default_and_are_reported_when_resolved(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:00:00,5\n2014-01-01 00:05:00,2\n")
    with pytest.raises(csvseries.SeriesFileError, match=r"repeated timestamp.*line 3"):
        csvseries.read(path)
    assert csvseries.read(path, duplicates="last").values.tolist() == [5, 2]
    assert csvseries.read(path, duplicates="first").values.tolist() == [1, 2]
    merged = csvseries.read(path, duplicates="mean")
    assert merged.values.tolist() == [3, 2] and "merged 1 repeated" in merged.notes[0]


def test_backwards_jump_errors_or_sorts_with_a_note(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "timestamp,value\n2014-01-01 00:10:00,3\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n")
    with pytest.raises(csvseries.SeriesFileError, match="backwards at line 3"):
        csvseries.read(path)
    fixed = csvseries.read(path, unordered="sort")
    assert fixed.values.tolist() == [1, 2, 3] and fixed.notes and "sorted" in fixed.notes[0]


def test_bad_header(tmp_path: pathlib.Path) -> None:
    with pytest.raises(csvseries.SeriesFileError, match="header must be"):
        csvseries.read(write(tmp_path, "time,val\n1,2\n"))
    with pytest.raises(csvseries.SeriesFileError, match="no data rows"):
        csvseries.read(write(tmp_path, "timestamp,value\n"))


def test_bulk_and_row_by_row_parsing_agree(tmp_path: pathlib.Path) -> None:
    """All-ISO files take numpy's bulk path; one epoch stamp sends the file row by row. Same answer."""
    rng = np.random.default_rng(3)
    epochs = 1392388200 + np.cumsum(rng.integers(1, 900, size=500))
    values = rng.normal(size=500).tolist()
    iso = [datetime.datetime.fromtimestamp(int(t), tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S") for t in epochs]
    bulk = write(tmp_path, "timestamp,value\n" + "".join(f"{s},{v!r}\n" for s, v in zip(iso, values, strict=True)))
    mixed_rows = [f"{s},{v!r}\n" for s, v in zip(iso, values, strict=True)]
    mixed_rows[250] = f"{int(epochs[250])},{values[250]!r}\n"
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("timestamp,value\n" + "".join(mixed_rows))
    a, b = csvseries.read(bulk), csvseries.read(mixed)
    assert a.timestamps.tolist() == b.timestamps.tolist() == epochs.astype(float).tolist()
    assert a.values.tolist() == b.values.tolist() == values


def test_an_impossible_date_in_an_iso_file_is_reported_with_its_line(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "timestamp,value\n2014-01-01 00:00:00,1\n2014-13-01 00:05:00,2\n")
    with pytest.raises(csvseries.SeriesFileError, match=r":3: timestamp '2014-13-01 00:05:00' is not a date/time"):
        csvseries.read(path)
