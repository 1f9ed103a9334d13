"""The ChatOps component's Kubernetes client: its own credentials, optionally impersonating a person.

Reads (listing the actions waiting for approval) go out as the component's ServiceAccount; every
decision goes out as the mapped person, with ``Impersonate-User`` and one ``Impersonate-Group``
header per group. Repeated headers are why this is aiohttp and not the kubernetes client: urllib3
joins repeated names into one comma-separated value, which the API server would read as one group.

Credentials come from :mod:`vigil.adapters.kubeaccess` (in-cluster or a kubeconfig, as kubectl
finds them); the bearer token is asked for on every request, so a rotated projected token is
picked up. Nothing here logs a header.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp
from multidict import CIMultiDict

from vigil import __version__
from vigil.adapters.kubeaccess import Access
from vigil.chatops import bodies
from vigil.chatops.identity import Identity

#: The longest a single API request may take.
REQUEST_TIMEOUT = 15.0
#: An answer larger than this is refused (a list of actions is paged well below it).
MAX_ANSWER_BYTES = 16 << 20


class KubeError(Exception):
    """A non-success answer; ``message`` is the API server's (bounded), never a header."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _ssl(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file and configuration.key_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class KubeApi:
    """JSON requests to the API server; ``as_`` impersonates."""

    def __init__(self, access: Access, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self._configuration = access.configuration
        self.server = access.server.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl(self._configuration), limit=16),
                timeout=self._timeout, headers={"User-Agent": f"vigil-chatops/{__version__}"})
        return self._session

    def _headers(self, content_type: str, as_: Identity | None) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict({"Accept": "application/json", "Content-Type": content_type})
        token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        if as_ is not None:
            headers["Impersonate-User"] = as_.user
            for group in as_.groups:
                headers.add("Impersonate-Group", group)
        return headers

    async def request(self, method: str, path: str, body: Any = None, *, as_: Identity | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """One request; raises :class:`KubeError` on a non-2xx answer."""
        async with self._client().request(method, self.server + path, json=body,
                                          headers=self._headers(content_type, as_)) as answer:
            raw = await bodies.read_bounded(answer.content, MAX_ANSWER_BYTES)
            if raw is None:
                raise KubeError(answer.status, "TooLarge", f"answer larger than {MAX_ANSWER_BYTES} bytes")
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                # never read as an empty answer: a list that does not parse is not a list without items
                raise KubeError(answer.status, "BadAnswer", raw[:300].decode("utf-8", "replace")) from None
            if not isinstance(payload, dict):
                raise KubeError(answer.status, "BadAnswer", "the answer is not a JSON object")
            if answer.status >= 400:
                raise KubeError(answer.status, str(payload.get("reason") or answer.reason or ""),
                                str(payload.get("message") or "")[:1000])
            return payload

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
