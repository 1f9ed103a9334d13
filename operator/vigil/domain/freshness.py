"""How fresh a shard's verdicts are, at a glance: three annotations on the shard's Lease.

Detector statuses are written on a change and otherwise once per heartbeat (20 minutes
by default), so one status cannot tell "quiet" from "nobody evaluates me any more" for
that long. The shard's Lease is renewed every couple of seconds anyway by the replica
that holds it; carrying the engine's own view in that same write costs no extra API
call, and ``kubectl get lease`` then shows every shard's state at once: when it last
evaluated anything, how many detectors it serves, and how many are overdue. A dead
replica stops renewing (the Lease's renewTime ages); a live replica whose engine is
stuck keeps renewing, but its last evaluation ages and its overdue count grows.
Pure: the caller passes ``now`` and the due times.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

#: Annotation keys on the Lease.
LAST_EVALUATION = "vigil.dev/last-evaluation"
DETECTORS = "vigil.dev/detectors"
OVERDUE = "vigil.dev/overdue"

#: A detector is overdue when it was due this many seconds ago and has still not been evaluated.
OVERDUE_AFTER = 60.0


@dataclasses.dataclass(frozen=True)
class ShardFreshness:
    last_evaluation: float | None  # epoch seconds of the newest evaluation, None before the first
    detectors: int  # detectors this shard evaluates
    overdue: int  # of which due more than OVERDUE_AFTER ago


def assess(due_times: Iterable[float], last_evaluation: float | None, now: float) -> ShardFreshness:
    """The shard's freshness from the due time of each detector it evaluates."""
    detectors = overdue = 0
    late = now - OVERDUE_AFTER
    for due in due_times:
        detectors += 1
        if due < late:
            overdue += 1
    return ShardFreshness(last_evaluation, detectors, overdue)


def lease_annotations(freshness: ShardFreshness) -> dict[str, str]:
    """The Lease annotations (RFC 3339 time, counts as decimal strings)."""
    last = ("" if freshness.last_evaluation is None else
            datetime.datetime.fromtimestamp(round(freshness.last_evaluation), tz=datetime.UTC)
            .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {LAST_EVALUATION: last, DETECTORS: str(freshness.detectors), OVERDUE: str(freshness.overdue)}
