"""Alertmanager receiver benchmark (issue 11, item 7): an 18k-alert POST and 600 x 1 MB alerts.

The receiver runs for real, as in the operator: the operator's aiohttp ``WebEndpoint`` with
``POST /alertmanager`` mounted, in its own process (so its RSS is the receiver's alone),
driven over HTTP from this process.

1. **18k-alert POST**: one body of 18,000 small alerts (under the 1 MiB body limit), posted
   into an empty store; the time from sending to the answer is how long the event loop was
   blocked (the handler does not yield once the body is read). Best and median of
   ``--repeat``. Also with a byte budget that evicts almost everything (``--max-bytes``-style
   store), the eviction path. Log lines written by the receiver are counted.
2. **600 x 1 MB**: 600 POSTs of one alert each carrying a 1 MB annotation, then the server's
   RSS growth and what its store kept.

``--baseline DIR`` runs the same scenarios against another checkout's ``operator`` folder
(e.g. a worktree of main before the fix) in the same run, and prints the ratios. The server
side uses only the API both versions share (``register(endpoint, store, token)``,
``AlertStore()``).

    python -m bench.alertmanager                                  # current code
    python -m bench.alertmanager --baseline /tmp/main/operator    # before/after, same run
    python -m bench.alertmanager --output docs/bench/alertmanager.md
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
EVICTING_BUDGET = 256 * 1024


# ---- server side (a child process) ---------------------------------------------------------------

def _rss() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _serve() -> None:
    """The receiver on the operator's endpoint, plus /bench routes to reset the store and read stats."""
    import logging
    import time as clock

    import aiohttp.web

    from vigil.adapters import alertmanager
    from vigil.adapters.metrics import OperatorMetrics
    from vigil.adapters.web import WebEndpoint

    lines = 0

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal lines
            lines += 1

    logging.getLogger("vigil.adapters.alertmanager").addHandler(Count(logging.DEBUG))
    logging.getLogger("vigil.adapters.alertmanager").setLevel(logging.DEBUG)
    logging.getLogger("vigil.adapters.alertmanager").propagate = False

    endpoint = WebEndpoint(OperatorMetrics(), clock.time, 60.0, lambda: True, "127.0.0.1", 0)
    receiver = alertmanager.register(endpoint, alertmanager.AlertStore(), lambda: TOKEN)

    async def reset(request: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal lines
        budget = request.query.get("max_bytes")
        # Only the current store takes a byte budget; the baseline is built with its defaults.
        receiver.store = alertmanager.AlertStore(max_bytes=int(budget)) if budget else alertmanager.AlertStore()
        lines = 0
        return aiohttp.web.json_response({"ok": True})

    async def stats(request: aiohttp.web.Request) -> aiohttp.web.Response:
        store = receiver.store
        return aiohttp.web.json_response({"alerts": len(store), "estimated_bytes": getattr(store, "size_bytes", None),
                                          "rss": _rss(), "log_lines": lines, "cpu": clock.process_time()})

    endpoint.add_route("POST", "/bench/reset", reset)
    endpoint.add_route("GET", "/bench/stats", stats)
    await endpoint.start()
    print(endpoint.port, flush=True)
    await asyncio.Event().wait()


# ---- client side ---------------------------------------------------------------------------------

def message(alerts: list[dict[str, Any]]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "vigil", "groupKey": "{}:{}",
                       "truncatedAlerts": 0, "alerts": alerts}, separators=(",", ":")).encode()


def eighteen_thousand() -> bytes:
    body = message([{"status": "firing", "labels": {"namespace": "a", "i": format(n, "x")}} for n in range(18_000)])
    assert len(body) <= 1024 * 1024, len(body)
    return body


def megabyte_alert(n: int) -> bytes:
    return message([{"status": "firing", "fingerprint": f"{n:016x}",
                     "labels": {"alertname": "Big", "namespace": "shop", "instance": f"i-{n}"},
                     "annotations": {"description": "x" * 1_000_000}}])


@dataclasses.dataclass
class Result:
    label: str
    post_best: float = 0.0
    post_median: float = 0.0
    post_cpu: float = 0.0
    post_lines: int = 0
    kept: int = 0
    estimated: int | None = None
    post_growth: int = 0
    evicting_best: float | None = None
    evicting_lines: int | None = None
    evicting_kept: int | None = None
    big_growth: int = 0
    big_kept: int = 0
    big_estimated: int | None = None
    big_seconds: float = 0.0
    rss_base: int = 0


