"""Load the NAB series, put each on a regular time grid, label it and group it.

All file reading of the training pipeline happens here. Everything downstream
works on :class:`Series`: values on a regular grid (NaN = missing), per-point
labels for a causal detector, and the anomaly windows as grid indices.

Regularisation, per series:

1. sort by timestamp (stable, so file order breaks ties);
2. keep the last row of duplicate timestamps (daylight-saving repeats, the
   backwards jump in ``machine_temperature_system_failure``);
3. step = median spacing; each timestamp goes to the nearest grid slot
   ``start + k * step`` (a later row wins a slot collision);
4. slots without a row are missing (NaN): gaps are never interpolated.

Labels, per grid point (NAB windows are centred on the anomaly, and the part of a
window before the labelled anomaly point cannot be detected causally):

- ``POSITIVE``: from the first labelled anomaly point inside a window to the window's end;
- ``EXCLUDED``: from the window's start to just before that point (sample weight 0,
  left out of point metrics);
- ``NEGATIVE``: outside every window.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

NEGATIVE, POSITIVE, EXCLUDED = 0, 1, -1

LABEL_SCHEME = (
    "positive = from the first labelled anomaly point (combined_labels.json) inside a NAB window "
    "to the window's end; the part of the window before that point = excluded (sample weight 0, "
    "left out of point metrics); outside every window = negative. NAB windows are centred on the "
    "anomaly, so their first half cannot be detected by a causal detector."
)

REGULARISATION = (
    "Per series: sort by timestamp (stable); keep the last row of duplicate timestamps (daylight-saving "
    "repeats, the backwards jump in machine_temperature_system_failure); step = median spacing; each "
    "timestamp goes to the nearest slot of the grid start + k * step (a later row wins a collision); "
    "slots without a row are missing (NaN) and never interpolated. Missing points are not scored, and a "
    "point is scored only if its window holds at least MIN_POINTS non-missing points."
)

TRAINING_LABEL_SCHEME = (
    "For fitting only, positives more than the training horizon after the anomaly point are excluded "
    "(weight 0): once a change fills half the window, the window's robust median has moved and the "
    "point looks normal to any detector of this window, and NAB windows run 50-500 points past the "
    "anomaly, so those points would teach the model that normal-looking points are anomalies. Every "
    "metric still uses the label scheme above."
)


@dataclasses.dataclass(frozen=True)
class Window:
    """One labelled anomaly window, as indices into the series' grid (inclusive)."""

    start: int
    anomaly: int
    end: int


@dataclasses.dataclass(frozen=True)
class Regularisation:
    """What was done to put one file on a regular grid."""

    raw_rows: int
    out_of_order_rows: int  # rows whose timestamp is earlier than the previous row's
    duplicates_dropped: int  # rows dropped because a later row had the same timestamp
    off_grid_rows: int  # rows whose timestamp was not on the grid and was snapped to it
    slot_collisions: int  # rows dropped because a later row snapped to the same slot
    step_seconds: int
    grid_points: int
    missing_points: int


