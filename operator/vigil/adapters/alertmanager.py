"""Receive Alertmanager's webhook (``POST /alertmanager``) and remember which alerts fire now.

Policies with an ``alertSelector`` act on alerts as well as on detectors, so the
engine needs "which alerts are firing right now, in this namespace, with which
labels". Alertmanager pushes; this module keeps what it pushed in an
:class:`AlertStore` and wakes the engine through ``on_change``.

The one rule that matters: never act on a stale alert. Alertmanager zeroes
``endsAt`` of *firing* alerts in webhook payloads (``types.Alerts``: "if the end
timestamp is not reached yet, do not expose it") and sends a group again only
every ``repeat_interval`` while nothing changes. So a firing alert is believed
for ``ttl`` after it was last received (or until its ``endsAt``, if a sender set
one and it comes sooner) and then expires by itself. Route alerts to Vigil with
``repeat_interval`` below the store's ``ttl`` and ``send_resolved: true``.

An alert can make the operator act on cloud resources, so the receiver is a
security boundary (issue 11, item 3):

- **Authentication is required.** Without a token (``--alertmanager-token-file``)
  every request is refused (403) unless the operator was started with the
  explicit opt-out ``--alertmanager-allow-unauthenticated``. The token is
  compared in constant time; an unreadable or empty token file refuses (503),
  it never means "no authentication". A forged ``resolved`` needs the token too.
- **An alert acts only in its own namespace.** It must carry a ``namespace``
  label and only matches RemediationPolicies of that namespace; without one it
  is ignored (counted, logged once per request).

And it must not be a way to exhaust the operator (item 7): the body is limited
while it is read, deeply nested JSON is a 400, one alert's labels are bounded
(bigger label sets are refused, oversized annotations dropped), and the store is
bounded by (estimated) bytes with O(1) eviction of the least recently received
alert. Logging is one line per request, never one per alert.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import hmac
import json
import logging
import pathlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import aiohttp.web
import pydantic
from pydantic import AfterValidator, Field
from pydantic.alias_generators import to_camel

from vigil.adapters.web import WebEndpoint
from vigil.api.v1alpha1.policy import LabelSelector
from vigil.domain import selectors

if TYPE_CHECKING:
    from vigil.adapters.metrics import OperatorMetrics

logger = logging.getLogger(__name__)

PATH = "/alertmanager"
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TTL = datetime.timedelta(minutes=15)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
NAMESPACE_LABEL = "namespace"
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
class AlertLimits:
    """What one alert may hold. Labels are its identity and end up in a RemediationAction's
    ``spec.reason`` (etcd), so an alert with more is refused; annotations are only kept for
    reference, so oversized ones are dropped and the alert is kept. Sizes count characters."""

    max_labels: int = 64
    max_label_chars: int = 8 * 1024
    """Names and values of all labels together."""
    max_annotation_chars: int = 16 * 1024
    """Names and values of all annotations together; more: the annotations are not stored."""
    max_url_chars: int = 2 * 1024
    """``generatorURL``; longer: not stored."""
    max_fingerprint_chars: int = 128
    """Alertmanager's fingerprints have 16 hex digits; a longer one is refused like oversized labels."""


@dataclasses.dataclass(slots=True)
class StoredAlert:
    """A firing alert as last received, with the moment it stops being believed.

    Read-only by convention: not ``frozen``, because a frozen dataclass costs three times as
    much to build, and an 18k-alert request builds 18k of them."""

    key: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: datetime.datetime | None
    ends_at: datetime.datetime | None
    generator_url: str
    receiver: str
    received_at: datetime.datetime
    expires_at: datetime.datetime
    size: int = 0
    """Estimated bytes this entry keeps alive: its strings, dicts and a fixed per-entry overhead."""

    def active(self, now: datetime.datetime) -> bool:
        return now < self.expires_at


@dataclasses.dataclass
class Receipt:
    """What one webhook message did to the store: the receiver logs it as one line and counts it."""

    received: int = 0
    changes: int = 0
    no_namespace: int = 0
    """Alerts without a ``namespace`` label: they can match no policy, so they are not stored."""
    too_large: int = 0
    """Alerts whose labels (or fingerprint) exceed :class:`AlertLimits`: refused."""
    trimmed: int = 0
    """Alerts stored without their oversized annotations or generatorURL."""
    evicted: int = 0
    """Older alerts dropped to keep the store under its byte budget."""

    @property
    def ignored(self) -> int:
        return self.no_namespace + self.too_large


