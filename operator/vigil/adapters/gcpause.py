"""Time the garbage collector's pauses into ``vigil_gc_pause_seconds``.

A full (generation 2) collection walks every container object the process holds; with thousands of
detectors' bodies and histories that walk is long, and the event loop stands still for all of it, so
it shows as evaluation lag with no other trace. ``prometheus_client``'s default collector counts
collections but does not time them; this does, through :data:`gc.callbacks`.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Protocol

logger = logging.getLogger(__name__)


def freeze_survivors() -> int:
    """Collect once, then move every surviving object out of the collector's walk (:func:`gc.freeze`).

    Called when start-up is over: modules, compiled schemas, kopf's per-object memories and the specs
    then cost full collections nothing. Frozen objects are still freed by reference counting when
    dropped (the statuses and histories replaced later are); only a frozen *cycle* would never be
    collected, which bounds what this can hold to the one heap it froze. Returns how many it froze.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("start-up done: %d objects moved out of the garbage collector's walk (gc.freeze)", frozen)
    return frozen


class _Observer(Protocol):
    def labels(self, *values: str) -> Any: ...


class GcPauses:
    """A :data:`gc.callbacks` hook that observes each collection's wall time, by generation."""

    def __init__(self, histogram: _Observer, clock: Any = time.perf_counter) -> None:
        self._children = {g: histogram.labels(str(g)) for g in range(3)}
        self._clock = clock
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
        elif phase == "stop" and self._started:
            child = self._children.get(info.get("generation", -1))
            if child is not None:
                child.observe(self._clock() - self._started)
            self._started = 0.0

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
