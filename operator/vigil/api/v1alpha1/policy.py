"""The ``RemediationPolicy`` resource: which anomalies trigger which AWS actions, and the guard rails.

Guard-rail reasons and phases live beside the types so the operator, the CRD
and the docs cannot disagree.
"""

from __future__ import annotations

import datetime
import enum
import functools
from typing import Annotated, Any

import pydantic
from pydantic import Field

from vigil.api.v1alpha1.common import (
    CONDITIONS_FIELD_EXTRA,
    Condition,
    Duration,
    Model,
    ObjectName,
    PositiveDuration,
)
from vigil.domain import durations

KIND = "RemediationPolicy"
PLURAL = "remediationpolicies"
SINGULAR = "remediationpolicy"
SHORT_NAMES = ["rp"]
CATEGORIES = ["vigil"]

DEFAULT_TAG_KEY = "vigil.dev/managed"
DEFAULT_TAG_VALUE = "true"

LabelValue = Annotated[str, Field(max_length=63)]


class LabelSelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317)
    operator: LabelSelectorOperator
    values: list[str] = Field(default_factory=list, max_length=64)


class LabelSelector(Model):
    """A Kubernetes label selector (matchLabels AND matchExpressions)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)


class Trigger(Model):
    """When a detector's verdict becomes a reason to act."""

    for_: Duration = Field(
        default="0s", alias="for",
        description="How long the detector must have been anomalous (status.anomalousSince) before the first "
        "step runs. Adds to the detector's own 'for'.",
    )
    min_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Act only if the detector's score is at least this."
    )
    max_staleness: PositiveDuration | None = Field(
        default=None,
        description="The detector's last evaluation must be younger than this; default 3x its interval. Older "
        "data never triggers an action (reason DetectorStale).",
    )
    keep_firing_for: Duration = Field(
        default="5m",
        description="An incident ends only after the trigger has been quiet this long (like Prometheus' "
        "keep_firing_for). A flare within that time continues the same incident: no new first step, and "
        "pending approvals stay valid.",
    )

    # Parsed once per object version (models are built at the edge, from the API's JSON), never per use.
    @functools.cached_property
    def for_seconds(self) -> float:
        return durations.parse(self.for_)

    @functools.cached_property
    def keep_firing_for_seconds(self) -> float:
        return durations.parse(self.keep_firing_for)

    @functools.cached_property
    def max_staleness_seconds(self) -> float | None:
        return durations.parse(self.max_staleness) if self.max_staleness else None


class InstanceTargets(Model):
    """Which EC2 instances a step acts on: from the anomalous series' labels, or a fixed list."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.fromLabel) || (has(self.instanceIds) && size(self.instanceIds) > 0)",
                 "message": "targets need fromLabel or instanceIds"},
            ]
        }
    }

    from_label: str | None = Field(
        default=None, max_length=128, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="Label of the anomalous series holding the instance id (e.g. instance_id).",
    )
    instance_ids: list[Annotated[str, Field(pattern=r"^i-[0-9a-f]{8,17}$")]] = Field(
        default_factory=list, max_length=100, description="Fixed instance ids."
    )


class ScaleAutoScalingGroup(Model):
    """Set an Auto Scaling Group's desired capacity to an absolute number within bounds."""

    name: str = Field(min_length=1, max_length=255, description="Auto Scaling Group name.")
    by: int | None = Field(default=None, ge=-1000, le=1000,
                           description="Change from the observed desired capacity (negative scales in).")
    to: int | None = Field(default=None, ge=0, le=10000, description="Absolute desired capacity.")
    min: int = Field(default=0, ge=0, le=10000, description="Never go below this.")
    max: int = Field(ge=0, le=10000, description="Never go above this.")
    honor_cooldown: bool = Field(default=True, description="Pass HonorCooldown so the group's cooldown applies.")


class ReplaceMode(enum.StrEnum):
    MARK_UNHEALTHY = "MarkUnhealthy"
    TERMINATE = "Terminate"


class ReplaceInstance(Model):
    """Have the instance's Auto Scaling Group replace it."""

    targets: InstanceTargets
    mode: ReplaceMode = Field(
        default=ReplaceMode.MARK_UNHEALTHY,
        description="MarkUnhealthy: SetInstanceHealth Unhealthy. Terminate: TerminateInstanceInAutoScalingGroup "
        "without decrementing the desired capacity.",
    )


class RebootInstances(Model):
    """Reboot the instances (EC2 RebootInstances)."""

    targets: InstanceTargets


