"""Kubernetes I/O for "Ask Vigil": a reader that can only GET, and a ConfigMap client for conversations.

Two classes, not one: :class:`ApiReader` is what gathers facts and what the LLM's tools reach, so it
has no method that writes at all. A bug, or a prompt injection that talks the model into asking, cannot
approve, reject or edit anything through it. :class:`ConfigMapClient` writes ConfigMaps of one namespace
only (the conversation store), and nothing else.

Credentials are loaded by :mod:`vigil.adapters.kubeaccess`, as ``vigil approve`` loads them (kubeconfig
with exec plugins and token files, or the in-cluster service account). The kubernetes client is
synchronous, so each call runs in a worker thread with its own timeout; every answer is bounded in
bytes before it is parsed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

from vigil.adapters import kubeaccess

#: Longest answer read from the API server for one call (a list is also bounded by ``limit``).
MAX_RESPONSE_BYTES = 8 << 20
#: Seconds one call may take.
DEFAULT_TIMEOUT = 10.0
#: Most items one list returns (the API server's ``limit``); a list is one page, never followed.
DEFAULT_LIMIT = 200


class KubeReadError(Exception):
    """A call that failed: one sentence (never a response body), and the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{urllib.parse.quote(namespace, safe='')}"
    base += f"/{plural}"
    if name:
        base += f"/{urllib.parse.quote(name, safe='')}"
    return base


class Transport:
    """One HTTP call at a time to the API server with the loaded credentials (``kubeaccess.Access``)."""

    def __init__(self, access: kubeaccess.Access, timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        import kubernetes

        self.access = access
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._client: Any = kubernetes.client.ApiClient(access.configuration)

    @property
    def namespace(self) -> str:
        """The kubeconfig context's namespace (or the pod's, in a cluster)."""
        return self.access.namespace

    def _call(self, method: str, path: str, query: Sequence[tuple[str, Any]], body: Any) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        serialized = self._client.param_serialize(method, path, query_params=list(query), header_params=headers,
                                                  body=body, auth_settings=["BearerToken"])
        try:
            response = self._client.call_api(*serialized, _request_timeout=self.timeout)
            data = response.read() or b""
        except Exception as exc:  # urllib3 errors: connection refused, reset, TLS, timeout
            raise KubeReadError(kubeaccess.describe(exc, self.access.server)) from None
        if len(data) > self.max_bytes:
            raise KubeReadError(f"{method} {path}: answer larger than {self.max_bytes} bytes", response.status)
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {}
        return int(response.status), payload

    async def call(self, method: str, path: str, query: Sequence[tuple[str, Any]] = (),
                   body: Any = None) -> tuple[int, Any]:
        return await asyncio.to_thread(self._call, method, path, query, body)

    def close(self) -> None:
        self._client.close()


def _failure(status: int, payload: Any, what: str) -> KubeReadError:
    message = payload.get("message") if isinstance(payload, dict) else None
    text = str(message)[:300] if message else f"HTTP {status}"
    if status == 403:
        return KubeReadError(f"not allowed to read {what}: {text}", status)
    return KubeReadError(f"{what}: HTTP {status}: {text}", status)


class ApiReader:
    """Read-only access to the API server: ``get`` and ``list``, nothing that writes.

    Satisfies :class:`vigil.chatops.facts.KubeReader`.
    """

    def __init__(self, transport: Transport, limit: int = DEFAULT_LIMIT) -> None:
        self._transport = transport
        self.limit = limit

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> ApiReader:
        """Credentials as kubectl finds them (the kubeconfig first, then in-cluster). Raises kubeaccess.AccessError."""
        return cls(Transport(kubeaccess.load(kubeconfig, in_cluster_first=False), timeout))

    @property
    def default_namespace(self) -> str:
        return self._transport.namespace

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        status, payload = await self._transport.call("GET", _path(api_version, plural, namespace, name))
        if status == 404:
            return None
        if status >= 400 or not isinstance(payload, dict):
            raise _failure(status, payload, f"{plural} {namespace or ''}/{name}")
        return payload

    async def list(self, api_version: str, plural: str, namespace: str | None, *, label_selector: str = "",
                   field_selector: str = "", limit: int | None = None) -> list[dict[str, Any]]:
        """One page of at most ``limit`` items (namespace None: all namespaces)."""
        query: list[tuple[str, Any]] = [("limit", min(limit or self.limit, self.limit))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        status, payload = await self._transport.call("GET", _path(api_version, plural, namespace), query)
        if status >= 400 or not isinstance(payload, dict):
            raise _failure(status, payload, f"{plural} in {namespace or 'all namespaces'}")
        items = payload.get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def close(self) -> None:
        self._transport.close()


class ConfigMapClient:
    """ConfigMaps of one namespace: what the conversation store keeps its threads in.

    Satisfies :class:`vigil.chatops.conversation.ConfigMaps`. ``replace`` sends the
    ``resourceVersion`` it read, so two writers of one thread never lose each other's turns silently:
    the second gets :class:`KubeReadError` with status 409 and reads again.
    """

    def __init__(self, transport: Transport, namespace: str) -> None:
        self._transport = transport
        self.namespace = namespace

    def _where(self, name: str | None = None) -> str:
        return _path("v1", "configmaps", self.namespace, name)

    async def get(self, name: str) -> dict[str, Any] | None:
        status, payload = await self._transport.call("GET", self._where(name))
        if status == 404:
            return None
        if status >= 400 or not isinstance(payload, dict):
            raise _failure(status, payload, f"configmap {self.namespace}/{name}")
        return payload

    async def list(self, label_selector: str, limit: int = 500) -> list[dict[str, Any]]:
        status, payload = await self._transport.call(
            "GET", self._where(), [("labelSelector", label_selector), ("limit", limit)])
        if status >= 400 or not isinstance(payload, dict):
            raise _failure(status, payload, f"configmaps in {self.namespace}")
        items = payload.get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        status, payload = await self._transport.call("POST", self._where(), body=body)
        if status >= 400 or not isinstance(payload, dict):
            raise _failure(status, payload, f"configmap {self.namespace}/{body['metadata']['name']}")
        return payload

    async def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        status, payload = await self._transport.call("PUT", self._where(name), body=body)
        if status >= 400 or not isinstance(payload, dict):
            raise _failure(status, payload, f"configmap {self.namespace}/{name}")
        return payload

    async def delete(self, name: str) -> None:
        status, payload = await self._transport.call("DELETE", self._where(name))
        if status >= 400 and status != 404:
            raise _failure(status, payload, f"configmap {self.namespace}/{name}")
