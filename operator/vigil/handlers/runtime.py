"""The operator's long-lived objects, built at startup and kept in kopf's memo (no globals)."""

from __future__ import annotations

import asyncio
import dataclasses

from vigil.adapters import aws, inference, kube, prometheus, web
from vigil.adapters.alertmanager import AlertStore
from vigil.adapters.gcpause import GcPauses
from vigil.adapters.metrics import OperatorMetrics
from vigil.engine.leader import LeaderElector
from vigil.engine.remediation.engine import RemediationEngine
from vigil.engine.scheduler import Engine
from vigil.settings import OperatorConfig


@dataclasses.dataclass
class Runtime:
    config: OperatorConfig
    metrics: OperatorMetrics
    source: prometheus.PrometheusSource
    models: inference.ModelCache
    kube: kube.KubeClient
    engine: Engine
    remediation: RemediationEngine
    aws: aws.ClientCache
    alerts: AlertStore
    web: web.WebEndpoint
    leader: LeaderElector | None
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    started: bool = False
    gc_pauses: GcPauses | None = None
