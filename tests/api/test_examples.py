"""The examples are valid API objects, and the IAM policy grants exactly what the operator calls."""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator

import pytest
import yaml

from vigil.api import crdgen
from vigil.api.v1alpha1.detector import AnomalyDetectorSpec
from vigil.api.v1alpha1.policy import RemediationPolicySpec
from vigil_sandbox.kubeapi import KubeAPIServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("examples/e2e/*.yaml"),
                   *ROOT.glob("examples/detectors/*.yaml")])
MODELS = {"AnomalyDetector": AnomalyDetectorSpec, "RemediationPolicy": RemediationPolicySpec}


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(crds=crdgen.all_crds()) as server:
        yield server


def documents() -> list[tuple[str, dict[str, object]]]:
    found = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in MODELS:
                found.append((f"{path.relative_to(ROOT)}:{doc['metadata']['name']}", doc))  # type: ignore[index]
    return found


def test_there_are_examples_of_every_kind_and_step() -> None:
    docs = [d for _, d in documents()]
    assert {d["kind"] for d in docs} == set(MODELS)
    text = "\n".join(p.read_text() for p in EXAMPLES)
    for step in ("scaleAutoScalingGroup", "replaceInstance", "rebootInstances", "runCommand", "deregisterTarget"):
        assert step in text, f"no example uses {step}"
    for guard in ("dryRun", "approval", "cooldown", "rateLimit", "blastRadius", "targetGuard", "notify",
                  "alertSelector", "configMapRef"):
        assert guard in text, f"no example shows {guard}"


@pytest.mark.slow
@pytest.mark.parametrize(("where", "doc"), documents(), ids=[w for w, _ in documents()])
def test_example_is_accepted_by_the_api_server_schema(api: KubeAPIServer, where: str, doc: dict[str, object]) -> None:
    stored = api.create(doc)
    MODELS[str(doc["kind"])].model_validate(stored["spec"])


def _operations() -> set[str]:
    """Every AWS API operation the adapter calls, as IAM actions."""
    source = (ROOT / "operator/vigil/adapters/aws.py").read_text()
    prefix = {"autoscaling": "autoscaling", "ec2": "ec2", "elbv2": "elasticloadbalancing", "ssm": "ssm"}
    calls = re.findall(r'_(?:call|write|pages)\(\s*"([a-z0-9]+)",\s*"([A-Za-z]+)"', source)
    targets = re.findall(r'self\._targets\("([A-Za-z]+)"', source)
    found = {f"{prefix[s]}:{op}" for s, op in calls if s in prefix}
    found |= {f"elasticloadbalancing:{op}" for op in targets}
    if '"ssm", "SendCommand"' in source:
        found.add("ssm:SendCommand")
    return found


def test_iam_policy_covers_every_operation_and_nothing_more() -> None:
    policy = json.loads((ROOT / "examples/iam/vigil-operator-policy.json").read_text())
    granted: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in a for a in actions), f"wildcard action in {statement['Sid']}"
        granted |= set(actions)
        writes = [a for a in actions if not a.split(":")[1].startswith(("Describe", "List", "Get"))]
        if writes and statement["Resource"] == "*":
            pytest.fail(f"{statement['Sid']} grants {writes} on every resource")
        if writes and "instance" in str(statement["Resource"]) + str(statement["Resource"]):
            assert "Condition" in statement, f"{statement['Sid']} acts on instances without a tag condition"
    needed = _operations()
    assert "autoscaling:SetDesiredCapacity" in needed and "ssm:SendCommand" in needed  # the scan works
    needed.discard("sts:GetCallerIdentity")
    assert needed <= granted, f"missing from the IAM policy: {sorted(needed - granted)}"
    assert granted <= needed, f"granted but never used: {sorted(granted - needed)}"
