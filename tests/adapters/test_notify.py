"""The Notifier against real peers: an emulated Kubernetes API for Secrets, a local HTTP chat stub.

The stub stands in for Slack, Discord and a generic webhook at once: it records
every request and can be told to answer 429/5xx/4xx or to hang. Every webhook
URL carries a secret token in its path, and the tests check that the token never
shows in log records, Delivery errors or exception text, whatever goes wrong.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp.web
import kopf
import pytest

from vigil import __version__
from vigil.adapters import notify
from vigil.adapters.kube import KubeClient
from vigil.adapters.notify import Delivery, Notifier
from vigil.api.v1alpha1.action import ActionPhase, Reason, Target
from vigil.api.v1alpha1.policy import Notify
from vigil.domain import notifications
from vigil.domain.notifications import EventKind, NotificationEvent
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.ports import free_port

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
TOKEN = "XyZzY-s3cr3t-T0KEN-4242"
SLACK_PATH = f"/services/T0001/B0002/{TOKEN}"
DISCORD_PATH = f"/api/webhooks/1234567890/{TOKEN}-discord"
WEBHOOK_PATH = f"/hooks/vigil/{TOKEN}-generic"

EVENT = NotificationEvent(
    kind=EventKind.APPROVAL_REQUESTED, namespace="team", policy="web-latency", action="web-latency-7f3k2", time=T0,
    phase=ActionPhase.PENDING_APPROVAL, step_index=0, step_name="scale-up", step_kind="scaleAutoScalingGroup",
    targets=(Target(kind="AutoScalingGroup", id="web-asg"),),
    reason=Reason(source="detector", detector="web-p99", series=[{"instance": "i-0abc"}], score=0.97, threshold=0.8,
                  time=T0),
    message="p99 latency anomalous for 5m", before={"desiredCapacity": 4}, after={"desiredCapacity": 6},
)


# --------------------------------------------------------------------------------------------------
# The chat stub: one aiohttp server in its own thread and loop.
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    text: str = "ok"
    hang: bool = False


class ChatStub:
    """Answers every POST with 200 "ok" unless told otherwise for a path."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._plans: dict[str, collections.deque[Answer]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self.port = 0

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, answer: Answer, times: int = 1) -> None:
        with self._lock:
            self._plans.setdefault(path, collections.deque()).extend([answer] * times)

    def received(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._plans.clear()
        self._call(self._unhang)

    def _unhang(self) -> None:
        # set() wakes the handlers waiting now; clear() makes the next "hang" wait again.
        if self._release is not None:
            self._release.set()
            self._release.clear()

    def _call(self, fn: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn)

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.json() if request.can_read_body else None
        with self._lock:
            self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
            plan = self._plans.get(request.path)
            answer = plan.popleft() if plan else Answer()
        if answer.hang:
            assert self._release is not None
            await self._release.wait()  # until the test is over: the client must give up first
        return aiohttp.web.Response(status=answer.status, headers=answer.headers, text=answer.text)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._release = asyncio.Event(), asyncio.Event()
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        await self._stop.wait()
        self._release.set()
        await runner.cleanup()

    def start(self) -> ChatStub:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="chat-stub", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the chat stub did not start"
        return self

    def stop(self) -> None:
        assert self._thread is not None and self._stop is not None
        self._call(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatStub]:
    stub = ChatStub().start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def kubeapi() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


@pytest.fixture
def stub(chat: ChatStub) -> Iterator[ChatStub]:
    chat.reset()
    yield chat
    chat.reset()


@pytest.fixture
def ns() -> str:
    """A namespace of its own per test, so Secrets never collide on the shared API server."""
    return f"team-{uuid.uuid4().hex[:8]}"


def put_secret(kubeapi: KubeAPIServer, namespace: str, name: str, **data: str) -> None:
    kubeapi.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                    "stringData": data})


def notify_spec(slack: str | None = None, discord: str | None = None, webhook: str | None = None,
                secret: str = "chat") -> Notify:
    wire = {kind: {"urlSecretRef": {"name": secret, "key": key}}
            for kind, key in (("slack", slack), ("discord", discord), ("webhook", webhook)) if key}
    return Notify.model_validate(wire)


