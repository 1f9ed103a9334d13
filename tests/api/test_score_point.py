"""status.scoreHistory's points: kept by the thousand, so cheap, with the schema and wire form of a model."""

from __future__ import annotations

import datetime
import gc

import pydantic
import pytest

from vigil.api.v1alpha1.detector import AnomalyDetectorStatus, ScorePoint


def test_a_point_has_no_instance_dict_and_is_one_object_for_the_collector() -> None:
    point = ScorePoint(time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), score=0.5)
    assert not hasattr(point, "__dict__")
    # What the collector visits from it: its two values (and its type), not a dict and a fields set.
    assert {id(r) for r in gc.get_referents(point)} <= {id(point.time), id(point.score), id(type(point))}


def test_wire_form_round_trips_and_unknown_keys_are_ignored() -> None:
    wire = {"scoreHistory": [{"time": "2026-01-01T00:00:00Z", "score": 0.5, "newerField": 1},
                             {"time": "2026-01-01T00:01:00Z"}]}
    status = AnomalyDetectorStatus.model_validate(wire)
    assert status.to_wire()["scoreHistory"] == [{"time": "2026-01-01T00:00:00Z", "score": 0.5},
                                                {"time": "2026-01-01T00:01:00Z"}]
    assert status.model_dump() == AnomalyDetectorStatus.model_validate(status.to_wire()).model_dump()


@pytest.mark.parametrize("score", [-0.1, 1.5])
def test_scores_outside_0_1_are_refused(score: float) -> None:
    with pytest.raises(pydantic.ValidationError):
        AnomalyDetectorStatus.model_validate({"scoreHistory": [{"time": "2026-01-01T00:00:00Z", "score": score}]})


def test_points_are_frozen() -> None:
    point = ScorePoint(time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), score=0.5)
    with pytest.raises((AttributeError, pydantic.ValidationError, TypeError)):
        point.score = 0.7  # type: ignore[misc]
