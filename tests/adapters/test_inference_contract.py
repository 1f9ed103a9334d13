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


def _with_metadata(**changes: str | None) -> bytes:
    """The built-in model with metadata keys set (str) or removed (None)."""
    model = onnx.load_from_string(inference.builtin_bytes())
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]
    return model.SerializeToString()


def test_a_v2_model_loads_beside_v3_features_but_may_not_name_them() -> None:
    """feature-v3 only added columns: a window-v2 model still serves; it cannot claim a v3-only feature."""
    scorer = inference.Scorer(_with_metadata(vigil__feature_version="window-v2"))
    assert scorer.info.feature_version == "window-v2"
    bad = onnx.load_from_string(_with_metadata(vigil__feature_version="window-v2"))
    for prop in bad.metadata_props:
        if prop.key == "vigil.feature_names":
            prop.value = "long_excess_3,long_excess_6,season_cusum"
    with pytest.raises(inference.ModelError) as error:
        inference.Scorer(bad.SerializeToString())
    assert error.value.reason.value == "ModelSignatureMismatch" and "window-v2 has no feature season_cusum" in \
        error.value.message
    with pytest.raises(inference.ModelError, match="features vwindow-v1"):
        inference.Scorer(_with_metadata(vigil__feature_version="window-v1"))


def test_the_built_in_model_ships_a_sensitivity_table_and_its_contributions() -> None:
    info = inference.Scorer(inference.builtin_bytes()).info
    assert info.sensitivity_table is not None
    assert dict(info.sensitivity_table)[0.5] == info.recommended_threshold
    assert info.contributions is not None
    assert [n for n, _, _ in info.contributions] == list(info.feature_names)


@pytest.mark.parametrize("table", ["0.5", "0:0.2,0.5:0.6", "0:nan,0.5:0.5", "x" * 10_000])
def test_a_malformed_sensitivity_table_is_an_invalid_model(table: str) -> None:
    with pytest.raises(inference.ModelError) as error:
        inference.Scorer(_with_metadata(vigil__sensitivity_table=table))
    assert error.value.reason.value == "ModelInvalid" and "vigil.sensitivity_table" in error.value.message


@pytest.mark.parametrize("coefficients", ["long_excess_3:nan", "no_such:1.0", "long_excess_3", ""])
def test_malformed_explanation_metadata_only_drops_the_explanations(coefficients: str) -> None:
    info = inference.Scorer(_with_metadata(vigil__logit_coefficients=coefficients)).info
    assert info.contributions is None and info.recommended_threshold > 0
    assert inference.Scorer(_with_metadata(vigil__typical_features=None)).info.contributions is None
