"""The Alertmanager receiver on the operator's real aiohttp endpoint, and the alert store behind it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import logging
import pathlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from vigil.adapters import alertmanager
from vigil.adapters.alertmanager import Alert, AlertStore, WebhookMessage
from vigil.adapters.metrics import OperatorMetrics
from vigil.adapters.web import WebEndpoint
from vigil.api.v1alpha1.policy import LabelSelector

NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
ZERO = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt of a firing alert
TTL = datetime.timedelta(minutes=15)
TOKEN = "am-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def am_alert(status: str = "firing", fingerprint: str = "a1b2c3d4e5f60718", ends: str = ZERO,
             starts: str = "2024-05-01T11:55:00.123456789Z", **labels: str) -> dict[str, Any]:
    # Every alert names the namespace whose policies it may trigger.
    labels = {"namespace": "shop", **(labels or {"alertname": "HighLatency", "instance": "i-0abc",
                                                "severity": "critical"})}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"p99 latency high on {labels.get('instance', '?')}"},
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=histogram_quantile%280.99%2C...%29&g0.tab=1",
    }
    if fingerprint:
        alert["fingerprint"] = fingerprint
    return alert


def am_message(*alerts: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The body Alertmanager's webhook_config POSTs (version 4), as Alertmanager 0.27 writes it."""
    return {
        "receiver": "vigil",
        "status": status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved"),
        "alerts": list(alerts),
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
    }


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@contextlib.asynccontextmanager
async def serving(store: AlertStore, token: Callable[[], str | None] | None = lambda: TOKEN,
                  clock: Clock | None = None, **options: Any) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The operator's WebEndpoint on a free port with the receiver mounted; yields a session and the URL."""
    endpoint = WebEndpoint(OperatorMetrics(), last_loop=time.time, liveness_timeout=60.0, ready=lambda: True,
                           host="127.0.0.1", port=0)
    alertmanager.register(endpoint, store, token, clock=clock or Clock(), **options)
    await endpoint.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{endpoint.port}/alertmanager"
    finally:
        await endpoint.stop()


async def post(session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, Any, Any]:
    """POST with the test token, unless the caller gives its own ``headers``."""
    # A file-like body: aiohttp warns about large raw bytes, and it still sends a Content-Length.
    data = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", AUTH)}
    async with session.post(url, data=data, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None), response.headers


# --------------------------------------------------------------------------------------------------
# Over HTTP
# --------------------------------------------------------------------------------------------------

def test_firing_then_resolved() -> None:
    changes = Counter()
    store = AlertStore(ttl=TTL, on_change=changes)
    clock = Clock()
    web_2 = am_alert(fingerprint="f2", alertname="HighLatency", instance="i-0def", severity="critical")

    async def scenario() -> None:
        async with serving(store, clock=clock) as (session, url):
            status, body, _ = await post(session, url, am_message(am_alert(), web_2))
            assert (status, body) == (200, {"status": "ok", "received": 2})
            active = store.active(NOW)
            assert [a.labels["instance"] for a in active] == ["i-0abc", "i-0def"]
            first = active[0]
            assert first.key == "fp:a1b2c3d4e5f60718" and first.fingerprint == "a1b2c3d4e5f60718"
            assert first.annotations == {"summary": "p99 latency high on i-0abc"}
            assert first.starts_at == datetime.datetime(2024, 5, 1, 11, 55, 0, 123456, tzinfo=datetime.UTC)
            assert first.ends_at is None  # Go's zero time means "not set"
            assert first.receiver == "vigil" and first.received_at == NOW and first.expires_at == NOW + TTL
            assert first.generator_url.startswith("http://prometheus:9090/graph")
            assert changes.calls == 1  # once per message, not once per alert

            clock.now = NOW + datetime.timedelta(minutes=2)
            resolved = am_alert("resolved", ends="2024-05-01T12:01:30Z")
            status, body, _ = await post(session, url, am_message(resolved, web_2, status="firing"))
            assert (status, body) == (200, {"status": "ok", "received": 2})
            assert [a.labels["instance"] for a in store.active(clock.now)] == ["i-0def"]
            assert changes.calls == 2

            clock.now = NOW + datetime.timedelta(minutes=4)
            status, body, _ = await post(session, url, am_message(am_alert("resolved", fingerprint="f2",
                                                                           instance="i-0def")))
            assert (status, body) == (200, {"status": "ok", "received": 1})
            assert store.active(clock.now) == [] and changes.calls == 3

    asyncio.run(scenario())