@dataclasses.dataclass
class Run:
    deliveries: list[Delivery]
    sleeps: list[float]


async def deliver(kubeapi: KubeAPIServer, namespace: str, spec: Notify | None, *rounds: float,
                  event: NotificationEvent = EVENT, **options: Any) -> list[Run]:
    """Notify once per entry of ``rounds`` (the fake monotonic clock at that round) with one Notifier."""
    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kubeapi.url, token=kubeapi.token, insecure=True)

    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kube = KubeClient(login)
    options.setdefault("timeout", 5)
    notifier = Notifier(kube, sleep=fake_sleep, clock=lambda: now[0], **options)
    runs = []
    try:
        for at in rounds or (0.0,):
            now[0] = at
            deliveries = await notifier.notify(namespace, spec, event)
            runs.append(Run(deliveries, list(sleeps)))
            sleeps.clear()
    finally:
        await notifier.close()
        await kube.close()
    return runs


def run_once(kubeapi: KubeAPIServer, namespace: str, spec: Notify | None, **options: Any) -> Run:
    (result,) = asyncio.run(deliver(kubeapi, namespace, spec, **options))
    return result


def assert_no_secret_leaked(caplog: pytest.LogCaptureFixture, *texts: object) -> None:
    records = [r for r in caplog.records if r.threadName != "chat-stub"]
    for record in records:
        assert TOKEN not in record.getMessage(), record.getMessage()
        assert TOKEN not in (record.exc_text or "")
    assert TOKEN not in caplog.text.replace("chat-stub", "")
    for text in texts:
        assert TOKEN not in str(text) and TOKEN not in repr(text)


# --------------------------------------------------------------------------------------------------
# Delivery and payloads
# --------------------------------------------------------------------------------------------------

def test_delivers_to_slack_discord_and_webhook(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH), discord=stub.url(DISCORD_PATH) + "\n",
               hook=stub.url(WEBHOOK_PATH))
    stub.answer(DISCORD_PATH, Answer(status=204, text=""))  # Discord answers 204 No Content

    result = run_once(kubeapi, ns, notify_spec("slack", "discord", "hook"))

    assert result.deliveries == [Delivery("slack", True), Delivery("discord", True), Delivery("webhook", True)]
    assert result.sleeps == []
    (slack,), (discord,), (hook,) = stub.received(SLACK_PATH), stub.received(DISCORD_PATH), stub.received(WEBHOOK_PATH)
    for request in (slack, discord, hook):
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"] == f"vigil/{__version__}"
        assert "Authorization" not in request.headers  # the API server's token must never go to a webhook

    assert slack.body == notifications.slack_message(EVENT)
    assert [b["type"] for b in slack.body["blocks"]] == ["header", "section", "section", "section", "context"]
    assert slack.body["blocks"][0]["text"] == {"type": "plain_text", "emoji": True,
                                               "text": "Approval requested: scale-up on team/web-latency"}
    assert [f["text"].split("\n")[0] for f in slack.body["blocks"][2]["fields"]] == [
        "*Policy*", "*Step*", "*Phase*", "*Targets*", "*Score / threshold*", "*Before → After*"]
    approve = "kubectl annotate ra web-latency-7f3k2 vigil.dev/approve=true -n team"
    assert f"```{approve}```" in slack.body["blocks"][3]["text"]["text"]
    assert slack.body["text"].startswith("Approval requested: scale-up on team/web-latency.")
    assert slack.body["text"].endswith(approve)

    assert discord.body == notifications.discord_message(EVENT)
    (embed,) = discord.body["embeds"]
    assert embed["title"] == "Approval requested: scale-up on team/web-latency"
    assert embed["color"] == notifications.ORANGE
    assert embed["footer"] == {"text": "vigil"} and embed["timestamp"] == "2024-05-01T12:00:00Z"
    assert discord.body["allowed_mentions"] == {"parse": []}

    assert hook.body == notifications.webhook_body(EVENT)
    assert hook.body["version"] == "v1" and hook.body["kind"] == "ApprovalRequested"
    assert hook.body["action"]["approval"]["approve"]["kubectl"] == approve
    assert_no_secret_leaked(caplog, result.deliveries)


