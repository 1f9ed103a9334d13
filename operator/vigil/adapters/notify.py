"""Deliver notifications to Slack, Discord and generic webhooks, with URLs read from Secrets.

A webhook URL is a credential: whoever holds a Slack or Discord webhook URL can
post to the channel. So URLs come only from Secrets, live only in this module's
memory, and every text that leaves it (log records, :class:`Delivery` errors,
and through them the action's status and events) names the Secret instead:
``slack webhook (secret ns/name key url)``. aiohttp puts URLs into some of its
exception messages, so exception text is never passed on: failures are described
by their class and OS error only, and redacted once more before they leave.

A receiver's answer is never passed on either: a webhook may echo its own token
(or anything else) back in the body or a header of an error, so a failure reads
``HTTP <status>`` plus a fixed reason (``rate limited``), nothing the receiver
wrote. The URL and its long path and query pieces are also handed to
:mod:`vigil.adapters.redaction`, which scrubs them from every log record and
Event as defense in depth.

Delivery is best effort and never raises: a chat outage must not stop a
remediation, but it must show (``Delivery.ok`` is False, the caller reports
``NotificationFailed``). Transient failures (429, 5xx, connection errors,
timeouts) are retried with backoff, honouring ``Retry-After``; other 4xx mean
the request or the URL is wrong and retrying would not help.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime
import email.utils
import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from vigil import __version__
from vigil.adapters import redaction
from vigil.adapters.kube import KubeClient, KubeError
from vigil.api.v1alpha1.policy import Channel, Notify, SecretKeyRef
from vigil.domain import notifications
from vigil.domain.notifications import ChannelKind, NotificationEvent

logger = logging.getLogger(__name__)

#: Plain http is allowed only to these hosts (tests and the local sandbox); everything else needs https.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Answers after which the cached URL is dropped: the webhook was revoked or rotated.
_STALE_URL_STATUSES = frozenset({401, 403, 404, 410})


@dataclasses.dataclass(frozen=True)
class Delivery:
    """The outcome for one channel. ``error`` is redacted: it never contains the URL."""

    channel: str
    ok: bool
    error: str | None = None


class _Undeliverable(Exception):
    """A delivery failure whose message is already safe to show (no URL in it)."""


def channel_label(channel: ChannelKind, namespace: str, ref: SecretKeyRef) -> str:
    """How a channel is named wherever its URL would otherwise appear."""
    return f"{channel.value} webhook (secret {namespace}/{ref.name} key {ref.key})"


def redact(text: str, url: str | None) -> str:
    """``text`` with the URL, its path, its query and their long pieces replaced, and anything else
    :mod:`vigil.adapters.redaction` knows to be secret."""
    if url:
        redaction.remember_url(url)
    return redaction.redact(text)


def check_url(url: str, label: str) -> None:
    """Refuse anything but https (and plain http to loopback). Raises with a redacted message."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError:
        raise _Undeliverable(f"{label}: the value is not a valid URL") from None
    if not host or any(c.isspace() or ord(c) < 32 for c in url):
        raise _Undeliverable(f"{label}: the value is not a valid URL")
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return
    raise _Undeliverable(f"{label}: only https:// URLs are allowed (http:// only to 127.0.0.1 or localhost)")


def retry_after(headers: Mapping[str, str], body: Any, now: datetime.datetime) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or Discord's JSON ``retry_after``."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            return max((when - now).total_seconds(), 0.0)
    if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
        return max(float(body["retry_after"]), 0.0)
    return None


