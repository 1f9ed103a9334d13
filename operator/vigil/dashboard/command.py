"""``vigil dashboard``: the command line, and serving until interrupted.

Bound to 127.0.0.1 by default: the page acts with the user's credentials, so it must not be
reachable from the network. Another address is refused unless it is a loopback one or
``--allow-remote`` says the user means it (then the Host check is off: see docs/dashboard.md).
This module imports nothing heavy at import time: ``vigil --help`` stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

DEFAULT_PORT = 3100


def add_dashboard(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "dashboard", help="a local web page: detectors, policies, actions, approvals, timeline, ask",
        description="Serve the Vigil dashboard on this machine, with your kubeconfig: what it shows and every "
                    "Approve / Reject is your own request to Kubernetes, so your RBAC applies.")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", default=None,
                       help="the namespace to show (default: the kubeconfig context's namespace)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="show every namespace you may list (default: one namespace)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; a non-loopback one needs --allow-remote)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --address: anyone who reaches it acts with YOUR credentials "
                        "(default: refused)")
    p.add_argument("--startup-timeout", type=float, default=5.0,
                   help="seconds to keep trying the API server at start-up (default 5)")
    from vigil.chatops import askcli

    askcli.add_llm_flags(p)  # the ask box answers as `vigil ask` does: deterministic unless an LLM is set


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def allowed_hosts(address: str, port: int) -> list[str]:
    """The Host header values a page of the dashboard is served under (anything else: DNS rebinding)."""
    shown = f"[{address}]" if ":" in address else address
    hosts = [f"{shown}:{port}", f"localhost:{port}"]
    if address == "localhost":
        hosts.append(f"127.0.0.1:{port}")
    return list(dict.fromkeys(hosts))


def main(args: argparse.Namespace) -> int:
    """Exit 2 for a usage error (remote address, missing kubeconfig), 1 when the cluster cannot be used."""
    prog = "vigil dashboard"
    if not is_loopback(args.address) and not args.allow_remote:
        print(f"{prog}: --address {args.address} is not a loopback address: the dashboard acts with your "
              "credentials, so it listens on 127.0.0.1 unless --allow-remote is given", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"{prog}: --port {args.port} is not a port", file=sys.stderr)
        return 2
    from vigil.adapters import kubeaccess
    from vigil.chatops import askcli

    try:
        llm_config = askcli.llm_config(args)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        access = kubeaccess.load(args.kubeconfig, in_cluster_first=False)
        kubeaccess.check_operator_api(access, args.startup_timeout)
    except kubeaccess.AccessError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    import asyncio

    namespace = None if args.all_namespaces else (args.namespace or access.namespace)
    try:
        asyncio.run(serve(access, namespace, args.address, args.port, check_host=not args.allow_remote,
                          llm_config=llm_config))
    except OSError as exc:
        print(f"{prog}: cannot listen on {args.address}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def serve(access: Any, namespace: str | None, address: str, port: int, check_host: bool = True,
                llm_config: Any = None) -> None:
    import asyncio

    from aiohttp import web

    from vigil.dashboard import asking, server
    from vigil.dashboard.cluster import Cluster

    cluster = Cluster(access, namespace)
    user = await cluster.whoami()
    asker = asking.Asking(access, namespace, llm_config)
    dashboard = server.Dashboard(cluster, user, asker.answer, check_host=check_host, history=asker.history)
    runner = web.AppRunner(server.build(dashboard), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, port)
        await site.start()
        bound = port
        server_obj: Any = getattr(site, "_server", None)
        if server_obj is not None and server_obj.sockets:
            bound = int(server_obj.sockets[0].getsockname()[1])
        dashboard.allow(allowed_hosts(address, bound))
        shown = f"[{address}]" if ":" in address else address
        print(f"vigil dashboard: http://{shown}:{bound}/ as {user or 'an unknown user'} on {access.server}, "
              f"{cluster.scope} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await asker.close()
        cluster.close()
