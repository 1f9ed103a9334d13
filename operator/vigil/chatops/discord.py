"""Discord: the interactions endpoint (buttons and ``/vigil``) and the approval messages' lifecycle.

Discord signs each interaction with the application's Ed25519 key: ``X-Signature-Ed25519`` over
``X-Signature-Timestamp`` + body. :meth:`Interactions.handle` checks it with PyNaCl before reading
anything else and answers 401 on failure, as Discord requires; it also refuses a timestamp more
than :data:`MAX_SKEW` seconds off, and (through :class:`~vigil.chatops.core.ReplayGuard`) a
signature or interaction id already seen, so a captured request cannot be sent again.

Answers, per Discord's interaction protocol:

* ``PING`` (type 1) → ``PONG``;
* a button (type 3): the decision is made while Discord waits; within :data:`ANSWER_BUDGET`
  seconds the answer is ``UPDATE_MESSAGE`` (type 7: the message rewritten without buttons) or an
  ephemeral refusal (type 4, flag 64); a slower decision answers ``DEFERRED_UPDATE_MESSAGE``
  (type 6) and edits the message afterwards through the interaction webhook;
* ``/vigil`` (type 2): ``DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE`` (type 5, ephemeral) at once, then
  the answer through the interaction webhook (``PATCH /webhooks/{app}/{token}/messages/@original``).

The bot token posts approval messages (``POST /channels/{id}/messages``) and rewrites them
(``PATCH``); every REST call goes to ``api_base`` (Discord's, or a local server in tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import nacl.exceptions
import nacl.signing
from aiohttp import web

from vigil import __version__
from vigil.chatops import bodies, messages
from vigil.chatops.approve import ChatUser, Result, Status, Verb
from vigil.chatops.core import USAGE, ChatOps, Command, Kind, ReplayGuard, chat_outcome, parse_command
from vigil.chatops.identity import IdentityMap, Platform, member_groups

logger = logging.getLogger(__name__)

API_BASE = "https://discord.com/api/v10"
#: Discord refuses nothing on its side by age; we refuse requests signed longer ago than this.
MAX_SKEW = 300.0
#: Discord waits 3 s for an interaction's answer: decide within this, else defer.
ANSWER_BUDGET = 2.5
#: Largest interaction body read (Discord's are a few KiB; a button's carries the message).
MAX_BODY = 256 * 1024
EPHEMERAL = 64

PING, APPLICATION_COMMAND, MESSAGE_COMPONENT = 1, 2, 3
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 1, 4, 5, 6, 7
COMMAND_NAME = "vigil"
_SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")
_TOKEN = re.compile(r"^[A-Za-z0-9._:~+=-]{1,500}$")


class DiscordError(Exception):
    """A Discord REST call failed; the message never holds the token or the answer's body."""


