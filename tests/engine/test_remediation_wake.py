"""When the remediation engine looks again: the loop's sleep between passes (engine.wake_in)."""

from vigil.engine.remediation.engine import wake_in


def test_a_time_due_while_the_pass_ran_is_due_at_once() -> None:
    # The pass decided at 951.000 that step 2 is due at 951.001; it finished at 951.002. Found in CI: that
    # time was dropped as "past" and step 2 waited for the 60 s resync.
    assert wake_in([951.001], now=951.002, decided_at=951.000, max_sleep=60) == 0.05


def test_a_time_the_pass_already_handled_does_not_spin_the_loop() -> None:
    assert wake_in([950.0], now=951.002, decided_at=951.000, max_sleep=60) == 60


def test_the_soonest_future_time_bounded_by_the_resync() -> None:
    assert wake_in([970.0, 955.0], now=951.0, decided_at=950.9, max_sleep=60) == 4.0
    assert wake_in([2000.0], now=951.0, decided_at=950.9, max_sleep=60) == 60
    assert wake_in([], now=951.0, decided_at=950.9, max_sleep=60) == 60