class RunCommand(Model):
    """Run shell commands through SSM (AWS-RunShellScript), e.g. restart a service."""

    targets: InstanceTargets
    commands: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=32)
    document_name: str = Field(default="AWS-RunShellScript", max_length=128)
    timeout_seconds: int = Field(default=600, ge=30, le=172800, description="SSM execution timeout.")


class DeregisterTarget(Model):
    """Drain instances from an ELBv2 target group, and optionally put them back once healthy."""

    target_group_arn: str = Field(pattern=r"^arn:aws[a-z-]*:elasticloadbalancing:", max_length=2048)
    targets: InstanceTargets
    port: int | None = Field(default=None, ge=1, le=65535)
    reregister_after: PositiveDuration | None = Field(
        default=None,
        description="Register the targets again once the detector has been healthy for this long.",
    )

    @functools.cached_property
    def reregister_after_seconds(self) -> float | None:
        return durations.parse(self.reregister_after) if self.reregister_after else None


class Restore(Model):
    """Scale back after the incident: return the group toward the capacity recorded before it, step by step.

    Each change is its own RemediationAction (direction restore), checked by the same guard rails as the
    step itself at the moment AWS is called. It stops for good when someone changed the group's desired
    capacity by hand (Skipped, ChangedOutsideVigil), when a step fails or is refused, or when another
    incident of the policy opens.
    """

    after: PositiveDuration = Field(
        default="30m",
        description="Start once the trigger has been quiet this long (counted from the quiet spell that closed "
        "the incident; never before the incident has closed).",
    )
    step: int = Field(default=1, ge=1, le=1000, description="Instances removed (or added back) per restore step.")
    every: PositiveDuration = Field(
        default="10m", description="Time between two restore steps (from the previous one's completion).")
    approval: bool = Field(
        default=True,
        description="true: restore steps need approval exactly when the policy's approval.required says so. "
        "false: they never wait for a human.",
    )

    @functools.cached_property
    def after_seconds(self) -> float:
        return durations.parse(self.after)

    @functools.cached_property
    def every_seconds(self) -> float:
        return durations.parse(self.every)


class Step(Model):
    """One rung of the escalation ladder. Exactly one action kind must be set."""

    name: ObjectName | None = Field(default=None, description="Name shown in actions and events.")
    after: Duration = Field(
        default="0s",
        description="For every step but the first: run if the detector is still anomalous this long after the "
        "previous step completed.",
    )
    scale_auto_scaling_group: ScaleAutoScalingGroup | None = None
    replace_instance: ReplaceInstance | None = None
    reboot_instances: RebootInstances | None = None
    run_command: RunCommand | None = None
    deregister_target: DeregisterTarget | None = None
    restore: Restore | None = Field(
        default=None,
        description="scaleAutoScalingGroup only: once the incident is over, scale back toward the capacity "
        "recorded before it, gradually.",
    )

    @pydantic.model_validator(mode="after")
    def _restore_needs_a_scale_step(self) -> Step:
        if self.restore is not None and self.scale_auto_scaling_group is None:
            raise ValueError("restore is only allowed on a scaleAutoScalingGroup step")
        return self

    @functools.cached_property
    def after_seconds(self) -> float:
        return durations.parse(self.after)

    @property
    def kind(self) -> str:
        """Which action kind the step sets (e.g. ``scaleAutoScalingGroup``); the schema allows exactly one."""
        kinds = {"scaleAutoScalingGroup": self.scale_auto_scaling_group, "replaceInstance": self.replace_instance,
                 "rebootInstances": self.reboot_instances, "runCommand": self.run_command,
                 "deregisterTarget": self.deregister_target}
        for kind, value in kinds.items():
            if value is not None:
                return kind
        raise ValueError("the step sets no action kind")

    @property
    def instance_targets(self) -> InstanceTargets | None:
        """The targets of an instance-level step; None for a scale step."""
        for value in (self.replace_instance, self.reboot_instances, self.run_command, self.deregister_target):
            if value is not None:
                return value.targets
        return None


STEP_KINDS = ("scaleAutoScalingGroup", "replaceInstance", "rebootInstances", "runCommand", "deregisterTarget")


class AwsSettings(Model):
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", max_length=32, description="AWS region.")
    role_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", max_length=2048,
        description="Role to assume (sts:AssumeRole). Base credentials come from the default chain (IRSA works).",
    )


class Approval(Model):
    required: bool = Field(default=False, description="Wait for a human to approve each action.")
    timeout: PositiveDuration = Field(default="30m", description="Unapproved actions expire after this.")

    @functools.cached_property
    def timeout_seconds(self) -> float:
        return durations.parse(self.timeout)


