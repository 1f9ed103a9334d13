"""Structural-schema handling of CustomResourceDefinitions, as kube-apiserver does it.

A real cluster never stores what a client sent: it prunes unknown fields, drops
``null`` for non-nullable fields, applies ``default`` values, and only then
validates with OpenAPI, list-type and CEL rules. An operator that passes its
tests against a lenient fake and then fails against a real cluster is the bug
this module exists to prevent, so the error texts, reasons and field paths are
copied from the Go sources (``k8s.io/apimachinery/pkg/util/validation/field``,
``kube-openapi``, ``apiextensions-apiserver``) as closely as practical.

The pipeline is :meth:`CompiledSchema.admit`: prune → prune nulls → default →
validate (OpenAPI, then list types, then CEL unless a blocking error exists).
Every CEL rule is compiled when the schema is compiled; a rule that cel-python
cannot parse, or that calls an unknown function or selects a field the schema
does not declare, raises :class:`SchemaCompileError` so that a CRD carrying it
is refused (as the real server refuses it) instead of silently unchecked.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import ipaddress
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import celpy
import celpy.celparser
import celpy.celtypes as celtypes
import celpy.evaluation
import lark

Json = Any
Node = dict[str, Any]

# Root-level fields that pruning never removes (ObjectMeta is handled elsewhere).
_ROOT_KEPT = ("apiVersion", "kind", "metadata")


# --------------------------------------------------------------------------------------------------
# Field errors, formatted like k8s.io/apimachinery/pkg/util/validation/field.Error.
# --------------------------------------------------------------------------------------------------

_TYPE_TEXT = {
    "FieldValueNotFound": "Not found",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "InternalError": "Internal error",
}
# Error types whose body never shows the offending value (ErrorBody in field/errors.go).
_NO_VALUE_TYPES = {"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong", "InternalError"}
# The schema errors after which kube-apiserver does not even try the CEL rules (hasBlockingErr).
_BLOCKING_TYPES = {
    "FieldValueNotSupported",
    "FieldValueRequired",
    "FieldValueTooLong",
    "FieldValueTooMany",
    "FieldValueTypeInvalid",
}
_NO_VALUE = object()


def go_value(value: Json) -> str:
    """Render a field error's value as kube-apiserver 1.37 does: scalars as Go's ``%v`` (strings quoted),
    ``null`` for nil, and maps and slices as their JSON (``{"name":"http"}``, keys sorted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (dict, list)):
        return go_json(value)
    return repr(value)


def go_json(value: Json) -> str:
    """Go's ``json.Marshal``: compact, map keys sorted, whole floats without ``.0``, HTML characters escaped."""
    if isinstance(value, dict):
        text = "{" + ",".join(f"{_go_string(k)}:{go_json(v)}" for k, v in sorted(value.items())) + "}"
    elif isinstance(value, list):
        text = "[" + ",".join(go_json(v) for v in value) + "]"
    elif isinstance(value, str):
        text = _go_string(value)
    elif isinstance(value, float) and not isinstance(value, bool):
        text = go_number(value)
    else:
        text = json.dumps(value)
    return text


def _go_string(value: str) -> str:
    return (json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def go_number(value: float | int) -> str:
    """Go's ``%v`` of a float64: ``1.0`` prints as ``1``, ``0.5`` as ``0.5``."""
    if isinstance(value, bool):
        return str(value).lower()
    as_float = float(value)
    if as_float.is_integer() and abs(as_float) < 1e21:
        return str(int(as_float))
    return repr(as_float)


@dataclass(frozen=True)
class FieldError:
    """One cause of a 422: the same triple that ends up in ``details.causes`` of a ``Status``."""

    reason: str
    field: str
    detail: str = ""
    value: Any = _NO_VALUE

    @property
    def body(self) -> str:
        """``ErrorBody()``: the message without the field path (what ``causes[].message`` holds)."""
        text = _TYPE_TEXT.get(self.reason, self.reason)
        if self.reason not in _NO_VALUE_TYPES and self.value is not _NO_VALUE:
            text = f"{text}: {go_value(self.value)}"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    @property
    def message(self) -> str:
        """``Error()``: ``<field>: <body>``, as joined into the top-level Status message."""
        return f"{self.field}: {self.body}"

    @property
    def blocking(self) -> bool:
        return self.reason in _BLOCKING_TYPES

    def as_cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body, "field": self.field}