def test_no_notify_spec_sends_nothing(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    assert run_once(kubeapi, ns, None).deliveries == []
    assert run_once(kubeapi, ns, Notify()).deliveries == []
    assert stub.requests == []


def test_secret_is_cached_briefly_and_reread_after_the_ttl(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH), hook=stub.url(WEBHOOK_PATH))
    before = kubeapi.count_requests(method="GET", plural="secrets", namespace=ns)
    runs = asyncio.run(deliver(kubeapi, ns, notify_spec("slack", webhook="hook"), 0.0, 30.0, 61.0,
                               secret_ttl=60.0))
    assert all(d.ok for r in runs for d in r.deliveries)
    gets = kubeapi.count_requests(method="GET", plural="secrets", namespace=ns) - before
    # Round 1 reads it once for both channels, round 2 is served from the cache, round 3 reads it again.
    assert gets == 2
    assert len(stub.received(SLACK_PATH)) == 3


# --------------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------------

def test_429_is_retried_after_retry_after(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH))
    stub.answer(SLACK_PATH, Answer(status=429, headers={"Retry-After": "7"}, text="rate_limited"), times=2)
    result = run_once(kubeapi, ns, notify_spec("slack"))
    assert result.deliveries == [Delivery("slack", True)]
    assert result.sleeps == [7.0, 7.0]
    assert len(stub.received(SLACK_PATH)) == 3


def test_429_with_discords_json_retry_after(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    put_secret(kubeapi, ns, "chat", discord=stub.url(DISCORD_PATH))
    stub.answer(DISCORD_PATH, Answer(status=429, text='{"message": "You are being rate limited.", '
                                                     '"retry_after": 1.5, "global": false}'))
    result = run_once(kubeapi, ns, notify_spec(discord="discord"))
    assert result.deliveries == [Delivery("discord", True)]
    assert result.sleeps == [1.5]


def test_retry_after_beyond_the_cap_gives_up_at_once(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH))
    stub.answer(SLACK_PATH, Answer(status=429, headers={"Retry-After": "3600"}), times=3)
    result = run_once(kubeapi, ns, notify_spec("slack"), max_retry_after=30)
    assert result.deliveries == [Delivery(
        "slack", False, f"slack webhook (secret {ns}/chat key slack): HTTP 429 (rate limited); "
                        "Retry-After 3600s exceeds 30s")]
    assert result.sleeps == [] and len(stub.received(SLACK_PATH)) == 1
    assert_no_secret_leaked(caplog, result.deliveries)


def test_5xx_is_retried_with_backoff_then_reported(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", hook=stub.url(WEBHOOK_PATH))
    stub.answer(WEBHOOK_PATH, Answer(status=500, text=f"internal error at {WEBHOOK_PATH}"), times=5)
    result = run_once(kubeapi, ns, notify_spec(webhook="hook"), attempts=3, backoff=0.5)
    assert result.deliveries == [
        Delivery("webhook", False, f"webhook webhook (secret {ns}/chat key hook): HTTP 500 after 3 attempts")]
    assert result.sleeps == [0.5, 1.0]
    assert len(stub.received(WEBHOOK_PATH)) == 3
    assert_no_secret_leaked(caplog, result.deliveries)


def test_5xx_then_success(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH))
    stub.answer(SLACK_PATH, Answer(status=503), times=2)
    result = run_once(kubeapi, ns, notify_spec("slack"), backoff=0.25)
    assert result.deliveries == [Delivery("slack", True)]
    assert result.sleeps == [0.25, 0.5]


