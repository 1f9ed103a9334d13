"""Receive Alertmanager's webhook (``POST /alertmanager``) and remember which alerts fire now.

Policies with an ``alertSelector`` act on alerts as well as on detectors, so the
engine needs "which alerts are firing right now, with which labels". Alertmanager
pushes; this module keeps what it pushed in an :class:`AlertStore` and wakes the
engine through ``on_change``.

The one rule that matters: never act on a stale alert. Alertmanager zeroes
``endsAt`` of *firing* alerts in webhook payloads (``types.Alerts``: "if the end
timestamp is not reached yet, do not expose it") and sends a group again only
every ``repeat_interval`` while nothing changes. So a firing alert is believed
for ``ttl`` after it was last received (or until its ``endsAt``, if a sender set
one and it comes sooner) and then expires by itself. Route alerts to Vigil with
``repeat_interval`` below the store's ``ttl`` and ``send_resolved: true``.

The receiver sits on the operator's metrics port, so it protects itself: an
optional bearer token (compared in constant time), a body size limit read from
the stream (a missing ``Content-Length`` does not get around it), and precise
400s that never echo the body back.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hmac
import json
import logging
import pathlib
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

import aiohttp.web
import pydantic
from pydantic import AfterValidator, Field
from pydantic.alias_generators import to_camel

from vigil.adapters.web import WebEndpoint
from vigil.api.v1alpha1.policy import LabelSelector
from vigil.domain import selectors

logger = logging.getLogger(__name__)

PATH = "/alertmanager"
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TTL = datetime.timedelta(minutes=15)
MAX_ALERTS = 10_000
_MAX_ERROR_DETAILS = 20

Clock = Callable[[], datetime.datetime]
TokenSource = Callable[[], str | None]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _real_time(value: datetime.datetime | None) -> datetime.datetime | None:
    """Go's zero time (``0001-01-01T00:00:00Z``) means "not set"; naive times are taken as UTC."""
    if value is None or value.year <= 1:
        return None
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value


Timestamp = Annotated[datetime.datetime | None, AfterValidator(_real_time)]


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class _Model(pydantic.BaseModel):
    """camelCase on the wire; unknown fields ignored, so newer Alertmanagers keep working."""

    model_config = pydantic.ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Alert(_Model):
    """One alert of a webhook message (Alertmanager ``template.Alert``)."""

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Timestamp = None
    ends_at: Timestamp = None
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""


class WebhookMessage(_Model):
    """The body Alertmanager POSTs to a ``webhook_config`` receiver (payload version 4)."""

    version: Literal["4"]
    group_key: str = ""
    truncated_alerts: int = Field(default=0, ge=0)
    status: AlertStatus
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict)
    common_labels: dict[str, str] = Field(default_factory=dict)
    common_annotations: dict[str, str] = Field(default_factory=dict)
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Alert]


@dataclasses.dataclass(frozen=True)
class StoredAlert:
    """A firing alert as last received, with the moment it stops being believed."""

    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: datetime.datetime | None
    ends_at: datetime.datetime | None
    generator_url: str
    receiver: str
    received_at: datetime.datetime
    expires_at: datetime.datetime

    def active(self, now: datetime.datetime) -> bool:
        return now < self.expires_at


def alert_key(alert: Alert) -> str:
    """Alertmanager's fingerprint, or the sorted label set when a sender left it out."""
    if alert.fingerprint:
        return f"fp:{alert.fingerprint}"
    return "labels:" + json.dumps(sorted(alert.labels.items()), separators=(",", ":"))


