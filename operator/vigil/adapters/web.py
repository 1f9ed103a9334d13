"""The operator's own HTTP endpoint: /metrics, /healthz and /readyz on one port.

/healthz (liveness) fails when the evaluation loop has stopped turning, which
is the failure a restart fixes. /readyz (readiness) fails until the operator has
started its watches and engine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp.web
from prometheus_client import CONTENT_TYPE_LATEST

from vigil.adapters.metrics import OperatorMetrics

#: ``/metrics?name[]=...``: how many names one request may ask for.
MAX_METRIC_NAMES = 50

Handler = Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]]


class WebEndpoint:
    def __init__(
        self,
        metrics: OperatorMetrics,
        last_loop: Callable[[], float],
        liveness_timeout: float,
        ready: Callable[[], bool],
        host: str,
        port: int,
    ) -> None:
        self._metrics = metrics
        self._last_loop = last_loop
        self._liveness_timeout = liveness_timeout
        self._ready = ready
        self._host = host
        self._port = port
        self.app = aiohttp.web.Application()
        self.app.router.add_get("/metrics", self._serve_metrics)
        self.app.router.add_get("/healthz", self._serve_health)
        self.app.router.add_get("/readyz", self._serve_ready)
        self._runner: aiohttp.web.AppRunner | None = None
        self.port: int | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Other features (e.g. the Alertmanager receiver) mount here before start()."""
        self.app.router.add_route(method, path, handler)

    async def start(self) -> None:
        self._runner = aiohttp.web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        names = request.query.getall("name[]", [])
        if len(names) > MAX_METRIC_NAMES or any(len(name) > 200 for name in names):
            return aiohttp.web.Response(status=400, text=f"at most {MAX_METRIC_NAMES} name[] of 200 characters\n")
        body = self._metrics.exposition(names)
        return aiohttp.web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        age = time.time() - self._last_loop()
        if age > self._liveness_timeout:
            return aiohttp.web.Response(status=503, text=f"evaluation loop stalled for {age:.0f}s\n")
        return aiohttp.web.Response(text="ok\n")

    async def _serve_ready(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if not self._ready():
            return aiohttp.web.Response(status=503, text="starting\n")
        return aiohttp.web.Response(text="ready\n")
