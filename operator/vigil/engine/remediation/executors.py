"""One executor per step kind: observe, plan, call, verify. Synchronous: run in a thread pool.

``prepare`` observes AWS and turns the step into the exact call (absolute
values only). The parameters are written to the action's status as its
*intent* before ``call`` runs. After a restart, ``verify`` re-reads AWS and
says whether the intent already took effect, so the engine neither repeats a
call that landed nor loses one that did not. Where AWS offers no way to tell
(RebootInstances), ``verify`` answers None and the engine refuses to repeat.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vigil.adapters import redaction
from vigil.api.v1alpha1.action import CommandInvocation, CommandStatus, RemediationActionSpec, SkipReason
from vigil.api.v1alpha1.policy import ReplaceMode, Step
from vigil.domain.remediation import commands, plans, preflight, restore


class Aws(Protocol):
    """The slice of :class:`vigil.adapters.aws.AwsClients` the executors use."""

    def describe_group(self, name: str) -> Any: ...
    def describe_instances(self, ids: Sequence[str]) -> Mapping[str, Any]: ...
    def describe_target_group(self, arn: str) -> Any: ...
    def group_sizes(self, groups: Sequence[str]) -> Mapping[str, int]: ...
    def find_command(self, comment: str, instance_ids: Sequence[str]) -> Any: ...
    def command_invocation(self, command_id: str, instance_id: str) -> Any: ...
    def set_desired_capacity(self, name: str, desired: int, honor_cooldown: bool) -> Any: ...
    def set_instance_unhealthy(self, instance_id: str) -> Any: ...
    def terminate_in_group(self, instance_id: str) -> Any: ...
    def reboot(self, ids: Sequence[str]) -> Any: ...
    def send_command(self, ids: Sequence[str], document: str, commands: Sequence[str], timeout_seconds: int,
                     comment: str) -> Any: ...
    def deregister_targets(self, arn: str, ids: Sequence[str], port: int | None) -> Any: ...
    def register_targets(self, arn: str, ids: Sequence[str], port: int | None) -> Any: ...
    def dry_run_check(self, operation: str, **params: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Prepared:
    operation: str
    parameters: dict[str, Any]
    before: dict[str, Any]
    planned_after: dict[str, Any]
    scale_in: bool = False


@dataclasses.dataclass(frozen=True)
class Called:
    request_ids: list[str]
    detail: dict[str, Any]


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(round(epoch, 3), tz=datetime.UTC)


def _ids(spec: RemediationActionSpec) -> list[str]:
    return [t.id for t in spec.targets if t.kind == "Instance"]


def comment_for(action_uid: str) -> str:
    """The SSM command comment that lets a resumed action find the command it already sent."""
    return f"vigil {action_uid}"


class Executor:
    kind = ""
    #: Whether re-issuing the call is harmless when ``verify`` cannot tell.
    verifiable = True
    #: Whether the call only starts work that AWS finishes later: the action stays Executing and the engine
    #: polls it (``track``, then ``progress``) until it is done, instead of succeeding when the call returns.
    tracks = False

    def prepare(self, aws: Aws, spec: RemediationActionSpec) -> Prepared | plans.Skip:
        raise NotImplementedError

    def dry_run(self, aws: Aws, prepared: Prepared) -> tuple[bool, str]:
        verdict = aws.dry_run_check(prepared.operation, **prepared.parameters)
        return bool(verdict.allowed), str(verdict.message)

    def call(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> Called:
        raise NotImplementedError

    def verify(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> bool | None:
        """True: the intent took effect. False: it did not (safe to call). None: cannot tell."""
        raise NotImplementedError

    def after(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> dict[str, Any]:
        return {}


class ScaleGroup(Executor):
    kind = "scaleAutoScalingGroup"

    def prepare(self, aws: Aws, spec: RemediationActionSpec) -> Prepared | plans.Skip:
        step = spec.step.scale_auto_scaling_group
        assert step is not None
        group = aws.describe_group(step.name)
        if spec.restore is not None:  # scaling back: toward the recorded capacity, only if nobody changed it
            ref = spec.restore
            back = restore.plan(spec.step, ref.baseline, ref.expected, ref.target, group.desired, group.min_size,
                                group.max_size)
            if isinstance(back, restore.Refuse):
                return plans.Skip(back.reason, back.message)
            plan: plans.ScalePlan | plans.Skip = plans.ScalePlan(step.name, group.desired, back.target)
        else:
            plan = plans.plan_scale(step, group.desired, group.min_size, group.max_size)
        if isinstance(plan, plans.Skip):
            return plan
        return Prepared(
            operation="SetDesiredCapacity",
            parameters={"AutoScalingGroupName": step.name, "DesiredCapacity": plan.target,
                        "HonorCooldown": step.honor_cooldown},
            before={"desiredCapacity": group.desired, "minSize": group.min_size, "maxSize": group.max_size,
                    "inService": group.in_service},
            planned_after={"desiredCapacity": plan.target},
            scale_in=plan.scale_in,
        )

    def dry_run(self, aws: Aws, prepared: Prepared) -> tuple[bool, str]:
        verdict = aws.dry_run_check("SetDesiredCapacity", AutoScalingGroupName=prepared.parameters[
            "AutoScalingGroupName"])
        return bool(verdict.allowed), str(verdict.message)

    def call(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> Called:
        result = aws.set_desired_capacity(parameters["AutoScalingGroupName"], int(parameters["DesiredCapacity"]),
                                          bool(parameters.get("HonorCooldown", True)))
        return Called([result.request_id], dict(result.detail))

    def verify(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> bool | None:
        group = aws.describe_group(parameters["AutoScalingGroupName"])
        return plans.scale_done(int(parameters["DesiredCapacity"]), group.desired)

    def after(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> dict[str, Any]:
        group = aws.describe_group(parameters["AutoScalingGroupName"])
        return {"desiredCapacity": group.desired, "inService": group.in_service}


class ReplaceInstance(Executor):
    kind = "replaceInstance"

    def prepare(self, aws: Aws, spec: RemediationActionSpec) -> Prepared | plans.Skip:
        step = spec.step.replace_instance
        assert step is not None
        ids = _ids(spec)
        found = aws.describe_instances(ids)
        live = [i for i in ids if i in found and found[i].state not in ("shutting-down", "terminated")]
        if not live:
            return plans.Skip(SkipReason.NOT_FOUND, "none of the target instances is running any more")
        outside = [i for i in live if not found[i].group]
        if outside:
            return plans.Skip(SkipReason.NO_TARGETS, "not in an Auto Scaling Group, nothing would replace them: "
                              + ", ".join(outside))
        operation = "SetInstanceHealth" if step.mode == ReplaceMode.MARK_UNHEALTHY else \
            "TerminateInstanceInAutoScalingGroup"
        return Prepared(
            operation=operation,
            parameters={"InstanceIds": live, "Mode": step.mode.value},
            before={i: {"state": found[i].state, "health": found[i].health, "group": found[i].group} for i in live},
            planned_after={i: "replaced by its Auto Scaling Group" for i in live},
        )

    def dry_run(self, aws: Aws, prepared: Prepared) -> tuple[bool, str]:
        # Auto Scaling has no DryRun; an EC2 TerminateInstances DryRun would test a permission the
        # operator never needs (least privilege), so this is the adapter's read-only check.
        operation = ("SetInstanceHealth" if prepared.parameters.get("Mode") == ReplaceMode.MARK_UNHEALTHY.value
                     else "TerminateInstanceInAutoScalingGroup")
        verdicts = [aws.dry_run_check(operation, InstanceId=i) for i in prepared.parameters["InstanceIds"]]
        return all(v.allowed for v in verdicts), "; ".join(str(v.message) for v in verdicts)

    def _pending(self, aws: Aws, parameters: Mapping[str, Any]) -> list[str]:
        ids = list(parameters["InstanceIds"])
        found = aws.describe_instances(ids)
        pending = []
        for i in ids:
            state = found.get(i)
            if state is None or state.state in ("shutting-down", "terminated"):
                continue
            if parameters.get("Mode") == ReplaceMode.MARK_UNHEALTHY.value and (state.health or "").lower() == \
                    "unhealthy":
                continue
            if not state.group:
                continue  # detached: the group no longer owns it, nothing left to do here
            pending.append(i)
        return pending

    def call(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> Called:
        ids: list[str] = []
        detail: dict[str, Any] = {}
        for instance in self._pending(aws, parameters):
            if parameters.get("Mode") == ReplaceMode.MARK_UNHEALTHY.value:
                result = aws.set_instance_unhealthy(instance)
            else:
                result = aws.terminate_in_group(instance)
            ids.append(result.request_id)
            detail[instance] = dict(result.detail)
        return Called(ids, detail)

    def verify(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> bool | None:
        return not self._pending(aws, parameters)

    def after(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> dict[str, Any]:
        found = aws.describe_instances(list(parameters["InstanceIds"]))
        return {i: {"state": s.state, "health": s.health} for i, s in found.items()}


class RebootInstances(Executor):
    kind = "rebootInstances"
    verifiable = False

    def prepare(self, aws: Aws, spec: RemediationActionSpec) -> Prepared | plans.Skip:
        ids = _ids(spec)
        found = aws.describe_instances(ids)
        running = [i for i in ids if i in found and found[i].state == "running"]
        if not running:
            return plans.Skip(SkipReason.NOT_FOUND, "none of the target instances is running")
        return Prepared("RebootInstances", {"InstanceIds": running},
                        {i: {"state": found[i].state} for i in running}, {i: "rebooted" for i in running})

    def call(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> Called:
        result = aws.reboot(list(parameters["InstanceIds"]))
        return Called([result.request_id], dict(result.detail))

    def verify(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> bool | None:
        return None  # EC2 keeps no record of a reboot we could read back


class RunCommand(Executor):
    kind = "runCommand"
    tracks = True

    def prepare(self, aws: Aws, spec: RemediationActionSpec) -> Prepared | plans.Skip:
        step = spec.step.run_command
        assert step is not None
        ids = _ids(spec)
        found = aws.describe_instances(ids)
        running = [i for i in ids if i in found and found[i].state == "running"]
        if not running:
            return plans.Skip(SkipReason.NOT_FOUND, "none of the target instances is running")
        return Prepared(
            "SendCommand",
            {"InstanceIds": running, "DocumentName": step.document_name, "Commands": list(step.commands),
             "TimeoutSeconds": step.timeout_seconds},
            {i: {"state": found[i].state} for i in running},
            {"commands": list(step.commands)},
        )

    def dry_run(self, aws: Aws, prepared: Prepared) -> tuple[bool, str]:
        verdict = aws.dry_run_check("SendCommand", InstanceIds=prepared.parameters["InstanceIds"])
        return bool(verdict.allowed), str(verdict.message)

    def call(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> Called:
        result = aws.send_command(list(parameters["InstanceIds"]), str(parameters["DocumentName"]),
                                  list(parameters["Commands"]), int(parameters["TimeoutSeconds"]),
                                  comment_for(action_uid))
        return Called([result.request_id], dict(result.detail))

    def verify(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> bool | None:
        return aws.find_command(comment_for(action_uid), list(parameters["InstanceIds"])) is not None

    def after(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> dict[str, Any]:
        found = aws.find_command(comment_for(action_uid), list(parameters["InstanceIds"]))
        if found is None:
            return {}
        return {"commandId": found.command_id, "status": found.status}

    def track(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str, called: Called | None,
              now: float) -> CommandStatus | None:
        """The command to poll: the one just sent (``called``), else the one found by its comment (after a
        restart between SendCommand and the status write). None if no such command exists."""
        command_id: str | None = None
        sent_at = now
        if called is not None:
            command_id = called.detail.get("CommandId")
        if not command_id:
            found = aws.find_command(comment_for(action_uid), list(parameters["InstanceIds"]))
            if found is None:
                return None
            command_id = found.command_id
            if found.requested_at is not None:
                sent_at = min(now, found.requested_at.timestamp())
        when = _utc(sent_at)
        until = _utc(commands.deadline(sent_at, float(parameters["TimeoutSeconds"])))
        return CommandStatus(command_id=str(command_id), status="InProgress", sent_at=when, deadline=until)

    def progress(self, aws: Aws, parameters: Mapping[str, Any], known: CommandStatus, now: float) -> CommandStatus:
        """Poll GetCommandInvocation for every instance that has not finished yet."""
        have = {i.instance_id: i for i in known.invocations}
        invocations = []
        for instance in parameters["InstanceIds"]:
            seen = have.get(instance)
            if seen is not None and seen.status not in commands.PENDING:
                invocations.append(seen)  # final: not asked again
                continue
            state = aws.command_invocation(known.command_id, instance)
            if state is None:
                invocations.append(CommandInvocation(instance_id=instance, status="Pending",
                                                     status_details="not known to SSM yet"))
                continue
            output, cut = commands.excerpt(redaction.redact(state.output) if state.output else None)
            errors, cut_errors = commands.excerpt(redaction.redact(state.error_output) if state.error_output
                                                  else None)
            invocations.append(CommandInvocation(
                instance_id=instance, status=state.status or "Pending", status_details=state.status_details or None,
                exit_code=state.response_code, output=output, error_output=errors, truncated=cut or cut_errors))
        return known.model_copy(update={"invocations": invocations, "polled_at": _utc(now),
                                        "polls": known.polls + 1})


class DeregisterTarget(Executor):
    kind = "deregisterTarget"

    def prepare(self, aws: Aws, spec: RemediationActionSpec) -> Prepared | plans.Skip:
        step = spec.step.deregister_target
        assert step is not None
        group = aws.describe_target_group(step.target_group_arn)
        ids = [i for i in _ids(spec) if i in group.targets]
        if not ids:
            return plans.Skip(SkipReason.NOT_FOUND, "none of the target instances is registered in the target group")
        return Prepared(
            "DeregisterTargets",
            {"TargetGroupArn": step.target_group_arn, "InstanceIds": ids, "Port": step.port},
            {i: group.targets[i] for i in ids},
            {i: "draining" for i in ids},
        )

    def dry_run(self, aws: Aws, prepared: Prepared) -> tuple[bool, str]:
        verdict = aws.dry_run_check("DeregisterTargets", TargetGroupArn=prepared.parameters["TargetGroupArn"])
        return bool(verdict.allowed), str(verdict.message)

    def _registered(self, aws: Aws, parameters: Mapping[str, Any]) -> list[str]:
        group = aws.describe_target_group(parameters["TargetGroupArn"])
        return [i for i in parameters["InstanceIds"]
                if i in group.targets and group.targets[i] not in ("draining", "unused")]

    def call(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> Called:
        pending = self._registered(aws, parameters)
        if not pending:
            return Called([], {})
        result = aws.deregister_targets(parameters["TargetGroupArn"], pending, parameters.get("Port"))
        return Called([result.request_id], dict(result.detail))

    def verify(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> bool | None:
        return not self._registered(aws, parameters)

    def after(self, aws: Aws, parameters: Mapping[str, Any], action_uid: str) -> dict[str, Any]:
        group = aws.describe_target_group(parameters["TargetGroupArn"])
        return {i: group.targets.get(i, "not registered") for i in parameters["InstanceIds"]}

    def reregister(self, aws: Aws, parameters: Mapping[str, Any]) -> tuple[Called, list[str]]:
        """Register the drained instances again, except those that are gone (terminated or terminating: a
        later step replaced them, and their group registers the replacement). Returns the call (no request
        id if nothing was left to register) and the instances left out."""
        ids = list(parameters["InstanceIds"])
        found = aws.describe_instances(ids)
        gone = [i for i in ids if i not in found or found[i].state in ("shutting-down", "terminated")]
        live = [i for i in ids if i not in gone]
        if not live:
            return Called([], {}), gone
        result = aws.register_targets(parameters["TargetGroupArn"], live, parameters.get("Port"))
        return Called([result.request_id], dict(result.detail)), gone


def observe(aws: Aws, step: Step, instance_ids: Sequence[str]) -> preflight.Observed:
    """Read what the execution-time check needs: the tags of every resource the step would touch, the
    instances' groups and the groups' sizes. A resource AWS does not know is simply absent. Raises AwsError
    on anything else."""
    from vigil.adapters import aws as aws_adapter

    tags: dict[str, Mapping[str, str]] = {}
    scale = step.scale_auto_scaling_group
    if scale is not None:
        try:
            tags[scale.name] = aws.describe_group(scale.name).tags
        except aws_adapter.AwsError as exc:
            if exc.code != "NotFound":
                raise
    if step.deregister_target is not None:
        arn = step.deregister_target.target_group_arn
        try:
            tags[arn] = aws.describe_target_group(arn).tags
        except aws_adapter.AwsError as exc:
            if "NotFound" not in (exc.code or ""):
                raise
    groups: dict[str, str | None] = {}
    if instance_ids:
        for instance, state in aws.describe_instances(instance_ids).items():
            tags[instance] = state.tags
            groups[instance] = state.group
    names = sorted({g for g in groups.values() if g})
    sizes = dict(aws.group_sizes(names)) if names else {}
    return preflight.Observed(tags=tags, groups=groups, group_sizes=sizes)


EXECUTORS: dict[str, Executor] = {e.kind: e for e in (
    ScaleGroup(), ReplaceInstance(), RebootInstances(), RunCommand(), DeregisterTarget())}

