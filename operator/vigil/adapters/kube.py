"""A thin async Kubernetes client for what the engine does outside kopf handlers.

The central scheduler evaluates detectors on its own clock, not inside kopf
handlers, so it writes status, reads ConfigMaps and posts Events itself. It
uses the same credentials kopf uses (the login handler hands them over) and
logs in again on HTTP 401, as kopf does, so expiring tokens (EKS, IRSA) work.

Every body it writes (status, Events, RemediationActions, Leases) goes through
:func:`vigil.adapters.redaction.redact_strings` first: a secret that slipped into
a message by mistake does not reach etcd.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import kopf

from vigil import __version__
from vigil.adapters import redaction

logger = logging.getLogger(__name__)

Login = Callable[[], Awaitable[kopf.ConnectionInfo]]


class KubeError(Exception):
    """A non-success answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


#: How often one request is retried when the API server answers 429, and the longest wait honoured.
RETRIES_ON_429 = 5
MAX_RETRY_AFTER = 5.0


def _retry_after(header: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.1, float(header or 1)))
    except ValueError:
        return 1.0


class KubeClient:
    """JSON over HTTP to the API server, with kopf's credentials."""

    def __init__(self, login: Login, timeout: float = 30.0, component: str = "vigil") -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None
        self._lock = asyncio.Lock()
        self.component = component
        self.instance = socket.gethostname()

    async def _connect(self, force: bool = False) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        async with self._lock:
            if force or self._session is None or self._info is None:
                if self._session is not None:
                    await self._session.close()
                info = await self._login()
                ssl_context: ssl.SSLContext | bool = info.as_ssl_context()
                if info.insecure:
                    ssl_context = False
                self._session = aiohttp.ClientSession(
                    base_url=None,
                    # Named in the API server's audit log (userAgent), beside kopf's own `kopf/<version>`.
                    headers={**info.as_http_headers(), "User-Agent": f"{self.component}/{__version__}"},
                    connector=aiohttp.TCPConnector(ssl=ssl_context, limit=32),
                    timeout=self._timeout,
                )
                self._info = info
            return self._session, self._info

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; on 401 log in again once; on 429 wait as the server asks (``Retry-After``, at most
        :data:`MAX_RETRY_AFTER` s) and try again, up to :data:`RETRIES_ON_429` times, as client-go does (a
        CRD just Established answers 429 "storage is (re)initializing" for a moment). Raises :class:`KubeError`."""
        if body is not None:
            body = redaction.redact_strings(body)
        relogged = False
        throttled = 0
        while True:
            session, info = await self._connect(force=relogged)
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            async with session.request(method, info.server.rstrip("/") + path, json=body, headers=headers) as r:
                if r.status == 401 and not relogged:
                    relogged = True
                    continue
                if r.status == 429 and throttled < RETRIES_ON_429:
                    throttled += 1
                    await asyncio.sleep(_retry_after(r.headers.get("Retry-After")))
                    continue
                try:
                    payload = await r.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    payload = {"message": (await r.text())[:500]}
                if r.status >= 400:
                    payload = payload if isinstance(payload, dict) else {}
                    raise KubeError(r.status, str(payload.get("reason", r.reason)), str(payload.get("message", "")))
                return payload

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request("GET", path)
            return result
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def patch_status(self, api_version: str, plural: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch ``.status`` through the status subresource. ``None`` values delete fields."""
        path = f"/apis/{api_version}/namespaces/{namespace}/{plural}/{name}/status"
        result: dict[str, Any] = await self.request(
            "PATCH", path, {"status": status}, "application/merge-patch+json"
        )
        return result

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    async def post_event(
        self,
        involved: dict[str, Any],
        type: str,
        reason: str,
        message: str,
        now: datetime.datetime | None = None,
    ) -> None:
        """Create a core/v1 Event about ``involved`` (apiVersion, kind, namespace, name, uid)."""
        now = now or datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = involved.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", event)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
