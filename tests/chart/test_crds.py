"""The chart ships exactly the generated CRDs (kept in sync by scripts/sync-chart-crds.py)."""

from __future__ import annotations

import helm_python as helm
import yaml

from vigil.api import crdgen
from vigil.api.v1alpha1 import resources

from .conftest import CHART_DIR, ROOT

FIX = "run `python scripts/sync-chart-crds.py` (after `vigil crds -o crds`) and commit"


def test_chart_crds_are_byte_identical_to_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART_DIR / "crds").glob("*.yaml")}
    assert top, "crds/ is empty"
    assert chart.keys() == top.keys(), f"chart CRD files differ from crds/: {FIX}"
    for name, data in top.items():
        assert chart[name] == data, f"charts/vigil/crds/{name} differs from crds/{name}: {FIX}"


def test_chart_crds_match_the_models() -> None:
    for definition in resources.ALL:
        path = CHART_DIR / "crds" / crdgen.file_name(definition)
        assert path.read_text() == crdgen.render(definition), f"{path} drifted from the models: {FIX}"


def test_helm_loads_the_crds(chart: helm.Chart) -> None:
    loaded = {yaml.safe_load(crd["data"])["metadata"]["name"] for crd in chart.crds}
    assert loaded == {definition.crd_name for definition in resources.ALL}


def test_crds_are_not_templates(chart: helm.Chart) -> None:
    """CRDs live in crds/ (installed before templates, never templated, never deleted by Helm)."""
    assert not any("CustomResourceDefinition" in t["data"] for t in chart.templates)
