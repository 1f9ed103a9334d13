"""A local Discord for the tests: the REST calls Vigil makes, and interactions signed as Discord signs them.

REST (discord.com/developers/docs), under ``/api/v10``:

* ``POST /channels/{id}/messages`` and ``PATCH /channels/{id}/messages/{message}`` with
  ``Authorization: Bot <token>`` (401 ``{"message": "401: Unauthorized", "code": 0}`` otherwise;
  404 ``Unknown Message`` / ``Unknown Channel``);
* ``PATCH /webhooks/{application}/{token}/messages/@original`` and ``POST /webhooks/{application}/{token}``
  (interaction follow-ups, authorised by the interaction token in the path, no header).

:func:`sign` signs an interaction body the way Discord does: Ed25519 over timestamp + body, hex in
``X-Signature-Ed25519``, the timestamp in ``X-Signature-Timestamp``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import nacl.signing
from aiohttp import web

from tests.harness import wait_for
from vigil_sandbox.ports import free_port

BOT_TOKEN = "discord-bot-token-0000.vigil.test"
APPLICATION_ID = "1100000000000000001"


def sign(key: nacl.signing.SigningKey, body: bytes, timestamp: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    signature = key.sign(stamp.encode() + body).signature.hex()
    return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp, "Content-Type": "application/json"}


class DiscordServer:
    def __init__(self, channels: tuple[str, ...] = ("1200000000000000001",)) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api/v10"
        self.channels = set(channels)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.interaction_tokens: set[str] = set()
        self._ids = itertools.count(1300000000000000001)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="discord-api", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> DiscordServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v10/channels/{channel}/messages", self._create)
        app.router.add_patch("/api/v10/channels/{channel}/messages/{message}", self._edit)
        app.router.add_patch("/api/v10/webhooks/{application}/{token}/messages/@original", self._original)
        app.router.add_post("/api/v10/webhooks/{application}/{token}", self._followup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append((request.method, request.path, body))

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if request.headers.get("Authorization") != f"Bot {BOT_TOKEN}":
            return self._unauthorized()
        channel = request.match_info["channel"]
        if channel not in self.channels:
            return web.json_response({"message": "Unknown Channel", "code": 10003}, status=404)
        message = {**body, "id": str(next(self._ids)), "channel_id": channel, "type": 0}
        with self._lock:
            self.messages[message["id"]] = message
        return web.json_response(message)

    async def _edit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if request.headers.get("Authorization") != f"Bot {BOT_TOKEN}":
            return self._unauthorized()
        with self._lock:
            message = self.messages.get(request.match_info["message"])
            if message is None or message["channel_id"] != request.match_info["channel"]:
                return web.json_response({"message": "Unknown Message", "code": 10008}, status=404)
            message.update(body)
            return web.json_response(message)

    def _known(self, request: web.Request) -> bool:
        return (request.match_info["application"] == APPLICATION_ID
                and request.match_info["token"] in self.interaction_tokens)

    async def _original(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if not self._known(request):
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        return web.json_response({**body, "id": str(next(self._ids))})

    async def _followup(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if not self._known(request):
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        return web.json_response({**body, "id": str(next(self._ids))})

    def token(self) -> str:
        """A fresh interaction token (valid for follow-ups, as Discord's are for 15 minutes)."""
        value = f"aW50ZXJhY3Rpb246{next(self._ids)}"
        with self._lock:
            self.interaction_tokens.add(value)
        return value

    def called(self, method: str, path_part: str,
               where: Callable[[dict[str, Any]], bool] = lambda b: True) -> list[dict[str, Any]]:
        with self._lock:
            return [b for m, p, b in self.calls if m == method and path_part in p and where(b)]

    def wait_call(self, method: str, path_part: str, where: Callable[[dict[str, Any]], bool] = lambda b: True,
                  timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(lambda: next(iter(self.called(method, path_part, where)), None), timeout=timeout,
                        what=f"Discord {method} {path_part}")