# CPython's per-entry costs, so that the estimate follows what the process really holds: the
# StoredAlert itself, its two timestamps, and its slots in the ordered dict and the namespace index.
_ENTRY_OVERHEAD = (sys.getsizeof(StoredAlert("", "", {}, {}, "", None, None, "", "", _utcnow(), _utcnow()))
                   + 2 * sys.getsizeof(_utcnow()) + 200)


def _measure(mapping: Mapping[str, str]) -> tuple[int, int]:
    """(characters, estimated bytes) of a label or annotation map: the dict and every string
    (``sys.getsizeof``, so non-ASCII text costs what it really costs). One pass: it runs for every
    alert of every request."""
    chars, size = 0, sys.getsizeof(mapping)
    getsizeof = sys.getsizeof
    for name, value in mapping.items():
        chars += len(name) + len(value)
        size += getsizeof(name) + getsizeof(value)
    return chars, size


_encode_key = json.JSONEncoder(separators=(",", ":")).encode


def alert_key(alert: Alert) -> str:
    """Alertmanager's fingerprint, or the sorted label set when a sender left it out."""
    if alert.fingerprint:
        return f"fp:{alert.fingerprint}"
    return "labels:" + _encode_key(sorted(alert.labels.items()))


class AlertStore:
    """Firing alerts in memory, keyed by :func:`alert_key`, indexed by namespace; expired ones vanish.

    Memory is bounded by ``max_bytes``, estimated per alert (``StoredAlert.size``): when an alert would go over it,
    the least recently received alerts are dropped, in O(1) each (an ordered dict, oldest
    first). Expired alerts are dropped first, lazily: the oldest received expires first.

    Not thread-safe: use it from the event loop that serves the webhook.
    ``on_change`` is called (without arguments) when the set of active alerts or
    their labels changed; a re-send that only extends an alert's life is no change,
    so the engine is not woken every ``repeat_interval``.
    """

    def __init__(
        self,
        ttl: datetime.timedelta = DEFAULT_TTL,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_change: Callable[[], None] | None = None,
        limits: AlertLimits = AlertLimits(),
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.on_change = on_change
        self.limits = limits
        self._alerts: collections.OrderedDict[str, StoredAlert] = collections.OrderedDict()  # oldest received first
        self._by_namespace: dict[str, dict[str, StoredAlert]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._alerts)

    @property
    def size_bytes(self) -> int:
        """Estimated bytes held by the stored alerts (never above ``max_bytes`` after a call returns)."""
        return self._bytes

    def upsert(self, alert: Alert, now: datetime.datetime, receiver: str = "") -> bool:
        """Record one received alert; True (and ``on_change`` called) if the active set changed."""
        changed = self._apply(alert, now, now + self.ttl, receiver, Receipt())
        if changed:
            self._changed()
        return changed

    def receive(self, message: WebhookMessage, now: datetime.datetime) -> Receipt:
        """Record every alert of a webhook message; ``on_change`` is called at most once."""
        receipt = Receipt(received=len(message.alerts))
        expires_at = now + self.ttl
        for alert in message.alerts:
            receipt.changes += self._apply(alert, now, expires_at, message.receiver, receipt)
        if receipt.changes:
            self._changed()
        return receipt

    def active(self, now: datetime.datetime) -> list[StoredAlert]:
        """Firing alerts not yet expired at ``now``, sorted by key (stable for callers that diff)."""
        for key in [k for k, a in self._alerts.items() if not a.active(now)]:
            self._remove(key)
        return sorted(self._alerts.values(), key=lambda a: a.key)

    def firing(self, namespace: str, selector: LabelSelector, now: datetime.datetime) -> list[StoredAlert]:
        """Active alerts whose ``namespace`` label is ``namespace`` and whose labels satisfy ``selector``:
        what may trigger a RemediationPolicy of that namespace. Sorted by key."""
        bucket = self._by_namespace.get(namespace)
        if not bucket:
            return []
        for key in [k for k, a in bucket.items() if not a.active(now)]:
            self._remove(key)
        return sorted((a for a in bucket.values() if selectors.matches(selector, a.labels)), key=lambda a: a.key)

    def next_expiry(self, now: datetime.datetime) -> datetime.datetime | None:
        """When the next active alert expires, so the engine can re-evaluate then."""
        return min((a.expires_at for a in self.active(now)), default=None)

    def _apply(self, alert: Alert, now: datetime.datetime, expires_at: datetime.datetime, receiver: str,
               receipt: Receipt) -> bool:
        """Record one alert (``expires_at``: now + ttl, computed once per message). Per-alert work is
        kept to O(labels + annotations): this runs 18k times for an 18k-alert request."""
        labels = alert.labels
        namespace = labels.get(NAMESPACE_LABEL)
        if not namespace:
            receipt.no_namespace += 1
            return False
        limits = self.limits
        label_chars, label_bytes = _measure(labels)
        if (len(labels) > limits.max_labels or label_chars > limits.max_label_chars
                or len(alert.fingerprint) > limits.max_fingerprint_chars):
            receipt.too_large += 1
            return False
        key = alert_key(alert)
        previous = self._alerts.get(key)
        was_active = previous is not None and previous.active(now)
        ends_at = alert.ends_at
        if alert.status == AlertStatus.RESOLVED or (ends_at is not None and ends_at <= now):
            if previous is not None and _older(alert.starts_at, previous.starts_at):
                return False  # a late resolve of an earlier firing of the same alert
            if previous is not None:
                self._remove(key)
            return was_active
        if ends_at is not None and ends_at < expires_at:
            expires_at = ends_at
        annotations, url = alert.annotations, alert.generator_url
        annotation_chars, annotation_bytes = _measure(annotations)
        if annotation_chars > limits.max_annotation_chars or len(url) > limits.max_url_chars:
            receipt.trimmed += 1
            if annotation_chars > limits.max_annotation_chars:
                annotations = {}
                annotation_bytes = sys.getsizeof(annotations)
            if len(url) > limits.max_url_chars:
                url = ""
        # The message is dropped after the request: its dicts are kept as they are, not copied.
        # ``receiver`` and ``now`` are shared by the whole message, so they are not counted per alert.
        size = (_ENTRY_OVERHEAD + label_bytes + annotation_bytes + sys.getsizeof(key)
                + sys.getsizeof(alert.fingerprint) + sys.getsizeof(url))
        stored = StoredAlert(key, namespace, labels, annotations, alert.fingerprint, alert.starts_at, ends_at, url,
                             receiver, now, expires_at, size)
        if previous is not None:
            self._remove(key)
        self._insert(stored)
        if self._bytes > self.max_bytes:
            receipt.evicted += self._bound(now)
        return not was_active or previous is None or (
            previous.labels, previous.annotations, previous.starts_at) != (
            stored.labels, stored.annotations, stored.starts_at)

    def _insert(self, stored: StoredAlert) -> None:
        self._alerts[stored.key] = stored
        self._by_namespace.setdefault(stored.namespace, {})[stored.key] = stored
        self._bytes += stored.size

    def _remove(self, key: str) -> None:
        stored = self._alerts.pop(key, None)
        if stored is None:
            return
        self._bytes -= stored.size
        bucket = self._by_namespace[stored.namespace]
        del bucket[key]
        if not bucket:
            del self._by_namespace[stored.namespace]

    def _bound(self, now: datetime.datetime) -> int:
        """Drop the least recently received alerts while over budget; expired ones do not count as
        evicted. O(1) per dropped alert. Returns how many active alerts were evicted."""
        evicted = 0
        while self._bytes > self.max_bytes and self._alerts:
            oldest = next(iter(self._alerts.values()))
            evicted += oldest.active(now)
            self._remove(oldest.key)
        return evicted

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

    An unreadable or empty file raises, and the receiver then answers 503: a configured but
    missing token must never mean "no authentication".
    """
    file = pathlib.Path(path)

    def read() -> str | None:
        token = file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError("the token file is empty")
        return token

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


DISABLED = "receiver disabled: no token configured"


class Receiver:
    """The request handler; :func:`register` mounts it.

    ``token`` None (or a source returning None) and no ``allow_unauthenticated``: the receiver is
    disabled and refuses every request with 403, logging that once.
    """

    def __init__(self, store: AlertStore, token: TokenSource | None, *, allow_unauthenticated: bool = False,
                 max_body: int = MAX_BODY_BYTES, clock: Clock = _utcnow,
                 metrics: OperatorMetrics | None = None) -> None:
        self.store = store
        self.token = token
        self.allow_unauthenticated = allow_unauthenticated
        self.max_body = max_body
        self.clock = clock
        self.metrics = metrics
        self._told_disabled = False

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

    def _refusal(self, request: aiohttp.web.Request) -> aiohttp.web.Response | None:
        """401/403/503 when the request may not post alerts, None when it may."""
        try:
            expected = self.token() if self.token is not None else None
        except Exception as exc:
            logger.warning("Refusing Alertmanager webhooks: the token cannot be loaded (%s).", type(exc).__name__)
            return _json_error(503, "the receiver's token is not available")
        if expected:
            if self._authorized(request, expected):
                return None
            return _json_error(401, "missing or wrong bearer token",
                               headers={"WWW-Authenticate": 'Bearer realm="vigil"'})
        if self.allow_unauthenticated:
            return None
        if not self._told_disabled:
            self._told_disabled = True
            logger.warning("Refused POST %s: %s (set --alertmanager-token-file, or --alertmanager-allow-"
                           "unauthenticated to accept alerts without one). Further refusals are not logged.",
                           request.path, DISABLED)
        return _json_error(403, DISABLED)

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        response = await self._handle(request)
        if self.metrics is not None:
            self.metrics.alertmanager_requests.labels(str(response.status)).inc()
        return response

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        raw = await self._read(request)
        if raw is None:
            return _json_error(413, f"body larger than {self.max_body} bytes")
        try:
            document = json.loads(raw)
        except RecursionError:
            return _json_error(400, "body is not valid JSON: nested too deeply")
        except (ValueError, UnicodeDecodeError) as exc:
            return _json_error(400, f"body is not valid JSON: {exc}")
        try:
            message = WebhookMessage.model_validate(document)
        except pydantic.ValidationError as exc:
            return _json_error(400, "body is not an Alertmanager webhook payload (version 4)",
                               details=_validation_details(exc))
        except RecursionError:  # pydantic-core bounds its own recursion; this is belt and braces
            return _json_error(400, "body is not an Alertmanager webhook payload: nested too deeply")
        receipt = self.store.receive(message, self.clock())
        self._record(message, receipt)
        body: dict[str, Any] = {"status": "ok", "received": receipt.received}
        if receipt.ignored:
            body["ignored"] = {key: value for key, value in
                               (("noNamespaceLabel", receipt.no_namespace), ("labelsTooLarge", receipt.too_large))
                               if value}
        return aiohttp.web.json_response(body)

    def _record(self, message: WebhookMessage, receipt: Receipt) -> None:
        """One log line per request (a warning when something was lost), and the counters."""
        if self.metrics is not None:
            self.metrics.alerts_received.inc(receipt.received)
            for reason, count in (("no-namespace", receipt.no_namespace), ("too-large", receipt.too_large),
                                  ("evicted", receipt.evicted)):
                if count:
                    self.metrics.alerts_dropped.labels(reason).inc(count)
            self.metrics.alert_store_bytes.set(self.store.size_bytes)
        problems = [text for count, text in (
            (receipt.no_namespace, f"{receipt.no_namespace} without a {NAMESPACE_LABEL!r} label (ignored: they "
                                   "match no policy)"),
            (receipt.too_large, f"{receipt.too_large} with labels or fingerprint over the limits (ignored)"),
            (receipt.trimmed, f"{receipt.trimmed} stored without their oversized annotations or generatorURL"),
            (receipt.evicted, f"{receipt.evicted} older alerts evicted (store over {self.store.max_bytes} bytes; "
                              "--alertmanager-max-bytes)"),
            (message.truncated_alerts, f"Alertmanager truncated {message.truncated_alerts} alerts (raise the "
                                       "receiver's max_alerts)"),
        ) if count]
        level = logging.WARNING if problems else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(level, "Alertmanager receiver %r, group %s: %d alerts (%s), %d changes%s.",
                       message.receiver, message.group_key, receipt.received, message.status.value,
                       receipt.changes, "; " + "; ".join(problems) if problems else "")


def register(
    endpoint: WebEndpoint,
    store: AlertStore,
    token: TokenSource | None,
    *,
    allow_unauthenticated: bool = False,
    path: str = PATH,
    max_body: int = MAX_BODY_BYTES,
    clock: Clock = _utcnow,
    metrics: OperatorMetrics | None = None,
) -> Receiver:
    """Mount ``POST path`` on the operator's endpoint (before it starts).

    Without ``token`` the route refuses everything (403) unless ``allow_unauthenticated``.
    """
    receiver = Receiver(store, token, allow_unauthenticated=allow_unauthenticated, max_body=max_body,
                        clock=clock, metrics=metrics)
    endpoint.add_route("POST", path, receiver.handle)
    return receiver


def describe(token_file: str | None, allow_unauthenticated: bool, port: int | None) -> tuple[int, str]:
    """The one startup line saying how ``POST /alertmanager`` is protected: (log level, message)."""
    if token_file:
        return logging.INFO, (f"Alertmanager receiver POST {PATH}: requires the bearer token in {token_file} "
                              "(re-read per request); alerts act only on policies of their 'namespace' label.")
    if allow_unauthenticated:
        return logging.WARNING, (f"Alertmanager receiver POST {PATH}: accepts alerts WITHOUT authentication "
                                 f"(--alertmanager-allow-unauthenticated): any client reaching port {port} can "
                                 "trigger the policies of the namespace an alert names.")
    return logging.INFO, (f"Alertmanager receiver POST {PATH}: disabled, it answers 403 (no "
                          "--alertmanager-token-file; --alertmanager-allow-unauthenticated to accept alerts "
                          "without a token).")
