"""Startup, cleanup and login: build the runtime, start the engine, stop it cleanly."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from vigil.adapters import inference, kube, prometheus, web
from vigil.adapters.metrics import OperatorMetrics
from vigil.engine import evaluation, models
from vigil.engine.scheduler import Engine
from vigil.handlers.runtime import Runtime
from vigil.settings import OperatorConfig

logger = logging.getLogger(__name__)


async def _login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In-cluster service account first, then KUBECONFIG, via the kubernetes client like kopf."""
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        raise kopf.LoginError("cannot log in: neither in-cluster config nor a kubeconfig was found")
    return info


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        return await _login(settings)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = "vigil.dev/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="vigil.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="vigil.dev", key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING
        settings.posting.reporting_component = "vigil"
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60

        metrics = OperatorMetrics()
        source = prometheus.PrometheusSource(
            concurrency=config.prometheus_concurrency, timeout=config.prometheus_timeout
        )
        cache = inference.ModelCache()
        kube_client = kube.KubeClient(lambda: _login(settings))
        resolver = models.ModelResolver(cache, kube_client, config.model_refresh)
        engine = Engine(
            evaluation.EngineSettings(config.prometheus_url, config.min_interval),
            source, resolver, kube_client, metrics,
            batch_limit=config.batch_limit, heartbeat=config.heartbeat,
        )
        stop = asyncio.Event()
        runtime = Runtime(config=config, metrics=metrics, source=source, models=cache, kube=kube_client,
                          engine=engine, web=web.WebEndpoint(
                              metrics, lambda: engine.last_loop, config.liveness_timeout,
                              lambda: runtime.started, config.http_host, config.http_port),
                          stop=stop)
        memo.runtime = runtime
        await runtime.web.start()
        runtime.tasks.append(asyncio.create_task(engine.run(stop), name="vigil-engine"))
        runtime.started = True
        logger.info("vigil started: http on port %s, default Prometheus %s", runtime.web.port,
                    config.prometheus_url or "(none; detectors must set spec.prometheus.url)")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is None:
            return
        runtime.stop.set()
        for task in runtime.tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        await runtime.web.stop()
        await runtime.kube.close()
        runtime.source.close()
