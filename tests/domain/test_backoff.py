"""The back-off of detectors whose answer is refused for its size (pure)."""

from __future__ import annotations

import pytest

from vigil.api.v1alpha1.detector import Reason
from vigil.domain import backoff


@pytest.mark.parametrize(("interval", "refused", "expected"), [
    (60.0, 0, 60.0),
    (60.0, 1, 120.0),
    (60.0, 2, 240.0),
    (60.0, 5, 1920.0),
    (60.0, 6, 3600.0),  # capped
    (60.0, 10_000, 3600.0),  # no overflow however long it lasts
    (7200.0, 3, 7200.0),  # an interval longer than the cap is never shortened
])
def test_the_wait_doubles_up_to_the_cap(interval: float, refused: int, expected: float) -> None:
    assert backoff.delay(interval, refused) == expected


def test_only_oversized_answers_back_off() -> None:
    assert {Reason.TOO_MANY_SERIES, Reason.RESPONSE_TOO_LARGE} == backoff.OVERSIZED