def invalid(path: str, value: Json, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path or "<nil>", detail, value)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", path or "<nil>", detail)


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", path or "<nil>", detail)


def duplicate(path: str, value: Json) -> FieldError:
    return FieldError("FieldValueDuplicate", path or "<nil>", "", value)


def not_supported(path: str, value: Json, allowed: list[Json]) -> FieldError:
    quoted = [json.dumps(v if isinstance(v, str) else json.dumps(v)) for v in allowed]
    return FieldError("FieldValueNotSupported", path or "<nil>", "supported values: " + ", ".join(quoted), value)


def join_message(errors: list[FieldError]) -> str:
    """``utilerrors.NewAggregate(errs).Error()``: one message, or ``[a, b]`` de-duplicated."""
    messages: list[str] = []
    for error in errors:
        if error.message not in messages:
            messages.append(error.message)
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


# --------------------------------------------------------------------------------------------------
# Small helpers on JSON values.
# --------------------------------------------------------------------------------------------------


def json_type(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_equal(a: Json, b: Json) -> bool:
    """Equality of JSON values where ``True != 1`` (Python's ``==`` says they are equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _matches_type(value: Json, type_name: str) -> bool:
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _is_datetime(value: str) -> bool:
    match = _RFC3339.match(value)
    if not match:
        return False
    try:
        year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None


def _is_byte(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return (
        re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", value) is not None
    )


def _is_ip(version: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return ipaddress.ip_address(value).version == version
        except ValueError:
            return False

    return check


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


# The formats kube-apiserver checks (a subset of kube-openapi's strfmt registry); others pass.
_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_datetime,
    "datetime": _is_datetime,
    "date": _is_date,
    "byte": _is_byte,
    "uuid": _is_uuid,
    "ipv4": _is_ip(4),
    "ipv6": _is_ip(6),
    "cidr": _is_cidr,
}


def _preserves_unknown(node: Node) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields"))


def _additional(node: Node) -> Node | None:
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _walk_schema(node: Node, path: str) -> Iterator[tuple[Node, str]]:
    """Every schema node with its path inside the CRD (``properties[spec].items`` style)."""
    yield node, path
    for name, sub in (node.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from _walk_schema(sub, f"{path}.properties[{name}]")
    if isinstance(node.get("items"), dict):
        yield from _walk_schema(node["items"], f"{path}.items")
    extra = _additional(node)
    if extra is not None:
        yield from _walk_schema(extra, f"{path}.additionalProperties")
    for keyword in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(node.get(keyword) or []):
            if isinstance(sub, dict):
                yield from _walk_schema(sub, f"{path}.{keyword}[{i}]")
    if isinstance(node.get("not"), dict):
        yield from _walk_schema(node["not"], f"{path}.not")


# --------------------------------------------------------------------------------------------------
# CEL (x-kubernetes-validations) on cel-python.
# --------------------------------------------------------------------------------------------------


class SchemaCompileError(Exception):
    """The schema cannot be served: a CEL rule does not compile or a regex is broken."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(join_message(errors))
        self.errors = errors


def _cel_str(value: Any) -> str:
    return str(value)


# A few functions of the Kubernetes CEL libraries that cel-python lacks (strings, lists).
def _lower_ascii(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_cel_str(value).lower())


def _upper_ascii(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_cel_str(value).upper())


def _trim(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_cel_str(value).strip())


def _split(value: Any, sep: Any) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(part) for part in _cel_str(value).split(_cel_str(sep))])


