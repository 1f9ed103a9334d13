"""``vigil chatops``: the ChatOps component, its flags, and how its parts are started and stopped.

One process serves both platforms:

* Slack through Bolt, in Socket Mode (default: an outbound WebSocket, nothing exposed) or HTTP mode
  (``POST /slack/events``, signatures checked by Bolt);
* Discord's interactions endpoint ``POST /discord/interactions`` (Ed25519);
* the approval board (:class:`vigil.chatops.core.Board`), which posts approval messages with
  buttons as the bots and rewrites them once decided;
* ``GET /healthz`` and ``GET /readyz`` for the kubelet.

Who posts what: the operator keeps sending its webhook notifications (every event, with the
kubectl commands) whether or not this component runs; this component alone posts the *interactive*
approval message, with the bot token, to the channels given here, because only a bot's message can
be rewritten with ``chat.update`` / Discord's edit. With it off, nothing changes for the operator.

Tokens and secrets are read from files (mounted Secrets), kept in memory, handed to
:mod:`vigil.adapters.redaction` and never logged; the identity map is re-read when its file
changes (a ConfigMap update), and a malformed new version is refused while the last good one stays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pathlib
import signal
import sys
from typing import Any

#: Largest token or secret file read.
MAX_SECRET_BYTES = 4096
SLACK_API = "https://slack.com/api/"
DEFAULT_PORT = 8090


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_chatops(sub: argparse._SubParsersAction[Any]) -> None:
    """The ``vigil chatops`` subcommand (called from :func:`vigil.cli.parser`)."""
    p = sub.add_parser("chatops", help="approve, reject and ask Vigil from Slack and Discord",
                       description="Run the ChatOps component: Approve / Reject buttons and /vigil in Slack and "
                                   "Discord, deciding as the chat user's mapped Kubernetes identity "
                                   "(impersonation). Tokens are read from files, never from flags.")
    p.set_defaults(handler=main)
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file; default: in-cluster, else KUBECONFIG")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="post approvals for actions in this namespace (repeatable); default: all "
                        "[env VIGIL_NAMESPACES, comma-separated]")
    p.add_argument("--default-namespace", default=_env("VIGIL_CHATOPS_DEFAULT_NAMESPACE"),
                   help="namespace of an action named without one in /vigil approve NAME "
                        "[env VIGIL_CHATOPS_DEFAULT_NAMESPACE]; default: the namespace must be given")
    p.add_argument("--identity-map", default=_env("VIGIL_CHATOPS_IDENTITY_MAP"),
                   help="YAML/JSON file mapping chat user and group ids to Kubernetes users and groups "
                        "(docs/chatops.md) [env VIGIL_CHATOPS_IDENTITY_MAP]")
    p.add_argument("--poll-interval", type=float, default=5.0,
                   help="seconds between two reads of the pending RemediationActions (default 5)")
    p.add_argument("--http-host", default=_env("VIGIL_CHATOPS_HTTP_HOST", "0.0.0.0"),
                   help="address of /healthz, /slack/events, /discord/interactions (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, default=int(_env("VIGIL_CHATOPS_HTTP_PORT", str(DEFAULT_PORT)) or 0),
                   help=f"port of the same (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   default=_env("VIGIL_LOG_LEVEL", "info"), help="log level (default info)")
    s = p.add_argument_group("Slack")
    s.add_argument("--slack-mode", choices=["socket", "http"], default=_env("VIGIL_CHATOPS_SLACK_MODE", "socket"),
                   help="socket: Socket Mode, an outbound WebSocket (needs --slack-app-token-file); http: Slack "
                        "POSTs to /slack/events (needs --slack-signing-secret-file) (default socket)")
    s.add_argument("--slack-bot-token-file", help="file with the bot token (xoxb-…); enables Slack")
    s.add_argument("--slack-app-token-file", help="file with the app-level token (xapp-…, connections:write)")
    s.add_argument("--slack-signing-secret-file", help="file with the signing secret (HTTP mode)")
    s.add_argument("--slack-channel", help="channel id the approval messages are posted to; default: none "
                   "(buttons and /vigil still work on messages posted otherwise)")
    s.add_argument("--slack-api-url", default=SLACK_API, help=f"Slack Web API base URL (default {SLACK_API})")
    a = p.add_argument_group("Ask Vigil (/vigil status|why|history)")
    a.add_argument("--conversations", choices=["configmaps", "memory"],
                   default=_env("VIGIL_CHATOPS_CONVERSATIONS", "configmaps"),
                   help="where follow-up context per channel and user is kept: configmaps (survives a restart; "
                        "needs ConfigMap rights in --conversation-namespace) or memory (default configmaps) "
                        "[env VIGIL_CHATOPS_CONVERSATIONS]")
    a.add_argument("--conversation-namespace", default=_env("VIGIL_CHATOPS_NAMESPACE") or _env("POD_NAMESPACE"),
                   help="namespace of the conversation ConfigMaps (default: the pod's, else the kubeconfig's) "
                        "[env VIGIL_CHATOPS_NAMESPACE, else POD_NAMESPACE]")
    from vigil.chatops import askcli

    askcli.add_llm_flags(p)
    d = p.add_argument_group("Discord")
    d.add_argument("--discord-public-key-file", help="file with the application's public key (hex); enables the "
                   "interactions endpoint")
    d.add_argument("--discord-bot-token-file", help="file with the bot token (posts and edits messages)")
    d.add_argument("--discord-channel", help="channel id the approval messages are posted to")
    d.add_argument("--discord-api-url", default="https://discord.com/api/v10",
                   help="Discord REST API base URL (default https://discord.com/api/v10)")


class ConfigError(ValueError):
    pass


def read_secret(path: str | None, flag: str) -> str:
    """The stripped contents of a mounted Secret file; errors name the flag and file, never the content."""
    if not path:
        return ""
    file = pathlib.Path(path)
    try:
        if file.stat().st_size > MAX_SECRET_BYTES:
            raise ConfigError(f"{flag} {path}: larger than {MAX_SECRET_BYTES} bytes")
        value = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{flag} {path}: empty")
    from vigil.adapters import redaction

    redaction.remember(value)
    return value


class MapFile:
    """The identity map, re-read when the file's modification time or size changes."""

    def __init__(self, path: str) -> None:
        from vigil.chatops import identity

        self.path = path
        self._stamp = self._stat()
        self.current = identity.load(path)

    def _stat(self) -> tuple[float, int]:
        try:
            stat = os.stat(self.path)
            return stat.st_mtime, stat.st_size
        except OSError:
            return 0.0, -1

    def __call__(self) -> Any:
        from vigil.chatops import identity

        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.current = identity.load(self.path)
                logging.getLogger(__name__).info("Reloaded the identity map (%d rules).", len(self.current.rules))
            except identity.MapError as exc:
                logging.getLogger(__name__).error("Kept the previous identity map: %s", exc)
        return self.current