def test_firing_alerts_expire_unless_re_sent() -> None:
    changes = Counter()
    store = AlertStore(ttl=TTL, on_change=changes)
    clock = Clock()

    async def scenario() -> None:
        async with serving(store, clock=clock) as (session, url):
            await post(session, url, am_message(am_alert()))
            assert len(store.active(NOW + TTL - datetime.timedelta(seconds=1))) == 1
            assert store.next_expiry(NOW) == NOW + TTL
            # Alertmanager re-sends at repeat_interval: the alert lives on; the engine is not woken for it.
            clock.now = NOW + datetime.timedelta(minutes=10)
            await post(session, url, am_message(am_alert()))
            assert changes.calls == 1
            assert store.active(NOW + datetime.timedelta(minutes=24))[0].expires_at == clock.now + TTL
            # Then Alertmanager goes quiet (crashed, re-routed, lost the resolve): the alert is stale.
            assert store.active(clock.now + TTL) == []
            assert store.firing("shop", LabelSelector(), clock.now + TTL) == []
            assert len(store) == 0  # purged, not just hidden

    asyncio.run(scenario())


def test_a_sooner_ends_at_wins_and_a_past_one_is_not_stored() -> None:
    store = AlertStore(ttl=TTL)
    soon = am_alert(fingerprint="soon", ends="2024-05-01T12:05:00Z", instance="a")
    past = am_alert(fingerprint="past", ends="2024-05-01T11:59:00Z", instance="b")
    late = am_alert(fingerprint="late", ends="2024-05-01T18:00:00Z", instance="c")

    async def scenario() -> None:
        async with serving(store) as (session, url):
            status, body, _ = await post(session, url, am_message(soon, past, late))
            assert (status, body) == (200, {"status": "ok", "received": 3})

    asyncio.run(scenario())
    expiries = {a.labels["instance"]: a.expires_at for a in store.active(NOW)}
    assert expiries == {"a": datetime.datetime(2024, 5, 1, 12, 5, tzinfo=datetime.UTC), "c": NOW + TTL}


def test_bearer_token() -> None:
    store = AlertStore()
    body = am_message(am_alert())

    async def scenario() -> None:
        async with serving(store, token=lambda: "s3cret-token") as (session, url):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0LXRva2Vu"},
                            {"Authorization": "s3cret-token"}, {"Authorization": "Bearer s3cret-token-and-more"}):
                status, answer, response_headers = await post(session, url, body, headers=headers)
                assert status == 401, headers
                assert answer == {"status": "error", "error": "missing or wrong bearer token"}
                assert response_headers["WWW-Authenticate"] == 'Bearer realm="vigil"'
            assert len(store) == 0
            status, answer, _ = await post(session, url, body, headers={"Authorization": "Bearer s3cret-token"})
            assert (status, answer) == (200, {"status": "ok", "received": 1})
            assert len(store) == 1

    asyncio.run(scenario())


def test_no_token_means_disabled_unless_allowed_and_an_unloadable_token_refuses() -> None:
    def broken() -> str | None:
        raise FileNotFoundError("/var/run/secrets/vigil/token")

    disabled = (403, {"status": "error", "error": "receiver disabled: no token configured"})

    async def scenario() -> None:
        for token in (None, lambda: None):
            async with serving(AlertStore(), token=token) as (session, url):
                assert (await post(session, url, am_message(am_alert()), headers={}))[:2] == disabled
                assert (await post(session, url, am_message(am_alert())))[:2] == disabled
            async with serving(AlertStore(), token=token, allow_unauthenticated=True) as (session, url):
                assert (await post(session, url, am_message(am_alert()), headers={}))[:2] == (
                    200, {"status": "ok", "received": 1})
        async with serving(AlertStore(), token=broken) as (session, url):
            status, answer, _ = await post(session, url, am_message(am_alert()))
            assert (status, answer) == (503, {"status": "error", "error": "the receiver's token is not available"})

    asyncio.run(scenario())