class Server:
    def __init__(self, operator_dir: pathlib.Path) -> None:
        env = {**os.environ, "PYTHONPATH": f"{operator_dir}{os.pathsep}{ROOT}"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.alertmanager", "--serve"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    start = time.perf_counter()
    async with session.post(url, data=io.BytesIO(body), headers=AUTH) as response:
        await response.read()
        assert response.status == 200, (response.status, await response.text())
    return time.perf_counter() - start


async def _run(label: str, operator_dir: pathlib.Path, repeat: int, big: int, evicting: bool) -> Result:
    server = Server(operator_dir)
    result = Result(label)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            async def stats() -> dict[str, Any]:
                async with session.get(f"{server.base}/bench/stats") as response:
                    return dict(await response.json())

            async def reset(max_bytes: int | None = None) -> None:
                query = f"?max_bytes={max_bytes}" if max_bytes else ""
                async with session.post(f"{server.base}/bench/reset{query}") as response:
                    assert response.status == 200

            url = f"{server.base}/alertmanager"
            body = eighteen_thousand()
            times, cpu = [], []
            for _ in range(repeat):
                await reset()
                before = await stats()
                times.append(await _post(session, url, body))
                now = await stats()
                cpu.append(now["cpu"] - before["cpu"])
            result.post_growth = now["rss"] - before["rss"]
            result.post_cpu = min(cpu)
            result.post_best, result.post_median = min(times), statistics.median(times)
            result.post_lines, result.kept, result.estimated = now["log_lines"], now["alerts"], now["estimated_bytes"]
            if evicting:
                times = []
                for _ in range(repeat):
                    await reset(EVICTING_BUDGET)
                    times.append(await _post(session, url, body))
                now = await stats()
                result.evicting_best, result.evicting_lines, result.evicting_kept = (
                    min(times), now["log_lines"], now["alerts"])

            await reset()
            result.rss_base = (await stats())["rss"]
            start = time.perf_counter()
            for n in range(big):
                await _post(session, url, megabyte_alert(n))
            result.big_seconds = time.perf_counter() - start
            now = await stats()
            result.big_growth = now["rss"] - result.rss_base
            result.big_kept, result.big_estimated = now["alerts"], now["estimated_bytes"]
    finally:
        server.close()
    return result


def _mib(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**20:,.1f} MiB" if abs(value) >= 2**20 else f"{value / 1024:,.0f} KiB"


def report(results: list[Result], repeat: int, big: int) -> str:
    current = results[-1]
    rows: list[tuple[str, Callable[[Result], str]]] = [
        (f"18k-alert POST, empty store (best of {repeat})", lambda r: f"{r.post_best:.3f} s"),
        ("18k-alert POST, median", lambda r: f"{r.post_median:.3f} s"),
        ("receiver CPU time for that POST (best; less sensitive to other load)", lambda r: f"{r.post_cpu:.3f} s"),
        ("receiver log lines for that POST", lambda r: f"{r.post_lines:,}"),
        ("alerts kept after it", lambda r: f"{r.kept:,}"),
        ("store's own estimate of its size", lambda r: _mib(r.estimated)),
        ("receiver RSS growth over that POST (store, plus what the allocator keeps)", lambda r: _mib(r.post_growth)),
        (f"18k-alert POST into a {EVICTING_BUDGET // 1024} KiB budget (evicts almost all)",
         lambda r: "n/a" if r.evicting_best is None else f"{r.evicting_best:.3f} s"),
        ("log lines, evicting", lambda r: "n/a" if r.evicting_lines is None else f"{r.evicting_lines:,}"),
        ("alerts kept, evicting", lambda r: "n/a" if r.evicting_kept is None else f"{r.evicting_kept:,}"),
        (f"{big} x 1 MB alerts: receiver RSS growth", lambda r: _mib(r.big_growth)),
        (f"{big} x 1 MB alerts: alerts kept", lambda r: f"{r.big_kept:,}"),
        (f"{big} x 1 MB alerts: store's estimate", lambda r: _mib(r.big_estimated)),
        (f"{big} x 1 MB alerts: time for all POSTs", lambda r: f"{r.big_seconds:.1f} s"),
    ]
    header = "| | " + " | ".join(r.label for r in results) + " |"
    lines = [
        "# Alertmanager receiver (issue 11, item 7)",
        "",
        f"`python -m bench.alertmanager` on {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (shared), the receiver in its own process, driven over HTTP on 127.0.0.1.",
        "",
        header,
        "|---" * (len(results) + 1) + "|",
        *("| " + name + " | " + " | ".join(cell(r) for r in results) + " |" for name, cell in rows),
    ]
    if len(results) == 2:
        before = results[0]
        lines += [
            "",
            f"Ratios, same run: the 18k-alert POST is {before.post_best / current.post_best:,.1f}x faster "
            f"(best times); RSS growth for {big} x 1 MB alerts is "
            f"{before.big_growth / max(current.big_growth, 1):,.1f}x smaller; log lines "
            f"{before.post_lines:,} -> {current.post_lines:,}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=pathlib.Path,
                        help="another checkout's operator folder to measure first (e.g. main before the fix)")
    parser.add_argument("--baseline-label", default="baseline", help="its column's title (default baseline)")
    parser.add_argument("--repeat", type=int, default=3, help="18k-alert POSTs per scenario (default 3)")
    parser.add_argument("--big", type=int, default=600, help="1 MB alerts to post (default 600)")
    parser.add_argument("--output", type=pathlib.Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve())
        return 0
    results = []
    if args.baseline:
        results.append(asyncio.run(_run(args.baseline_label, args.baseline, args.repeat, args.big, evicting=False)))
    results.append(asyncio.run(_run("this checkout", ROOT / "operator", args.repeat, args.big, evicting=True)))
    text = report(results, args.repeat, args.big)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
