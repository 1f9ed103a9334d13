"""Types shared by all Vigil resources: durations, conditions, the camelCase base model.

Field descriptions become the CRD's documentation (``kubectl explain``), and
constraints (patterns, ranges, enums) become its OpenAPI validation. Keep them
precise: they are what users read.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any

import pydantic
from pydantic import Field
from pydantic.alias_generators import to_camel

GROUP = "vigil.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Prometheus-style duration, e.g. ``90s``, ``5m``, ``1h30m``, ``7d``. Zero allowed.
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w))+$"
#: Like :data:`DURATION_PATTERN` but the first component must be non-zero, so ``0s`` is refused.
POSITIVE_DURATION_PATTERN = r"^[0-9]*[1-9][0-9]*(ms|s|m|h|d|w)([0-9]+(ms|s|m|h|d|w))*$"

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
PositiveDuration = Annotated[str, Field(pattern=POSITIVE_DURATION_PATTERN, max_length=32)]

#: Kubernetes object names (RFC 1123 subdomain), as the API server checks them.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]


class Model(pydantic.BaseModel):
    """Base of all API models: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored rather than refused: the API server has already
    pruned what the schema does not know, and an older operator must keep
    reading objects written for a newer schema.
    """

    model_config = pydantic.ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise as the API server stores it: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_merge_patch(self) -> dict[str, Any]:
        """A JSON merge patch that makes the stored object equal this one.

        Top-level fields that are now empty are sent as ``null``, which a merge patch turns into a
        deletion; otherwise an old value (say ``anomalousSince``) would linger.
        """
        compact = self.to_wire()
        keys = [field.alias or name for name, field in type(self).model_fields.items()]
        return {key: compact.get(key) for key in keys}


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A Kubernetes-style condition (the ``metav1.Condition`` shape).

    ``lastTransitionTime`` changes only when ``status`` changes; see
    :func:`vigil.domain.conditions.set_condition`.
    """

    type: str = Field(description="Condition type, e.g. Ready.", min_length=1, max_length=64)
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition.",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(default="", description="Human-readable detail.", max_length=4096)
    last_transition_time: datetime.datetime = Field(
        description="When the status last changed (not when the condition was last written)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed for."
    )


CONDITIONS_FIELD_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
