"""kind end-to-end test: scripts/e2e.sh on a real cluster, plus fast checks of what it applies.

The cluster test needs a Docker engine and kind; where either is missing it is
skipped with the reason. The e2e manifests are still checked here on every
run: the custom resources validate against the operator's own API models and
the generated CRD schemas, and the script parses.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from vigil.api import crdgen
from vigil.api.v1alpha1 import detector, policy

ROOT = pathlib.Path(__file__).resolve().parents[2]
E2E = ROOT / "examples" / "e2e"
SCRIPT = ROOT / "scripts" / "e2e.sh"


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _missing() -> list[str]:
    missing = []
    if not _docker_works():
        missing.append("`docker info` failed (no Docker engine)")
    for tool in ("kind", "helm", "kubectl"):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` is not on PATH")
    return missing


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((E2E / name).read_text()) if doc]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kind_remediation_end_to_end() -> None:
    missing = _missing()
    if missing:
        pytest.skip("kind e2e needs Docker, kind, helm and kubectl: " + "; ".join(missing)
                    + " (run `make e2e` on a machine with them, e.g. the e2e GitHub workflow)")
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, timeout=3500)
    assert result.returncode == 0, "scripts/e2e.sh failed (its output above has the diagnostics)"


def test_e2e_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_e2e_custom_resources_match_the_api() -> None:
    docs = {doc["kind"]: doc for doc in _documents("resources.yaml")}
    assert set(docs) == {"AnomalyDetector", "RemediationPolicy"}
    spec = detector.AnomalyDetectorSpec.model_validate(docs["AnomalyDetector"]["spec"])
    rule = policy.RemediationPolicySpec.model_validate(docs["RemediationPolicy"]["spec"])
    # The policy selects the detector and scales the ASG the Job creates, within bounds.
    labels = docs["AnomalyDetector"]["metadata"]["labels"]
    assert rule.detector_selector is not None and rule.detector_selector.match_labels.items() <= labels.items()
    step = rule.actions[0].scale_auto_scaling_group
    assert step is not None and step.name == "vigil-e2e-web" and step.by == 1
    assert "vigil-e2e-web" in (E2E / "aws.yaml").read_text()
    assert "e2e_request_latency_seconds" in spec.query


def test_e2e_custom_resources_pass_the_crd_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the [sandbox] extra) is not installed")
    schemas = {
        c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for c in crdgen.all_crds()
    }
    for doc in _documents("resources.yaml"):
        spec_schema = schemas[doc["kind"]]["properties"]["spec"]
        jsonschema.Draft7Validator(_without_kube_extensions(spec_schema)).validate(doc["spec"])


def _without_kube_extensions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_kube_extensions(v) for k, v in node.items()
                if not k.startswith("x-kubernetes-") and k != "nullable"}
    if isinstance(node, list):
        return [_without_kube_extensions(v) for v in node]
    return node


def test_e2e_values_pass_the_chart_schema() -> None:
    helm = pytest.importorskip("helm_python")
    values = yaml.safe_load((E2E / "values.yaml").read_text())
    with helm.Chart.load(ROOT / "charts" / "vigil") as chart:
        chart.validate_schema({**values, "image": {"repository": "vigil", "tag": "e2e", "pullPolicy": "Never"}})


def test_e2e_workloads_use_the_image_under_test() -> None:
    for name in ("infra.yaml", "aws.yaml", "check-asg.yaml"):
        for doc in _documents(name):
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["image"] == "VIGIL_E2E_IMAGE":
                    assert container["imagePullPolicy"] == "Never"  # loaded by `kind load`, never pulled
                else:
                    assert ":" in container["image"] and not container["image"].endswith(":latest")


def test_workflow_runs_make_e2e() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any("make e2e" in run for run in steps)
    assert all(job["runs-on"] == "ubuntu-latest" for job in workflow["jobs"].values())
