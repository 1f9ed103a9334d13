"""bench/compression.py runs end to end against the real Prometheus, so it cannot rot (its ratios are
not judged here: a benchmark asserts nothing about speed)."""

from __future__ import annotations

import pytest

from bench import compression
from vigil.adapters.prometheus import Compression


@pytest.mark.slow  # a benchmark run, even a short one
def test_compression_bench_measures_both_settings() -> None:
    result = compression.measure("smoke", detectors=10, points=120, step=60.0, rounds=1)
    assert set(result["median"]) == set(Compression)
    # Both settings read every point (one_pass checks the count); only gzip shrinks the answer.
    assert result["bytes"][Compression.GZIP] < result["bytes"][Compression.NONE]
    text = compression.report(result)
    assert "| none |" in text and "| gzip |" in text and "gzip / none: Prometheus CPU" in text and "bytes 0." in text
