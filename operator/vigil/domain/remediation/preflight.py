"""The last word before AWS is called: re-derive the action from what holds *now* (pure).

A RemediationAction records a decision taken earlier, by a policy that may
have changed since, on evidence that may have cleared, possibly approved by
someone who had no say, or forged outright. So immediately before every AWS
call the engine observes the targets, and this module decides from the
**current** policy, the admin's :class:`~.tenancy.Tenancy`, the observed AWS
state and the other actions whether the call may go ahead, and on which
targets. Anything that does not hold ends the action ``Skipped`` with the
reason: it is never executed.

The checks, in order (the first failure wins):

1. provenance: the operator proposed it (:mod:`.provenance`);
2. the step: the current policy's step at that index is the step recorded,
   with the same region and role, and the ladder has not already run it;
3. the incident: it is the policy's current incident (for a restore action,
   the scale-back in progress, and no incident open: :mod:`.restore`);
4. approval: when the current policy (or the action) requires one, a human
   decision recorded after the proposal and still on the object (a restore
   step with ``restore.approval: false`` needs none);
5. tenancy: the admin allows the role, the SSM document, commands, timeout;
6. targets: each carries every required tag, and instance targets are still
   named by the current evidence (the fixed ``instanceIds`` or ``fromLabel``
   of a series that is anomalous now);
7. guard rails: cooldown (another incident's action completed too recently),
   rate limit (calls already made in the window), blast radius (instances
   in flight in the same group, whichever policy started them).

The bounds of a scale step and "never scale in on missing data" are checked by
the plan, computed from the same observation (:mod:`.plans`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from vigil.api.v1alpha1.action import (
    ActionPhase,
    RemediationActionSpec,
    RemediationActionStatus,
    SkipReason,
    Target,
)
from vigil.api.v1alpha1.policy import RemediationPolicySpec, Restoring
from vigil.domain.remediation import guards, plans, provenance, restore, tenancy
from vigil.domain.remediation.approvals import APPROVAL_VIAS, TRUE
from vigil.domain.remediation.guards import ActionRecord

#: Phases of actions whose AWS call has been made (or is being made): they count at execution time.
_CALLED = frozenset({ActionPhase.EXECUTING, ActionPhase.SUCCEEDED, ActionPhase.FAILED, ActionPhase.DRY_RUN})
_COMPLETED = frozenset({ActionPhase.SUCCEEDED, ActionPhase.FAILED, ActionPhase.DRY_RUN})


@dataclasses.dataclass(frozen=True)
class ActionView:
    """The action as it stands on the API server."""

    namespace: str
    name: str
    incident: str
    spec: RemediationActionSpec
    status: RemediationActionStatus
    annotations: Mapping[str, str]
    owner_references: Sequence[Mapping[str, Any]]
    created: float


@dataclasses.dataclass(frozen=True)
class PolicyView:
    """The policy as it stands now: its spec and the incident the operator last wrote."""

    namespace: str
    uid: str
    spec: RemediationPolicySpec
    incident: str | None
    #: ``status.restoring``: the scale-back restore actions belong to.
    restoring: Restoring | None = None


@dataclasses.dataclass(frozen=True)
class Observed:
    """AWS as read just before the call."""

    #: Resource id (group name, instance id, target group ARN) → its tags. Absent: not found.
    tags: Mapping[str, Mapping[str, str]]
    #: Instance id → its Auto Scaling Group (None outside any).
    groups: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    #: Auto Scaling Group → number of instances.
    group_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Proceed:
    """Call AWS for these targets (a subset of the recorded ones)."""

    targets: tuple[Target, ...]
    remarks: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Refuse:
    reason: SkipReason
    message: str


Verdict = Proceed | Refuse


def _time(value: datetime.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _same_step(recorded: RemediationActionSpec, policy: RemediationPolicySpec) -> str | None:
    index = recorded.step_index
    if index >= len(policy.actions):
        return f"the policy has no step {index + 1} any more"
    current = policy.actions[index]
    # The operator fills in a missing step name when it records the action.
    if current.model_copy(update={"name": recorded.step.name}).to_wire() != recorded.step.to_wire():
        return f"step {index + 1} of the policy changed since the action was proposed"
    if (policy.aws.region, policy.aws.role_arn) != (recorded.region, recorded.role_arn):
        return "the policy's AWS region or role changed since the action was proposed"
    return None


def approval_needed(policy: RemediationPolicySpec, action: RemediationActionSpec) -> bool:
    """The current policy decides, whatever the action says; a restore step may opt out (restore.approval)."""
    if action.restore is not None and not restore.approval_required(policy, action.step_index) \
            and restore.restore_step(policy, action.step_index) is not None:
        return False  # the step says restore.approval: false (and it is still the step recorded: check 2)
    return policy.approval.required or action.approval_required


def approval_problem(action: ActionView, policy: PolicyView) -> str | None:
    """None when no approval is needed or a valid one is on record."""
    if not approval_needed(policy.spec, action.spec):
        return None
    decision = action.status.decision
    proposed = _time(action.status.created_at) or action.created
    if decision is None or decision.via not in APPROVAL_VIAS:
        return "the policy requires approval and no human approved this action"
    if decision.at.timestamp() < proposed - 1.0:  # managedFields times have one-second resolution
        return "the approval predates the proposal"
    if action.annotations.get("vigil.dev/approve", "").strip().lower() not in TRUE:
        return "the approval annotation is no longer on the action"
    if action.annotations.get("vigil.dev/reject", "").strip().lower() in TRUE:
        return "the action was rejected"
    return None


def _instances_named(spec: RemediationPolicySpec, index: int, series: Sequence[Mapping[str, str]]) -> set[str]:
    targets = spec.actions[index].instance_targets
    if targets is None:
        return set()
    resolved = plans.resolve_instances(targets, series)
    return set(resolved) if isinstance(resolved, list) else set(targets.instance_ids)


def check(
    action: ActionView,
    policy: PolicyView,
    admin: tenancy.Tenancy,
    key: bytes | None,
    observed: Observed,
    evidence_series: Sequence[Mapping[str, str]],
    policy_records: Sequence[ActionRecord],
    all_records: Sequence[ActionRecord],
    now: float,
) -> Verdict:
    """May the action's AWS call be made now, and on which targets? ``evidence_series``: the labels of the
    series (or alerts) that make the policy fire now; ``policy_records``: this policy's actions;
    ``all_records``: every action the operator knows (blast radius spans policies)."""
    refused = check_recorded(action, policy, admin, key, policy_records)
    if refused is not None:
        return refused
    return check_observed(action, policy, admin, observed, evidence_series, policy_records, all_records, now)


def check_recorded(action: ActionView, policy: PolicyView, admin: tenancy.Tenancy, key: bytes | None,
                   policy_records: Sequence[ActionRecord]) -> Refuse | None:
    """Checks 1-5, which need no AWS state: run them before assuming any role."""
    spec = action.spec
    wrong = provenance.problems(key, action.namespace, action.name, spec.to_wire(), action.annotations,
                                action.owner_references, policy.uid, spec.policy_ref.uid)
    if wrong:
        return Refuse(SkipReason.NOT_PROPOSED_BY_OPERATOR, "not proposed by the operator: " + "; ".join(wrong))
    changed = _same_step(spec, policy.spec)
    if changed:
        return Refuse(SkipReason.POLICY_CHANGED, changed)
    sequence = spec.restore.sequence if spec.restore is not None else 0
    others = [r for r in policy_records if r.name != action.name and r.incident == action.incident
              and r.step_index == spec.step_index and r.restore == sequence and r.phase != ActionPhase.SKIPPED]
    if others:
        return Refuse(SkipReason.POLICY_CHANGED, f"step {spec.step_index + 1} of this incident already has "
                                                 f"action {others[0].name}")
    if spec.restore is not None:
        if restore.restore_step(policy.spec, spec.step_index) is None:
            return Refuse(SkipReason.POLICY_CHANGED, f"step {spec.step_index + 1} no longer declares restore")
        if not restore.current(policy.restoring, policy.incident is not None, action.incident):
            return Refuse(SkipReason.RESTORE_STOPPED,
                          f"incident {policy.incident} is open" if policy.incident is not None else
                          f"the scale-back after incident {action.incident} is not in progress any more")
    elif policy.incident != action.incident:
        return Refuse(SkipReason.INCIDENT_ENDED, f"incident {action.incident} is no longer open")
    problem = approval_problem(action, policy)
    if problem:
        return Refuse(SkipReason.NOT_APPROVED, problem)
    forbidden = tenancy.policy_violations(admin, action.namespace, policy.spec)
    if forbidden:
        return Refuse(SkipReason.NOT_PERMITTED, "; ".join(forbidden))
    return None


def check_observed(
    action: ActionView,
    policy: PolicyView,
    admin: tenancy.Tenancy,
    observed: Observed,
    evidence_series: Sequence[Mapping[str, str]],
    policy_records: Sequence[ActionRecord],
    all_records: Sequence[ActionRecord],
    now: float,
) -> Verdict:
    """Checks 6-7, on AWS as observed just now. Assumes :func:`check_recorded` passed."""
    spec = action.spec
    required = admin.required_tags(action.namespace, policy.spec)
    step = policy.spec.actions[spec.step_index]
    checked: list[str] = []
    if step.scale_auto_scaling_group is not None:
        checked.append(step.scale_auto_scaling_group.name)
    if step.deregister_target is not None:
        checked.append(step.deregister_target.target_group_arn)
    for resource in checked:
        if resource not in observed.tags:
            return Refuse(SkipReason.NOT_FOUND, f"{resource} not found")
        missing = tenancy.missing_tags(observed.tags[resource], required)
        if missing:
            return Refuse(SkipReason.TARGET_NOT_MANAGED, f"{resource} lacks tag {', '.join(missing)}")

    targets = [t for t in spec.targets if t.kind == "Instance"]
    remarks: list[str] = []
    if step.instance_targets is not None:
        named = _instances_named(policy.spec, spec.step_index, evidence_series)
        kept: list[Target] = []
        for target in targets:
            if target.id not in named:
                remarks.append(f"{target.id} is no longer named by the evidence")
            elif target.id not in observed.tags:
                remarks.append(f"{target.id} not found")
            elif missing := tenancy.missing_tags(observed.tags[target.id], required):
                remarks.append(f"{target.id} lacks tag {', '.join(missing)}")
            else:
                kept.append(target.model_copy(update={"group": observed.groups.get(target.id, target.group)}))
        if not kept:
            reason = (SkipReason.TARGET_NOT_MANAGED if any("lacks tag" in r for r in remarks)
                      else SkipReason.NO_TARGETS)
            return Refuse(reason, "no target may be acted on: " + "; ".join(remarks or ["none recorded"]))
        targets = kept

    mine = [r for r in policy_records if r.name != action.name]
    incident_called = [r for r in mine if r.incident == action.incident and r.phase in _CALLED]
    if not incident_called and spec.restore is None:  # a scale-back never waits for the cooldown (restore.py)
        cooldown = guards.cooldown([r for r in mine if r.phase in _COMPLETED], policy.spec.cooldown_seconds, now)
        if not cooldown.allowed:
            return Refuse(SkipReason.COOLDOWN_ACTIVE, cooldown.message)
    if policy.spec.rate_limit is not None:
        window = policy.spec.rate_limit.window_seconds
        called = [r for r in mine if r.phase in _CALLED and now - r.created < window]
        if len(called) >= policy.spec.rate_limit.max_actions:
            return Refuse(SkipReason.RATE_LIMITED, f"{len(called)} actions already called in the last "
                                                   f"{window:.0f}s (limit {policy.spec.rate_limit.max_actions})")
    if targets and step.instance_targets is not None:
        radius = policy.spec.blast_radius
        busy = [r for r in all_records if r.name != action.name and r.phase == ActionPhase.EXECUTING]
        wanted = [(t.id, t.group) for t in targets]
        allowed, verdict = guards.blast_radius(wanted, busy, observed.group_sizes,
                                               radius.max_instances if radius else None,
                                               radius.max_percent if radius else None)
        if not allowed:
            return Refuse(SkipReason.BLAST_RADIUS_EXCEEDED, verdict.message)
        if len(allowed) < len(wanted):
            remarks.append(verdict.message)
        targets = [t for t in targets if (t.id, t.group) in allowed]
    return Proceed(tuple(targets) if step.instance_targets is not None else tuple(spec.targets), tuple(remarks))


def check_reregister(action: ActionView, policy: PolicyView, admin: tenancy.Tenancy, key: bytes | None,
                     observed: Observed | None) -> str | None:
    """Before RegisterTargets puts drained instances back: the action is the operator's, its step is still the
    policy's, the admin still allows the policy, and the target group and every instance still carry the
    required tags. Returns why not, or None. (No incident, approval or evidence check: re-registering undoes
    the drain once the detectors have been healthy, which the engine checks.)"""
    spec = action.spec
    wrong = provenance.problems(key, action.namespace, action.name, spec.to_wire(), action.annotations,
                                action.owner_references, policy.uid, spec.policy_ref.uid)
    if wrong:
        return "not proposed by the operator: " + "; ".join(wrong)
    changed = _same_step(spec, policy.spec)
    if changed:
        return changed
    forbidden = tenancy.policy_violations(admin, action.namespace, policy.spec)
    if forbidden:
        return "; ".join(forbidden)
    if observed is None:
        return None  # the checks that need no AWS state passed: observe, then ask again
    required = admin.required_tags(action.namespace, policy.spec)
    untagged = []
    resources = [t.id for t in spec.targets if t.kind == "Instance"]
    if spec.step.deregister_target is not None:
        resources.insert(0, spec.step.deregister_target.target_group_arn)
    for resource in resources:
        missing = tenancy.missing_tags(observed.tags.get(resource, {}), required)
        if resource in observed.tags and missing:
            untagged.append(f"{resource} lacks tag {', '.join(missing)}")
    return "; ".join(untagged) or None
