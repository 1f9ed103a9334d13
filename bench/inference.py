"""Inference benchmark: onnxruntime latency of the shipped model and feature extraction cost.

    python -m bench.inference [--model operator/vigil/models/default.onnx] [--repeat 20]

Prints measured figures only (median of ``--repeat`` runs): per-row onnxruntime
latency at batch sizes 1, 100 and 10,000, and per-row feature extraction via one
vectorised ``extract_batch`` call vs a per-row loop, with the batch-vs-single
ratios measured in this process. It asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from vigil import features
from vigil.features import contract

BATCHES = (1, 100, 10_000)


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_windows(n: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Random walks with ~5% missing points (never the last), at assorted scales and offsets."""
    rng = np.random.default_rng(seed)
    walks = np.cumsum(rng.normal(size=(n, features.WINDOW)), axis=1)
    walks = walks * rng.uniform(0.01, 1000, size=(n, 1)) + rng.uniform(-1e4, 1e4, size=(n, 1))
    walks[rng.random(walks.shape) < 0.05] = np.nan
    walks[:, -1] = np.nan_to_num(walks[:, -1])
    return walks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("operator/vigil/models/default.onnx"))
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per figure (median reported)")
    args = parser.parse_args(argv)

    options = ort.SessionOptions()
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    windows = random_windows(max(BATCHES))
    # The features the model reads (its metadata), as the operator computes them.
    names = tuple(session.get_modelmeta().custom_metadata_map[contract.META_FEATURE_NAMES].split(","))
    X = features.extract_batch(windows, names)
    print(f"model {args.model} ({args.model.stat().st_size:,} bytes), onnxruntime {ort.__version__}, "
          f"{len(names)} of {len(features.FEATURE_NAMES)} features, window {features.WINDOW}")

    print("\nonnxruntime, per row:")
    per_row = {}
    for n in BATCHES:
        feed = {contract.INPUT_NAME: X[:n]}
        seconds = median_seconds(functools.partial(session.run, None, feed), args.repeat)
        per_row[n] = seconds / n * 1e6
        print(f"  batch {n:>6,}: {per_row[n]:9.3f} µs/row  ({seconds * 1e3:8.3f} ms/call)")
    print(f"  batch 10,000 vs batch 1: {per_row[1] / per_row[10_000]:.0f}x faster per row")

    print("\nfeature extraction (extract_batch), per row:")
    n_loop = 1_000
    batched = median_seconds(lambda: features.extract_batch(windows, names), max(3, args.repeat // 4)) / len(windows)
    looped = median_seconds(
        lambda: [features.extract_batch(windows[i : i + 1], names) for i in range(n_loop)], max(3, args.repeat // 4)
    ) / n_loop
    print(f"  one call on {len(windows):,} windows: {batched * 1e6:9.3f} µs/row")
    print(f"  loop of single-row calls ({n_loop:,} rows): {looped * 1e6:9.3f} µs/row")
    print(f"  batched vs loop: {looped / batched:.0f}x faster per row")
    total = batched * 1e6 + per_row[10_000]
    print(f"\nfeatures + model at batch 10,000: {total:.2f} µs/row, "
          f"{total * 10_000 / 1e3:.1f} ms per tick for 10,000 series")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