class RateLimit(Model):
    max_actions: int = Field(ge=1, le=1000, description="At most this many actions ...")
    window: PositiveDuration = Field(default="1h", description="... per this sliding window.")

    @functools.cached_property
    def window_seconds(self) -> float:
        return durations.parse(self.window)


class BlastRadius(Model):
    max_instances: int | None = Field(
        default=None, ge=1, le=10000, description="At most this many instances of one group acted on at once."
    )
    max_percent: int | None = Field(
        default=None, ge=1, le=100, description="At most this share of a group's instances acted on at once."
    )


class TargetGuard(Model):
    """Only act on AWS resources that carry this tag (allow-list by tag)."""

    tag_key: str = Field(default=DEFAULT_TAG_KEY, min_length=1, max_length=128)
    tag_value: str = Field(default=DEFAULT_TAG_VALUE, max_length=256)


class SecretKeyRef(Model):
    name: ObjectName
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class Channel(Model):
    """A webhook whose URL is read from a Secret (never from the policy, never logged)."""

    url_secret_ref: SecretKeyRef


class Notify(Model):
    slack: Channel | None = Field(default=None, description="Slack incoming webhook (Block Kit message).")
    discord: Channel | None = Field(default=None, description="Discord webhook (embed).")
    webhook: Channel | None = Field(default=None, description="Generic JSON webhook.")


class RemediationPolicySpec(Model):
    """Which anomalies trigger which AWS actions, with which guard rails."""

    detector_selector: LabelSelector | None = Field(
        default=None, description="AnomalyDetectors in this namespace whose labels match."
    )
    detectors: list[ObjectName] = Field(default_factory=list, max_length=100,
                                        description="AnomalyDetector names in this namespace.")
    alert_selector: LabelSelector | None = Field(
        default=None,
        description="Alertmanager alerts (received on POST /alertmanager) whose labels match also trigger.",
    )
    trigger: Trigger = Field(default_factory=Trigger)
    actions: list[Step] = Field(min_length=1, max_length=10, description="The escalation ladder, in order.")
    aws: AwsSettings
    dry_run: bool = Field(default=False, description="Decide and record everything; change nothing in AWS.")
    approval: Approval = Field(default_factory=Approval)
    cooldown: Duration = Field(default="10m", description="No new incident is acted on this long after an action.")
    rate_limit: RateLimit | None = None
    blast_radius: BlastRadius | None = None
    target_guard: TargetGuard = Field(default_factory=TargetGuard)
    notify: Notify | None = None
    paused: bool = False
    successful_actions_history_limit: int = Field(default=10, ge=0, le=1000)
    failed_actions_history_limit: int = Field(default=10, ge=0, le=1000)

    @functools.cached_property
    def cooldown_seconds(self) -> float:
        return durations.parse(self.cooldown)


class PolicyConditionType(enum.StrEnum):
    READY = "Ready"
    ACTION_ALLOWED = "ActionAllowed"
    DEGRADED = "Degraded"


class PolicyReason(enum.StrEnum):
    # Ready
    VALID = "Valid"
    INVALID_SPEC = "InvalidSpec"
    NO_DETECTORS = "NoDetectors"
    #: The policy asks for something the operator's settings forbid (role, SSM document, timeout, commands).
    NOT_PERMITTED = "NotPermitted"
    # ActionAllowed (False reasons are fixed by the API contract)
    ALLOWED = "Allowed"
    COOLDOWN_ACTIVE = "CooldownActive"
    RATE_LIMITED = "RateLimited"
    BLAST_RADIUS_EXCEEDED = "BlastRadiusExceeded"
    AWAITING_APPROVAL = "AwaitingApproval"
    DETECTOR_STALE = "DetectorStale"
    PAUSED = "Paused"
    # Degraded
    AS_EXPECTED = "AsExpected"
    AWS_RETRYING = "AWSRetrying"
    NOTIFICATION_FAILED = "NotificationFailed"


class PolicyPhase(enum.StrEnum):
    IDLE = "Idle"
    TRIGGERED = "Triggered"
    AWAITING_APPROVAL = "AwaitingApproval"
    ACTING = "Acting"
    COOLDOWN = "Cooldown"
    PAUSED = "Paused"
    INVALID = "Invalid"


class RestorePhase(enum.StrEnum):
    #: The incident closed; the first restore step is due at ``nextAt``.
    WAITING = "Waiting"
    #: At least one restore step was proposed; the next is due at ``nextAt``.
    RESTORING = "Restoring"
    #: The group is back at the recorded capacity (or at its floor).
    DONE = "Done"
    #: Given up for good: see ``reason`` and ``message``.
    STOPPED = "Stopped"


