"""Fixtures for the chart tests: the chart loaded once, and a renderer returning parsed manifests.

Rendering goes through helm-python-sdk, which embeds the real Helm v4 engine
(template functions, schema validation, lint): no helm binary, no cluster.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "vigil"
RELEASE = "vigil"
NAMESPACE = "vigil-system"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render_text(
    chart: helm.Chart, values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce."""
    return chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)


def parse(rendered: dict[str, str]) -> list[Manifest]:
    """Every Kubernetes object in the rendered templates (NOTES.txt excluded)."""
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


@pytest.fixture(scope="session")
def render(chart: helm.Chart) -> Render:
    def _render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE) -> list[Manifest]:
        return parse(render_text(chart, values, namespace=namespace))

    return _render


def only(objects: list[Manifest], kind: str, name: str | None = None, namespace: str | None = None) -> Manifest:
    """The single object of this kind (and name/namespace), or a clear failure."""
    found = select(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} {namespace or ''}, got {len(found)}"
    return found[0]


def select(objects: list[Manifest], kind: str, name: str | None = None, namespace: str | None = None) -> list[Manifest]:
    return [
        o for o in objects
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
