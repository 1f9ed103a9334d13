"""The test harness's polling: a status not written yet is retried, not a crash; a stall is not 'steady'."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.harness import steady, wait_for


def test_wait_for_retries_while_the_status_is_not_there_yet() -> None:
    states: list[dict[str, Any] | None] = [None, {}, {"status": {}}, {"status": {"conditions": []}},
                                           {"status": {"conditions": [{"type": "Ready"}]}}]
    reads = iter(states)

    def ready() -> str:
        obj = next(reads)
        return str(obj["status"]["conditions"][0]["type"])  # type: ignore[index]  # TypeError, KeyError, IndexError

    assert wait_for(ready, timeout=5, interval=0.01) == "Ready"


def test_wait_for_times_out_with_the_last_error_chained() -> None:
    with pytest.raises(AssertionError, match="timed out") as caught:
        wait_for(lambda: {}["missing"], timeout=0.2, interval=0.01, what="a key")
    assert isinstance(caught.value.__cause__, KeyError)


def test_steady_waits_for_progress_and_fails_when_the_check_breaks() -> None:
    ticks = itertools.count()
    steady(lambda: True, lambda: float(next(ticks)), more=3, seconds=0)
    values = iter([True, True, False])
    with pytest.raises(AssertionError, match="broke"):
        steady(lambda: next(values), lambda: 0.0, more=1, seconds=0, timeout=5, what="broke")


def test_steady_refuses_a_stalled_operator() -> None:
    with pytest.raises(AssertionError, match=r"0\.0 of 2 passes"):
        steady(lambda: True, lambda: 0.0, more=2, seconds=0, timeout=0.3)
