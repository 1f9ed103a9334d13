"""When the remediation engine looks again: the loop's sleep between passes (engine.wake_in)."""

import asyncio
from typing import Any

from vigil.adapters.metrics import OperatorMetrics
from vigil.engine.registry import Registry
from vigil.engine.remediation.engine import RemediationEngine, wake_in


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


class _SlowPass(RemediationEngine):
    """The engine with its policy reconcile held open, like a pass stuck in a slow AWS call."""

    def __init__(self) -> None:
        super().__init__(Registry(), None, None, None, None, OperatorMetrics(), pass_wait=0.05, max_sleep=60)
        self.release = asyncio.Event()
        self.reconciled = 0

    async def _reconcile(self, entry: Any, now: float) -> None:
        self.reconciled += 1
        await self.release.wait()


def _policy(name: str) -> dict[str, Any]:
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1},
            "spec": {}}


def test_a_pass_that_outlives_its_tick_wakes_the_loop_when_it_ends() -> None:
    async def scenario() -> None:
        engine = _SlowPass()
        engine.upsert_policy(_policy("web"))
        engine._wake.clear()  # as the loop does before a pass (the upsert itself woke it)
        try:
            await engine.tick()  # waits pass_wait, then lets the slow pass run on alone
            assert engine.reconciled == 1 and not engine._wake.is_set()
            engine.release.set()
            await asyncio.wait_for(engine._wake.wait(), timeout=5)  # the ended pass asks for another look
        finally:
            engine.close()

    asyncio.run(scenario())


def test_a_pass_that_ends_while_its_tick_waits_does_not_wake() -> None:
    async def scenario() -> None:
        engine = _SlowPass()
        engine.release.set()
        engine.upsert_policy(_policy("web"))
        engine._wake.clear()  # as the loop does before a pass (the upsert itself woke it)
        try:
            await engine.tick()
            assert engine.reconciled == 1
            assert not engine._wake.is_set(), "the tick itself computes the next sleep from this pass"
        finally:
            engine.close()

    asyncio.run(scenario())
