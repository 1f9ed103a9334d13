"""Startup, cleanup and login: build the runtime, start the engine, stop it cleanly."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import socket
from typing import Any

import kopf

from vigil.adapters import alertmanager, aws, inference, kube, notify, prometheus, web
from vigil.adapters.gcpause import GcPauses, freeze_survivors
from vigil.adapters.metrics import OperatorMetrics
from vigil.domain import freshness, sharding
from vigil.domain.allowlist import AllowList
from vigil.engine import evaluation, models
from vigil.engine.leader import LayoutFence, LeaderElector
from vigil.engine.remediation.engine import RemediationEngine
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


def _provenance_key(path: str | None) -> bytes | None:
    """The signing key (whitespace around it ignored: Secrets often end in a newline). Raises on a bad file."""
    if not path:
        logger.warning("no --provenance-key-file: RemediationActions are not signed; only the chart's admission "
                       "policy keeps others from creating them (docs/security.md)")
        return None
    key = pathlib.Path(path).read_bytes().strip()
    if len(key) < 16:
        raise ValueError(f"the provenance key in {path} is shorter than 16 bytes")
    return key


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for operators with watch-event handlers only: nothing is built, fetched or stored.

    kopf builds every object's "essence" on every event, for create/update/delete handlers, by deep-copying
    the whole body (status included) and then dropping the status: 3.8 % of the GIL samples while a restart
    took in 10,000 detectors with their statuses (issue 16). Vigil registers no such handler (``on.event``
    only: no finalizer, no annotations written, see handlers/detectors.py), so the essence is never used;
    tests/cli/test_handlers.py fails if a change-detecting or spawning handler is ever registered.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        return await _login(settings)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = "vigil.dev/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="vigil.dev")
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.posting.level = logging.WARNING
        settings.posting.reporting_component = "vigil"
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60

        # Discovery is enough to find our resources; scanning CRDs would need cluster-wide RBAC.
        settings.scanning.disabled = True

        layout = sharding.Layout(config.shard_index, config.shards, config.shard_selector)
        owns = layout.owns if layout.sharded else None
        identity = config.identity or socket.gethostname()
        lease = layout.lease_name(config.leader_election_name) if config.leader_election else ""
        metrics = OperatorMetrics()
        source = prometheus.PrometheusSource(
            concurrency=config.prometheus_concurrency, timeout=config.prometheus_timeout,
            limits=prometheus.Limits(max_series=config.max_series, max_response_bytes=config.max_response_bytes),
            compression=config.prometheus_compression,
        )
        cache = inference.ModelCache(limits=inference.Limits(max_bytes=config.max_model_bytes))
        kube_client = kube.KubeClient(lambda: _login(settings))
        kube_client.instance = identity  # Events name the replica that acted (reportingInstance)
        resolver = models.ModelResolver(cache, kube_client, config.model_refresh)
        engine = Engine(
            evaluation.EngineSettings(config.prometheus_url, config.min_interval,
                                      AllowList(config.prometheus_allowed_urls, config.prometheus_url)),
            source, resolver, kube_client, metrics,
            batch_limit=config.batch_limit, heartbeat=config.heartbeat,
            anomalous_heartbeat=min(config.anomalous_heartbeat, config.heartbeat), owns=owns,
        )
        aws_clients = aws.ClientCache(endpoint_url=config.aws_endpoint_url, max_attempts=config.aws_max_attempts)
        remediation = RemediationEngine(
            engine.registry, kube_client, aws_clients.get, notify.Notifier(kube_client), None, metrics,
            namespaces=config.namespaces if not config.all_namespaces else (), upsert_detector=engine.upsert,
            owns=owns, remote_lag=config.heartbeat,
            remote_anomalous_lag=min(config.anomalous_heartbeat, config.heartbeat), admin=config.admin,
            max_sleep=config.remediation_resync,
            provenance_key=_provenance_key(config.provenance_key_file),
            command_poll_interval=config.command_poll_interval,
        )
        engine.on_change = remediation.wake  # a verdict that flips is seen at once, not at the next resync
        if config.gc_freeze:
            engine.on_settled = freeze_survivors
        alerts = alertmanager.AlertStore(max_bytes=config.alertmanager_max_bytes, on_change=remediation.wake)
        remediation.alerts = alerts
        stop = asyncio.Event()
        endpoint = web.WebEndpoint(metrics, lambda: engine.last_loop, config.liveness_timeout,
                                   lambda: memo.runtime.started, config.http_host, config.http_port)
        token = (alertmanager.token_from_file(config.alertmanager_token_file)
                 if config.alertmanager_token_file else None)
        alertmanager.register(endpoint, alerts, token, metrics=metrics,
                              allow_unauthenticated=config.alertmanager_allow_unauthenticated)

        def lead(leader: bool) -> None:
            metrics.leader.labels(lease).set(1 if leader else 0)
            for gate in (engine.active, remediation.active):
                if leader:
                    gate.set()
                else:
                    gate.clear()
            if leader:
                remediation.needs_sync = True  # a standby's caches may lag: re-list before deciding
                engine.wake_all()
                remediation.wake()

        elector = None
        if config.leader_election:
            fence = LayoutFence(kube_client, config.leader_election_namespace,
                                layout.lease_group(config.leader_election_name), layout.count, config.lease_duration)
            elector = LeaderElector(
                kube_client, config.leader_election_namespace, lease, identity, lead,
                lease_duration=config.lease_duration, fence=fence,
                annotations=lambda: freshness.lease_annotations(engine.shard_freshness()),
            )
            lead(False)
        else:
            metrics.leader.labels(lease).set(1)
        runtime = Runtime(config=config, metrics=metrics, source=source, models=cache, kube=kube_client,
                          engine=engine, remediation=remediation, aws=aws_clients, alerts=alerts, web=endpoint,
                          leader=elector, stop=stop)
        memo.runtime = runtime
        runtime.gc_pauses = GcPauses(metrics.gc_pause)
        runtime.gc_pauses.install()
        await endpoint.start()
        runtime.tasks.append(asyncio.create_task(engine.run(stop), name="vigil-engine"))
        runtime.tasks.append(asyncio.create_task(remediation.run(stop), name="vigil-remediation"))
        if elector is not None:
            runtime.tasks.append(asyncio.create_task(elector.run(stop), name="vigil-leader"))
        runtime.started = True
        logger.log(*alertmanager.describe(config.alertmanager_token_file, config.alertmanager_allow_unauthenticated,
                                          endpoint.port))
        logger.info("vigil started: http on port %s, default Prometheus %s, leader election %s, serving %s",
                    endpoint.port, config.prometheus_url or "(none; detectors must set spec.prometheus.url)",
                    f"on (lease {config.leader_election_namespace}/{lease})"
                    if elector else "off (this replica always acts)", layout.describe())

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
        runtime.remediation.close()
        runtime.aws.close()
        if runtime.gc_pauses is not None:
            runtime.gc_pauses.uninstall()