def _logging(level: str) -> None:
    from vigil.adapters import redaction

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # The SDKs log requests (with their Authorization headers) at DEBUG: never below WARNING.
    for name in ("slack_sdk", "slack_bolt", "aiohttp.access", "openai", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    redaction.install()


def main(args: argparse.Namespace) -> int:
    """Exit 2 on a configuration error (one line on stderr), 1 when the API server is unusable, else run."""
    from vigil.adapters import kubeaccess
    from vigil.chatops import identity

    try:
        if not args.identity_map:
            raise ConfigError("--identity-map is required: without it nobody may decide")
        secrets = {
            "slack_bot": read_secret(args.slack_bot_token_file, "--slack-bot-token-file"),
            "slack_app": read_secret(args.slack_app_token_file, "--slack-app-token-file"),
            "slack_signing": read_secret(args.slack_signing_secret_file, "--slack-signing-secret-file"),
            "discord_key": read_secret(args.discord_public_key_file, "--discord-public-key-file"),
            "discord_bot": read_secret(args.discord_bot_token_file, "--discord-bot-token-file"),
        }
        if not secrets["slack_bot"] and not secrets["discord_key"]:
            raise ConfigError("enable Slack (--slack-bot-token-file) or Discord (--discord-public-key-file)")
        if secrets["slack_bot"] and args.slack_mode == "socket" and not secrets["slack_app"]:
            raise ConfigError("--slack-mode socket needs --slack-app-token-file")
        if secrets["slack_bot"] and args.slack_mode == "http" and not secrets["slack_signing"]:
            raise ConfigError("--slack-mode http needs --slack-signing-secret-file")
        if args.discord_channel and not secrets["discord_bot"]:
            raise ConfigError("--discord-channel needs --discord-bot-token-file")
        if not 0.5 <= args.poll_interval <= 3600:
            raise ConfigError("--poll-interval must be between 0.5 and 3600 seconds")
        maps = MapFile(args.identity_map)
        from vigil.chatops import askcli

        llm_config = askcli.llm_config(args)
    except (ConfigError, identity.MapError, ValueError) as exc:
        print(f"vigil chatops: {exc}", file=sys.stderr)
        return 2
    _logging(args.log_level)  # once the flags are known good: a usage error is one line on stderr, no logging
    try:
        access = kubeaccess.load(args.kubeconfig, in_cluster_first=True)
    except kubeaccess.AccessError as exc:
        print(f"vigil chatops: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    namespaces = list(args.namespace) or [n.strip() for n in (_env("VIGIL_NAMESPACES") or "").split(",")
                                          if n.strip()]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, secrets, maps, access, namespaces, llm_config))
    return 0


