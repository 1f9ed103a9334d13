"""The committed CRDs are exactly what the models generate (kubebuilder-style drift check)."""

from __future__ import annotations

import pathlib

import yaml

from vigil.api import crdgen
from vigil.api.v1alpha1 import resources

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    for definition in resources.ALL:
        committed = ROOT / "crds" / crdgen.file_name(definition)
        assert committed.exists(), f"{committed} missing: run `vigil crds -o crds`"
        assert committed.read_text() == crdgen.render(definition), (
            f"{committed} drifted from the pydantic models: run `vigil crds -o crds` and commit"
        )


def test_no_stray_crd_files() -> None:
    expected = {crdgen.file_name(d) for d in resources.ALL}
    assert {p.name for p in (ROOT / "crds").glob("*.yaml")} == expected


def _walk(node: object, path: str = "") -> list[str]:
    """Structural-schema violations: $ref, anyOf, untyped nodes."""
    problems: list[str] = []
    if isinstance(node, dict):
        for bad in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            if bad in node:
                problems.append(f"{path}: has {bad}")
        if ("properties" in node or "items" in node) and "type" not in node:
            problems.append(f"{path}: no type")
        for key, value in node.items():
            if key in ("properties",):
                for name, sub in value.items():
                    problems += _walk(sub, f"{path}.{name}")
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                problems += _walk(value, f"{path}[]")
    return problems


def test_schemas_are_structural() -> None:
    for crd in crdgen.all_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []
        yaml.safe_dump(crd)  # serialisable


def test_detector_crd_shape() -> None:
    crd = crdgen.crd(resources.ANOMALY_DETECTOR)
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["ad"] and names["categories"] == ["vigil"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Score", "Anomalous", "Ready", "Last-Eval", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["query"]
    assert spec["properties"]["threshold"]["maximum"] == 1.0
    assert spec["properties"]["missingData"]["enum"] == ["ignore", "alert"]
    assert spec["properties"]["interval"]["default"] == "60s"
    assert spec["x-kubernetes-validations"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