def _describe(exc: BaseException, timeout: float) -> str:
    """A failure in words that cannot contain the URL (never ``str(exc)`` of aiohttp errors)."""
    if isinstance(exc, TimeoutError):
        return f"timed out ({timeout:g}s)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the value is not a valid URL"
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        reason = os.strerror(code) if code else type(exc.os_error).__name__
        return f"connection failed ({reason})"
    return f"request failed ({type(exc).__name__})"


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: the network or the peer may recover; a bad URL or TLS setup will not."""
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.InvalidURL):
        return False
    return isinstance(exc, aiohttp.ClientConnectionError | TimeoutError)


class Notifier:
    """Sends one event to every channel of a policy's ``notify``; one per operator process.

    ``sleep`` and ``clock`` are injectable so tests can check backoff and caching
    without waiting.
    """

    def __init__(
        self,
        kube: KubeClient,
        timeout: float = 10,
        attempts: int = 3,
        *,
        secret_ttl: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.kube = kube
        self.timeout = timeout
        self.attempts = attempts
        self.secret_ttl = secret_ttl
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._clock = clock
        self._sleep = sleep
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._secret_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def notify(self, namespace: str, notify_spec: Notify | None, event: NotificationEvent) -> list[Delivery]:
        """Deliver ``event`` to each configured channel concurrently; never raises for a channel's failure."""
        if notify_spec is None:
            return []
        targets = [(kind, channel) for kind in ChannelKind
                   if (channel := getattr(notify_spec, kind.value)) is not None]
        return list(await asyncio.gather(*(self._deliver(namespace, kind, channel, event)
                                           for kind, channel in targets)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, namespace: str, kind: ChannelKind, channel: Channel,
                       event: NotificationEvent) -> Delivery:
        ref = channel.url_secret_ref
        label = channel_label(kind, namespace, ref)
        url: str | None = None
        try:
            url = await self._url(namespace, ref, label)
            await self._post(url, notifications.payload(kind, event), label, (namespace, ref.name))
        except _Undeliverable as exc:
            error = redact(str(exc), url)
        except Exception as exc:  # whatever it is, its text may hold the URL
            error = redact(f"{label}: {_describe(exc, self.timeout)}", url)
        else:
            logger.info("Sent %s about %s/%s to the %s.", event.kind.value, namespace, event.action, label)
            return Delivery(kind.value, True)
        logger.warning("Could not send %s about %s/%s: %s", event.kind.value, namespace, event.action, error)
        return Delivery(kind.value, False, error)

    async def _secret_data(self, namespace: str, name: str) -> dict[str, str]:
        # Channels sharing a Secret are sent concurrently: let them share one read, too.
        async with self._secret_locks.setdefault((namespace, name), asyncio.Lock()):
            cached = self._secrets.get((namespace, name))
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            return await self._read_secret(namespace, name)

    async def _read_secret(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret = await self.kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except KubeError as exc:
            raise _Undeliverable(f"cannot read secret {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:
            raise _Undeliverable(f"cannot read secret {namespace}/{name}: {type(exc).__name__}") from None
        if secret is None:
            raise _Undeliverable(f"secret {namespace}/{name} not found")
        data = secret.get("data") or {}
        data = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        self._secrets[(namespace, name)] = (self._clock() + self.secret_ttl, data)
        return data

    async def _url(self, namespace: str, ref: SecretKeyRef, label: str) -> str:
        data = await self._secret_data(namespace, ref.name)
        if ref.key not in data:
            raise _Undeliverable(f"secret {namespace}/{ref.name} has no key {ref.key}")
        try:
            url = base64.b64decode(data[ref.key], validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise _Undeliverable(f"secret {namespace}/{ref.name} key {ref.key} is not valid base64 UTF-8") from None
        if not url:
            raise _Undeliverable(f"secret {namespace}/{ref.name} key {ref.key} is empty")
        redaction.remember_url(url)
        check_url(url, label)
        return url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": f"vigil/{__version__}"},
            )
        return self._session

    async def _post(self, url: str, body: dict[str, Any], label: str, secret: tuple[str, str]) -> None:
        """POST with retries; returns on 2xx, raises :class:`_Undeliverable` otherwise."""
        problem = "not sent"
        for attempt in range(1, self.attempts + 1):
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            try:
                # No redirects: a 3xx to an http:// URL would bypass check_url.
                async with self._client().post(url, json=body, allow_redirects=False) as response:
                    if 200 <= response.status < 300:
                        return
                    # The body and headers are the receiver's words, not ours: they may echo the token
                    # (or anything) back, so none of them is ever logged, recorded or raised.
                    problem = f"HTTP {response.status}"
                    if response.status == 429:
                        try:
                            answer = await response.json(content_type=None)
                        except ValueError:
                            answer = None
                        wait = retry_after(response.headers, answer, datetime.datetime.now(datetime.UTC))
                        delay = wait if wait is not None else delay
                        problem = "HTTP 429 (rate limited)"
                    elif response.status < 500:
                        if response.status in _STALE_URL_STATUSES:
                            self._secrets.pop(secret, None)
                        raise _Undeliverable(f"{label}: {problem}")
            except _Undeliverable:
                raise
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = _describe(exc, self.timeout)
                if not _transient(exc):
                    raise _Undeliverable(f"{label}: {problem}") from None
            if attempt == self.attempts:
                break
            if delay > self.max_retry_after:
                raise _Undeliverable(f"{label}: {problem}; Retry-After {delay:.0f}s exceeds {self.max_retry_after:g}s")
            logger.debug("Retrying the %s in %.2fs after %s (attempt %d of %d).", label, delay, problem,
                         attempt, self.attempts)
            await self._sleep(delay)
        plural = "s" if self.attempts > 1 else ""
        raise _Undeliverable(f"{label}: {problem} after {self.attempts} attempt{plural}")
