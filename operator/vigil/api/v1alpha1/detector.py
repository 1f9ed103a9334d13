"""The ``AnomalyDetector`` resource: a PromQL query scored by an ONNX model.

Condition types, reasons and printer columns live beside the types so that
the operator, the CRD and the docs cannot disagree.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any

import pydantic
from pydantic import Field

from vigil.api.v1alpha1.common import (
    CONDITIONS_FIELD_EXTRA,
    DURATION_PATTERN,
    Condition,
    Model,
    ObjectName,
    cel_duration_millis,
    duration_bound,
    duration_field,
)

KIND = "AnomalyDetector"
PLURAL = "anomalydetectors"
SINGULAR = "anomalydetector"
SHORT_NAMES = ["ad"]
CATEGORIES = ["vigil"]

#: Bounds of the detector's durations (issue 11 item 15: ``step: 60w`` ended in a traceback). The model
#: reads 2,016 points, so a 1d step already needs 5.5 years of history, more than any Prometheus keeps;
#: an interval up to a week still allows weekly checks; Prometheus serves at most 11,000 points per
#: series, which at a 1d step is ~30 years, hence the lookback bound.
MAX_INTERVAL = "7d"
MAX_STEP = "1d"
MAX_LOOKBACK = "10000d"
MAX_FOR = "7d"
MAX_STEP_MILLIS = 86_400_000

Interval = Annotated[str, duration_field(MAX_INTERVAL, True), duration_bound(MAX_INTERVAL, True)]
Step = Annotated[str, duration_field(MAX_STEP, True), duration_bound(MAX_STEP, True)]
Lookback = Annotated[str, duration_field(MAX_LOOKBACK, True), duration_bound(MAX_LOOKBACK, True)]
For = Annotated[str, duration_field(MAX_FOR, False), duration_bound(MAX_FOR, False)]

#: The only built-in model shipped in the package (``vigil/models/default.onnx``).
BUILTIN_MODEL = "default"
#: Bounds of SeriesStatus.why: reasons per series and characters per reason.
MAX_WHY = 3
MAX_WHY_LENGTH = 120


class MissingDataPolicy(enum.StrEnum):
    #: Missing data never counts as an anomaly (the safe default for remediation).
    IGNORE = "ignore"
    #: Missing data counts as anomalous, like an ``absent()`` alert.
    ALERT = "alert"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    ANOMALOUS = "Anomalous"
    DEGRADED = "Degraded"


class Reason(enum.StrEnum):
    """Every reason an AnomalyDetector condition can carry."""

    # Ready
    EVALUATING = "Evaluating"
    PAUSED = "Paused"
    INVALID_SPEC = "InvalidSpec"
    INVALID_QUERY = "InvalidQuery"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_INVALID = "ModelInvalid"
    MODEL_SIGNATURE_MISMATCH = "ModelSignatureMismatch"
    MODEL_DIGEST_MISMATCH = "ModelDigestMismatch"
    MODEL_UNSAFE = "ModelUnsafe"
    MODEL_TOO_EXPENSIVE = "ModelTooExpensive"
    PROMETHEUS_URL_NOT_ALLOWED = "PrometheusURLNotAllowed"
    TOO_MANY_SERIES = "TooManySeries"
    RESPONSE_TOO_LARGE = "ResponseTooLarge"
    PENDING = "Pending"
    # Anomalous
    ANOMALY_DETECTED = "AnomalyDetected"
    NORMAL = "Normal"
    FOR_PENDING = "ForPending"
    MISSING_DATA = "MissingData"
    NO_DATA = "NoData"
    WARMING_UP = "WarmingUp"
    NOT_EVALUATED = "NotEvaluated"
    # Degraded
    AS_EXPECTED = "AsExpected"
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    PROMETHEUS_TIMEOUT = "PrometheusTimeout"
    PROMETHEUS_ERROR = "PrometheusError"
    PARTIAL_DATA = "PartialData"


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the detector's namespace."""

    name: ObjectName = Field(description="ConfigMap name, in the detector's namespace.")
    key: str = Field(
        description="Key holding the ONNX file. Put binary files under binaryData (kubectl create "
        "configmap --from-file does this).",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class ModelSource(Model):
    """Where the ONNX model comes from: the built-in default or a ConfigMap."""

    builtin: Annotated[str, Field(json_schema_extra={"enum": [BUILTIN_MODEL]})] | None = Field(
        default=None,
        description="Name of a model shipped with the operator. Only 'default' exists. Used when "
        "configMapRef is not set.",
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None,
        description="A custom ONNX model stored in a ConfigMap. It must follow the model contract "
        "(README: 'Custom models'): float32 input [N, F] with Vigil's feature metadata.",
    )
    sha256: str | None = Field(
        default=None,
        description="Pin: the model's SHA-256 (lower-case hex). A different file is refused with "
        "Ready=False/ModelDigestMismatch. Also pins the built-in model across operator upgrades.",
        pattern=r"^[a-f0-9]{64}$",
    )


class PrometheusEndpoint(Model):
    url: str | None = Field(
        default=None,
        description="Base URL of the Prometheus HTTP API. Defaults to the operator's --prometheus-url.",
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
    )


class AnomalyDetectorSpec(Model):
    """What to watch, how to score it, and when to call it an anomaly."""

    query: str = Field(
        description="PromQL expression. It may return many series; each one is scored on its own "
        "and identified by its labels.",
        min_length=1,
        max_length=16384,
    )
    interval: Interval = Field(
        default="60s", description=f"How often the query is evaluated (Prometheus duration, at most {MAX_INTERVAL})."
    )
    step: Step | None = Field(
        default=None,
        description="Resolution of the series fed to the model. Defaults to interval. The model "
        f"works on points, so step sets the time scale the model sees. At most {MAX_STEP}.",
    )
    lookback: Lookback | None = Field(
        default=None,
        description="History fetched on start. Defaults to what the model needs (its window "
        f"times step); a shorter value is refused with Ready=False/InvalidSpec. At most {MAX_LOOKBACK}.",
    )
    prometheus: PrometheusEndpoint | None = Field(
        default=None, description="Prometheus to query. Defaults to the operator's --prometheus-url; another "
        "URL must be in the operator's --prometheus-allowed-urls, else Ready=False/PrometheusURLNotAllowed.",
    )
    model: ModelSource | None = Field(default=None, description="The anomaly model. Defaults to built-in.")
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="A series is anomalous when its score (0..1) is at or above this. Defaults to "
        "the model's recommended threshold (see status.model).",
    )
    sensitivity: str | None = Field(
        default=None,
        pattern=r"^(low|medium|high|0(\.[0-9]{1,6})?|1(\.0{1,6})?)$",
        max_length=8,
        description="Alert volume without choosing a threshold: low, medium or high, or a number from 0 "
        "(fewest alerts) to 1 (most); medium = 0.5 = the model's recommended threshold, and each 0.25 step "
        "roughly halves or doubles the false alerts measured in training. Mapped to a threshold by the "
        "calibration table the model ships (see its model card); status.threshold shows the result. "
        "Ignored when threshold is set. A model without a table accepts only medium.",
    )
    for_: For = Field(
        default="0s",
        alias="for",
        description="How long a series must stay above the threshold before it counts as anomalous, "
        f"like the 'for:' of a Prometheus alerting rule. At most {MAX_FOR}.",
    )
    missing_data: MissingDataPolicy = Field(
        default=MissingDataPolicy.IGNORE,
        description="ignore: missing or stale data never counts as an anomaly. alert: it counts as "
        "anomalous (after 'for').",
    )
    top_k: int = Field(
        default=10,
        ge=1,
        le=50,
        description="How many series (highest scores first) to list in status and export as metrics.",
    )
    paused: bool = Field(default=False, description="Stop evaluating; the last status is kept.")