class RestoreReason(enum.StrEnum):
    """Why a restore stopped (``status.restoring.reason``); ChangedOutsideVigil is also an action's skipReason."""

    CHANGED_OUTSIDE_VIGIL = "ChangedOutsideVigil"
    INCIDENT_OPENED = "IncidentOpened"
    STEP_ENDED = "StepEnded"
    POLICY_CHANGED = "PolicyChanged"


class Restoring(Model):
    """The scale-back after the last incident whose ladder changed capacity with a ``restore`` step."""

    incident: str = Field(max_length=64, description="The incident whose scale-out is undone.")
    step: int = Field(ge=0, description="Index of the ladder step that declared restore.")
    group: str = Field(max_length=255, description="The Auto Scaling Group.")
    baseline: int = Field(ge=0, description="Desired capacity recorded before the incident's first change.")
    quiet_since: datetime.datetime = Field(description="Since when the trigger has been quiet.")
    phase: RestorePhase
    target: int | None = Field(default=None, ge=0, description="Capacity the next (or running) step sets.")
    next_at: datetime.datetime | None = Field(default=None, description="When the next restore step is due.")
    reason: RestoreReason | None = None
    message: str | None = Field(default=None, max_length=1024)

    @property
    def active(self) -> bool:
        return self.phase in (RestorePhase.WAITING, RestorePhase.RESTORING)


class LastAction(Model):
    name: str
    step: int = Field(ge=0)
    phase: str
    time: datetime.datetime


class RemediationPolicyStatus(Model):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=8, json_schema_extra=CONDITIONS_FIELD_EXTRA)
    phase: PolicyPhase | None = None
    cooldown_until: datetime.datetime | None = None
    actions_in_window: int | None = Field(default=None, ge=0, description="Actions counted by the rate limit.")
    in_flight: int | None = Field(default=None, ge=0, description="Actions pending approval or executing.")
    incident: str | None = Field(default=None, description="Id of the open incident (label vigil.dev/incident).")
    incident_since: datetime.datetime | None = None
    quiet_since: datetime.datetime | None = Field(
        default=None, description="While an incident is open: since when the trigger has been quiet.")
    escalation_step: int | None = Field(default=None, ge=0, description="Next step of the current incident.")
    last_action: LastAction | None = None
    matched_detectors: list[str] = Field(default_factory=list, max_length=100)
    recoverable_errors: int = Field(default=0, ge=0, description="AWS throttling/5xx seen in a row.")
    restoring: Restoring | None = Field(default=None, description=(
        "The scale-back after the last incident that changed capacity with a restore step, and how far it got."))


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Allowed", "type": "string", "jsonPath": '.status.conditions[?(@.type=="ActionAllowed")].status'},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="ActionAllowed")].reason'},
    {"name": "Last-Action", "type": "string", "jsonPath": ".status.lastAction.name"},
    {"name": "Restore", "type": "string", "jsonPath": ".status.restoring.phase", "priority": 1},
    {"name": "Dry-Run", "type": "boolean", "jsonPath": ".spec.dryRun"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_ONE_KIND = " + ".join(f"(has(s.{k}) ? 1 : 0)" for k in STEP_KINDS)
SPEC_VALIDATIONS = [
    {
        "rule": "has(self.detectorSelector) || (has(self.detectors) && size(self.detectors) > 0) || "
                "has(self.alertSelector)",
        "message": "set detectorSelector, detectors or alertSelector: something must trigger the policy",
    },
    {
        "rule": f"self.actions.all(s, {_ONE_KIND} == 1)",
        "message": "each step of actions must set exactly one of " + ", ".join(STEP_KINDS),
    },
    {
        "rule": "self.actions.all(s, !has(s.scaleAutoScalingGroup) || "
                "((has(s.scaleAutoScalingGroup.by) ? 1 : 0) + (has(s.scaleAutoScalingGroup.to) ? 1 : 0) == 1 "
                "&& s.scaleAutoScalingGroup.min <= s.scaleAutoScalingGroup.max))",
        "message": "scaleAutoScalingGroup needs exactly one of by or to, and min <= max",
    },
    {
        "rule": "self.actions.all(s, !has(s.restore) || has(s.scaleAutoScalingGroup))",
        "message": "restore is only allowed on a scaleAutoScalingGroup step",
    },
    {
        "rule": "!has(self.blastRadius) || has(self.blastRadius.maxInstances) || has(self.blastRadius.maxPercent)",
        "message": "blastRadius needs maxInstances or maxPercent",
    },
]