def test_other_4xx_is_not_retried_and_drops_the_cached_url(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH))
    # Slack answers a revoked webhook with 404 "no_service"; the echo of the URL must still be redacted.
    stub.answer(SLACK_PATH, Answer(status=404, text=f"no_service for {stub.url(SLACK_PATH)}"))
    stub.answer(SLACK_PATH, Answer(status=400, text="invalid_blocks"))
    before = kubeapi.count_requests(method="GET", plural="secrets", namespace=ns)
    first, second = asyncio.run(deliver(kubeapi, ns, notify_spec("slack"), 0.0, 1.0))
    label = f"slack webhook (secret {ns}/chat key slack)"
    # The receiver's body is never quoted (it may echo the token): the status code says enough.
    assert first.deliveries == [Delivery("slack", False, f"{label}: HTTP 404")]
    assert second.deliveries == [Delivery("slack", False, f"{label}: HTTP 400")]
    assert first.sleeps == second.sleeps == []
    assert len(stub.received(SLACK_PATH)) == 2
    # After the 404 the URL is read again (it may have been rotated); the cache would have served it.
    assert kubeapi.count_requests(method="GET", plural="secrets", namespace=ns) - before == 2
    assert_no_secret_leaked(caplog, first.deliveries, second.deliveries)


def test_an_echoed_url_or_token_is_never_quoted(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH))
    stub.answer(SLACK_PATH, Answer(status=400, headers={"X-Token": TOKEN},
                                   text=f"bad token {TOKEN} for {stub.url(SLACK_PATH)}"))
    result = run_once(kubeapi, ns, notify_spec("slack"))
    (delivery,) = result.deliveries
    assert delivery.error == f"slack webhook (secret {ns}/chat key slack): HTTP 400"
    assert_no_secret_leaked(caplog, result.deliveries)


# --------------------------------------------------------------------------------------------------
# Secrets and URLs
# --------------------------------------------------------------------------------------------------

def test_missing_secret_or_key(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    put_secret(kubeapi, ns, "chat", other="https://example.invalid/x")
    result = run_once(kubeapi, ns, Notify.model_validate({
        "slack": {"urlSecretRef": {"name": "chat", "key": "url"}},
        "discord": {"urlSecretRef": {"name": "nope", "key": "url"}},
    }))
    assert result.deliveries == [
        Delivery("slack", False, f"secret {ns}/chat has no key url"),
        Delivery("discord", False, f"secret {ns}/nope not found"),
    ]
    assert stub.requests == []


@pytest.mark.parametrize("url", [
    f"http://hooks.example.com/services/{TOKEN}",
    f"ftp://127.0.0.1/{TOKEN}",
    f"http://10.0.0.1/{TOKEN}",
    f"file:///etc/{TOKEN}",
    f"hooks.slack.com/services/{TOKEN}",
])
def test_only_https_or_loopback_http_is_allowed(kubeapi: KubeAPIServer, stub: ChatStub, ns: str, url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=url)
    result = run_once(kubeapi, ns, notify_spec("slack"))
    label = f"slack webhook (secret {ns}/chat key slack)"
    (delivery,) = result.deliveries
    assert not delivery.ok
    assert delivery.error in (f"{label}: only https:// URLs are allowed (http:// only to 127.0.0.1 or localhost)",
                              f"{label}: the value is not a valid URL")
    assert stub.requests == []
    assert_no_secret_leaked(caplog, result.deliveries)


def test_bad_secret_values(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    kubeapi.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat", "namespace": ns},
                    "data": {"junk": "!!!not-base64!!!", "empty": ""}})
    result = run_once(kubeapi, ns, Notify.model_validate({
        "slack": {"urlSecretRef": {"name": "chat", "key": "junk"}},
        "webhook": {"urlSecretRef": {"name": "chat", "key": "empty"}},
    }))
    assert result.deliveries == [
        Delivery("slack", False, f"secret {ns}/chat key junk is not valid base64 UTF-8"),
        Delivery("webhook", False, f"secret {ns}/chat key empty is empty"),
    ]


# --------------------------------------------------------------------------------------------------
# The URL never leaks, whatever fails
# --------------------------------------------------------------------------------------------------