class ModelStatus(Model):
    name: str = Field(description="Model name from its metadata.")
    sha256: str = Field(description="SHA-256 of the ONNX file in use.")
    input_signature: str = Field(description="The input the model takes, e.g. 'features: float[N,12]'.")
    feature_version: str | None = Field(default=None, description="Version of the feature set.")
    window: int | None = Field(default=None, ge=1, description="Points of history per score.")
    recommended_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    source: str | None = Field(default=None, description="builtin:NAME or configmap:NAME/KEY.")


class SeriesState(enum.StrEnum):
    NORMAL = "Normal"
    PENDING = "Pending"
    ANOMALOUS = "Anomalous"
    MISSING = "Missing"
    WARMING_UP = "WarmingUp"


class SeriesStatus(Model):
    labels: dict[str, str] = Field(description="The series' labels, which identify it. Bounded: a value over "
                                   "128 characters (a name over 64) is cut and ends in '…' and a digest of the "
                                   "whole; past 24 labels the rest are folded into one '…' label.")
    score: float | None = Field(default=None, ge=0.0, le=1.0, description="Latest score, null if none.")
    anomalous: bool = Field(description="The verdict for this series, after 'for'.")
    state: SeriesState = Field(description="Normal, Pending (above threshold, waiting 'for'), "
                               "Anomalous, Missing or WarmingUp.")
    since: datetime.datetime | None = Field(default=None, description="When the current state began.")
    why: list[Annotated[str, Field(max_length=MAX_WHY_LENGTH)]] | None = Field(
        default=None, max_length=MAX_WHY,
        description=f"For an anomalous or pending series scored by a model that explains itself (the "
        f"built-in one): up to {MAX_WHY} pieces of evidence that raised its score most, largest first, "
        "e.g. 'change point 12 min ago (downward shift against the daily pattern)'.",
    )


