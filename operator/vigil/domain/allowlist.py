"""Which Prometheus URLs a detector may name (``--prometheus-allowed-urls``).

``spec.prometheus.url`` is written by whoever may create an AnomalyDetector, and the operator
sends requests to it from inside the cluster with its own network position: without a list, any
namespace user could make it query the cloud metadata service, the API server or any internal
service (SSRF, issue 11 item 8). So an administrator lists the Prometheus base URLs detectors may
use; the default ``--prometheus-url`` is always allowed. With no list, only the default is.

Entries are compared parsed, never as raw string prefixes (``http://prom`` must not admit
``http://prom.evil.example``): same scheme, same host (case-insensitive), same port (default ports
filled in), and the detector's path equal to the entry's or below it at a ``/`` boundary. ``*``
allows any URL, for clusters that accept the risk.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterable

ANY = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True)
class _Base:
    scheme: str
    host: str
    port: int
    path: str

    def covers(self, other: _Base) -> bool:
        if (self.scheme, self.host, self.port) != (other.scheme, other.host, other.port):
            return False
        return other.path == self.path or other.path.startswith(self.path + "/") or self.path == ""


def _parse(url: str) -> _Base:
    """A base URL's parts; ValueError for anything that is not a plain http(s) base URL."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query (?) or fragment (#)")
    return _Base(parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme],
                 parts.path.rstrip("/"))


@dataclasses.dataclass(frozen=True)
class AllowList:
    """The URLs detectors may query: the operator's default plus the administrator's entries."""

    entries: tuple[str, ...] = ()
    default_url: str | None = None

    def __post_init__(self) -> None:
        for entry in self.entries:
            if entry != ANY:
                try:
                    _parse(entry)
                except ValueError as exc:
                    raise ValueError(f"--prometheus-allowed-urls entry {entry!r} {exc}") from None

    @classmethod
    def parse(cls, text: str | Iterable[str] | None, default_url: str | None) -> AllowList:
        """From the flag's comma-separated value (or a list); blank entries are ignored."""
        items = text.split(",") if isinstance(text, str) else list(text or ())
        return cls(tuple(item.strip() for item in items if item.strip()), default_url)

    @property
    def open(self) -> bool:
        return ANY in self.entries

    def allows(self, url: str) -> bool:
        """True if a detector may query ``url``."""
        if self.open:
            return True
        try:
            wanted = _parse(url)
        except ValueError:
            return False
        bases = [*self.entries, *([self.default_url] if self.default_url else [])]
        for base in bases:
            try:
                if _parse(base).covers(wanted):
                    return True
            except ValueError:
                continue
        return False

    def why_not(self, url: str) -> str:
        """The condition message for a refused URL (the URL itself is the user's own spec, bounded)."""
        shown = url if len(url) <= 200 else url[:199] + "…"
        try:
            _parse(url)
        except ValueError as exc:
            return f"spec.prometheus.url {shown} {exc}"
        return (f"spec.prometheus.url {shown} is not in the operator's allow-list (--prometheus-allowed-urls); "
                "ask the operator's administrator to add it, or omit the field to use the default Prometheus")