@dataclasses.dataclass(frozen=True)
class Series:
    """One NAB series on its regular grid."""

    name: str  # "<folder>/<file>.csv"
    sha256: str
    start: np.datetime64
    step_seconds: int
    values: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int8]
    windows: tuple[Window, ...]
    regularisation: Regularisation

    @property
    def folder(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def end(self) -> np.datetime64:
        return self.start + np.timedelta64(self.step_seconds * (len(self.values) - 1), "s")


def load_nab(root: Path, only: set[str] | None = None) -> list[Series]:
    """Every series listed in the windows file under ``root`` (or those in ``only``).

    Reads NAB's layout (``data/<folder>/<file>.csv``, ``labels/combined_*.json``)
    or the flat one of ``tests/data/nab`` (``<folder>/<file>.csv``, ``combined_*.json``).
    """
    labels = root / "labels" if (root / "labels").is_dir() else root
    data = root / "data" if (root / "data").is_dir() else root
    windows = _read_json(labels / "combined_windows.json")
    anomalies = _read_json(labels / "combined_labels.json")
    names = sorted(n for n in windows if only is None or n in only)
    if not names:
        raise ValueError(f"no series found under {root}")
    return [_load_series(data / name, name, windows[name], anomalies.get(name, [])) for name in names]


def _read_json(path: Path) -> dict[str, list[object]]:
    with path.open() as f:
        data: dict[str, list[object]] = json.load(f)
    return data


def _parse_time(text: object) -> np.datetime64:
    # NAB writes "2014-04-10 07:15:00" and "2014-04-10 07:15:00.000000"; no time zone.
    return np.datetime64(str(text)[:19].replace(" ", "T"), "s")


def _load_series(path: Path, name: str, windows: list[object], anomalies: list[object]) -> Series:
    raw = path.read_bytes()
    rows = list(csv.reader(raw.decode().splitlines()))[1:]
    times = np.array([_parse_time(r[0]) for r in rows], dtype="datetime64[s]").astype(np.int64)
    values = np.array([float(r[1]) for r in rows], dtype=np.float64)
    grid_values, start, step, reg = regularise(times, values)
    start64 = np.datetime64(int(start), "s")
    labels, wins = label_grid(start64, step, len(grid_values), windows, [_parse_time(a) for a in anomalies])
    return Series(
        name=name,
        sha256=hashlib.sha256(raw).hexdigest(),
        start=start64,
        step_seconds=step,
        values=grid_values,
        labels=labels,
        windows=wins,
        regularisation=reg,
    )


def regularise(
    times: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], int, int, Regularisation]:
    """Sort, keep the last duplicate, snap to a grid at the median step; returns (values, start, step, report)."""
    n = len(times)
    out_of_order = int((np.diff(times) < 0).sum())
    order = np.argsort(times, kind="stable")
    t, v = times[order], values[order]
    # Keep the last of each run of equal timestamps (stable sort keeps file order within a run).
    keep = np.append(t[1:] != t[:-1], True)
    t, v = t[keep], v[keep]
    duplicates = n - len(t)
    step = int(np.median(np.diff(t))) if len(t) > 1 else 60
    start = int(t[0])
    offset = t - start
    slot = np.rint(offset / step).astype(np.int64)
    off_grid = int((offset % step != 0).sum())
    # A later row wins a slot collision (slots are non-decreasing: times are sorted).
    last = np.append(slot[1:] != slot[:-1], True)
    grid = np.full(int(slot[-1]) + 1, np.nan)
    grid[slot[last]] = v[last]
    collisions = len(slot) - int(last.sum())
    report = Regularisation(
        raw_rows=n,
        out_of_order_rows=out_of_order,
        duplicates_dropped=duplicates,
        off_grid_rows=off_grid,
        slot_collisions=collisions,
        step_seconds=step,
        grid_points=len(grid),
        missing_points=int(np.isnan(grid).sum()),
    )
    return grid, start, step, report


def label_grid(
    start: np.datetime64,
    step: int,
    length: int,
    windows: list[object],
    anomalies: list[np.datetime64],
) -> tuple[npt.NDArray[np.int8], tuple[Window, ...]]:
    """Per-point labels (see the module docstring) and the windows as grid indices."""
    labels = np.full(length, NEGATIVE, dtype=np.int8)
    times = start + np.arange(length) * np.timedelta64(step, "s")
    out: list[Window] = []
    for pair in windows:
        assert isinstance(pair, list)
        w_start, w_end = _parse_time(pair[0]), _parse_time(pair[1])
        inside = sorted(a for a in anomalies if w_start <= a <= w_end)
        # A window without a labelled point is excluded whole (NAB has none such).
        a_time = inside[0] if inside else w_end + np.timedelta64(1, "s")
        i0 = int(np.searchsorted(times, w_start, side="left"))
        ia = int(np.searchsorted(times, a_time, side="left"))
        i1 = int(np.searchsorted(times, w_end, side="right")) - 1
        labels[i0:ia] = EXCLUDED
        labels[ia : i1 + 1] = POSITIVE
        if inside and ia <= i1:
            out.append(Window(start=i0, anomaly=ia, end=i1))
    return labels, tuple(out)


