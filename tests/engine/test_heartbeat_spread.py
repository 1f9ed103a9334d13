"""Heartbeats spread by uid (engine.scheduler.spread): detectors created together do not write together."""

import uuid

from vigil.engine.scheduler import HEARTBEAT_SPREAD, spread


def test_a_heartbeat_is_never_longer_than_configured_and_stable_per_uid() -> None:
    uid = str(uuid.uuid4())
    assert spread(1200, uid) == spread(1200, uid)
    assert 1200 * (1 - HEARTBEAT_SPREAD) <= spread(1200, uid) <= 1200


def test_many_detectors_spread_over_the_quarter() -> None:
    beats = sorted(spread(1200, str(uuid.UUID(int=i))) for i in range(2000))
    assert beats[0] >= 900 and beats[-1] <= 1200
    # Every 30 s slice of the 300 s range holds a share of the 2,000 (at most twice the even share).
    for low in range(900, 1200, 30):
        inside = sum(low <= b < low + 30 for b in beats)
        assert 100 <= inside <= 400, (low, inside)
    mean = sum(beats) / len(beats)
    assert 1030 <= mean <= 1070  # 3600 / mean: about 3.4 writes per quiet detector-hour, within 4
