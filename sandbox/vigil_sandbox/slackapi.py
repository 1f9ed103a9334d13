"""A local Slack for the demo and the tests: the Web API methods Vigil calls, Socket Mode, and response URLs.

``make demo`` runs ``vigil chatops`` against it (the approval message with buttons, and the demo's
"human" pressing Approve); tests/chatops/ check the component against it.

Answers as docs.slack.dev documents, with the bot or app token checked on every call:

* ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``usergroups.users.list``
  (bot token ``xoxb-…``), ``apps.connections.open`` (app token ``xapp-…``): ``{"ok": true, …}`` or
  ``{"ok": false, "error": "invalid_auth" | "channel_not_found" | "message_not_found" | …}``;
* ``/link``: the Socket Mode WebSocket. It sends ``hello`` on connect; :meth:`SlackServer.envelope`
  sends an ``events_api`` / ``interactive`` / ``slash_commands`` envelope with an ``envelope_id``, and
  the client's acknowledgement (``{"envelope_id": …, "payload": …}``) is recorded in ``acks``;
* ``/respond/<id>``: a ``response_url`` (slash commands), recording what is posted to it.

It runs on its own event loop in a thread; the tests read what it received (``calls``), thread-safely.

What Slack itself sends to an app is built here too: :func:`block_actions` (a button press on a
bot message) and :func:`signed` (Slack's ``v0`` request signature, by slack_sdk's own code).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

from vigil_sandbox.ports import free_port

BOT_TOKEN = "xoxb-test-0000000000-vigil-bot-token"
APP_TOKEN = "xapp-1-A0VIGIL-0000-vigil-app-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0VIGIL"
BOT_USER = "U0VIGILBOT"

_BOT_METHODS = {"auth.test", "chat.postMessage", "chat.update", "chat.postEphemeral", "usergroups.users.list"}


class SlackServer:
    def __init__(self, channels: tuple[str, ...] = ("C0APPROVALS",),
                 usergroups: Mapping[str, list[str]] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api/"
        self.channels = set(channels)
        self.usergroups = dict(usergroups or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.connections = 0
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slack-api", daemon=True)
        self._runner: web.AppRunner | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> SlackServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        app.router.add_post("/respond/{id}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the Web API ---------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or str(args.pop("token", ""))
        args.pop("token", None)
        with self._lock:
            self.calls.append((method, args))
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN if method in _BOT_METHODS else None
        if expected is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response(self._answer(method, args))

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://vigil-test.slack.com/", "team": "Vigil", "user": "vigil",
                    "team_id": TEAM, "user_id": BOT_USER, "bot_id": "B0VIGIL", "is_enterprise_install": False}
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4()}&app_id=A0VIGIL"}
        if method == "usergroups.users.list":
            group = str(args.get("usergroup") or "")
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        channel = str(args.get("channel") or "")
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            message = {"type": "message", "text": args.get("text"), "blocks": args.get("blocks"), "ts": ts,
                       "bot_id": "B0VIGIL"}
            with self._lock:
                self.messages[(channel, ts)] = message
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        if method == "chat.update":
            key = (channel, str(args.get("ts") or ""))
            with self._lock:
                if key not in self.messages:
                    return {"ok": False, "error": "message_not_found"}
                self.messages[key] = {**self.messages[key], "text": args.get("text"), "blocks": args.get("blocks")}
            return {"ok": True, "channel": channel, "ts": key[1], "text": args.get("text")}
        if method == "chat.postEphemeral":
            if not args.get("user"):
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"}
        return {"ok": False, "error": "unknown_method"}

    # --- response_url ------------------------------------------------------------------------------
    async def _respond(self, request: web.Request) -> web.Response:
        with self._lock:
            self.responses.append((request.match_info["id"], await request.json()))
        return web.Response(text="ok")

    def response_url(self) -> str:
        return f"{self.url}/respond/{uuid.uuid4().hex}"

    # --- Socket Mode -------------------------------------------------------------------------------
    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)  # the SDK pings; aiohttp answers with the same data
        await socket.prepare(request)
        self._sockets.append(socket)
        with self._lock:
            self.connections += 1
        await socket.send_json({"type": "hello", "num_connections": 1,
                                "debug_info": {"host": "vigil-test", "approximate_connection_time": 3600},
                                "connection_info": {"app_id": "A0VIGIL"}})
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                ack = json.loads(message.data)
                with self._lock:
                    self.acks[str(ack.get("envelope_id"))] = ack
        self._sockets.remove(socket)
        return socket

    def envelope(self, kind: str, payload: dict[str, Any], retry_attempt: int = 0) -> str:
        """Send an envelope on every open Socket Mode connection; returns its envelope_id."""
        envelope_id = str(uuid.uuid4())
        body = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                "accepts_response_payload": kind != "events_api", "retry_attempt": retry_attempt,
                "retry_reason": ""}

        async def send() -> None:
            for socket in list(self._sockets):
                await socket.send_json(body)

        asyncio.run_coroutine_threadsafe(send(), self._loop).result(10)
        return envelope_id

    # --- what the tests read -----------------------------------------------------------------------
    def called(self, method: str, where: Callable[[dict[str, Any]], bool] = lambda a: True) -> list[dict[str, Any]]:
        with self._lock:
            return [args for name, args in self.calls if name == method and where(args)]

    def wait_call(self, method: str, where: Callable[[dict[str, Any]], bool] = lambda a: True,
                  timeout: float = 30.0) -> dict[str, Any]:
        """The first such call, once made; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.called(method, where)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for Slack {method}")
            time.sleep(0.1)

    def message_with_value(self, value: str) -> tuple[str, str, dict[str, Any]] | None:
        """(channel, ts, message) of the first posted message whose blocks hold a button of ``value``."""
        needle = json.dumps(value)
        with self._lock:
            found = sorted((ts, channel, message) for (channel, ts), message in self.messages.items()
                           if needle in json.dumps(message.get("blocks")))
        if not found:
            return None
        ts, channel, message = found[0]
        return channel, ts, message


def form(payload: Mapping[str, Any]) -> str:
    """An interactive payload as Slack POSTs it: ``payload=<url-encoded JSON>``."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def block_actions(user: str, action_id: str, value: str, ts: str, channel: str, response_url: str,
                  label: str = "Approve") -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it when a button of a bot message is pressed."""
    return {
        "type": "block_actions", "api_app_id": "A0VIGIL", "token": "unused-verification-token",
        "team": {"id": TEAM, "domain": "vigil-test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "bot_id": "B0VIGIL", "text": "approval"},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "vigil_decision", "value": value,
                     "text": {"type": "plain_text", "text": label}, "action_ts": f"{time.time():.6f}"}],
    }


def signed(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """The headers Slack sends with ``body``: ``v0`` HMAC-SHA256 over ``v0:<timestamp>:<body>``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None  # None only without a secret
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}