#: Points kept in ``status.scoreHistory``: a sparkline's worth (at a 30s interval, the last 24 minutes),
#: small enough that a status write at thousands of detectors stays cheap (~2 KiB per detector).
SCORE_HISTORY_POINTS = 48


# A slotted, frozen dataclass rather than a Model: every detector keeps up to 48 of them for as long as
# it lives (10,000 detectors: 480,000), and a model instance costs a __dict__ and a fields set besides
# itself (about 560 bytes, and two objects for the garbage collector to walk) where this costs about 150
# and one. Same schema and wire form: both field names are one word, so camelCase changes nothing.
@pydantic.dataclasses.dataclass(slots=True, frozen=True, config=pydantic.ConfigDict(extra="ignore"))
class ScorePoint:
    """One evaluation's maximum score, as kept for ``vigil dashboard``'s sparklines."""

    time: datetime.datetime = Field(description="The evaluation time.")
    score: float | None = Field(default=None, ge=0.0, le=1.0, description="Maximum score over series, null "
                                "when no series was scored.")


class AnomalyDetectorStatus(Model):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, json_schema_extra=CONDITIONS_FIELD_EXTRA
    )
    score: float | None = Field(default=None, ge=0.0, le=1.0, description="Maximum score over series.")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="Effective threshold.")
    anomalous: bool | None = Field(default=None, description="True if any series is anomalous.")
    anomalous_since: datetime.datetime | None = Field(default=None)
    last_evaluation_time: datetime.datetime | None = Field(default=None)
    series_count: int | None = Field(default=None, ge=0, description="Series the query returned.")
    anomalous_series: int | None = Field(default=None, ge=0, description="How many are anomalous.")
    missing_series: int | None = Field(
        default=None, ge=0, description="How many had no value at the evaluation time (stale or absent)."
    )
    series: list[SeriesStatus] = Field(default_factory=list, max_length=50, description="Top-K series.")
    model: ModelStatus | None = Field(default=None)
    score_history: list[ScorePoint] = Field(
        default_factory=list, max_length=SCORE_HISTORY_POINTS,
        description=f"The maximum score of the last {SCORE_HISTORY_POINTS} evaluations, oldest first. Written "
                    "with the rest of the status (on a change or the heartbeat), so it can lag by a heartbeat.")


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Score", "type": "number", "jsonPath": ".status.score", "format": "float"},
    {"name": "Anomalous", "type": "boolean", "jsonPath": ".status.anomalous"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Last-Eval", "type": "date", "jsonPath": ".status.lastEvaluationTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

#: CEL rules the API server enforces on the spec (see x-kubernetes-validations).
SPEC_VALIDATIONS = [
    {
        "rule": "!has(self.model) || !(has(self.model.builtin) && has(self.model.configMapRef))",
        "message": "model: set either builtin or configMapRef, not both",
    },
    {
        "rule": f"has(self.step) || !self.interval.matches('{DURATION_PATTERN}') || "
        f"{cel_duration_millis('self.interval')} <= {MAX_STEP_MILLIS}",
        "message": f"step defaults to interval, which is above {MAX_STEP}: set step (at most {MAX_STEP})",
    },
]
