from __future__ import annotations

import datetime

import pytest

from vigil.api.v1alpha1.common import ConditionStatus
from vigil.domain import conditions, durations

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("250ms", 0.25),
])
def test_parse(text: str, seconds: float) -> None:
    assert durations.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "-5m", "1.5h", "5M", "5m\n", "\n5m"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        durations.parse(text)


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 3690, 86400 + 61, 0.5])
def test_format_roundtrip(seconds: float) -> None:
    assert durations.parse(durations.format(seconds)) == seconds


def test_transition_time_moves_only_when_status_changes() -> None:
    conds = conditions.set_condition([], "Ready", ConditionStatus.TRUE, "Evaluating", "a", T0)
    conds = conditions.set_condition(conds, "Ready", ConditionStatus.TRUE, "Other", "b", T1)
    ready = conditions.get(conds, "Ready")
    assert ready is not None and ready.last_transition_time == T0 and ready.reason == "Other"
    conds = conditions.set_condition(conds, "Ready", ConditionStatus.FALSE, "Broken", "c", T1)
    ready = conditions.get(conds, "Ready")
    assert ready is not None and ready.last_transition_time == T1


def test_other_conditions_untouched() -> None:
    conds = conditions.set_condition([], "Ready", ConditionStatus.TRUE, "R", "", T0)
    conds = conditions.set_condition(conds, "Degraded", ConditionStatus.FALSE, "D", "", T1)
    assert [c.type for c in conds] == ["Ready", "Degraded"]
    assert conditions.is_true(conds, "Ready") and not conditions.is_true(conds, "Degraded")
