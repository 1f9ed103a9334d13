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

from vigil.domain import durations

GROUP = "vigil.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Prometheus' own duration syntax (``90s``, ``5m``, ``1h30m``, ``7d``): units in decreasing order, each at
#: most once, so ``30m1h`` and ``5m5m`` are refused as Prometheus refuses them. At most nine digits per
#: unit keeps every value, and the CEL arithmetic below, far inside int64.
DURATION_PATTERN = r"^([0-9]{1,9}w)?([0-9]{1,9}d)?([0-9]{1,9}h)?([0-9]{1,9}m)?([0-9]{1,9}s)?([0-9]{1,9}ms)?$"

#: (unit, regex finding that unit's component, milliseconds per unit) for the CEL bound. ``m`` must
#: not be followed by ``s`` (that is ``ms``), and RE2 has no look-ahead, hence ``([0-9]|$)``.
_CEL_UNITS = (
    ("w", "[0-9]+w", 604_800_000),
    ("d", "[0-9]+d", 86_400_000),
    ("h", "[0-9]+h", 3_600_000),
    ("m", "[0-9]+m([0-9]|$)", 60_000),
    ("s", "[0-9]+s", 1_000),
    ("ms", "[0-9]+ms", 1),
)


def cel_duration_millis(expr: str = "self") -> str:
    """A CEL expression for the milliseconds in the duration string ``expr`` (Prometheus syntax).

    Kubernetes' CEL has no Prometheus-duration type (``duration()`` takes Go syntax, without ``d`` or
    ``w``), so each unit's number is found with the regex library's ``find`` and summed. Only valid
    for strings matching :data:`DURATION_PATTERN` (each unit at most once); rules guard with it.
    """
    terms = [f"int('0' + {expr}.find('{regex}').split('{unit}')[0]) * {millis}" for unit, regex, millis in _CEL_UNITS]
    return "(" + " + ".join(terms) + ")"


def duration_rules(maximum: str, positive: bool, expr: str = "self") -> list[dict[str, str]]:
    """x-kubernetes-validations bounding a duration: > 0s if ``positive``, at most ``maximum``."""
    guard = f"!{expr}.matches('{DURATION_PATTERN}')"
    rules = [{"rule": f"{guard} || {cel_duration_millis(expr)} <= {round(durations.parse(maximum) * 1000)}",
              "message": f"must be at most {maximum}"}]
    if positive:
        rules.insert(0, {"rule": f"{guard} || {expr}.matches('[1-9]')", "message": "must be more than 0s"})
    return rules


def duration_bound(maximum: str, positive: bool) -> pydantic.AfterValidator:
    """The operator's side of the same bound, for objects the API server admitted before it existed."""
    limit = durations.parse(maximum)

    def check(value: str) -> str:
        seconds = durations.parse(value)
        if positive and seconds <= 0:
            raise ValueError("must be more than 0s")
        if seconds > limit:
            raise ValueError(f"must be at most {maximum}")
        return value

    return pydantic.AfterValidator(check)


def duration_field(maximum: str, positive: bool) -> Any:
    """The schema side: Prometheus syntax, at most 32 characters, and the CEL bound."""
    rules: Any = duration_rules(maximum, positive)
    return Field(pattern=DURATION_PATTERN, min_length=2, max_length=32,
                 json_schema_extra={"x-kubernetes-validations": rules})


#: The bound of the shared duration types (remediation ``for``, ``cooldown``, approval timeout, rate
#: window, ...): a quarter is longer than any of them needs, and small enough that no date computed
#: from it overflows. AnomalyDetector fields have tighter bounds of their own (detector.py).
MAX_DURATION = "90d"

Duration = Annotated[str, duration_field(MAX_DURATION, False), duration_bound(MAX_DURATION, False)]
PositiveDuration = Annotated[str, duration_field(MAX_DURATION, True), duration_bound(MAX_DURATION, True)]

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
