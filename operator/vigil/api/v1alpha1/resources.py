"""Descriptors tying each kind to its models and CRD presentation."""

from __future__ import annotations

import dataclasses
from typing import Any

from vigil.api.v1alpha1 import common, detector
from vigil.api.v1alpha1.common import Model


@dataclasses.dataclass(frozen=True)
class ResourceDefinition:
    """Everything :mod:`vigil.api.crdgen` needs to render one CRD."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    categories: list[str]
    spec_model: type[Model]
    status_model: type[Model]
    printer_columns: list[dict[str, Any]]
    spec_validations: list[dict[str, str]]
    description: str
    scope: str = "Namespaced"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{common.GROUP}"


ANOMALY_DETECTOR = ResourceDefinition(
    kind=detector.KIND,
    plural=detector.PLURAL,
    singular=detector.SINGULAR,
    short_names=detector.SHORT_NAMES,
    categories=detector.CATEGORIES,
    spec_model=detector.AnomalyDetectorSpec,
    status_model=detector.AnomalyDetectorStatus,
    printer_columns=detector.PRINTER_COLUMNS,
    spec_validations=detector.SPEC_VALIDATIONS,
    description="Scores every series a PromQL query returns with an ONNX anomaly model and "
    "reports the verdict in status, in Events and on the operator's /metrics.",
)

#: All kinds served by the operator, in a stable order (CRD files are named after them).
ALL: list[ResourceDefinition] = [ANOMALY_DETECTOR]