class AlertStore:
    """Firing alerts in memory, keyed by :func:`alert_key`; expired ones vanish by themselves.

    Not thread-safe: use it from the event loop that serves the webhook.
    ``on_change`` is called (without arguments) when the set of active alerts or
    their labels changed; a re-send that only extends an alert's life is no change,
    so the engine is not woken every ``repeat_interval``.
    """

    def __init__(
        self,
        ttl: datetime.timedelta = DEFAULT_TTL,
        max_alerts: int = MAX_ALERTS,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_alerts = max_alerts
        self.on_change = on_change
        self._alerts: dict[str, StoredAlert] = {}

    def __len__(self) -> int:
        return len(self._alerts)

    def upsert(self, alert: Alert, now: datetime.datetime, receiver: str = "") -> bool:
        """Record one received alert; True (and ``on_change`` called) if the active set changed."""
        changed = self._apply(alert, now, receiver)
        if changed:
            self._changed()
        return changed

    def receive(self, message: WebhookMessage, now: datetime.datetime) -> int:
        """Record every alert of a webhook message; ``on_change`` is called at most once. Returns changes."""
        changes = sum(self._apply(alert, now, message.receiver) for alert in message.alerts)
        if changes:
            self._changed()
        return changes

    def active(self, now: datetime.datetime) -> list[StoredAlert]:
        """Firing alerts not yet expired at ``now``, sorted by key (stable for callers that diff)."""
        self._purge(now)
        return sorted(self._alerts.values(), key=lambda a: a.key)

    def matching(self, selector: LabelSelector, now: datetime.datetime) -> list[StoredAlert]:
        """Active alerts whose labels satisfy ``selector``."""
        return [a for a in self.active(now) if selectors.matches(selector, a.labels)]

    def next_expiry(self, now: datetime.datetime) -> datetime.datetime | None:
        """When the next active alert expires, so the engine can re-evaluate then."""
        return min((a.expires_at for a in self.active(now)), default=None)

    def _apply(self, alert: Alert, now: datetime.datetime, receiver: str) -> bool:
        key = alert_key(alert)
        previous = self._alerts.get(key)
        was_active = previous is not None and previous.active(now)
        ends_at = alert.ends_at
        if alert.status == AlertStatus.RESOLVED or (ends_at is not None and ends_at <= now):
            if previous is not None and _older(alert.starts_at, previous.starts_at):
                return False  # a late resolve of an earlier firing of the same alert
            self._alerts.pop(key, None)
            return was_active
        expires_at = now + self.ttl
        if ends_at is not None and ends_at < expires_at:
            expires_at = ends_at
        stored = StoredAlert(
            key=key, labels=dict(alert.labels), annotations=dict(alert.annotations), fingerprint=alert.fingerprint,
            starts_at=alert.starts_at, ends_at=ends_at, generator_url=alert.generator_url, receiver=receiver,
            received_at=now, expires_at=expires_at,
        )
        self._alerts[key] = stored
        self._bound(now)
        return not was_active or previous is None or (
            previous.labels, previous.annotations, previous.starts_at) != (
            stored.labels, stored.annotations, stored.starts_at)

    def _purge(self, now: datetime.datetime) -> None:
        for key in [k for k, a in self._alerts.items() if not a.active(now)]:
            del self._alerts[key]

    def _bound(self, now: datetime.datetime) -> None:
        """Keep memory bounded if something floods the receiver: drop what expires soonest."""
        if len(self._alerts) <= self.max_alerts:
            return
        self._purge(now)
        excess = len(self._alerts) - self.max_alerts
        if excess > 0:
            for stored in sorted(self._alerts.values(), key=lambda a: a.expires_at)[:excess]:
                del self._alerts[stored.key]
            logger.warning("More than %d firing alerts received; dropped the %d expiring soonest.",
                           self.max_alerts, excess)

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            logger.exception("The alert store's on_change callback failed.")


def _older(a: datetime.datetime | None, b: datetime.datetime | None) -> bool:
    return a is not None and b is not None and a < b


def token_from_file(path: str | pathlib.Path) -> TokenSource:
    """A token source that re-reads a mounted Secret file on every request, so rotation needs no restart.

    An unreadable file raises, and the receiver then answers 503: a configured but
    missing token must never mean "no authentication".
    """
    file = pathlib.Path(path)

    def read() -> str | None:
        return file.read_text(encoding="utf-8").strip() or None

    return read


def _json_error(status: int, error: str, headers: dict[str, str] | None = None,
                details: Iterable[dict[str, str]] = ()) -> aiohttp.web.Response:
    body: dict[str, Any] = {"status": "error", "error": error}
    listed = list(details)
    if listed:
        body["details"] = listed
    return aiohttp.web.json_response(body, status=status, headers=headers)


def _validation_details(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    """Where and what, never the offending input (it may be large or sensitive)."""
    return [{"loc": ".".join(str(part) for part in error["loc"]), "msg": error["msg"]}
            for error in exc.errors(include_input=False, include_url=False)[:_MAX_ERROR_DETAILS]]


class Receiver:
    """The request handler; :func:`register` mounts it."""

    def __init__(self, store: AlertStore, token: TokenSource, max_body: int = MAX_BODY_BYTES,
                 clock: Clock = _utcnow) -> None:
        self.store = store
        self.token = token
        self.max_body = max_body
        self.clock = clock

    def _authorized(self, request: aiohttp.web.Request, expected: str) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest on bytes: it refuses non-ASCII str, and its time must not depend on the token.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())

    async def _read(self, request: aiohttp.web.Request) -> bytes | None:
        """The body, or None once it exceeds the limit (whatever Content-Length claims)."""
        if request.content_length is not None and request.content_length > self.max_body:
            return None
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self.max_body:
                return None
        return bytes(body)

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            expected = self.token()
        except Exception as exc:
            logger.warning("Refusing Alertmanager webhooks: the token cannot be loaded (%s).", type(exc).__name__)
            return _json_error(503, "the receiver's token is not available")
        if expected and not self._authorized(request, expected):
            return _json_error(401, "missing or wrong bearer token",
                               headers={"WWW-Authenticate": 'Bearer realm="vigil"'})
        raw = await self._read(request)
        if raw is None:
            return _json_error(413, f"body larger than {self.max_body} bytes")
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _json_error(400, f"body is not valid JSON: {exc}")
        try:
            message = WebhookMessage.model_validate(document)
        except pydantic.ValidationError as exc:
            return _json_error(400, "body is not an Alertmanager webhook payload (version 4)",
                               details=_validation_details(exc))
        if message.truncated_alerts:
            logger.warning("Alertmanager receiver %r truncated %d alerts of group %s; raise its max_alerts.",
                           message.receiver, message.truncated_alerts, message.group_key)
        changes = self.store.receive(message, self.clock())
        logger.debug("Received %d alerts (%s) from receiver %r; %d changes.", len(message.alerts),
                     message.status.value, message.receiver, changes)
        return aiohttp.web.json_response({"status": "ok", "received": len(message.alerts)})


def register(
    endpoint: WebEndpoint,
    store: AlertStore,
    token: TokenSource,
    *,
    path: str = PATH,
    max_body: int = MAX_BODY_BYTES,
    clock: Clock = _utcnow,
) -> Receiver:
    """Mount ``POST path`` on the operator's endpoint (before it starts). ``token()`` of None disables auth."""
    receiver = Receiver(store, token, max_body=max_body, clock=clock)
    endpoint.add_route("POST", path, receiver.handle)
    return receiver
