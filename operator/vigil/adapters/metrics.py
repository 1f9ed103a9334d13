"""The operator's own Prometheus metrics, on a registry owned by the operator.

Per-series scores are exported for the top-K series of each detector only, so
the label cardinality is bounded by ``detectors x topK`` no matter how many
series a query returns. Label sets of series that leave the top-K, and of
deleted detectors, are removed, so nothing stale lingers on /metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vigil import __version__
from vigil.adapters.detector_gauges import DetectorGauges, DetectorId


@dataclasses.dataclass
class OperatorMetrics:
    """Every metric Vigil exports. One instance per operator process (kept in the memo)."""

    registry: CollectorRegistry = dataclasses.field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.build_info = Gauge("vigil_build_info", "Vigil version.", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        #: Per-detector gauges (score, max score, anomalous, ready, series, last evaluation): one row per
        #: detector, rendered at scrape time.
        self.detector_gauges = DetectorGauges(r)
        self.detectors = Gauge("vigil_detectors", "Detectors known to the scheduler.", registry=r)
        self.detectors_unevaluated = Gauge(
            "vigil_detectors_unevaluated",
            "Detectors of this replica's shard not yet evaluated since it started (start-up progress).",
            registry=r,
        )
        self.evaluations = Counter(
            "vigil_evaluations_total", "Detector evaluations by result.", ["result"], registry=r
        )
        self.evaluation_duration = Histogram(
            "vigil_evaluation_duration_seconds",
            "Wall time of one scheduler batch: fetch, features, inference, decisions.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.inference_duration = Histogram(
            "vigil_inference_duration_seconds", "Wall time of one batched ONNX run.",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1), registry=r,
        )
        self.inference_rows = Counter("vigil_inference_rows_total", "Feature rows scored.", registry=r)
        self.prometheus_errors = Counter(
            "vigil_prometheus_errors_total", "Failed Prometheus queries by kind.", ["kind"], registry=r
        )
        self.model_load_errors = Counter(
            "vigil_model_load_errors_total", "Models that could not be served, by reason.", ["reason"],
            registry=r,
        )
        self.model_loads = Counter("vigil_model_loads_total", "ONNX sessions created.", registry=r)
        self.status_writes = Counter(
            "vigil_status_writes_total", "Status patches sent to the API server, by result.", ["result"],
            registry=r,
        )
        self.status_writes_pending = Gauge(
            "vigil_status_writes_pending", "Detector statuses queued for a write (one per detector at most).",
            registry=r,
        )
        self.events = Counter("vigil_events_total", "Kubernetes Events posted, by reason.", ["reason"], registry=r)
        self.scheduler_lag = Gauge(
            "vigil_scheduler_lag_seconds", "How late the newest batch started after it was due.", registry=r
        )
        self.evaluation_lag = Histogram(
            "vigil_evaluation_lag_seconds",
            "Per detector evaluation: when its verdict was ready minus when it was scheduled "
            "(includes waiting for the batch, the query and inference).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300),
            registry=r,
        )
        # Remediation.
        self.actions = Counter(
            "vigil_actions_total", "RemediationActions that reached a terminal phase.",
            ["namespace", "policy", "kind", "phase"], registry=r,
        )
        self.actions_in_flight = Gauge(
            "vigil_actions_in_flight", "RemediationActions pending approval, approved or executing.",
            ["namespace", "policy"], registry=r,
        )
        self.remediation_ticks = Counter(
            "vigil_remediation_ticks_total",
            "Completed passes of the remediation engine over its policies and actions (leader only): "
            "a leader whose count stops rising has stalled.", registry=r,
        )
        self.aws_errors = Counter(
            "vigil_aws_errors_total", "AWS API errors by operation and class (Recoverable/Terminal).",
            ["operation", "error_class"], registry=r,
        )
        self.notifications = Counter(
            "vigil_notifications_total", "Notifications sent, by channel and result.", ["channel", "result"],
            registry=r,
        )
        self.policy_action_allowed = Gauge(
            "vigil_policy_action_allowed", "1 if the policy's ActionAllowed condition is True.",
            ["namespace", "policy"], registry=r,
        )
        self.leader = Gauge(
            "vigil_leader", "1 while this replica holds its Lease (named by lease; one per shard) and may act.",
            ["lease"], registry=r,
        )
        self.alerts_received = Counter(
            "vigil_alertmanager_alerts_received_total", "Alerts received on POST /alertmanager.", registry=r
        )
        self.alertmanager_requests = Counter(
            "vigil_alertmanager_requests_total",
            "Requests to POST /alertmanager by HTTP status (401: wrong token, 403: receiver disabled).",
            ["code"], registry=r,
        )
        self.alerts_dropped = Counter(
            "vigil_alertmanager_alerts_dropped_total",
            "Alerts received but not kept: no-namespace (no namespace label), too-large (labels or "
            "fingerprint over the limits), evicted (the store's byte budget was full).", ["reason"], registry=r,
        )
        self.alert_store_bytes = Gauge(
            "vigil_alertmanager_store_bytes",
            "Estimated bytes held by the Alertmanager alert store, as of the last request.", registry=r,
        )
        self.gc_pause = Histogram(
            "vigil_gc_pause_seconds",
            "Wall time of one garbage collection in the operator process, by generation: the event loop "
            "stands still for it, so a long pause shows as evaluation lag.", ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )

    def publish_scores(self, detector: DetectorId, scores: Iterable[tuple[str, float]]) -> None:
        """Set the per-series scores of one detector; series no longer listed are gone from /metrics."""
        self.detector_gauges.publish_scores(detector, list(scores))

    def forget(self, detector: DetectorId) -> None:
        """Remove every per-detector value of a deleted (or no longer owned) detector."""
        self.detector_gauges.forget(detector)

    def exposition(self, names: Sequence[str] = ()) -> bytes:
        """The text exposition; only the metrics named in ``names`` when given (prometheus_client's
        ``name[]`` filter: a poller reads one gauge without rendering every detector's scores)."""
        if names:
            return prometheus_client.generate_latest(self.registry.restricted_registry(names))
        return prometheus_client.generate_latest(self.registry)