class DiscordApi:
    """Discord's REST API with the bot token (``Authorization: Bot …``), bounded in time."""

    def __init__(self, bot_token: str, api_base: str = API_BASE, timeout: float = 10.0) -> None:
        self._token = bot_token
        self.api_base = api_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers={
                "User-Agent": f"DiscordBot (https://github.com/vigil-dev/vigil, {__version__})"})
        return self._session

    async def call(self, method: str, path: str, body: Mapping[str, Any], *, bot: bool = True) -> dict[str, Any]:
        headers = {"Authorization": f"Bot {self._token}"} if bot and self._token else {}
        try:
            async with self._client().request(method, self.api_base + path, json=body, headers=headers,
                                              allow_redirects=False) as answer:
                if answer.status >= 300:
                    raise DiscordError(f"{method} {path.split('/')[1]}: HTTP {answer.status}")
                data = await answer.json(content_type=None) if answer.status != 204 else {}
                return data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DiscordError(f"{method} {path.split('/')[1]}: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class DiscordPoster:
    """Posts approval messages as the bot to one channel and rewrites them."""

    platform = Platform.DISCORD.value

    def __init__(self, api: DiscordApi, channel: str) -> None:
        self.api = api
        self.channel = channel

    async def post(self, event: Any, obj: Mapping[str, Any]) -> tuple[str, str]:
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        answer = await self.api.call("POST", f"/channels/{self.channel}/messages",
                                     messages.discord_approval(event, uid))
        return self.channel, str(answer.get("id") or "")

    async def update(self, ref: tuple[str, str], event: Any, action: str, outcome: messages.Outcome) -> None:
        await self.api.call("PATCH", f"/channels/{ref[0]}/messages/{ref[1]}",
                            messages.discord_decided(event, action, outcome))


def _str(value: Any, limit: int = 64) -> str:
    return value[:limit] if isinstance(value, str) else ""


def command_text(data: Mapping[str, Any]) -> str:
    """``/vigil approve action:shop/x`` (a subcommand with options) or ``/vigil request:"approve shop/x"``."""
    words: list[str] = []
    for option in (data.get("options") or [])[:5]:
        if not isinstance(option, Mapping):
            continue
        if option.get("type") == 1:  # SUB_COMMAND
            words.append(_str(option.get("name"), 32))
            words.extend(_str(o.get("value"), 400) for o in (option.get("options") or [])[:5]
                         if isinstance(o, Mapping))
        else:
            words.append(_str(option.get("value"), 1000))
    return " ".join(w for w in words if w)


class Interactions:
    """The ``POST /discord/interactions`` endpoint."""

    def __init__(self, chatops: ChatOps, public_key: str, api: DiscordApi, replays: ReplayGuard,
                 identity_map: Callable[[], IdentityMap], clock: Callable[[], float] = time.time) -> None:
        try:
            self._key = nacl.signing.VerifyKey(bytes.fromhex(public_key.strip()))
        except (ValueError, nacl.exceptions.CryptoError):
            raise ValueError("the Discord public key must be 64 hex characters (the application's public key)") \
                from None
        self.chatops = chatops
        self.api = api
        self.replays = replays
        self._identity_map = identity_map
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    def _verified(self, request: web.Request, body: bytes) -> str | None:
        """None when signed by Discord, recently and for the first time; else why not (for the log)."""
        signature = request.headers.get("X-Signature-Ed25519", "")
        timestamp = request.headers.get("X-Signature-Timestamp", "")
        try:
            self._key.verify(timestamp.encode() + body, bytes.fromhex(signature))
        except (ValueError, nacl.exceptions.BadSignatureError):
            return "bad signature"
        try:
            age = abs(self._clock() - float(timestamp))
        except ValueError:
            return "bad timestamp"
        if age > MAX_SKEW:
            return f"timestamp {age:.0f}s off"
        interaction_id = ""
        try:
            interaction_id = _str(json.loads(body).get("id"))
        except (ValueError, AttributeError):
            pass
        if not self.replays.first(f"discord-signature:{signature}",
                                  f"discord-interaction:{interaction_id}" if interaction_id else ""):
            return "replayed"
        return None

    async def handle(self, request: web.Request) -> web.Response:
        body = await bodies.read_bounded(request.content, MAX_BODY)
        if body is None:
            return web.Response(status=413, text="too large")
        problem = self._verified(request, body)
        if problem is not None:
            logger.warning("Refused a Discord interaction: %s.", problem)
            return web.Response(status=401, text="invalid request signature")
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        if not isinstance(payload, dict):
            return web.Response(status=400, text="not an interaction")
        kind = payload.get("type")
        if kind == PING:
            return web.json_response({"type": PONG})
        if kind == MESSAGE_COMPONENT:
            return web.json_response(await self._button(payload))
        if kind == APPLICATION_COMMAND:
            return web.json_response(self._command(payload))
        return web.Response(status=400, text="unsupported interaction type")

    def _chat_user(self, payload: Mapping[str, Any]) -> ChatUser:
        member = payload.get("member") if isinstance(payload.get("member"), Mapping) else {}
        user = (member or {}).get("user") or payload.get("user") or {}
        roles = [r for r in ((member or {}).get("roles") or [])[:250] if isinstance(r, str)]
        channel = _str(payload.get("channel_id")) or _str((payload.get("channel") or {}).get("id"))
        return ChatUser(Platform.DISCORD, _str(user.get("id")), channel,
                        member_groups(Platform.DISCORD, roles, self._identity_map()),
                        _str(user.get("global_name") or user.get("username")))

    def _webhook(self, payload: Mapping[str, Any]) -> str:
        """The interaction's webhook path; the ids are checked so no payload can steer the request elsewhere."""
        application, token = _str(payload.get("application_id")), _str(payload.get("token"), 500)
        if not _SNOWFLAKE.match(application) or not _TOKEN.match(token):
            raise DiscordError("the interaction carries no usable application id or token")
        return f"/webhooks/{application}/{token}"

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _button(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        custom = _str((payload.get("data") or {}).get("custom_id"), 100)
        verb_id, _, target = custom.partition(":")
        verb = {messages.APPROVE_ID: Verb.APPROVE, messages.REJECT_ID: Verb.REJECT}.get(verb_id)
        chat = self._chat_user(payload)
        if verb is None:
            return _ephemeral("That button is not Vigil's.")
        message_id = _str((payload.get("message") or {}).get("id"))
        task = asyncio.ensure_future(self._decide_button(verb, target, chat))
        try:
            result = await asyncio.wait_for(asyncio.shield(task), ANSWER_BUDGET)
        except TimeoutError:
            self._spawn(self._finish_late(task, payload, chat, message_id))
            return {"type": DEFERRED_UPDATE_MESSAGE}
        if not result.ok:
            return _ephemeral(result.text)
        return {"type": UPDATE_MESSAGE, "data": await self._decided(result, chat, message_id)}

    async def _decide_button(self, verb: Verb, target: str, chat: ChatUser) -> Result:
        if target.startswith(messages.UID_PREFIX):
            ref = await self.chatops.board.by_uid(target[len(messages.UID_PREFIX):])
            if ref is None:
                return Result(Status.REFUSED, "That action no longer exists.", None, verb)
            target = str(ref)
        return await self.chatops.decide(verb, target, chat)

    async def _decided(self, result: Result, chat: ChatUser, message_id: str) -> dict[str, Any]:
        assert result.ref is not None
        obj = await self.chatops.board.object(result.ref)
        event = messages.event_from_object(obj, result.at) if obj is not None and result.at is not None else None
        self._spawn(self.chatops.board.decided_here(result, chat, pressed=(Platform.DISCORD.value,
                                                                           (chat.channel, message_id))))
        return messages.discord_decided(event, str(result.ref), chat_outcome(result, chat))

    async def _finish_late(self, task: asyncio.Future[Result], payload: Mapping[str, Any], chat: ChatUser,
                           message_id: str) -> None:
        try:
            result = await task
            if result.ok:
                await self.api.call("PATCH", self._webhook(payload) + "/messages/@original",
                                    await self._decided(result, chat, message_id), bot=False)
            else:
                await self.api.call("POST", self._webhook(payload), {**_ephemeral(result.text)["data"]}, bot=False)
        except Exception as exc:
            logger.warning("Could not finish a Discord button press: %s", type(exc).__name__)

    def _command(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        data = payload.get("data") or {}
        if _str(data.get("name")) != COMMAND_NAME:
            return _ephemeral("Unknown command.")
        parsed = parse_command(command_text(data))
        if parsed.kind is Kind.HELP:
            return _ephemeral(USAGE)
        self._spawn(self._answer(parsed, self._chat_user(payload), payload))
        return {"type": DEFERRED_CHANNEL_MESSAGE, "data": {"flags": EPHEMERAL}}

    async def _answer(self, command: Command, chat: ChatUser, payload: Mapping[str, Any]) -> None:
        try:
            if command.verb is not None:
                result = await self.chatops.decide(command.verb, command.argument, chat)
                text = result.text
                if result.ok:
                    await self.chatops.board.decided_here(result, chat)
            else:
                conversation = f"discord:{_str(payload.get('guild_id'))}:{chat.channel}:{chat.id}"
                text = await self.chatops.ask(command, chat, conversation)
            await self.api.call("PATCH", self._webhook(payload) + "/messages/@original",
                                {"content": text[:2000], "allowed_mentions": {"parse": []}}, bot=False)
        except Exception as exc:
            logger.warning("Could not answer a Discord command: %s", type(exc).__name__)

    async def drain(self) -> None:
        """Wait for follow-ups still in flight (at shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)


def _ephemeral(text: str) -> dict[str, Any]:
    return {"type": CHANNEL_MESSAGE, "data": {"content": text[:2000], "flags": EPHEMERAL,
                                              "allowed_mentions": {"parse": []}}}

