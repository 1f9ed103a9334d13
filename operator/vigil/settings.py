"""Operator settings: one dataclass, one docstring per field, filled from flags and env.

Every field maps to a ``vigil run`` flag (and the Helm chart's values); the
README's flag table is written from the same help texts.
"""

from __future__ import annotations

import dataclasses

from vigil.adapters.prometheus import Compression
from vigil.domain.remediation import tenancy


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch. Empty with ``all_namespaces`` means the whole cluster."""

    all_namespaces: bool = True
    """Watch every namespace (needs a ClusterRole)."""

    prometheus_url: str | None = None
    """Default Prometheus base URL for detectors without ``spec.prometheus.url``."""

    prometheus_concurrency: int = 8
    """At most this many Prometheus queries in flight at once."""

    prometheus_timeout: float = 15.0
    """Seconds before a Prometheus query counts as timed out (client and server side)."""

    prometheus_allowed_urls: tuple[str, ...] = ()
    """Base URLs (or ``*``) a detector's ``spec.prometheus.url`` may name, besides ``prometheus_url``.
    Empty: only ``prometheus_url``; any other gives Ready=False/PrometheusURLNotAllowed, unqueried."""

    prometheus_compression: Compression = Compression.NONE
    """``gzip`` asks Prometheus to compress its answers: fewer bytes, several times its CPU per query
    (bench/README.md, "Compression"); ``none`` (the default) does not."""

    max_series: int = 2000
    """Most series one detector's query may return; more gives Ready=False/TooManySeries."""

    max_response_bytes: int = 256 << 20
    """Most bytes read of one Prometheus answer; more gives Ready=False/ResponseTooLarge."""

    min_interval: float = 1.0
    """Smallest ``spec.interval`` accepted; smaller ones give Ready=False/InvalidSpec."""

    anomalous_heartbeat: float = 300.0
    """Heartbeat of a detector whose verdict is anomalous (at most ``heartbeat``).

    Another shard's policy acts on what this status says; a quiet (normal) verdict never triggers an
    action, so it may be 20 minutes old, but an anomalous one must stay fresh: if this shard dies, its
    last anomalous verdict goes stale within ``3 * interval + anomalous_heartbeat`` and is not acted on."""

    heartbeat: float = 1200.0
    """Seconds between status writes when nothing significant changed (scores, timestamps).

    20 minutes: 3 writes per quiet detector per hour (issue 16 asks for at most 4), so 10,000 detectors
    cost 8 writes/s rather than 33. Freshness stays visible: ``lastEvaluationTime`` is at most this old,
    and the shard's Lease carries its last evaluation and overdue count with every renewal."""

    gc_freeze: bool = True
    """Once every owned detector has been evaluated after start, :func:`gc.freeze` what survived.

    A full garbage collection walks every container object and stops the event loop meanwhile (about
    1.4 s at 10,000 detectors, see ``vigil_gc_pause_seconds``); what start-up built and keeps (modules,
    schemas, kopf's per-object memories) need not be walked again."""

    model_refresh: float = 60.0
    """Seconds between re-reads of a model ConfigMap."""

    max_model_bytes: int = 1 << 20
    """Largest serialized custom model accepted; bigger ones give Ready=False/ModelTooExpensive."""

    batch_limit: int = 1000
    """Most detectors evaluated in one scheduler batch."""

    http_host: str = "0.0.0.0"
    """Address of the HTTP endpoint serving /metrics, /healthz and /readyz."""

    http_port: int = 8080
    """Port of that endpoint. 0 picks a free port (tests)."""

    log_format: str = "full"
    """plain, full or json."""

    log_level: str = "info"
    """debug, info, warning or error."""

    liveness_timeout: float = 60.0
    """/healthz fails when the evaluation loop has not turned for this many seconds."""

    leader_election: bool = True
    """Hold a Lease so that only one replica evaluates and acts (active/passive HA)."""

    leader_election_namespace: str = "default"
    """Namespace of the Lease (the chart sets the release namespace)."""

    leader_election_name: str = "vigil-leader"
    """Name of the Lease."""

    lease_duration: float = 15.0
    """Seconds a standby waits after the last renewal before taking over."""

    identity: str = ""
    """This replica's identity in the Lease (default: hostname, i.e. the pod name)."""

    shards: int = 1
    """Split the objects over this many shards by a consistent hash of namespace/name; each shard has
    its own Lease (``<leader_election_name>-shard-<i>-of-<k>``), so each is served active/passive."""

    shard_index: int = 0
    """The shard this replica serves, in [0, shards) (``auto`` on the command line: the pod ordinal mod shards)."""

    shard_selector: str = ""
    """Only handle objects whose labels match this ``kubectl -l`` selector (label-selector sharding)."""

    aws_endpoint_url: str | None = None
    """Send AWS API calls here instead of AWS (moto, LocalStack, a VPC endpoint)."""

    aws_max_attempts: int = 3
    """boto3 standard-mode attempts per call; the engine retries across ticks on top."""

    alertmanager_token_file: str | None = None
    """File holding the bearer token Alertmanager must send (mount it from a Secret). Re-read per
    request; unreadable or empty: every request gets 503."""

    alertmanager_allow_unauthenticated: bool = False
    """Without a token file, accept alerts without authentication. False (the default): without a token
    file the receiver is disabled and answers 403, because an alert can make the operator act."""

    alertmanager_max_bytes: int = 16 << 20
    """Byte budget of the alert store (estimated); beyond it the least recently received alerts are evicted."""

    remediation_resync: float = 1.0
    """Most seconds between two passes of the remediation engine. Passes also run on every event (a policy,
    an action, an alert, a detector verdict that flips) and when a decider's ``requeue_after`` is due."""

    command_poll_interval: float = 5.0
    """Seconds between two polls of a running SSM command's invocations (a runCommand action in Executing)."""

    admin: tenancy.Tenancy = dataclasses.field(default_factory=tenancy.Tenancy)
    """What policies may ask for: required target tags, role ARNs per namespace, SSM documents, commands and
    timeout (``--guard-tag``, ``--namespace-tag-key``, ``--allowed-role-arns``, ``--ssm-*``)."""

    provenance_key_file: str | None = None
    """File holding the key that signs the RemediationActions the operator proposes (a Secret the chart
    generates). None: unsigned digests, trustworthy only with the chart's admission policy."""
