"""Detection benchmark: grouped cross-validation of the model and the baseline, side by side.

    python -m bench.detection [--data ../shared/data/nab] [--quick]    (from the repository root)

Runs the training pipeline's leave-one-group-out CV (same features, labels,
threshold rule and metrics as ``model/train.py``) for the model, the baseline
and a chance reference in this process, and prints the measured figures. It
writes nothing and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/detection.py`: make `model` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import card, dataset, train

COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("window_recall", "recall"),
    ("detected", "det"),
    ("windows", "win"),
    ("false_alarms_per_1000", "FA/1k"),
    ("median_delay_points", "delay"),
)


def print_table(title: str, block: dict[str, Any]) -> None:
    print(f"\n{title} (threshold {card.fmt(block['threshold'])})")
    header = f"{'fold':46s}" + "".join(f"{h:>9s}" for _, h in COLUMNS)
    print(header)
    print("-" * len(header))
    for row in [*block["folds"], {"group": "overall", **block["overall"]}]:
        print(f"{row['group'][:46]:46s}" + "".join(f"{card.fmt(row[k]):>9s}" for k, _ in COLUMNS))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/nab"), help="NAB root (data/, labels/)")
    parser.add_argument("--quick", action="store_true", help="the small ensemble of `model.train --quick`")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    series = dataset.load_nab(args.data)
    groups = dataset.time_groups(series)
    feats = train.featurise(series)
    params = train.QUICK_PARAMS if args.quick else train.PARAMS
    model = train.report(train.cross_validate(series, groups, feats, params))
    baseline = train.report(train.baseline(series, groups, feats))
    chance = train.report(train.chance(series, groups, feats))
    print(f"{len(series)} series, {len(set(groups))} groups, window {feats.width}, "
          f"{time.perf_counter() - started:.1f} s")
    print_table("model", model)
    print_table("baseline: |robust z| of the last point", baseline)
    print_table("chance: uniform noise", chance)

    print(f"\n{'overall':24s}{'model':>10s}{'baseline':>10s}{'chance':>10s}{'model/base':>12s}")
    for key, header in COLUMNS:
        m, b, c = (x["overall"][key] for x in (model, baseline, chance))
        ratio = m / b if isinstance(m, float | int) and isinstance(b, float | int) and b else None
        print(f"{header:24s}{card.fmt(m):>10s}{card.fmt(b):>10s}{card.fmt(c):>10s}{card.fmt(ratio):>12s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