def test_token_from_file_follows_rotation(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = alertmanager.token_from_file(path)

    async def scenario() -> None:
        async with serving(AlertStore(), token=token) as (session, url):
            auth = {"Authorization": "Bearer first"}
            assert (await post(session, url, am_message(am_alert()), headers=auth))[0] == 200
            path.write_text("second")
            assert (await post(session, url, am_message(am_alert()), headers=auth))[0] == 401
            assert (await post(session, url, am_message(am_alert()),
                               headers={"Authorization": "Bearer second"}))[0] == 200
            path.unlink()
            assert (await post(session, url, am_message(am_alert()), headers=auth))[0] == 503

    asyncio.run(scenario())


@pytest.mark.parametrize(("body", "error", "locs"), [
    (b"{not json", "body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
                   "(char 1)", None),
    (b"\xff\xfe\x00", None, None),
    (b"[]", "body is not an Alertmanager webhook payload (version 4)", [""]),
    (json.dumps({**am_message(am_alert()), "version": "3"}).encode(),
     "body is not an Alertmanager webhook payload (version 4)", ["version"]),
    (json.dumps({k: v for k, v in am_message(am_alert()).items() if k != "alerts"}).encode(),
     "body is not an Alertmanager webhook payload (version 4)", ["alerts"]),
    (json.dumps(am_message({**am_alert(), "status": "burning-TOPSECRET"}, status="firing")).encode(),
     "body is not an Alertmanager webhook payload (version 4)", ["alerts.0.status"]),
    (json.dumps(am_message({**am_alert(), "labels": {"a": 1}, "startsAt": "yesterday"})).encode(),
     "body is not an Alertmanager webhook payload (version 4)", ["alerts.0.labels.a", "alerts.0.startsAt"]),
])
def test_malformed_bodies_are_400_and_not_echoed(body: bytes, error: str | None, locs: list[str] | None) -> None:
    store = AlertStore()

    async def scenario() -> None:
        async with serving(store) as (session, url):
            status, answer, _ = await post(session, url, body)
            assert status == 400
            assert answer["status"] == "error"
            if error is not None:
                assert answer["error"] == error
            else:
                assert answer["error"].startswith("body is not valid JSON")
            if locs is not None:
                assert [d["loc"] for d in answer["details"]] == locs
                assert all(d["msg"] for d in answer["details"])
            assert "TOPSECRET" not in json.dumps(answer) and "yesterday" not in json.dumps(answer)

    asyncio.run(scenario())
    assert len(store) == 0


def test_size_limit() -> None:
    store = AlertStore()
    big = am_message(*(am_alert(fingerprint=f"{n:016x}", instance=f"i-{n}", pad="x" * 1000) for n in range(1100)))
    raw = json.dumps(big).encode()
    assert len(raw) > alertmanager.MAX_BODY_BYTES

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512  # no Content-Length: the limit must hold on the stream

    async def scenario() -> None:
        async with serving(store) as (session, url):
            status, answer, _ = await post(session, url, raw)
            assert (status, answer) == (413, {"status": "error", "error": "body larger than 1048576 bytes"})
        async with serving(store, max_body=1024) as (session, url):
            async with session.post(url, data=chunks(), headers=AUTH) as response:
                assert response.status == 413
                assert await response.json() == {"status": "error", "error": "body larger than 1024 bytes"}
            small = am_message(am_alert())
            assert len(json.dumps(small)) < 1024
            assert (await post(session, url, small))[0] == 200

    asyncio.run(scenario())
    assert len(store) == 1


def test_only_post_is_routed() -> None:
    async def scenario() -> None:
        async with serving(AlertStore()) as (session, url), session.get(url) as response:
            assert response.status == 405

    asyncio.run(scenario())


def test_truncated_alerts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(AlertStore()) as (session, url):
            assert (await post(session, url, {**am_message(am_alert()), "truncatedAlerts": 7}))[0] == 200

    asyncio.run(scenario())
    assert any("truncated 7 alerts" in r.getMessage() for r in caplog.records)


def test_one_log_line_per_request_whatever_happened(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = {"status": "firing", "labels": {"alertname": "NoNamespace"}}
    too_many = am_alert(fingerprint="many", **{f"l{n}": "v" for n in range(100)})
    long_fingerprint = am_alert(fingerprint="f" * 1000)
    wordy = am_alert(fingerprint="wordy")
    wordy["annotations"] = {"description": "x" * 20_000}

    async def scenario() -> None:
        async with serving(AlertStore(max_bytes=2000)) as (session, url):
            message = {**am_message(am_alert(), nowhere, too_many, long_fingerprint, wordy), "truncatedAlerts": 3}
            status, body, _ = await post(session, url, message)
            assert (status, body) == (200, {"status": "ok", "received": 5,
                                            "ignored": {"noNamespaceLabel": 1, "labelsTooLarge": 2}})

    with caplog.at_level(logging.DEBUG, logger="vigil.adapters.alertmanager"):
        asyncio.run(scenario())
    (line,) = [r for r in caplog.records if r.name == "vigil.adapters.alertmanager"]
    assert line.levelno == logging.WARNING
    for part in ("5 alerts (firing)", "1 without a 'namespace' label", "2 with labels or fingerprint over the limits",
                 "1 stored without their oversized annotations", "older alerts evicted",
                 "Alertmanager truncated 3 alerts"):
        assert part in line.getMessage(), part


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------

def alert(status: str = "firing", **fields: Any) -> Alert:
    return Alert.model_validate(am_alert(status, **fields))


def test_selector_matching() -> None:
    store = AlertStore()
    message = WebhookMessage.model_validate(am_message(
        am_alert(fingerprint="1", alertname="HighLatency", instance="i-1", severity="critical", team="web"),
        am_alert(fingerprint="2", alertname="HighLatency", instance="i-2", severity="warning", team="web"),
        am_alert(fingerprint="3", alertname="DiskFull", instance="i-3", severity="critical"),
    ))
    store.receive(message, NOW)

    def matching(wire: dict[str, Any]) -> list[str]:
        return [a.labels["instance"] for a in store.firing("shop", LabelSelector.model_validate(wire), NOW)]

    assert matching({}) == ["i-1", "i-2", "i-3"]
    assert matching({"matchLabels": {"alertname": "HighLatency"}}) == ["i-1", "i-2"]
    assert matching({"matchLabels": {"alertname": "HighLatency"},
                     "matchExpressions": [{"key": "severity", "operator": "In", "values": ["critical"]}]}) == ["i-1"]
    assert matching({"matchExpressions": [{"key": "severity", "operator": "NotIn", "values": ["warning"]}]}) == [
        "i-1", "i-3"]
    assert matching({"matchExpressions": [{"key": "team", "operator": "Exists"}]}) == ["i-1", "i-2"]
    assert matching({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}) == ["i-3"]
    assert matching({"matchLabels": {"alertname": "Nope"}}) == []
    assert matching({"matchExpressions": [{"key": "team", "operator": "In", "values": []}]}) == []  # invalid


def test_alerts_without_fingerprint_are_keyed_by_their_labels() -> None:
    changes = Counter()
    store = AlertStore(on_change=changes)
    first = Alert.model_validate({"status": "firing", "labels": {"b": "2", "namespace": "x", "a": "1"}})
    same = Alert.model_validate({"status": "firing", "labels": {"a": "1", "b": "2", "namespace": "x"}})
    assert alertmanager.alert_key(first) == alertmanager.alert_key(same) == (
        'labels:[["a","1"],["b","2"],["namespace","x"]]')
    assert store.upsert(first, NOW) is True
    assert store.upsert(same, NOW + datetime.timedelta(minutes=1)) is False  # a re-send, not a change
    assert len(store.active(NOW)) == 1 and changes.calls == 1
    gone = Alert.model_validate({"status": "resolved", "labels": {"a": "1", "b": "2", "namespace": "x"}})
    assert store.upsert(gone, NOW + datetime.timedelta(minutes=2)) is True
    assert store.active(NOW) == [] and changes.calls == 2


def test_changed_labels_or_annotations_wake_the_engine() -> None:
    changes = Counter()
    store = AlertStore(on_change=changes)
    store.upsert(alert(), NOW)
    store.upsert(Alert.model_validate({**am_alert(), "annotations": {"summary": "worse"}}), NOW)
    assert changes.calls == 2
    assert store.active(NOW)[0].annotations == {"summary": "worse"}


def test_a_late_resolve_of_an_earlier_firing_is_ignored() -> None:
    store = AlertStore()
    store.upsert(alert(starts="2024-05-01T11:58:00Z"), NOW)
    stale = alert("resolved", starts="2024-05-01T10:00:00Z", ends="2024-05-01T10:30:00Z")
    assert store.upsert(stale, NOW) is False
    assert len(store.active(NOW)) == 1
    assert store.upsert(alert("resolved", starts="2024-05-01T11:58:00Z", ends="2024-05-01T12:00:00Z"), NOW)
    assert store.active(NOW) == []


def test_an_expired_alert_firing_again_is_a_change() -> None:
    changes = Counter()
    store = AlertStore(ttl=TTL, on_change=changes)
    store.upsert(alert(), NOW)
    later = NOW + TTL + datetime.timedelta(minutes=1)
    assert store.upsert(alert(), later) is True and changes.calls == 2


def test_memory_is_bounded_by_bytes_and_the_least_recently_received_go_first() -> None:
    probe = AlertStore(ttl=TTL)
    probe.upsert(alert(fingerprint="f0", instance="i-0"), NOW)
    one = probe.size_bytes
    store = AlertStore(ttl=TTL, max_bytes=3 * one + one // 2)
    for n in range(5):
        store.upsert(alert(fingerprint=f"f{n}", instance=f"i-{n}"), NOW + datetime.timedelta(seconds=n))
    store.upsert(alert(fingerprint="f2", instance="i-2"), NOW + datetime.timedelta(seconds=5))  # received again
    store.upsert(alert(fingerprint="f5", instance="i-5"), NOW + datetime.timedelta(seconds=6))
    assert [a.labels["instance"] for a in store.active(NOW)] == ["i-2", "i-4", "i-5"]
    assert store.size_bytes <= store.max_bytes
    store.upsert(alert("resolved", fingerprint="f4", instance="i-4"), NOW + datetime.timedelta(seconds=7))
    assert len(store) == 2 and store.size_bytes == 2 * one  # resolving gives its bytes back


def test_an_alert_moved_to_another_namespace_leaves_the_old_one() -> None:
    store = AlertStore(ttl=TTL)
    store.upsert(alert(fingerprint="same", namespace="shop"), NOW)
    store.upsert(alert(fingerprint="same", namespace="billing"), NOW)
    everything = LabelSelector()
    assert store.firing("shop", everything, NOW) == []
    assert [a.namespace for a in store.firing("billing", everything, NOW)] == ["billing"]
    assert len(store) == 1


def test_a_failing_on_change_does_not_fail_the_webhook(caplog: pytest.LogCaptureFixture) -> None:
    def explode() -> None:
        raise RuntimeError("engine gone")

    store = AlertStore(on_change=explode)

    async def scenario() -> None:
        async with serving(store) as (session, url):
            assert (await post(session, url, am_message(am_alert())))[:2] == (200, {"status": "ok", "received": 1})

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert len(store) == 1
    assert any("on_change callback failed" in r.getMessage() for r in caplog.records)
