"""spec.sensitivity → threshold through a model's calibration table (pure)."""

from __future__ import annotations

import pytest

from vigil.domain import sensitivity

TABLE = sensitivity.parse_table("0:0.8,0.25:0.7,0.5:0.6,0.75:0.4,1:0.2")


@pytest.mark.parametrize(("text", "threshold"), [
    ("low", 0.7), ("medium", 0.6), ("high", 0.4), ("0", 0.8), ("1", 0.2), ("1.0", 0.2),
    ("0.5", 0.6), ("0.625", 0.5), ("0.125", 0.75), ("0.875", 0.3),
])
def test_levels_and_numbers_map_through_the_table(text: str, threshold: float) -> None:
    assert sensitivity.resolve(None, text, TABLE, 0.6) == pytest.approx(threshold)


def test_an_explicit_threshold_wins_and_none_means_recommended() -> None:
    assert sensitivity.resolve(0.33, "high", TABLE, 0.6) == 0.33
    assert sensitivity.resolve(None, None, TABLE, 0.61) == 0.61


def test_a_model_without_a_table_knows_only_medium() -> None:
    assert sensitivity.resolve(None, "medium", None, 0.55) == 0.55
    assert sensitivity.resolve(None, "0.5", None, 0.55) == 0.55
    with pytest.raises(ValueError, match="sensitivity table"):
        sensitivity.resolve(None, "high", None, 0.55)


@pytest.mark.parametrize("text", ["", "HIGH", "1.5", "-0.1", "0.5 ", "nan", "inf", "1e-1", "x" * 100])
def test_hostile_levels_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="sensitivity"):
        sensitivity.parse_level(text)


@pytest.mark.parametrize("text", [
    "", "0.5", "0.5:0.6,0.25:0.7", "0:0.5,0.5:0.6", "0:1.5,0.5:0.6", "0:nan,0.5:0.5", "0.6:0.5,1:0.4",
    ",".join(f"{i / 100}:{1 - i / 100}" for i in range(40)),
])
def test_malformed_tables_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        sensitivity.parse_table(text)


def test_table_round_trips() -> None:
    assert sensitivity.parse_table(sensitivity.format_table(TABLE)) == TABLE


def test_the_api_pattern_is_the_domain_pattern() -> None:
    from vigil.api.v1alpha1.detector import AnomalyDetectorSpec

    schema = AnomalyDetectorSpec.model_json_schema(by_alias=True)["properties"]["sensitivity"]
    patterns = [s.get("pattern") for s in schema.get("anyOf", [schema]) if s.get("pattern")]
    assert patterns == [sensitivity.PATTERN]
