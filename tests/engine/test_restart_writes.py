"""A new process continues each detector's heartbeat from its stored status instead of rewriting it.

Without this, every restart (an upgrade, a node drain) rewrote all N statuses in its first minute,
unchanged but for their timestamps: 10,000 writes queued at once at N=10,000 (measured with
``bench/scale.py --restart``: ``vigil_status_writes_pending`` peaked at 4,255).
"""

from __future__ import annotations

import datetime

from vigil.api.v1alpha1.detector import AnomalyDetectorStatus
from vigil.domain import status as statuses
from vigil.engine.registry import Registry, written_at

NOW = 1_800_000_000.0


def _body(status: dict[str, object] | None, resource_version: str = "7") -> dict[str, object]:
    body: dict[str, object] = {
        "metadata": {"namespace": "default", "name": "cpu", "uid": "u-1", "generation": 1,
                     "resourceVersion": resource_version},
        "spec": {"query": "up"},
    }
    if status is not None:
        body["status"] = status
    return body


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def test_a_stored_status_gives_the_time_of_its_last_write() -> None:
    entry = Registry().upsert(_body({"observedGeneration": 1, "lastEvaluationTime": _iso(NOW - 600)}), NOW)
    assert entry.last_write == NOW - 600
    # The same status composed again is not worth a write until the heartbeat from that time is due.
    assert not statuses.needs_write(entry.written, entry.written, entry.last_write, NOW, heartbeat=1200)
    assert statuses.needs_write(entry.written, entry.written, entry.last_write, NOW + 600, heartbeat=1200)


def test_no_stored_status_or_a_time_in_the_future_writes_at_the_first_evaluation() -> None:
    assert Registry().upsert(_body(None), NOW).last_write is None
    assert Registry().upsert(_body({"observedGeneration": 1}), NOW).last_write is None
    skewed = Registry().upsert(_body({"observedGeneration": 1, "lastEvaluationTime": _iso(NOW + 3600)}), NOW)
    assert skewed.last_write is None
    assert written_at(AnomalyDetectorStatus(), NOW) is None


def test_a_status_adopted_from_another_writer_moves_the_heartbeat_with_it() -> None:
    """A standby adopts the leader's newer statuses; on taking over it continues their heartbeat."""
    registry = Registry()
    entry = registry.upsert(_body({"observedGeneration": 1, "lastEvaluationTime": _iso(NOW - 900)}), NOW)
    registry.upsert(_body({"observedGeneration": 1, "lastEvaluationTime": _iso(NOW - 30)}, "9"), NOW)
    assert entry.last_write == NOW - 30
