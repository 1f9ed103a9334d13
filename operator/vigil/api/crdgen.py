"""Render CustomResourceDefinitions from the pydantic models.

A CRD schema must be *structural*: no ``$ref``, every node typed, ``nullable``
instead of ``anyOf: [X, null]``. Pydantic's JSON Schema is close but not that,
so this module inlines ``$defs``, folds optionals into ``nullable`` and keeps
only the keywords Kubernetes accepts. Run ``vigil crds --output crds/`` after
changing a model; ``tests/api/test_crds.py`` fails on any drift.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import yaml

from vigil.api.v1alpha1 import common, resources
from vigil.api.v1alpha1.resources import ResourceDefinition

#: JSON Schema keywords that survive into the CRD (everything else, e.g. title, is dropped).
_KEPT = {
    "type", "format", "description", "default", "enum", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "items", "properties", "required", "additionalProperties", "nullable",
}
_KUBE_EXTENSIONS_PREFIX = "x-kubernetes-"


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Turn one resolved JSON-Schema node into a structural OpenAPI v3 node."""
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        non_null = [alt for alt in any_of if alt.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"unions other than Optional[X] are not structural: {any_of!r}")
        outer = {k: v for k, v in node.items() if k in ("description", "default")}
        node = {**non_null[0], **outer}
        if len(non_null) < len(any_of):
            node["nullable"] = True
        if node.get("default", ...) is None:
            del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value)
        elif key in _KEPT or key.startswith(_KUBE_EXTENSIONS_PREFIX):
            out[key] = value
    if "type" not in out and "enum" in out:
        out["type"] = "string"
    if "type" not in out:
        raise ValueError(f"schema node has no type, which a CRD does not allow: {node!r}")
    if out["type"] == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "required" in out and not out["required"]:
        del out["required"]
    return out


def model_schema(model: type[common.Model]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema for one pydantic model, as it appears in the CRD."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def crd(definition: ResourceDefinition) -> dict[str, Any]:
    """The full CustomResourceDefinition object for one kind."""
    spec = model_schema(definition.spec_model)
    if definition.spec_validations:
        spec["x-kubernetes-validations"] = definition.spec_validations
    status = model_schema(definition.status_model)
    doc = definition.spec_model.__doc__ or ""
    spec["description"] = doc.strip().splitlines()[0] if doc.strip() else ""
    schema = {
        "type": "object",
        "description": definition.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": definition.crd_name,
            "labels": {"app.kubernetes.io/part-of": "vigil"},
        },
        "spec": {
            "group": common.GROUP,
            "scope": definition.scope,
            "names": {
                "kind": definition.kind,
                "listKind": f"{definition.kind}List",
                "plural": definition.plural,
                "singular": definition.singular,
                "shortNames": definition.short_names,
                "categories": definition.categories,
            },
            "versions": [
                {
                    "name": common.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": definition.printer_columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(definition) for definition in resources.ALL]


HEADER = "# Generated by `vigil crds` from operator/vigil/api/v1alpha1. Do not edit by hand.\n"


def render(definition: ResourceDefinition) -> str:
    """Deterministic YAML text of one CRD (what is committed under crds/)."""
    return HEADER + yaml.safe_dump(crd(definition), sort_keys=False, width=100, allow_unicode=True)


def render_all() -> str:
    return "---\n".join(render(definition) for definition in resources.ALL)


def file_name(definition: ResourceDefinition) -> str:
    return f"{common.GROUP}_{definition.plural}.yaml"


def write(directory: pathlib.Path) -> list[pathlib.Path]:
    """Write one file per CRD into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for definition in resources.ALL:
        path = directory / file_name(definition)
        path.write_text(render(definition))
        written.append(path)
    return written