def test_receiver_down_is_reported_without_the_url(kubeapi: KubeAPIServer, ns: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there: connection refused
    put_secret(kubeapi, ns, "chat", slack=f"http://127.0.0.1:{port}{SLACK_PATH}",
               discord=f"http://localhost:{port}{DISCORD_PATH}")
    result = run_once(kubeapi, ns, notify_spec("slack", "discord"), attempts=2)
    slack, discord = result.deliveries
    assert slack == Delivery("slack", False, f"slack webhook (secret {ns}/chat key slack): "
                                             "connection failed (Connection refused) after 2 attempts")
    assert not discord.ok and discord.error is not None
    assert discord.error.startswith(f"discord webhook (secret {ns}/chat key discord): connection failed (")
    assert result.sleeps == [0.5, 0.5]  # one backoff per channel, concurrently
    assert_no_secret_leaked(caplog, result.deliveries)


def test_tls_to_a_plain_http_port_is_reported_without_the_url(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=stub.url(SLACK_PATH, scheme="https"))
    result = run_once(kubeapi, ns, notify_spec("slack"))
    # Not retried: a TLS setup problem does not go away by itself.
    assert result.deliveries == [Delivery("slack", False, f"slack webhook (secret {ns}/chat key slack): "
                                                          "TLS handshake failed")]
    assert result.sleeps == []
    assert_no_secret_leaked(caplog, result.deliveries)


def test_timeout_is_reported_without_the_url(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", hook=stub.url(WEBHOOK_PATH))
    stub.answer(WEBHOOK_PATH, Answer(hang=True))
    result = run_once(kubeapi, ns, notify_spec(webhook="hook"), attempts=1, timeout=0.2)
    assert result.deliveries == [
        Delivery("webhook", False, f"webhook webhook (secret {ns}/chat key hook): timed out (0.2s) after 1 attempt")]
    assert_no_secret_leaked(caplog, result.deliveries)


def test_an_unusable_url_is_reported_without_the_url(kubeapi: KubeAPIServer, stub: ChatStub, ns: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put_secret(kubeapi, ns, "chat", slack=f"https://127.0.0.1:99999/{TOKEN}")  # the port is out of range
    result = run_once(kubeapi, ns, notify_spec("slack"))
    assert result.deliveries == [Delivery("slack", False, f"slack webhook (secret {ns}/chat key slack): "
                                                          "the value is not a valid URL")]
    assert result.sleeps == [] and stub.requests == []
    assert_no_secret_leaked(caplog, result.deliveries)


@pytest.mark.emulator
def test_api_server_failure_is_reported(kubeapi: KubeAPIServer, stub: ChatStub, ns: str) -> None:
    kubeapi.set_unavailable(True)
    try:
        result = run_once(kubeapi, ns, notify_spec("slack"))
    finally:
        kubeapi.set_unavailable(False)
    assert result.deliveries == [Delivery("slack", False, f"cannot read secret {ns}/chat: HTTP 503 ServiceUnavailable")]


# --------------------------------------------------------------------------------------------------
# The pure parts
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "body", "expected"), [
    ({"Retry-After": "12"}, None, 12.0),
    ({"Retry-After": "0.25"}, None, 0.25),
    ({"Retry-After": "Wed, 01 May 2024 12:00:30 GMT"}, None, 30.0),
    ({"Retry-After": "Wed, 01 May 2024 11:00:00 GMT"}, None, 0.0),
    ({}, {"retry_after": 2.5}, 2.5),
    ({"Retry-After": "soon"}, {"retry_after": 4}, 4.0),
    ({}, {"message": "no hint"}, None),
    ({}, None, None),
])
def test_retry_after(headers: dict[str, str], body: Any, expected: float | None) -> None:
    assert notify.retry_after(headers, body, T0) == expected


def test_redact_covers_the_url_its_path_and_query() -> None:
    url = f"https://hooks.example.com/services/{TOKEN}?thread={TOKEN}2"
    text = f"failed for {url}; path /services/{TOKEN}; query thread={TOKEN}2"
    redacted = notify.redact(text, url)
    assert TOKEN not in redacted
    assert redacted == "failed for <redacted>; path <redacted>; query <redacted>"
    assert notify.redact("nothing to hide", None) == "nothing to hide"