def training_labels(s: Series, horizon: int) -> npt.NDArray[np.int8]:
    """Labels to fit on: positives more than ``horizon`` points after the anomaly point become EXCLUDED.

    A detector that sees ``WINDOW`` points cannot tell a change from normal once
    the change fills half its window: its robust median has moved. NAB windows run
    100-500 points past the anomaly, so those late points would teach the model
    that normal-looking points are anomalies. They get weight 0 in training;
    every metric still uses :attr:`Series.labels`.
    """
    labels = s.labels.copy()
    for w in s.windows:
        labels[w.anomaly + horizon : w.end + 1] = EXCLUDED
    return labels


def time_groups(series: list[Series]) -> list[str]:
    """CV group per series: its folder, split into connected components of overlapping time ranges.

    Series of one folder recorded over the same days (all realTweets of March 2015)
    share events and daily patterns, so they go to the same fold.
    """
    groups = [""] * len(series)
    for folder in sorted({s.folder for s in series}):
        members = sorted((i for i, s in enumerate(series) if s.folder == folder), key=lambda i: series[i].start)
        components: list[list[int]] = []
        reach = series[members[0]].end
        for i in members:
            if components and series[i].start <= reach:
                components[-1].append(i)
                reach = max(reach, series[i].end)
            else:
                components.append([i])
                reach = series[i].end
        for component in components:
            first = min(series[j].start for j in component)
            last = max(series[j].end for j in component)
            for j in component:
                groups[j] = f"{folder}@{str(first)[:10]}..{str(last)[:10]}"
    return groups


#: CV groups fixed by issue 5, by file stem: series linked in time that must share a fold.
FIXED_GROUPS: dict[str, str] = {
    **dict.fromkeys(
        ["ec2_cpu_utilization_24ae8d", "ec2_cpu_utilization_53ea38", "ec2_cpu_utilization_5f5533",
         "ec2_cpu_utilization_fe7f93", "rds_cpu_utilization_cc0c53"], "aws:ec2-cpu-feb-2014"),
    **dict.fromkeys(["ec2_disk_write_bytes_1ef3de", "ec2_network_in_5abac7"], "aws:disk-network-mar-2014"),
    **dict.fromkeys(["ec2_cpu_utilization_825cc2", "ec2_cpu_utilization_ac20cd", "ec2_network_in_257a54"],
                    "aws:cpu-network-apr-2014"),
    "grok_asg_anomaly": "aws:grok_asg_anomaly",
    "cpu_utilization_asg_misconfiguration": "aws:cpu_utilization_asg_misconfiguration",
    **dict.fromkeys(["rogue_agent_key_hold", "rogue_agent_key_updown"], "realKnownCause:rogue_agent"),
}
#: Folders that form one CV group each (issue 5: realTraffic is one group).
FOLDER_GROUPS = ("realTraffic",)

CV_GROUPS_RULE = (
    "Issue 5's groups: the AWS groups it lists (cpu_utilization_asg_misconfiguration, a realKnownCause file, "
    "is one of them), realTraffic as one group, the two rogue_agent series as one group. Every other series "
    "is grouped by time: within its folder, connected components of overlapping time ranges (so all of "
    "realTweets, realAdExchange and each artificial folder are one group each, and "
    "ambient_temperature_system_failure with machine_temperature_system_failure, nyc_taxi alone)."
)


def cv_groups(series: list[Series]) -> list[str]:
    """CV group per series by :data:`CV_GROUPS_RULE`."""
    groups = [""] * len(series)
    rest: list[int] = []
    for i, s in enumerate(series):
        stem = s.name.rsplit("/", 1)[-1].removesuffix(".csv")
        if stem in FIXED_GROUPS:
            groups[i] = FIXED_GROUPS[stem]
        elif s.folder in FOLDER_GROUPS:
            groups[i] = s.folder
        else:
            rest.append(i)
    if rest:
        for i, g in zip(rest, time_groups([series[i] for i in rest]), strict=True):
            groups[i] = g
    return groups
