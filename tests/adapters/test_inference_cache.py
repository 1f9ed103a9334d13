"""ModelCache: one session per model content; digests remembered per bytes object."""

from __future__ import annotations

import onnx
import pytest

from vigil.adapters import inference


def test_same_content_gives_the_same_session_and_pins_are_still_checked() -> None:
    cache = inference.ModelCache()
    data = inference.builtin_bytes()
    first = cache.get(data)
    assert cache.get(data) is first and cache.get(bytes(bytearray(data))) is first
    assert cache.loads == 1
    with pytest.raises(inference.ModelError) as wrong:
        cache.get(data, expected_sha256="0" * 64)
    assert wrong.value.reason.value == "ModelDigestMismatch"
    assert cache.get(data, expected_sha256=inference.digest(data)) is first


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
