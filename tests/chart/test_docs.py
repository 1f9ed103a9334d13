"""Generated documentation and metadata stay in sync with the chart."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Any

import helm_python as helm
import yaml

import vigil

from .conftest import CHART_DIR, ROOT


def _load_script(name: str) -> ModuleType:
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


values_table = _load_script("values-table")
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_configuration_table_is_up_to_date() -> None:
    current = CONFIGURATION.read_text()
    generated = values_table.table(values_table.parse((CHART_DIR / "values.yaml").read_text()))
    assert values_table.splice(current, generated) == current, (
        "docs/configuration.md is out of date: run `python scripts/values-table.py --write docs/configuration.md`"
    )


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    return [path]


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    documented = {tuple(row.key.split(".")) for row in values_table.parse((CHART_DIR / "values.yaml").read_text())}
    undocumented = [
        ".".join(leaf) for leaf in _leaves(values)
        if not any(leaf[:n] in documented for n in range(1, len(leaf) + 1))
    ]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_every_top_level_value_is_in_the_schema(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]), "values.yaml and values.schema.json disagree"
    for key, value in values.items():
        if isinstance(value, dict) and schema["properties"][key].get("properties"):
            assert set(value) <= set(schema["properties"][key]["properties"]), key


def test_values_table_parser() -> None:
    text = (
        "# -- Top.\n# More.\ntop: 1\n\n"
        "group:\n  # -- Nested.\n  leaf: [a]\n  undocumented: x\n"
        "list:\n  # -- Not a row: inside a list item.\n  - key: 1\n"
    )
    rows = values_table.parse(text)
    assert [(r.key, r.type, r.default, r.description) for r in rows] == [
        ("top", "int", "1", "Top. More."),
        ("group.leaf", "list", '["a"]', "Nested."),
    ]


def test_chart_app_version_is_the_operator_version() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == vigil.__version__, "bump charts/vigil/Chart.yaml appVersion with the operator"


def test_docs_link_existing_files() -> None:
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text()
        for target in ("charts/vigil/crds/", "examples/argocd/application.yaml", "examples/argocd/health-checks.yaml"):
            if target in text:
                assert (ROOT / pathlib.Path(target)).exists(), f"{doc.name} links {target}, which does not exist"
