"""A local stand-in for Slack, Discord and a generic webhook: it records every JSON POST.

The sandbox points the policy's notification Secrets at it, so the demo can
show what a chat channel would have received, and tests can assert on the
exact payloads (Block Kit for Slack, embeds for Discord).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from vigil_sandbox import httpserve


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class _Server(httpserve.Server):
    chat: ChatCapture


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        self.server.chat._record(Received(self.path, dict(self.headers.items()), body))
        payload = b"ok"
        self.send_response(200 if self.path != "/discord" else 204)
        self.send_header("Content-Length", "0" if self.path == "/discord" else str(len(payload)))
        self.end_headers()
        if self.path != "/discord":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the record is :attr:`ChatCapture.received`."""


class ChatCapture:
    """``/slack``, ``/discord`` and ``/webhook`` on 127.0.0.1 (any path is accepted and recorded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.chat = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="chat-capture", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ChatCapture:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]
