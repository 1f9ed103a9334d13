"""Descriptors tying each kind to its models and CRD presentation."""

from __future__ import annotations

import dataclasses
from typing import Any

from vigil.api.v1alpha1 import action, common, detector, policy
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

REMEDIATION_POLICY = ResourceDefinition(
    kind=policy.KIND,
    plural=policy.PLURAL,
    singular=policy.SINGULAR,
    short_names=policy.SHORT_NAMES,
    categories=policy.CATEGORIES,
    spec_model=policy.RemediationPolicySpec,
    status_model=policy.RemediationPolicyStatus,
    printer_columns=policy.PRINTER_COLUMNS,
    spec_validations=policy.SPEC_VALIDATIONS,
    description="Turns anomalies (from AnomalyDetectors or Alertmanager) into guarded, audited AWS actions: "
    "an escalation ladder with dry-run, approval, cooldown, rate limit, blast radius and a tag allow-guard.",
)

REMEDIATION_ACTION = ResourceDefinition(
    kind=action.KIND,
    plural=action.PLURAL,
    singular=action.SINGULAR,
    short_names=action.SHORT_NAMES,
    categories=action.CATEGORIES,
    spec_model=action.RemediationActionSpec,
    status_model=action.RemediationActionStatus,
    printer_columns=action.PRINTER_COLUMNS,
    spec_validations=action.SPEC_VALIDATIONS,
    description="One decision of a RemediationPolicy: the audit record and the unit of approval. Approve with "
    "`kubectl annotate ra NAME vigil.dev/approve=true` or `vigil approve NAME`.",
)

#: All kinds served by the operator, in a stable order (CRD files are named after them).
ALL: list[ResourceDefinition] = [ANOMALY_DETECTOR, REMEDIATION_POLICY, REMEDIATION_ACTION]