async def serve(args: argparse.Namespace, secrets: dict[str, str], maps: MapFile, access: Any,
                namespaces: list[str], llm_config: Any = None) -> None:
    """Run until SIGTERM or SIGINT."""
    from aiohttp import web

    from vigil.chatops import core
    from vigil.chatops.approve import Decider
    from vigil.chatops.kube import KubeApi

    log = logging.getLogger(__name__)
    kube = KubeApi(access)
    replays = core.ReplayGuard()
    app = web.Application(client_max_size=1 << 20)
    cleanups: list[Any] = []

    board = core.Board(kube, [], namespaces, interval=args.poll_interval)
    asker, transport = _asker(args, access, namespaces, llm_config)
    chatops = core.ChatOps(Decider(kube, maps), board, asker, args.default_namespace)
    cleanups.append(asker.close)

    socket_handler = None
    if secrets["slack_bot"]:
        from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
        from slack_sdk.web.async_client import AsyncWebClient

        from vigil.chatops import slack

        client = AsyncWebClient(token=secrets["slack_bot"], base_url=args.slack_api_url)
        bolt = slack.build_app(chatops, client, signing_secret=secrets["slack_signing"], replays=replays,
                               groups=slack.SlackGroups(client, maps))
        if args.slack_channel:
            board.posters.append(slack.SlackPoster(client, args.slack_channel))
        if args.slack_mode == "http":
            async def slack_events(request: web.Request) -> web.StreamResponse:
                return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

            app.router.add_post("/slack/events", slack_events)
        else:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_handler = AsyncSocketModeHandler(bolt, secrets["slack_app"], web_client=client)
    if secrets["discord_key"]:
        from vigil.chatops import discord

        api = discord.DiscordApi(secrets["discord_bot"], args.discord_api_url)
        cleanups.append(api.close)
        if args.discord_channel:
            board.posters.append(discord.DiscordPoster(api, args.discord_channel))
        try:
            interactions = discord.Interactions(chatops, secrets["discord_key"], api, replays, maps)
        except ValueError as exc:
            print(f"vigil chatops: --discord-public-key-file: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        app.router.add_post("/discord/interactions", interactions.handle)
        cleanups.append(interactions.drain)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ok") if board.passes > 0 else web.Response(status=503, text="starting")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.http_host, args.http_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else args.http_port
    log.info("vigil chatops listening on %s:%s (slack: %s, discord: %s).", args.http_host, port,
             args.slack_mode if secrets["slack_bot"] else "off", "on" if secrets["discord_key"] else "off")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if socket_handler is not None:
        await socket_handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("Slack Socket Mode connected.")
    board_task = asyncio.create_task(board.run(stop))
    try:
        await stop.wait()
    finally:
        log.info("vigil chatops stopping.")
        await board_task
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]
        for cleanup in cleanups:
            await cleanup()
        await runner.cleanup()
        await kube.close()
        transport.close()


def _asker(args: argparse.Namespace, access: Any, namespaces: list[str], llm_config: Any) -> tuple[Any, Any]:
    """The Asker of ``/vigil status|why|history`` (vigil.chatops.ask), reading as the component's
    ServiceAccount, and its transport (closed at shutdown)."""
    from vigil.chatops import ask, conversation, kubeio

    transport = kubeio.Transport(access, timeout=10.0)
    configmaps = None
    if args.conversations == "configmaps":
        configmaps = kubeio.ConfigMapClient(transport, args.conversation_namespace or access.namespace)
    asker = ask.Asker(kubeio.ApiReader(transport), llm_config=llm_config,
                      store=conversation.ConversationStore(configmaps),
                      default_namespace=args.default_namespace or access.namespace,
                      namespaces=namespaces or None)
    return asker, transport
