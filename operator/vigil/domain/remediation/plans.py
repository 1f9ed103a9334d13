"""From a step and observed AWS state to the exact AWS call, and back to "is it done?".

Targets are absolute (a desired capacity of 6, not "+2"), computed from the
state observed just before the call, so re-issuing a call after a restart
cannot double-apply it. ``verify`` answers from freshly observed state whether
the intent already took effect, which is how an interrupted action resumes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vigil.api.v1alpha1.action import SkipReason
from vigil.api.v1alpha1.policy import InstanceTargets, ScaleAutoScalingGroup

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


@dataclasses.dataclass(frozen=True)
class Skip:
    reason: SkipReason
    message: str


@dataclasses.dataclass(frozen=True)
class ScalePlan:
    group: str
    before: int
    target: int

    @property
    def scale_in(self) -> bool:
        return self.target < self.before


def resolve_instances(targets: InstanceTargets, series: Sequence[Mapping[str, str]]) -> list[str] | Skip:
    """Instance ids from the anomalous series' label (``fromLabel``) plus the fixed list, de-duplicated."""
    found: list[str] = []
    bad: list[str] = []
    for instance in targets.instance_ids:
        if instance not in found:
            found.append(instance)
    if targets.from_label:
        for labels in series:
            value = labels.get(targets.from_label)
            if value is None:
                continue
            if not INSTANCE_ID.match(value):
                bad.append(value)
            elif value not in found:
                found.append(value)
    if bad:
        return Skip(SkipReason.NO_TARGETS, f"label {targets.from_label} holds values that are not instance ids: "
                                           + ", ".join(sorted(set(bad))[:10]))
    if not found:
        where = f"label {targets.from_label!r} of the anomalous series" if targets.from_label else "instanceIds"
        return Skip(SkipReason.NO_TARGETS, f"no instance id found in {where}")
    return found


def plan_scale(step: ScaleAutoScalingGroup, desired: int, group_min: int, group_max: int) -> ScalePlan | Skip:
    """The absolute desired capacity to set, within the step's and the group's bounds."""
    low = max(step.min, group_min)
    high = min(step.max, group_max)
    if low > high:
        return Skip(SkipReason.AT_BOUND, f"no capacity satisfies both the step bounds [{step.min}, {step.max}] "
                                         f"and the group's [{group_min}, {group_max}]")
    wanted = step.to if step.to is not None else desired + (step.by or 0)
    target = min(max(wanted, low), high)
    if target == desired:
        return Skip(SkipReason.AT_BOUND, f"desired capacity is already {desired}; the bounds [{low}, {high}] "
                                         f"allow no change toward {wanted}")
    return ScalePlan(group=step.name, before=desired, target=target)


def scale_done(plan_target: int, observed_desired: int) -> bool:
    return observed_desired == plan_target


def describe_change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """``desiredCapacity 4 → 6`` style text for messages and notifications."""
    if not before or not after:
        return ""
    parts = [f"{key} {before.get(key)} → {after[key]}" for key in after if before.get(key) != after[key]]
    return ", ".join(parts)
