"""Fitted classifier → ONNX bytes with Vigil's metadata (see ``vigil.features.contract``).

The file is deterministic: no timestamps, fixed names, so the same fitted model
always gives the same bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import HistGradientBoostingClassifier

from vigil.features import contract

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}


def snap_thresholds_to_float32(clf: HistGradientBoostingClassifier) -> None:
    """Round every split threshold down to a float32 value, in place.

    The model sees float32 features. For float32 ``x`` and a float64 threshold
    ``t``, ``x <= t`` holds exactly when ``x <= t32`` with ``t32`` the largest
    float32 not above ``t``; so this changes no sklearn prediction on float32
    input, and makes the float32 thresholds of the ONNX tree ensemble exact.
    """
    for trees in clf._predictors:
        for predictor in trees:
            nodes = predictor.nodes
            t = nodes["num_threshold"]
            t32 = t.astype(np.float32)
            too_big = t32.astype(np.float64) > t
            t32[too_big] = np.nextafter(t32[too_big], np.float32(-np.inf))
            nodes["num_threshold"] = t32.astype(np.float64)


def to_onnx(clf: HistGradientBoostingClassifier, n_features: int, metadata: Mapping[str, str]) -> bytes:
    """Convert, name the graph and write ``metadata`` into ``metadata_props``."""
    with warnings.catch_warnings():
        # skl2onnx hands Python bools to an INTS attribute (nodes_missing_value_tracks_true);
        # protobuf 6 stores them as 0/1 and warns. Narrow filter: nothing else is hidden.
        warnings.filterwarnings(
            "ignore", message=r"Field onnx\.AttributeProto\.ints: Expected an int, got a boolean",
            category=DeprecationWarning,
        )
        model = convert_sklearn(
            clf,
            name="vigil",
            initial_types=[(contract.INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=TARGET_OPSET,
            options={id(clf): {"zipmap": False}},
        )
    model.graph.name = "vigil"
    model.doc_string = ""
    del model.metadata_props[:]
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, metadata[key]
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString(deterministic=True))
