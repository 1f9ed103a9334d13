"""The scheduler's sleep decision (pure): due time, batch window, backlog, liveness beat."""

from __future__ import annotations

import pytest

from vigil.engine.scheduler import sleep_for


def test_sleeps_until_the_next_detector_is_due() -> None:
    assert sleep_for(now=100.0, upcoming=100.8, batch_started=99.0, batch_window=0.5, max_sleep=1.0,
                     backlog=False) == pytest.approx(0.8)


def test_waits_out_the_batch_window_so_nearby_detectors_share_a_batch() -> None:
    # Due in 0.05 s, but the previous batch started only 0.1 s ago: wait until 0.5 s after it.
    assert sleep_for(now=100.1, upcoming=100.15, batch_started=100.0, batch_window=0.5, max_sleep=1.0,
                     backlog=False) == pytest.approx(0.4)


def test_a_backlog_is_worked_off_at_once() -> None:
    assert sleep_for(now=100.1, upcoming=99.0, batch_started=100.0, batch_window=0.5, max_sleep=1.0,
                     backlog=True) == 0.0


def test_overdue_detectors_run_right_after_a_slow_batch() -> None:
    # The batch took longer than the window: nothing to wait for.
    assert sleep_for(now=101.0, upcoming=100.2, batch_started=100.0, batch_window=0.5, max_sleep=1.0,
                     backlog=False) == 0.0


def test_never_sleeps_past_the_liveness_beat() -> None:
    assert sleep_for(now=100.0, upcoming=160.0, batch_started=100.0, batch_window=0.5, max_sleep=1.0,
                     backlog=False) == 1.0
    assert sleep_for(now=100.0, upcoming=None, batch_started=100.0, batch_window=0.5, max_sleep=1.0,
                     backlog=False) == 1.0
