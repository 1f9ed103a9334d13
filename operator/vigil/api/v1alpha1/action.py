"""The ``RemediationAction`` resource: one per decision, the audit trail and the unit of approval.

The operator creates these; humans approve or reject them
(``kubectl annotate ra NAME vigil.dev/approve=true`` or ``vigil approve NAME``).
The intent is written to status *before* AWS is called, which is what makes
an interrupted action resumable without repeating it.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any

from pydantic import Field

from vigil.api.v1alpha1.common import CONDITIONS_FIELD_EXTRA, Condition, Model
from vigil.api.v1alpha1.policy import Step

KIND = "RemediationAction"
PLURAL = "remediationactions"
SINGULAR = "remediationaction"
SHORT_NAMES = ["ra"]
CATEGORIES = ["vigil"]

APPROVE_ANNOTATION = "vigil.dev/approve"
REJECT_ANNOTATION = "vigil.dev/reject"
ACTOR_ANNOTATION = "vigil.dev/decided-by"
#: The tool a human decided through (cli, dashboard, slack, discord): what status.decision.via records.
VIA_ANNOTATION = "vigil.dev/decided-via"
POLICY_LABEL = "vigil.dev/policy"
#: ``restore`` on the actions that scale back after an incident; absent on the ladder's own steps.
DIRECTION_LABEL = "vigil.dev/direction"
RESTORE_DIRECTION = "restore"
INCIDENT_LABEL = "vigil.dev/incident"


class ActionPhase(enum.StrEnum):
    PENDING_APPROVAL = "PendingApproval"
    APPROVED = "Approved"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    SKIPPED = "Skipped"
    DRY_RUN = "DryRun"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES

    @property
    def in_flight(self) -> bool:
        return self in (ActionPhase.PENDING_APPROVAL, ActionPhase.APPROVED, ActionPhase.EXECUTING)


TERMINAL_PHASES = frozenset({
    ActionPhase.SUCCEEDED, ActionPhase.FAILED, ActionPhase.REJECTED, ActionPhase.EXPIRED,
    ActionPhase.SKIPPED, ActionPhase.DRY_RUN,
})


class SkipReason(enum.StrEnum):
    COOLDOWN_ACTIVE = "CooldownActive"
    RATE_LIMITED = "RateLimited"
    BLAST_RADIUS_EXCEEDED = "BlastRadiusExceeded"
    DETECTOR_STALE = "DetectorStale"
    MISSING_DATA = "MissingData"
    PAUSED = "Paused"
    TARGET_NOT_MANAGED = "TargetNotManaged"
    NO_TARGETS = "NoTargets"
    AT_BOUND = "AtBound"
    NOT_FOUND = "NotFound"
    # Refused at the moment of the AWS call (domain/remediation/preflight.py):
    NOT_PROPOSED_BY_OPERATOR = "NotProposedByOperator"
    POLICY_CHANGED = "PolicyChanged"
    INCIDENT_ENDED = "IncidentEnded"
    NOT_APPROVED = "NotApproved"
    NOT_PERMITTED = "NotPermitted"
    # Restore (scale back after the incident, domain/remediation/restore.py):
    #: The group's desired capacity is not what Vigil last set: someone changed it; Vigil does not fight them.
    CHANGED_OUTSIDE_VIGIL = "ChangedOutsideVigil"
    #: Another incident of the policy is open (or the restore was stopped): no scale-back now.
    RESTORE_STOPPED = "RestoreStopped"


class ErrorClass(enum.StrEnum):
    RECOVERABLE = "Recoverable"
    TERMINAL = "Terminal"


class PolicyRef(Model):
    name: str
    uid: str


class Reason(Model):
    """Why the operator decided to act: the evidence, frozen at decision time."""

    source: str = Field(description="detector or alertmanager.")
    detector: str | None = None
    alert: dict[str, str] | None = Field(default=None, description="Labels of the triggering alert.")
    series: list[dict[str, str]] = Field(default_factory=list, max_length=50, description="Anomalous series labels.")
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    anomalous_since: datetime.datetime | None = None
    why: list[Annotated[str, Field(max_length=120)]] = Field(
        default_factory=list, max_length=9,
        description="The detector's evidence for its anomalous series (status.series[].why), deduplicated, "
        "largest first: e.g. 'change point 12 min ago (downward shift against the daily pattern)'.",
    )
    time: datetime.datetime = Field(description="When the decision was taken.")


class Target(Model):
    kind: str = Field(description="AutoScalingGroup, Instance or TargetGroup.")
    id: str = Field(min_length=1, max_length=2048)
    group: str | None = Field(default=None, description="The Auto Scaling Group an instance belongs to.")


class RestoreRef(Model):
    """Set on an action that scales back after its incident (the other direction of the audit trail)."""

    scale_action: str = Field(max_length=253, description="The incident's first action that changed the capacity "
                                                          "(the change this one undoes).")
    sequence: int = Field(ge=1, le=1000, description="1 for the first restore attempt of the incident, 2 next, ...")
    baseline: int = Field(ge=0, description="Desired capacity recorded before the incident.")
    expected: int = Field(ge=0, description="Desired capacity Vigil last set: if AWS shows another, someone changed "
                                            "the group by hand and the restore stops (ChangedOutsideVigil).")
    target: int = Field(ge=0, description="Desired capacity this action sets (re-clamped to the floor when called).")


class RemediationActionSpec(Model):
    """One decision of a RemediationPolicy. Written once by the operator; not meant to be edited."""

    policy_ref: PolicyRef
    incident: str = Field(description="Groups the steps taken for one incident.")
    step_index: int = Field(ge=0)
    step: Step
    targets: list[Target] = Field(default_factory=list, max_length=100)
    reason: Reason
    dry_run: bool = False
    approval_required: bool = False
    region: str
    role_arn: str | None = None
    restore: RestoreRef | None = Field(default=None, description=(
        "Present when the action scales back after the incident (label vigil.dev/direction=restore)."))


class Intent(Model):
    """What the operator is about to do in AWS, recorded before the call (the resume point)."""

    operation: str = Field(description="AWS API operation, e.g. SetDesiredCapacity.")
    parameters: dict[str, Any] = Field(default_factory=dict, json_schema_extra={
        "x-kubernetes-preserve-unknown-fields": True})
    recorded_at: datetime.datetime
    attempt: int = Field(default=1, ge=1)


class Decision(Model):
    """Who approved or rejected, and when, as far as the API tells (docs/security.md: what is attested)."""

    by: str = Field(description="Who decided: vigil.dev/decided-by if set (checked against the requesting user by "
                                "the chart's admission policy), else the field manager that wrote the annotation.")
    at: datetime.datetime
    via: str = Field(description="policy, annotation, cli or a chat channel.")
    field_manager: str | None = Field(default=None, description="The managedFields manager that wrote the "
                                                                "approval annotation (client-chosen).")


#: ``errorCode`` of a runCommand action whose command did not succeed on every instance (``Failed``).
COMMAND_FAILED = "CommandFailed"
#: ``errorCode`` when a command timed out in SSM, or Vigil stopped waiting for it (its deadline passed).
COMMAND_TIMED_OUT = "CommandTimedOut"
#: Failures that mean "the remedy ran and did not help", not "something is wrong with the call": the
#: escalation ladder moves on to its next step after them (domain/remediation/ladder.py).
ESCALATING_ERROR_CODES = frozenset({COMMAND_FAILED, COMMAND_TIMED_OUT})

#: Per instance, at most this many lines and bytes of a command's output are kept on the action.
OUTPUT_MAX_LINES = 20
OUTPUT_MAX_BYTES = 2048


class CommandInvocation(Model):
    """What one instance reported for an SSM command (GetCommandInvocation)."""

    instance_id: str = Field(max_length=32)
    status: str = Field(max_length=32, description="SSM invocation status: Pending, InProgress, Delayed, Success, "
                                                    "Cancelled, TimedOut, Failed, Undeliverable, Terminated, ...")
    status_details: str | None = Field(default=None, max_length=128)
    exit_code: int | None = Field(default=None, description="The command's exit code (SSM ResponseCode); "
                                                            "-1 or absent while it has not finished.")
    output: str | None = Field(default=None, max_length=OUTPUT_MAX_BYTES + 64, description=(
        f"The first {OUTPUT_MAX_LINES} lines (at most {OUTPUT_MAX_BYTES} bytes) of standard output, "
        "credentials redacted."))
    error_output: str | None = Field(default=None, max_length=OUTPUT_MAX_BYTES + 64, description=(
        "The same for standard error."))
    truncated: bool = Field(default=False, description="Whether output or errorOutput was cut.")


class CommandStatus(Model):
    """An SSM command the action sent, as last polled. Present while the action waits for it, and after."""

    command_id: str = Field(max_length=64)
    status: str = Field(max_length=32, description="InProgress while any instance has not finished, then "
                                                   "Success or Failed (Vigil's summary of the invocations).")
    sent_at: datetime.datetime | None = Field(default=None, description="When the command was found sent.")
    deadline: datetime.datetime | None = Field(default=None, description=(
        "Vigil stops waiting at this time (2 x timeoutSeconds after sending, plus a minute: SSM's delivery "
        "timeout, then its execution timeout) and ends the action Failed/CommandTimedOut."))
    polled_at: datetime.datetime | None = None
    polls: int = Field(default=0, ge=0)
    invocations: list[CommandInvocation] = Field(default_factory=list, max_length=100)


class RemediationActionStatus(Model):
    phase: ActionPhase | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=8, json_schema_extra=CONDITIONS_FIELD_EXTRA)
    message: str | None = Field(default=None, max_length=4096)
    skip_reason: SkipReason | None = None
    created_at: datetime.datetime | None = None
    expires_at: datetime.datetime | None = Field(default=None, description="Approval deadline.")
    decision: Decision | None = None
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    intent: Intent | None = None
    aws_request_ids: list[str] = Field(default_factory=list, max_length=50)
    before: dict[str, Any] | None = Field(default=None, json_schema_extra={
        "x-kubernetes-preserve-unknown-fields": True}, description="Observed AWS state before the action.")
    after: dict[str, Any] | None = Field(default=None, json_schema_extra={
        "x-kubernetes-preserve-unknown-fields": True}, description="AWS state after (or planned, in dry-run).")
    attempts: int = Field(default=0, ge=0)
    next_attempt_at: datetime.datetime | None = None
    error_class: ErrorClass | None = None
    error_code: str | None = None
    notified: list[str] = Field(default_factory=list, max_length=8, description="Channels notified.")
    command_status: CommandStatus | None = Field(default=None, description=(
        "runCommand only: the SSM command and, per instance, its status, exit code and first lines of output."))


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Policy", "type": "string", "jsonPath": ".spec.policyRef.name"},
    {"name": "Step", "type": "string", "jsonPath": ".spec.step.name"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Dry-Run", "type": "boolean", "jsonPath": ".spec.dryRun"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

SPEC_VALIDATIONS: list[dict[str, str]] = [
    {"rule": "self == oldSelf", "message": "spec is immutable: it is the audit record of a decision"},
]
