"""Fitted scikit-learn classifier → ONNX bytes with Vigil's metadata (see ``vigil.features.contract``).

The file is deterministic: no timestamps, fixed names, so the same fitted model
always gives the same bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import ClassifierMixin

from vigil.features import contract

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}


def to_onnx(clf: ClassifierMixin, n_features: int, metadata: Mapping[str, str]) -> bytes:
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
