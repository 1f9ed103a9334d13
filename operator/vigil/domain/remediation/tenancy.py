"""What a policy author may ask for, as set by the cluster admin (pure checks).

A RemediationPolicy is written by a namespace's team; the operator acts with
the cluster's AWS identity. So the limits that keep one team inside its own
estate cannot come from the policy: they are operator settings (chart values →
``vigil run`` flags), and every check here takes them as a :class:`Tenancy`.

* the allow-guard tag every target must carry (``vigil.dev/managed=true``);
* a namespace tag every target must carry with the policy's namespace as its
  value (``vigil.dev/namespace=team-a``), so team-b's policy never reaches
  team-a's group even when both are "managed";
* the role ARNs a namespace may assume (none by default: the operator's own
  identity only);
* the SSM documents a step may run, patterns its commands must match, and the
  longest execution timeout.

A policy's own ``targetGuard`` can only add a tag requirement, never remove the
admin's.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
from collections.abc import Mapping, Sequence

from vigil.api.v1alpha1.policy import DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE, RemediationPolicySpec, Step

DEFAULT_NAMESPACE_TAG = "vigil.dev/namespace"
DEFAULT_SSM_DOCUMENTS = ("AWS-RunShellScript",)
DEFAULT_SSM_MAX_TIMEOUT = 3600


@dataclasses.dataclass(frozen=True)
class Tenancy:
    """The admin's limits. The defaults are the safe ones."""

    guard_tag: tuple[str, str] = (DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE)
    #: Empty: no namespace tag is required (one team per cluster). Set by default.
    namespace_tag_key: str = DEFAULT_NAMESPACE_TAG
    #: namespace (or ``*``) → role ARN patterns (fnmatch) it may assume. Empty: no policy may set roleArn.
    role_arns: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    ssm_documents: tuple[str, ...] = DEFAULT_SSM_DOCUMENTS
    #: Regular expressions; each command must fully match one. Empty: any command.
    ssm_command_patterns: tuple[str, ...] = ()
    ssm_max_timeout: int = DEFAULT_SSM_MAX_TIMEOUT

    def required_tags(self, namespace: str, spec: RemediationPolicySpec) -> list[tuple[str, str]]:
        """Every (key, value) a target of this policy must carry."""
        tags = [self.guard_tag]
        if self.namespace_tag_key:
            tags.append((self.namespace_tag_key, namespace))
        own = (spec.target_guard.tag_key, spec.target_guard.tag_value)
        if own not in tags:
            tags.append(own)
        return tags

    @functools.cached_property
    def ssm_command_regexes(self) -> tuple[re.Pattern[str], ...]:
        """``ssm_command_patterns`` compiled once per Tenancy (checked on every pass and before every call)."""
        return tuple(re.compile(p) for p in self.ssm_command_patterns)


def missing_tags(tags: Mapping[str, str], required: Sequence[tuple[str, str]]) -> list[str]:
    """The ``key=value`` requirements ``tags`` does not meet (empty: all met)."""
    return [f"{key}={value}" for key, value in required if tags.get(key) != value]


def role_allowed(tenancy: Tenancy, namespace: str, role_arn: str | None) -> bool:
    if role_arn is None:
        return True
    patterns = tuple(tenancy.role_arns.get(namespace, ())) + tuple(tenancy.role_arns.get("*", ()))
    return any(fnmatch.fnmatchcase(role_arn, pattern) for pattern in patterns)


def step_violations(tenancy: Tenancy, step: Step) -> list[str]:
    """Why the admin's settings forbid this step (empty: allowed)."""
    command = step.run_command
    if command is None:
        return []
    found = []
    if command.document_name not in tenancy.ssm_documents:
        found.append(f"SSM document {command.document_name} is not allowed (allowed: "
                     f"{', '.join(tenancy.ssm_documents) or 'none'})")
    if command.timeout_seconds > tenancy.ssm_max_timeout:
        found.append(f"SSM timeout {command.timeout_seconds}s exceeds the limit of {tenancy.ssm_max_timeout}s")
    if tenancy.ssm_command_patterns:
        for text in command.commands:
            if not any(p.fullmatch(text) for p in tenancy.ssm_command_regexes):
                found.append(f"command {text[:80]!r} matches none of the allowed patterns")
    return found


def policy_violations(tenancy: Tenancy, namespace: str, spec: RemediationPolicySpec) -> list[str]:
    """Everything in the policy the admin does not allow; the policy is Ready=False while any remain."""
    found = []
    if not role_allowed(tenancy, namespace, spec.aws.role_arn):
        found.append(f"role {spec.aws.role_arn} is not allowed for namespace {namespace}")
    for index, step in enumerate(spec.actions):
        found.extend(f"step {index + 1}: {v}" for v in step_violations(tenancy, step))
    return found


def parse_role_arns(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``namespace=arn[,arn...]`` items (``*=...`` for every namespace) into a mapping. Raises ValueError."""
    found: dict[str, list[str]] = {}
    for value in values:
        namespace, sep, arns = value.partition("=")
        if not sep or not namespace.strip() or not arns.strip():
            raise ValueError(f"expected NAMESPACE=ARN[,ARN...], got {value!r}")
        found.setdefault(namespace.strip(), []).extend(a.strip() for a in arns.split(",") if a.strip())
    return {k: tuple(v) for k, v in found.items()}


def parse_tag(value: str) -> tuple[str, str]:
    key, sep, tag_value = value.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {value!r}")
    return key, tag_value
