"""The model contract on load: a model names the features it reads, and mismatches are refused."""

from __future__ import annotations

import onnx
import pytest

from vigil.adapters import inference


def _with_feature_names(names: str) -> bytes:
    model = onnx.load_from_string(inference.builtin_bytes())
    for prop in model.metadata_props:
        if prop.key == "vigil.feature_names":
            prop.value = names
    return model.SerializeToString()


def test_a_model_names_the_features_it_reads() -> None:
    """The built-in model reads three long-window features; its metadata says which, in input order."""
    scorer = inference.Scorer(inference.builtin_bytes())
    assert scorer.info.feature_names == ("long_excess_3", "long_excess_6", "long_range_pos")


@pytest.mark.parametrize(("names", "says"), [
    ("long_excess_3,long_excess_6,no_such_feature", "unknown no_such_feature"),
    ("long_excess_3,long_excess_6", "expected [N,2]"),
])
def test_unknown_feature_names_or_a_wrong_width_are_signature_mismatches(names: str, says: str) -> None:
    with pytest.raises(inference.ModelError) as error:
        inference.Scorer(_with_feature_names(names))
    assert error.value.reason.value == "ModelSignatureMismatch" and says in error.value.message
