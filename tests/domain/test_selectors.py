"""Label selectors mean what ``kubectl get -l`` means; invalid ones match nothing."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.api.v1alpha1.policy import LabelSelector
from vigil.domain import selectors

LABELS = {"app": "web", "env": "prod", "tier": "frontend"}


def sel(match_labels: dict[str, str] | None = None, *expressions: tuple[str, str, list[str]]) -> LabelSelector:
    wire: dict[str, Any] = {
        "matchLabels": match_labels or {},
        "matchExpressions": [{"key": k, "operator": op, "values": v} for k, op, v in expressions],
    }
    return LabelSelector.model_validate(wire)


@pytest.mark.parametrize(("selector", "expected"), [
    (sel(), True),
    (sel({"app": "web"}), True),
    (sel({"app": "web", "env": "prod"}), True),
    (sel({"app": "web", "env": "dev"}), False),
    (sel({"missing": ""}), False),
    (sel(None, ("env", "In", ["prod", "staging"])), True),
    (sel(None, ("env", "In", ["dev"])), False),
    (sel(None, ("missing", "In", ["x"])), False),
    (sel(None, ("env", "NotIn", ["dev"])), True),
    (sel(None, ("env", "NotIn", ["prod"])), False),
    (sel(None, ("missing", "NotIn", ["x"])), True),
    (sel(None, ("tier", "Exists", [])), True),
    (sel(None, ("missing", "Exists", [])), False),
    (sel(None, ("missing", "DoesNotExist", [])), True),
    (sel(None, ("tier", "DoesNotExist", [])), False),
    # matchLabels AND matchExpressions AND each other.
    (sel({"app": "web"}, ("env", "In", ["prod"]), ("tier", "Exists", [])), True),
    (sel({"app": "web"}, ("env", "In", ["prod"]), ("canary", "Exists", [])), False),
    (sel({"app": "api"}, ("env", "In", ["prod"])), False),
])
def test_matches(selector: LabelSelector, expected: bool) -> None:
    assert selectors.matches(selector, LABELS) is expected


@pytest.mark.parametrize(("selector", "problem"), [
    (sel(None, ("env", "In", [])), "values must be non-empty for In"),
    (sel(None, ("env", "NotIn", [])), "values must be non-empty for NotIn"),
    (sel(None, ("env", "Exists", ["prod"])), "values must be empty for Exists"),
    (sel(None, ("env", "DoesNotExist", ["x"])), "values must be empty for DoesNotExist"),
])
def test_invalid_requirements_match_nothing_and_are_explained(selector: LabelSelector, problem: str) -> None:
    # Not even the label sets that would match a lenient reading: fail closed.
    for labels in ({}, LABELS, {"env": "x"}):
        assert selectors.matches(selector, labels) is False
    assert len(selectors.problems(selector)) == 1
    assert problem in selectors.problems(selector)[0]
    assert selectors.problems(sel({"a": "b"}, ("env", "In", ["x"]), ("k", "Exists", []))) == []


def test_empty_labels() -> None:
    assert selectors.matches(sel(), {})
    assert selectors.matches(sel(None, ("k", "NotIn", ["v"]), ("k", "DoesNotExist", [])), {})
    assert not selectors.matches(sel({"k": "v"}), {})


def test_describe_uses_kubectl_syntax() -> None:
    selector = sel({"env": "prod", "app": "web"}, ("tier", "In", ["b", "a"]), ("zone", "NotIn", ["x"]),
                   ("canary", "Exists", []), ("legacy", "DoesNotExist", []))
    assert selectors.describe(selector) == "app=web,env=prod,tier in (a,b),zone notin (x),canary,!legacy"
    assert selectors.describe(sel()) == "<all>"
