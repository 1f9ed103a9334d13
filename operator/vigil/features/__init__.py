"""Features: series windows → model inputs, and the ONNX metadata contract.

No I/O, no scikit-learn, no onnxruntime: numpy only. Training (``model/``) and
serving (the engine) both call this package, so they cannot disagree.
"""

from vigil.features.window import (
    COMPATIBLE_VERSIONS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    MIN_POINTS,
    WINDOW,
    columns,
    extract_batch,
    extract_series,
    extract_summaries,
    tail_points,
    valid_mask,
    windows_of,
)

__all__ = [
    "COMPATIBLE_VERSIONS",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "MIN_POINTS",
    "WINDOW",
    "columns",
    "extract_batch",
    "extract_series",
    "extract_summaries",
    "tail_points",
    "valid_mask",
    "windows_of",
]
