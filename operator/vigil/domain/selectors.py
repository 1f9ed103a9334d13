"""Kubernetes label-selector matching, as a pure function over a label mapping.

Policies select what triggers them by labels twice: ``alertSelector`` over the
labels of Alertmanager alerts and ``detectorSelector`` over the labels of
AnomalyDetectors. Both must mean exactly what ``kubectl get -l`` means, so both
go through :func:`matches`. The semantics follow ``k8s.io/apimachinery``
``labels.Requirement.Matches``:

* ``matchLabels`` and every ``matchExpressions`` entry are ANDed;
* ``In``: the key is present and its value is listed;
* ``NotIn``: the key is absent, or present with a value that is not listed;
* ``Exists`` / ``DoesNotExist``: the key is present / absent, whatever its value;
* an empty selector matches everything.

A selector the API server would refuse (``In``/``NotIn`` without values,
``Exists``/``DoesNotExist`` with values) matches *nothing* here: a selector
that cannot be read must never widen what an operator acts on. Use
:func:`problems` to tell the user why.
"""

from __future__ import annotations

from collections.abc import Mapping

from vigil.api.v1alpha1.policy import LabelSelector, LabelSelectorOperator, LabelSelectorRequirement

_NEEDS_VALUES = (LabelSelectorOperator.IN, LabelSelectorOperator.NOT_IN)


def problems(selector: LabelSelector) -> list[str]:
    """Why the API server would refuse this selector (empty if it is valid)."""
    found = []
    for i, requirement in enumerate(selector.match_expressions):
        where = f"matchExpressions[{i}] ({requirement.key} {requirement.operator.value})"
        if requirement.operator in _NEEDS_VALUES and not requirement.values:
            found.append(f"{where}: values must be non-empty for {requirement.operator.value}")
        if requirement.operator not in _NEEDS_VALUES and requirement.values:
            found.append(f"{where}: values must be empty for {requirement.operator.value}")
    return found


def requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """One ``matchExpressions`` entry against a label set (invalid entries match nothing)."""
    present = requirement.key in labels
    match requirement.operator:
        case LabelSelectorOperator.IN:
            return bool(requirement.values) and present and labels[requirement.key] in requirement.values
        case LabelSelectorOperator.NOT_IN:
            return bool(requirement.values) and (not present or labels[requirement.key] not in requirement.values)
        case LabelSelectorOperator.EXISTS:
            return not requirement.values and present
        case LabelSelectorOperator.DOES_NOT_EXIST:
            return not requirement.values and not present
    return False  # pragma: no cover - the enum is exhaustive


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """True if ``labels`` satisfy every part of ``selector`` (an empty selector matches all)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(requirement_matches(requirement, labels) for requirement in selector.match_expressions)


def describe(selector: LabelSelector) -> str:
    """The selector in ``kubectl -l`` syntax, for messages and events (``<all>`` when empty)."""
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for requirement in selector.match_expressions:
        values = ",".join(sorted(requirement.values))
        match requirement.operator:
            case LabelSelectorOperator.IN:
                parts.append(f"{requirement.key} in ({values})")
            case LabelSelectorOperator.NOT_IN:
                parts.append(f"{requirement.key} notin ({values})")
            case LabelSelectorOperator.EXISTS:
                parts.append(requirement.key)
            case LabelSelectorOperator.DOES_NOT_EXIST:
                parts.append(f"!{requirement.key}")
    return ",".join(parts) or "<all>"