def _join(value: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(_cel_str(sep).join(_cel_str(item) for item in value))


def _index_of(value: Any, sub: Any) -> celtypes.IntType:
    return celtypes.IntType(_cel_str(value).find(_cel_str(sub)))


def _replace(value: Any, old: Any, new: Any) -> celtypes.StringType:
    return celtypes.StringType(_cel_str(value).replace(_cel_str(old), _cel_str(new)))


def _find(value: Any, regex: Any) -> celtypes.StringType:
    """Kubernetes' regex library: the first match of ``regex`` in the string, or ''."""
    match = re.search(_cel_str(regex), _cel_str(value))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(value: Any, regex: Any) -> celtypes.ListType:
    """Kubernetes' regex library: every non-overlapping match of ``regex`` in the string."""
    return celtypes.ListType([celtypes.StringType(m.group(0)) for m in re.finditer(_cel_str(regex), _cel_str(value))])


def _is_sorted(value: Any) -> celtypes.BoolType:
    items = list(value)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


CEL_EXTENSIONS: dict[str, Any] = {
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "split": _split,
    "join": _join,
    "indexOf": _index_of,
    "replace": _replace,
    "isSorted": _is_sorted,
    "find": _find,
    "findAll": _find_all,
}
_CEL_MACROS = {"has", "all", "exists", "exists_one", "map", "filter", "dyn"}
_CEL_KNOWN_FUNCTIONS = set(celpy.evaluation.base_functions) | _CEL_MACROS | set(CEL_EXTENSIONS)
_CEL_ENV = celpy.Environment()


@dataclass
class CelRule:
    """One compiled ``x-kubernetes-validations`` entry."""

    rule: str
    program: Any
    message: str | None
    message_program: Any | None
    field_path: str | None
    reason: str | None
    transition: bool

    def default_message(self) -> str:
        return self.message or f"failed rule: {self.rule.strip()}"


def _dot_chain(tree: lark.Tree[Any]) -> tuple[str, list[str]] | None:
    """``self.a.b`` → ``("self", ["a", "b"])``; anything not rooted at an identifier → None."""
    names: list[str] = []
    node: Any = tree
    while isinstance(node, lark.Tree) and node.data in ("member_dot", "member"):
        if node.data == "member_dot":
            names.append(str(node.children[1]))
        elif len(node.children) != 1:
            return None
        node = node.children[0]
    if isinstance(node, lark.Tree) and node.data == "primary" and len(node.children) == 1:
        ident = node.children[0]
        if isinstance(ident, lark.Tree) and ident.data == "ident":
            return str(ident.children[0]), list(reversed(names))
    return None


def _resolve_fields(node: Node, names: list[str]) -> str | None:
    """Check ``self.a.b`` against the schema like the CEL type-checker; return an error or None."""
    current: Node | None = node
    for name in names:
        if current is None or (_preserves_unknown(current) and not current.get("properties")):
            return None
        if current.get("x-kubernetes-int-or-string"):
            return f"type 'int-or-string' does not support field selection ('{name}')"
        kind = current.get("type")
        if kind not in (None, "object"):
            return f"type '{kind}' does not support field selection ('{name}')"
        props = current.get("properties") or {}
        if name in props:
            current = props[name]
        elif _additional(current) is not None or current.get("additionalProperties") is True:
            current = _additional(current)
        elif _preserves_unknown(current):
            return None
        else:
            return f"undefined field '{name}'"
    return None


def _static_check(tree: lark.Tree[Any], node: Node) -> list[str]:
    """The part of cel-go's type-check that matters here: unknown functions and fields."""
    problems: list[str] = []
    for sub in tree.iter_subtrees():
        if sub.data == "member_dot_arg":
            name = str(sub.children[1])
            if name not in _CEL_KNOWN_FUNCTIONS:
                problems.append(f"undeclared reference to '{name}'")
        elif sub.data == "ident_arg":
            name = str(sub.children[0])
            if name not in _CEL_KNOWN_FUNCTIONS:
                problems.append(f"undeclared reference to '{name}'")
        elif sub.data == "member_dot":
            chain = _dot_chain(sub)
            if chain is not None and chain[0] in ("self", "oldSelf"):
                problem = _resolve_fields(node, chain[1])
                if problem is not None and problem not in problems:
                    problems.append(problem)
    return problems


def _uses_old_self(tree: lark.Tree[Any]) -> bool:
    for sub in tree.iter_subtrees():
        if sub.data == "ident" and sub.children and str(sub.children[0]) == "oldSelf":
            return True
    return False


def _compile_cel(text: str, node: Node) -> tuple[Any, bool]:
    """Parse + statically check one expression; raise ValueError with a cel-go-like message."""
    try:
        tree = _CEL_ENV.compile(text)
    except celpy.celparser.CELParseError as e:
        raise ValueError(f"compilation failed: ERROR: <input>: Syntax error: {str(e).strip()}") from e
    problems = _static_check(tree, node)
    if problems:
        raise ValueError("compilation failed: " + "; ".join(f"ERROR: <input>: {p}" for p in problems))
    return _CEL_ENV.program(tree, functions=CEL_EXTENSIONS), _uses_old_self(tree)


def to_cel(value: Json, node: Node | None) -> Any:
    """Convert JSON to CEL values typed by the schema (numbers are doubles, date-times timestamps)."""
    if value is None:
        return None
    node = node or {}
    kind = node.get("type")
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = _additional(node)
        return celtypes.MapType({celtypes.StringType(k): to_cel(v, props.get(k, extra)) for k, v in value.items()})
    if isinstance(value, list):
        items = node.get("items") if isinstance(node.get("items"), dict) else None
        return celtypes.ListType([to_cel(v, items) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if kind == "number" and isinstance(value, int | float):
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if kind == "string" and node.get("format") in ("date-time", "datetime") and _is_datetime(value):
        try:
            return celtypes.TimestampType(value)
        except (ValueError, TypeError):
            return celtypes.StringType(value)
    return celtypes.StringType(value)


_FIELD_PATH_TOKEN = re.compile(r"\.([A-Za-z_$][A-Za-z0-9_$-]*)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]")


def _append_field_path(path: str, field_path: str) -> str:
    pos = 0
    while pos < len(field_path):
        match = _FIELD_PATH_TOKEN.match(field_path, pos)
        if not match:
            return child(path, field_path.lstrip("."))
        if match.group(1) is not None:
            path = child(path, match.group(1))
        elif match.group(2) is not None:
            path = child(path, match.group(2))
        else:
            path = index(path, int(match.group(3)))
        pos = match.end()
    return path


# --------------------------------------------------------------------------------------------------
# The compiled schema and its admission pipeline.
# --------------------------------------------------------------------------------------------------


#: Most (rule, value) passes :class:`CompiledSchema` remembers before it starts over.
_PASSED_MAX = 50_000


@dataclass
class CompiledSchema:
    """One version's ``openAPIV3Schema`` with its CEL rules and regexes compiled up front.

    Nodes are the raw schema dicts; per-node artefacts are keyed by ``id(node)``,
    which is stable because this object keeps the (deep-copied) schema alive.
    """

    root: Node
    rules: dict[int, list[CelRule]] = field(default_factory=dict)
    patterns: dict[int, re.Pattern[str]] = field(default_factory=dict)
    has_defaults: bool = False
    has_cel: bool = False
    #: (rule, value) pairs already seen to pass, for rules that do not read ``oldSelf``: a CEL rule is a
    #: pure function of ``self``, and cel-python takes tens of milliseconds per evaluation, which made
    #: creating 10,000 alike objects take half an hour (bench/scale.py). Bounded by _PASSED_MAX.
    passed: set[tuple[int, str]] = field(default_factory=set)

    @classmethod
    def compile(cls, raw: Node, where: str = "openAPIV3Schema") -> CompiledSchema:
        """Compile every rule and pattern; raise :class:`SchemaCompileError` listing all failures."""
        schema = cls(root=copy.deepcopy(raw))
        errors: list[FieldError] = []
        for node, path in _walk_schema(schema.root, where):
            if "default" in node:
                schema.has_defaults = True
            if isinstance(node.get("pattern"), str):
                try:
                    schema.patterns[id(node)] = re.compile(node["pattern"])
                except re.error as e:
                    errors.append(
                        invalid(f"{path}.pattern", node["pattern"], f"must be a valid regular expression: {e}")
                    )
            compiled: list[CelRule] = []
            for i, spec in enumerate(node.get("x-kubernetes-validations") or []):
                rule_path = f"{path}.x-kubernetes-validations[{i}]"
                rule_text = spec.get("rule") if isinstance(spec, dict) else None
                if not isinstance(rule_text, str) or not rule_text.strip():
                    errors.append(required(f"{rule_path}.rule"))
                    continue
                try:
                    program, transition = _compile_cel(rule_text, node)
                except ValueError as e:
                    errors.append(invalid(f"{rule_path}.rule", rule_text, str(e)))
                    continue
                message_program = None
                if isinstance(spec.get("messageExpression"), str):
                    try:
                        message_program, _ = _compile_cel(spec["messageExpression"], node)
                    except ValueError as e:
                        errors.append(invalid(f"{rule_path}.messageExpression", spec["messageExpression"], str(e)))
                        continue
                compiled.append(
                    CelRule(
                        rule=rule_text,
                        program=program,
                        message=spec.get("message") or None,
                        message_program=message_program,
                        field_path=spec.get("fieldPath") or None,
                        reason=spec.get("reason") or None,
                        transition=transition,
                    )
                )
            if compiled:
                schema.rules[id(node)] = compiled
                schema.has_cel = True
        if errors:
            raise SchemaCompileError(errors)
        return schema

    # ---- the pipeline --------------------------------------------------------------------------

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
        """Prune, null-prune and default ``obj`` in place; return validation errors (CEL last)."""
        self.prune(obj)
        self.default(obj)
        return self.validate(obj, old)

    def prune(self, obj: dict[str, Any]) -> None:
        """Drop fields the schema does not declare, and nulls of non-nullable fields w/o defaults."""
        _prune(obj, self.root, root=True)
        _prune_nulls(obj, self.root)

    def default(self, obj: Json) -> None:
        """Fill ``default`` values (also for non-nullable nulls), recursing into defaulted values."""
        if self.has_defaults:
            _default(obj, self.root)

    def validate(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
        """OpenAPI + list-type errors, then CEL errors unless a blocking error was found."""
        errors: list[FieldError] = []
        list_errors: list[FieldError] = []
        self._validate(obj, self.root, "", errors, list_errors, root=True)
        errors.extend(list_errors)
        if self.has_cel:
            if any(error.blocking for error in errors):
                errors.append(
                    FieldError(
                        "FieldValueInvalid",
                        "<nil>",
                        "some validation rules were not checked because the object was invalid; "
                        "correct the existing errors to complete validation",
                        None,
                    )
                )
            else:
                self._cel(obj, old, self.root, "", errors)
        return errors

    # ---- OpenAPI validation ----------------------------------------------------------------------

    def _validate(
        self,
        value: Json,
        node: Node,
        path: str,
        errors: list[FieldError],
        list_errors: list[FieldError],
        *,
        root: bool = False,
    ) -> None:
        shown = path or "."  # kube-openapi names the root "."; it never has scalar checks anyway
        if value is None:
            if node.get("nullable"):
                return
            if node.get("type") or node.get("x-kubernetes-int-or-string"):
                wanted = "integer,string" if node.get("x-kubernetes-int-or-string") else node["type"]
                errors.append(
                    FieldError(
                        "FieldValueTypeInvalid",
                        path or "<nil>",
                        f'{shown} in body must be of type {wanted}: "null"',
                        "null",
                    )
                )
            return
        if node.get("x-kubernetes-int-or-string"):
            if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
                actual = json_type(value)
                errors.append(
                    FieldError(
                        "FieldValueTypeInvalid",
                        path or "<nil>",
                        f'{shown} in body must be of type integer,string: "{actual}"',
                        actual,
                    )
                )
                return
        elif node.get("type") and not _matches_type(value, node["type"]):
            actual = json_type(value)
            errors.append(
                FieldError(
                    "FieldValueTypeInvalid",
                    path or "<nil>",
                    f'{shown} in body must be of type {node["type"]}: "{actual}"',
                    actual,
                )
            )
            return

        allowed_values = node.get("enum")
        if isinstance(allowed_values, list) and not any(json_equal(value, allowed) for allowed in allowed_values):
            errors.append(not_supported(path, value, allowed_values))

        if isinstance(value, str):
            self._validate_string(value, node, path, errors)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _validate_number(value, node, path, errors)
        elif isinstance(value, list):
            self._validate_array(value, node, path, errors, list_errors)
        elif isinstance(value, dict):
            self._validate_object(value, node, path, errors, list_errors, root=root)

        for keyword in ("allOf", "anyOf", "oneOf", "not"):
            if keyword in node:
                self._validate_combinator(keyword, value, node, path, errors)

    def _validate_string(self, value: str, node: Node, path: str, errors: list[FieldError]) -> None:
        max_length = node.get("maxLength")
        if isinstance(max_length, int) and len(value) > max_length:
            errors.append(
                FieldError("FieldValueTooLong", path or "<nil>", f"may not be more than {max_length} bytes", value)
            )
        min_length = node.get("minLength")
        if isinstance(min_length, int) and len(value) < min_length:
            errors.append(invalid(path, value, f"{path} in body should be at least {min_length} chars long"))
        pattern = self.patterns.get(id(node))
        if pattern is not None and not pattern.search(value):
            errors.append(invalid(path, value, f"{path} in body should match '{pattern.pattern}'"))
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS and not _FORMATS[fmt](value):
            errors.append(
                FieldError(
                    "FieldValueTypeInvalid",
                    path or "<nil>",
                    f"{path} in body must be of type {fmt}: {json.dumps(value)}",
                    value,
                )
            )

    def _validate_array(
        self,
        value: list[Json],
        node: Node,
        path: str,
        errors: list[FieldError],
        list_errors: list[FieldError],
    ) -> None:
        max_items = node.get("maxItems")
        if isinstance(max_items, int) and len(value) > max_items:
            errors.append(
                FieldError("FieldValueTooMany", path or "<nil>", f"must have at most {max_items} items", len(value))
            )
        min_items = node.get("minItems")
        if isinstance(min_items, int) and len(value) < min_items:
            errors.append(invalid(path, value, f"{path} in body should have at least {min_items} items"))
        items = node.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                self._validate(item, items, index(path, i), errors, list_errors)
        _validate_list_type(value, node, path, list_errors)

    def _validate_object(
        self,
        value: dict[str, Json],
        node: Node,
        path: str,
        errors: list[FieldError],
        list_errors: list[FieldError],
        *,
        root: bool,
    ) -> None:
        for name in node.get("required") or []:
            if name not in value:
                errors.append(required(child(path, name)))
        max_props = node.get("maxProperties")
        if isinstance(max_props, int) and len(value) > max_props:
            errors.append(
                FieldError("FieldValueTooMany", path or "<nil>", f"must have at most {max_props} items", len(value))
            )
        min_props = node.get("minProperties")
        if isinstance(min_props, int) and len(value) < min_props:
            errors.append(invalid(path, value, f"{path} in body should have at least {min_props} properties"))
        props = node.get("properties") or {}
        extra = _additional(node)
        for key, item in value.items():
            if root and key == "metadata":
                continue  # ObjectMeta is validated by its own rules, not by the CRD schema
            sub = props.get(key, extra)
            if isinstance(sub, dict):
                self._validate(item, sub, child(path, key), errors, list_errors)

    def _validate_combinator(self, keyword: str, value: Json, node: Node, path: str, errors: list[FieldError]) -> None:
        def passes(sub: Node) -> bool:
            sub_errors: list[FieldError] = []
            self._validate(value, sub, path, sub_errors, sub_errors)
            return not sub_errors

        shown = path or "."
        if keyword == "allOf":
            for sub in node["allOf"]:
                self._validate(value, sub, path, errors, errors)
        elif keyword == "anyOf" and not any(passes(sub) for sub in node["anyOf"]):
            errors.append(invalid(path, value, f"{shown} in body must validate at least one schema (anyOf)"))
        elif keyword == "oneOf" and sum(passes(sub) for sub in node["oneOf"]) != 1:
            errors.append(invalid(path, value, f"{shown} in body must validate one and only one schema (oneOf)"))
        elif keyword == "not" and passes(node["not"]):
            errors.append(invalid(path, value, f"{shown} in body should not validate the schema (not)"))

    # ---- CEL ---------------------------------------------------------------------------------

    def _cel(self, value: Json, old: Json, node: Node, path: str, errors: list[FieldError]) -> None:
        if value is None:
            return
        if old is not None and value == old:
            # Validation ratcheting (CRDValidationRatcheting, on by default since Kubernetes 1.30): an
            # unchanged value is not validated again, e.g. the spec on every status write.
            return
        for rule in self.rules.get(id(node), []):
            if rule.transition and old is None:
                continue
            self._run_rule(rule, value, old, node, path, errors)
        if isinstance(value, dict):
            props = node.get("properties") or {}
            extra = _additional(node)
            old_map = old if isinstance(old, dict) else {}
            for key, item in value.items():
                sub = props.get(key, extra)
                if isinstance(sub, dict) and (key != "metadata" or path):
                    self._cel(item, old_map.get(key), sub, child(path, key), errors)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            items = node["items"]
            olds = _correlate_list(value, old, node)
            for i, item in enumerate(value):
                self._cel(item, olds[i], items, index(path, i), errors)

    def _run_rule(self, rule: CelRule, value: Json, old: Json, node: Node, path: str, errors: list[FieldError]) -> None:
        seen: tuple[int, str] | None = None
        if not rule.transition:
            seen = (id(rule), json.dumps(value, sort_keys=True, default=str))
            if seen in self.passed:
                return
        activation: dict[str, Any] = {"self": to_cel(value, node)}
        if old is not None:
            activation["oldSelf"] = to_cel(old, node)
        # The value a failed rule reports: a scalar's own value (``"two"``), nothing for an object or a
        # list (kube-apiserver 1.37 omits it: ``spec: Invalid value: <message>``).
        shown: Json = value if not isinstance(value, (dict, list)) else _NO_VALUE
        try:
            result = rule.program.evaluate(activation)
        except Exception as e:  # cel-python raises CELEvalError and plain TypeErrors alike
            text = str(e.args[0]) if e.args else repr(e)
            if text.startswith("no such overload") or "no matching overload" in text:
                detail = (
                    f"'{text}': call arguments did not match a supported operator, function or macro "
                    f"signature for rule: {rule.rule.strip()}"
                )
            else:
                detail = f"{text} evaluating rule: {rule.rule.strip()}"
            errors.append(FieldError("FieldValueInvalid", path or "<nil>", detail, shown))
            return
        if isinstance(result, celpy.evaluation.CELEvalError):
            errors.append(FieldError("FieldValueInvalid", path or "<nil>",
                                     f"{result.args[0]} evaluating rule: {rule.rule.strip()}", shown))
            return
        if result is True or (isinstance(result, celtypes.BoolType) and bool(result)):
            if seen is not None:
                if len(self.passed) >= _PASSED_MAX:
                    self.passed.clear()
                self.passed.add(seen)
            return
        message = rule.default_message()
        if rule.message_program is not None:
            try:
                produced = rule.message_program.evaluate(activation)
            except Exception:
                produced = None
            if isinstance(produced, str) and produced.strip() and "\n" not in produced:
                message = str(produced)
        where = _append_field_path(path, rule.field_path) if rule.field_path else path
        if rule.reason == "FieldValueForbidden":
            errors.append(forbidden(where, message))
        elif rule.reason == "FieldValueRequired":
            errors.append(required(where, message))
        elif rule.reason == "FieldValueDuplicate":
            errors.append(FieldError("FieldValueDuplicate", where or "<nil>", "", shown))
        else:
            errors.append(FieldError("FieldValueInvalid", where or "<nil>", message, shown))


def _validate_number(value: float | int, node: Node, path: str, errors: list[FieldError]) -> None:
    maximum = node.get("maximum")
    if isinstance(maximum, int | float):
        if node.get("exclusiveMaximum") is True and value >= maximum:
            errors.append(invalid(path, value, f"{path} in body should be less than {go_number(maximum)}"))
        elif value > maximum:
            errors.append(invalid(path, value, f"{path} in body should be less than or equal to {go_number(maximum)}"))
    minimum = node.get("minimum")
    if isinstance(minimum, int | float):
        if node.get("exclusiveMinimum") is True and value <= minimum:
            errors.append(invalid(path, value, f"{path} in body should be greater than {go_number(minimum)}"))
        elif value < minimum:
            errors.append(
                invalid(path, value, f"{path} in body should be greater than or equal to {go_number(minimum)}")
            )
    multiple = node.get("multipleOf")
    if isinstance(multiple, int | float) and multiple and (value / multiple) != int(value / multiple):
        errors.append(invalid(path, value, f"{path} in body should be a multiple of {go_number(multiple)}"))


def _map_key(item: Json, keys: list[str]) -> tuple[str, ...] | None:
    if not isinstance(item, dict):
        return None
    return tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)


def _validate_list_type(value: list[Json], node: Node, path: str, errors: list[FieldError]) -> None:
    """``x-kubernetes-list-type`` invariants (structurallisttype.ValidateListSetsAndMaps)."""
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: set[str] = set()
        for i, item in enumerate(value):
            key = json.dumps(item, sort_keys=True)
            if key in seen:
                errors.append(duplicate(index(path, i), item))
            seen.add(key)
    elif list_type == "map":
        keys = [k for k in node.get("x-kubernetes-list-map-keys") or [] if isinstance(k, str)]
        seen_keys: set[tuple[str, ...]] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            missing = [k for k in keys if k not in item]
            for k in missing:
                errors.append(required(child(index(path, i), k)))
            if missing:
                continue
            key_tuple = _map_key(item, keys)
            assert key_tuple is not None
            if key_tuple in seen_keys:
                errors.append(duplicate(index(path, i), {k: item[k] for k in keys}))
            seen_keys.add(key_tuple)


def _correlate_list(value: list[Json], old: Json, node: Node) -> list[Json]:
    """Old items for transition rules: only map-lists (by key) and sets (by value) correlate."""
    olds: list[Json] = [None] * len(value)
    if not isinstance(old, list):
        return olds
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = [k for k in node.get("x-kubernetes-list-map-keys") or [] if isinstance(k, str)]
        by_key = {_map_key(item, keys): item for item in old}
        for i, item in enumerate(value):
            olds[i] = by_key.get(_map_key(item, keys))
    elif list_type == "set":
        known = {json.dumps(item, sort_keys=True) for item in old}
        for i, item in enumerate(value):
            olds[i] = item if json.dumps(item, sort_keys=True) in known else None
    return olds


# --------------------------------------------------------------------------------------------------
# Pruning and defaulting.
# --------------------------------------------------------------------------------------------------


def _prune(value: Json, node: Node, *, root: bool = False) -> None:
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = _additional(node)
        keep_all = _preserves_unknown(node) or node.get("additionalProperties") is True
        embedded = bool(node.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if (root or embedded) and key in _ROOT_KEPT:
                continue
            sub = props.get(key, extra)
            if isinstance(sub, dict):
                _prune(value[key], sub)
            elif not keep_all:
                del value[key]
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _prune(item, node["items"])


def _prune_nulls(value: Json, node: Node) -> None:
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = _additional(node)
        for key in list(value):
            prop = props.get(key)
            if isinstance(prop, dict):
                if value[key] is None and "default" not in prop and not prop.get("nullable"):
                    del value[key]
                else:
                    _prune_nulls(value[key], prop)
            elif extra is not None:
                _prune_nulls(value[key], extra)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _prune_nulls(item, node["items"])


def _default(value: Json, node: Node) -> None:
    if isinstance(value, dict):
        props = node.get("properties") or {}
        for key, prop in props.items():
            missing = key not in value or (value[key] is None and not prop.get("nullable"))
            if isinstance(prop, dict) and "default" in prop and missing:
                value[key] = copy.deepcopy(prop["default"])
        extra = _additional(node)
        for key, item in value.items():
            sub = props.get(key, extra)
            if isinstance(sub, dict):
                _default(item, sub)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _default(item, node["items"])
