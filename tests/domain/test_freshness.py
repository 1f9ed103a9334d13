"""The shard's freshness on its Lease (pure)."""

from __future__ import annotations

from vigil.domain import freshness


def test_counts_detectors_and_those_overdue_by_more_than_a_minute() -> None:
    now = 1_000_000.0
    got = freshness.assess([now + 5, now - 10, now - 59, now - 61, now - 3600], now - 2, now)
    assert got == freshness.ShardFreshness(last_evaluation=now - 2, detectors=5, overdue=2)


def test_annotations_are_strings_a_kubectl_column_can_show() -> None:
    notes = freshness.lease_annotations(freshness.ShardFreshness(1_700_000_000.4, 3, 1))
    assert notes == {freshness.LAST_EVALUATION: "2023-11-14T22:13:20Z", freshness.DETECTORS: "3",
                     freshness.OVERDUE: "1"}
    assert freshness.lease_annotations(freshness.ShardFreshness(None, 0, 0))[freshness.LAST_EVALUATION] == ""
