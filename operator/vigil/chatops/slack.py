"""Slack, through Bolt: the Approve / Reject buttons, ``/vigil``, and the approval messages' lifecycle.

Bolt does every protocol duty: in HTTP mode its request-verification middleware checks the v0
HMAC-SHA256 signature with the signing secret and refuses a timestamp more than five minutes
off; in Socket Mode (the default: an outbound WebSocket, no public ingress) the SDK's client
opens the connection with ``apps.connections.open`` and acknowledges each envelope. This module
adds what Bolt does not: :func:`refuse_replays` (a middleware run after verification) refuses a
request whose signature or ``trigger_id`` was already seen within the window, so a captured
button press cannot be sent twice.

The bot token posts and rewrites messages through the Web API (``chat.postMessage``,
``chat.update``, ``chat.postEphemeral``); ``base_url`` points the SDK elsewhere for tests. Slack
user groups in the identity map are resolved with ``usergroups.users.list`` (scope
``usergroups:read``), cached for :data:`GROUP_TTL` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from vigil.chatops import messages, summary
from vigil.chatops.approve import ChatUser, Result, Verb
from vigil.chatops.core import USAGE, ChatOps, Kind, ReplayGuard, chat_outcome, parse_command
from vigil.chatops.identity import IdentityMap, Platform

logger = logging.getLogger(__name__)

#: Seconds a user group's member list is trusted before it is read again.
GROUP_TTL = 60.0
#: Most members read of one user group.
MAX_GROUP_MEMBERS = 10_000
SLASH_COMMAND = "/vigil"


class SlackPoster:
    """Posts approval messages as the bot and rewrites them in place."""

    platform = Platform.SLACK.value

    def __init__(self, client: AsyncWebClient, channel: str) -> None:
        self.client = client
        self.channel = channel

    async def post(self, event: Any, obj: Mapping[str, Any]) -> tuple[str, str]:
        answer = await self.client.chat_postMessage(channel=self.channel, **messages.slack_approval(event))
        return str(answer["channel"]), str(answer["ts"])

    async def update(self, ref: tuple[str, str], event: Any, action: str, outcome: messages.Outcome) -> None:
        await self.client.chat_update(channel=ref[0], ts=ref[1], **messages.slack_decided(event, action, outcome))


class SlackGroups:
    """Which mapped user groups a Slack user belongs to (only groups the identity map names are read)."""

    def __init__(self, client: AsyncWebClient, identity_map: Callable[[], IdentityMap],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._identity_map = identity_map
        self._clock = clock
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def of(self, user: str) -> tuple[str, ...]:
        groups = []
        for group in self._identity_map().groups(Platform.SLACK):
            cached = self._members.get(group)
            if cached is None or cached[0] <= self._clock():
                try:
                    answer = await self.client.usergroups_users_list(usergroup=group)
                    members = frozenset(str(u) for u in (answer.get("users") or [])[:MAX_GROUP_MEMBERS])
                except Exception as exc:  # SlackApiError, connection: not a member, said once per TTL
                    logger.warning("Could not read Slack user group %s: %s", group, type(exc).__name__)
                    members = frozenset()
                cached = (self._clock() + GROUP_TTL, members)
                self._members[group] = cached
            if user in cached[1]:
                groups.append(group)
        return tuple(groups)


def _str(value: Any, limit: int = 64) -> str:
    return value[:limit] if isinstance(value, str) else ""


def refuse_replays(replays: ReplayGuard) -> Callable[..., Awaitable[BoltResponse]]:
    """A Bolt middleware: a signature or trigger_id seen within the window is refused (401)."""

    async def middleware(req: AsyncBoltRequest, body: dict[str, Any],
                         next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse:
        keys = [f"slack-trigger:{_str(body.get('trigger_id'), 128)}" if body.get("trigger_id") else ""]
        if req.mode == "http":
            signature = (req.headers.get("x-slack-signature") or [""])[0]
            keys.append(f"slack-signature:{signature}" if signature else "")
        if not replays.first(*keys):
            logger.warning("Refused a replayed Slack request (%s).", body.get("type") or "command")
            return BoltResponse(status=401, body="replayed request")
        return await next()

    return middleware


def build_app(chatops: ChatOps, client: AsyncWebClient, *, signing_secret: str, replays: ReplayGuard,
              groups: SlackGroups) -> AsyncApp:
    """The Bolt app: buttons, ``/vigil``, replay refusal. Signatures are Bolt's (HTTP mode)."""
    app = AsyncApp(client=client, signing_secret=signing_secret, process_before_response=False,
                   ignoring_self_events_enabled=False)
    app.middleware(refuse_replays(replays))

    async def chat_user(user: str, channel: str, name: str) -> ChatUser:
        return ChatUser(Platform.SLACK, user, channel, await groups.of(user), name)

    async def button(verb: Verb, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                     action: dict[str, Any]) -> None:
        await ack()
        user = body.get("user") or {}
        channel = _str((body.get("channel") or {}).get("id"))
        chat = await chat_user(_str(user.get("id")), channel, _str(user.get("username") or user.get("name")))
        result = await chatops.decide(verb, _str(action.get("value"), 400), chat)
        if not result.ok:
            await _tell(client, chat, result.text)
            return
        ts = _str((body.get("container") or {}).get("message_ts") or (body.get("message") or {}).get("ts"))
        await _rewrite(chatops, client, channel, ts, result, chat)

    @app.action(messages.APPROVE_ID)
    async def approve(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await button(Verb.APPROVE, ack, body, action)

    @app.action(messages.REJECT_ID)
    async def reject(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await button(Verb.REJECT, ack, body, action)

    @app.command(SLASH_COMMAND)
    async def command(ack: Any, body: dict[str, Any], respond: Any) -> None:
        parsed = parse_command(_str(body.get("text"), 4000))
        if parsed.kind is Kind.HELP:
            await ack(USAGE)
            return
        await ack()
        chat = await chat_user(_str(body.get("user_id")), _str(body.get("channel_id")), _str(body.get("user_name")))
        if parsed.verb is not None:
            result = await chatops.decide(parsed.verb, parsed.argument, chat)
            await respond(text=result.text, response_type="ephemeral")
            if result.ok:
                await chatops.board.decided_here(result, chat)
            return
        conversation = f"slack:{_str(body.get('team_id'))}:{chat.channel}:{chat.id}"
        answer = await chatops.ask(parsed, chat, conversation)
        await respond(text=summary.slack_mrkdwn(answer), response_type="ephemeral")

    return app


async def _tell(client: AsyncWebClient, chat: ChatUser, text: str) -> None:
    """Only the person who pressed sees why nothing happened."""
    try:
        await client.chat_postEphemeral(channel=chat.channel, user=chat.id, text=text)
    except Exception as exc:
        logger.warning("Could not tell %s: %s", chat.qualified, type(exc).__name__)


async def _rewrite(chatops: ChatOps, client: AsyncWebClient, channel: str, ts: str, result: Result,
                   chat: ChatUser) -> None:
    """The pressed message, rewritten in place: no buttons, who decided as whom and when."""
    assert result.ref is not None
    obj = await chatops.board.object(result.ref)
    event = messages.event_from_object(obj, result.at) if obj is not None and result.at is not None else None
    try:
        await client.chat_update(channel=channel, ts=ts,
                                 **messages.slack_decided(event, str(result.ref), chat_outcome(result, chat)))
    except Exception as exc:
        logger.warning("Could not update the Slack message of %s: %s", result.ref, type(exc).__name__)
    await chatops.board.decided_here(result, chat, pressed=(Platform.SLACK.value, (channel, ts)))
