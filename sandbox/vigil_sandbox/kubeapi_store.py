"""The object store behind the emulated Kubernetes API: what etcd + the registry do.

Everything an operator observes about a cluster comes from here: resource
versions, uids, generations, finalizer-driven deletion, garbage collection by
owner references, watch-event history with its "410 Gone" horizon, and the
admission of writes (status-subresource separation, schema pruning, defaulting
and validation). The HTTP layer (:mod:`vigil_sandbox.kubeapi`) only translates
requests into calls of :class:`Store` and its answers back into JSON.

The store is synchronous and guarded by one re-entrant lock, so that a test
thread can seed or inspect it while the server's event loop serves HTTP in
another thread. Watch streams receive events through :class:`Watcher` queues,
which hand them over to the watcher's own event loop thread-safely.

Memory is bounded on purpose: one version per object (no history), a bounded
event log per resource, bounded per-watcher queues, and a cap on Event objects
(the real cluster expires them after an hour) — so a long sandbox demo does not
grow without limit.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import datetime
import json
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from vigil_sandbox import kubeapi_schema as schema
from vigil_sandbox.kubeapi_schema import CompiledSchema, FieldError, SchemaCompileError

Obj = dict[str, Any]
StorageKey = tuple[str, str]  # (group, plural): all served versions of a resource share storage
ObjectKey = tuple[str, str]  # (namespace or "", name)

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# What ObjectMeta can hold; anything else in metadata is dropped, as the real decoder does.
_META_FIELDS = {
    "name", "generateName", "namespace", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
    "labels", "annotations", "ownerReferences", "finalizers",
}
# Set by the server only; copied from the stored object on every update.
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
# k8s.io/apimachinery/pkg/util/rand: consonants and digits, so generated names spell no words.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(" + _QUALIFIED_NAME + r")?"
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    f"validation is '{_DNS1123_SUBDOMAIN}')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    f"validation is '{_DNS1123_LABEL}')"
)
_QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{_QUALIFIED_NAME}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    f"'12345', regex used for validation is '{_LABEL_VALUE}')"
)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering (GA > beta > alpha, then by number), for preferred versions."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (-1, 0, 0)
    stage = {"alpha": 0, "beta": 1, None: 2}[match.group(2)]
    return (stage, int(match.group(1)), int(match.group(3) or 0))


# --------------------------------------------------------------------------------------------------
# Resources and errors.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceInfo:
    """One served group/version/resource, with what discovery and admission need to know."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    list_kind: str = ""
    schema: CompiledSchema | None = None
    custom: bool = False
    has_generation: bool = False
    storage: bool = True
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def storage_key(self) -> StorageKey:
        return (self.group, self.plural)

    @property
    def qualified_resource(self) -> str:
        """``anomalydetectors.vigil.dev`` / ``configmaps``: as in NotFound & Conflict messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``AnomalyDetector.vigil.dev`` / ``ConfigMap``: as in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


class ApiError(Exception):
    """An error answered as a ``Status`` object (and raised by the synchronous accessors)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body

    @classmethod
    def not_found(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(404, "NotFound", f'{info.qualified_resource} "{name}" not found',
                   _details(info, name, kind=info.plural))

    @classmethod
    def no_route(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def already_exists(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls(409, "AlreadyExists", f'{info.qualified_resource} "{name}" already exists',
                   _details(info, name, kind=info.plural))

    @classmethod
    def conflict(cls, info: ResourceInfo, name: str, why: str) -> ApiError:
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {info.qualified_resource} "{name}": {why}',
                   _details(info, name, kind=info.plural))

    @classmethod
    def modified(cls, info: ResourceInfo, name: str) -> ApiError:
        return cls.conflict(info, name, "the object has been modified; please apply your changes "
                                        "to the latest version and try again")

    @classmethod
    def invalid(cls, info: ResourceInfo, name: str, errors: list[FieldError]) -> ApiError:
        details = _details(info, name, kind=info.kind)
        details["causes"] = [error.as_cause() for error in errors]
        return cls(422, "Invalid", f'{info.qualified_kind} "{name}" is invalid: {schema.join_message(errors)}',
                   details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def patch_failed(cls) -> ApiError:
        # NewGenericServerResponse(422, ...): what a failed JSON-patch `test` op gets from the server.
        return cls(422, "Invalid", "the server rejected our request due to an error in our request", {})

    @classmethod
    def unsupported_media(cls, content_type: str | None, accepted: Iterable[str]) -> ApiError:
        return cls(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media types include: "
                   f"{', '.join(accepted)}", {})

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def _details(info: ResourceInfo, name: str, *, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if info.group:
        details["group"] = info.group
    details["kind"] = kind
    return details


# --------------------------------------------------------------------------------------------------
# Selectors.
# --------------------------------------------------------------------------------------------------

_LABEL_REQ = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s!=<>(),]+)"
    r"|(?P<skey>[^\s!=<>(),]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)"
    r"|(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[^\s!=<>(),]*)"
    r"|(?P<ekey>[^\s!=<>(),]+))\s*$"
)

LabelRequirement = tuple[str, str, tuple[str, ...]]  # (key, op, values)


def parse_label_selector(text: str | None) -> list[LabelRequirement]:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3`` → requirements; 400 on syntax errors."""
    if not text or not text.strip():
        return []
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    result: list[LabelRequirement] = []
    for part in parts:
        match = _LABEL_REQ.match(part)
        if not match:
            raise ApiError.bad_request(f"unable to parse requirement: found '{part.strip()}', expected: "
                                       f"'=', '!=', '==', 'in', notin'")
        if match.group("nkey"):
            result.append((match.group("nkey"), "!", ()))
        elif match.group("skey"):
            values = tuple(v.strip() for v in match.group("values").split(",") if v.strip())
            result.append((match.group("skey"), match.group("setop"), values))
        elif match.group("key"):
            op = "=" if match.group("op") == "==" else match.group("op")
            result.append((match.group("key"), op, (match.group("value"),)))
        else:
            result.append((match.group("ekey"), "exists", ()))
    return result


def labels_match(requirements: list[LabelRequirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and value == values[0]:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("<", ">"):
            try:
                number, bound = int(value or ""), int(values[0])
            except ValueError:
                return False
            if not (number < bound if op == "<" else number > bound):
                return False
    return True


# Which field selectors each resource supports, beyond metadata.name & metadata.namespace.
_EXTRA_FIELDS: dict[StorageKey, tuple[str, ...]] = {
    ("", "events"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    ("events.k8s.io", "events"): ("regarding.kind", "regarding.namespace", "regarding.name",
                                  "regarding.uid", "reason", "reportingController", "type"),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
}

FieldRequirement = tuple[str, str, str]


def parse_field_selector(text: str | None, info: ResourceInfo) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    allowed = ("metadata.name", "metadata.namespace", *_EXTRA_FIELDS.get(info.storage_key, ()))
    result: list[FieldRequirement] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not match:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        key, op, value = match.groups()
        if key not in allowed:
            raise ApiError.bad_request(f'field label not supported: {key}')
        result.append((key, "!=" if op == "!=" else "=", value))
    return result


def _field_value(obj: Obj, path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if path == "source" and isinstance(current, dict):  # events: "source" means source.component
        current = current.get("component")
    return "" if current is None else str(current)


def fields_match(requirements: list[FieldRequirement], obj: Obj) -> bool:
    for key, op, value in requirements:
        actual = _field_value(obj, key)
        if (actual == value) != (op == "="):
            return False
    return True


@dataclass(frozen=True)
class Selector:
    """Namespace + label + field selection, shared by lists and watches."""

    namespace: str | None = None
    labels: tuple[LabelRequirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    def __call__(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(list(self.labels), meta.get("labels")) and fields_match(list(self.fields), obj)


# --------------------------------------------------------------------------------------------------
# Watch plumbing.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogEntry:
    rv: int
    type: str
    obj: Obj
    old: Obj | None


class EventLog:
    """The bounded history a watch can resume from; older resource versions get 410 Expired."""

    def __init__(self, size: int) -> None:
        self.entries: deque[LogEntry] = deque()
        self.size = size
        self.floor = 0  # the newest resource version that is no longer replayable

    def append(self, entry: LogEntry) -> None:
        if len(self.entries) >= self.size:
            self.floor = self.entries.popleft().rv
        self.entries.append(entry)

    def since(self, rv: int) -> list[LogEntry] | None:
        if rv < self.floor:
            return None
        return [entry for entry in self.entries if entry.rv > rv]


def translate(event_type: str, obj: Obj, old: Obj | None, selector: Selector) -> str | None:
    """The event a selecting watcher sees: objects entering/leaving the selection are ADDED/DELETED."""
    now = selector(obj)
    if event_type != "MODIFIED":
        return event_type if now else None
    before = old is not None and selector(old)
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    if before:
        return "DELETED"
    return None


class Watcher:
    """One watch stream's queue, filled under the store lock, drained in the stream's event loop."""

    def __init__(self, info: ResourceInfo, selector: Selector, loop: asyncio.AbstractEventLoop,
                 max_pending: int) -> None:
        self.info = info
        self.selector = selector
        self.loop = loop
        self.max_pending = max_pending
        self.pending: deque[tuple[str, Obj]] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.overflowed = False
        self.initial_events = 0  # how many of the first pending events are the initial state
        self.initial_rv = 0  # the resource version of that initial state

    def offer(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        if self.closed:
            return
        seen = translate(event_type, obj, old, self.selector)
        if seen is None:
            return
        if len(self.pending) >= self.max_pending:
            # A consumer this slow would be dropped by the real server too; it re-watches from its RV.
            self.overflowed = True
            self.close()
            return
        self.pending.append((seen, obj))
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.wakeup.set)
        except RuntimeError:  # the loop is closed: nobody listens anymore
            self.closed = True


# --------------------------------------------------------------------------------------------------
# Built-in resources.
# --------------------------------------------------------------------------------------------------

BUILTINS: tuple[ResourceInfo, ...] = (
    ResourceInfo("", "v1", "namespaces", "Namespace", "namespace", False, ("ns",),
                 subresources=("status",), list_kind="NamespaceList"),
    ResourceInfo("", "v1", "events", "Event", "event", True, ("ev",), list_kind="EventList"),
    ResourceInfo("", "v1", "configmaps", "ConfigMap", "configmap", True, ("cm",), list_kind="ConfigMapList"),
    ResourceInfo("", "v1", "secrets", "Secret", "secret", True, list_kind="SecretList"),
    ResourceInfo("events.k8s.io", "v1", "events", "Event", "event", True, ("ev",), list_kind="EventList"),
    ResourceInfo("coordination.k8s.io", "v1", "leases", "Lease", "lease", True, list_kind="LeaseList"),
    ResourceInfo("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                 "customresourcedefinition", False, ("crd", "crds"), ("api-extensions",),
                 subresources=("status",), list_kind="CustomResourceDefinitionList", has_generation=True),
)
CRD_KEY: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY: StorageKey = ("", "namespaces")
EVENT_KEYS: tuple[StorageKey, ...] = (("", "events"), ("events.k8s.io", "events"))
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def crd_resource_infos(crd: Obj) -> list[ResourceInfo]:
    """Validate a CustomResourceDefinition and compile one :class:`ResourceInfo` per served version.

    Raises :class:`ApiError` 422 with field paths inside the CRD, as the real server refuses
    a CRD whose names, versions or schemas (including CEL rules) are unusable.
    """
    errors: list[FieldError] = []
    spec: Obj = crd["spec"] if isinstance(crd.get("spec"), dict) else {}
    name = (crd.get("metadata") or {}).get("name") or ""
    group = spec.get("group") or ""
    names: Obj = spec["names"] if isinstance(spec.get("names"), dict) else {}
    plural = names.get("plural") or ""
    kind = names.get("kind") or ""
    scope = spec.get("scope")
    if not group:
        errors.append(schema.required("spec.group"))
    elif "." not in group:
        errors.append(schema.invalid("spec.group", group, "should be a domain with at least one dot"))
    if not plural:
        errors.append(schema.required("spec.names.plural"))
    elif not re.fullmatch(_DNS1123_LABEL, plural):
        errors.append(schema.invalid("spec.names.plural", plural, _LABEL_MSG))
    if not kind:
        errors.append(schema.required("spec.names.kind"))
    if scope not in ("Namespaced", "Cluster"):
        errors.append(schema.not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))
    if plural and group and name != f"{plural}.{group}":
        errors.append(schema.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    versions: list[Any] = spec["versions"] if isinstance(spec.get("versions"), list) else []
    if not versions:
        errors.append(schema.required("spec.versions", "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        errors.append(schema.invalid("spec.versions", versions,
                                     "must have exactly one version marked as storage version"))
    infos: list[ResourceInfo] = []
    for i, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get("name"):
            errors.append(schema.required(f"spec.versions[{i}].name"))
            continue
        raw_schema = ((version.get("schema") or {}).get("openAPIV3Schema"))
        if not isinstance(raw_schema, dict):
            errors.append(schema.required(f"spec.versions[{i}].schema.openAPIV3Schema",
                                          "schemas are required"))
            continue
        try:
            compiled = CompiledSchema.compile(raw_schema, f"spec.versions[{i}].schema.openAPIV3Schema")
        except SchemaCompileError as e:
            errors.extend(e.errors)
            continue
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        infos.append(ResourceInfo(
            group=group, version=version["name"], plural=plural, kind=kind,
            singular=names.get("singular") or kind.lower(), namespaced=scope == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            subresources=("status",) if "status" in subresources else (),  # /scale is not emulated
            list_kind=names.get("listKind") or f"{kind}List", schema=compiled, custom=True,
            has_generation=True, storage=bool(version.get("storage")),
        ))
    if errors:
        crd_info = next(info for info in BUILTINS if info.storage_key == CRD_KEY)
        raise ApiError.invalid(crd_info, name, errors)
    return infos


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------------------------------
# The store.
# --------------------------------------------------------------------------------------------------

@dataclass
class _Pending:
    """Side effects of a write that run only once it is committed (e.g. serving a new CRD)."""

    after: list[Callable[[], None]] = field(default_factory=list)


class Store:
    """In-memory etcd + registry: every state change happens here, under :attr:`lock`."""

    def __init__(self, *, event_log_size: int = 10_000, watch_queue_size: int = 10_000,
                 max_events: int = 10_000) -> None:
        self.lock = threading.RLock()
        self._rv = 0
        self._event_log_size = event_log_size
        self._watch_queue_size = watch_queue_size
        self._max_events = max_events
        self._resources: dict[tuple[str, str, str], ResourceInfo] = {}
        self._objects: dict[StorageKey, dict[ObjectKey, Obj]] = {}
        self._logs: dict[StorageKey, EventLog] = {}
        self._watchers: dict[StorageKey, set[Watcher]] = {}
        self._uids: dict[str, tuple[StorageKey, ObjectKey]] = {}
        self._dependents: dict[str, set[tuple[StorageKey, ObjectKey]]] = {}
        self._crd_owner: dict[str, list[tuple[str, str, str]]] = {}  # CRD name -> the resources it serves
        for info in BUILTINS:
            self.register(info)
        for namespace in DEFAULT_NAMESPACES:
            self._ensure_namespace(namespace)

    # ---- resources ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def register(self, info: ResourceInfo) -> None:
        """Serve a resource (built-in kinds; CRDs go through :meth:`create` of their CRD object)."""
        with self.lock:
            self._resources[info.key] = info
            self._objects.setdefault(info.storage_key, {})
            self._logs.setdefault(info.storage_key, EventLog(self._event_log_size))
            self._watchers.setdefault(info.storage_key, set())

    def resources(self) -> list[ResourceInfo]:
        with self.lock:
            return list(self._resources.values())

    def resolve(self, group: str, version: str, plural: str) -> ResourceInfo:
        with self.lock:
            info = self._resources.get((group, version, plural))
        if info is None:
            raise ApiError.no_route()
        return info

    def resolve_kind(self, api_version: str, kind: str) -> ResourceInfo:
        group, _, version = api_version.rpartition("/")
        with self.lock:
            for info in self._resources.values():
                if info.group == group and info.version == version and info.kind == kind:
                    return info
        raise ApiError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"', {})

    def _storage_info(self, key: StorageKey) -> ResourceInfo:
        infos = [info for info in self._resources.values() if info.storage_key == key]
        return next((info for info in infos if info.storage), infos[0])

    # ---- reading ------------------------------------------------------------------------------

    def view(self, info: ResourceInfo, obj: Obj) -> Obj:
        """The stored object as served at ``info``'s version, with schema defaults applied on read."""
        if info.schema is not None and info.schema.has_defaults:
            obj = copy.deepcopy(obj)
            info.schema.default(obj)
        elif obj.get("apiVersion") != info.api_version:
            obj = dict(obj)
        if obj.get("apiVersion") != info.api_version:
            obj["apiVersion"] = info.api_version
        return obj

    def get(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        with self.lock:
            return self.view(info, self._get_stored(info, namespace, name))

    def _get_stored(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        obj = self._objects[info.storage_key].get((namespace or "", name))
        if obj is None:
            raise ApiError.not_found(info, name)
        return obj

    def select(self, info: ResourceInfo, selector: Selector, *, after: tuple[str, str] | None = None,
               limit: int = 0) -> tuple[list[Obj], int, int]:
        """(objects matching ``selector`` in (namespace, name) order, the current resourceVersion, how many
        more match beyond ``limit``). ``after`` starts past that key, as a continue token does.

        Only the page served is copied: copying every object for every page made a paged LIST of
        10,000 detectors cost the emulator O(N²), which the scale bench's shared cores paid for.
        """
        with self.lock:
            keys = sorted(self._objects[info.storage_key])
            if after is not None:
                keys = keys[bisect.bisect_right(keys, after):]
            objects = self._objects[info.storage_key]
            items: list[Obj] = []
            remaining = 0
            for key in keys:
                obj = objects[key]
                if not selector(obj):
                    continue
                if limit > 0 and len(items) >= limit:
                    remaining += 1
                else:
                    items.append(self.view(info, obj))
            return items, self._rv, remaining

    def find(self, predicate: Callable[[Obj], bool], keys: Iterable[StorageKey]) -> list[Obj]:
        with self.lock:
            return [copy.deepcopy(obj) for key in keys for obj in self._objects.get(key, {}).values()
                    if predicate(obj)]

    # ---- watching -----------------------------------------------------------------------------

    def open_watch(self, info: ResourceInfo, selector: Selector, since: int | None,
                   loop: asyncio.AbstractEventLoop) -> Watcher:
        """Subscribe atomically: the initial or replayed events go first into the watcher's queue."""
        with self.lock:
            watcher = Watcher(info, selector, loop, self._watch_queue_size + self._event_log_size)
            if since is None:
                for _, obj in sorted(self._objects[info.storage_key].items()):
                    watcher.offer("ADDED", obj, None)
                watcher.initial_events, watcher.initial_rv = len(watcher.pending), self._rv
            else:
                entries = self._logs[info.storage_key].since(since)
                if entries is None:
                    floor = self._logs[info.storage_key].floor
                    raise ApiError(410, "Expired", f"too old resource version: {since} ({floor + 1})")
                for entry in entries:
                    watcher.offer(entry.type, entry.obj, entry.old)
            watcher.max_pending = self._watch_queue_size
            self._watchers[info.storage_key].add(watcher)
            return watcher

    def close_watch(self, watcher: Watcher) -> None:
        with self.lock:
            self._watchers.get(watcher.info.storage_key, set()).discard(watcher)
            watcher.close()

    def close_all_watches(self) -> None:
        with self.lock:
            for watchers in self._watchers.values():
                for watcher in watchers:
                    watcher.close()
                watchers.clear()

    def bookmark_rv(self, watcher: Watcher) -> int | None:
        """A safe bookmark: the current RV if everything up to it was delivered to this watcher."""
        with self.lock:
            return None if watcher.pending else self._rv

    # ---- committing ---------------------------------------------------------------------------

    def _publish(self, key: StorageKey, event_type: str, obj: Obj, old: Obj | None) -> None:
        self._logs[key].append(LogEntry(self._rv, event_type, obj, old))
        for watcher in list(self._watchers.get(key, ())):
            watcher.offer(event_type, obj, old)
            if watcher.closed:
                self._watchers[key].discard(watcher)

    def _index(self, key: StorageKey, okey: ObjectKey, obj: Obj | None, old: Obj | None) -> None:
        if old is not None:
            for ref in (old.get("metadata") or {}).get("ownerReferences") or []:
                self._dependents.get(str(ref.get("uid")), set()).discard((key, okey))
            self._uids.pop(str(old["metadata"].get("uid")), None)
        if obj is not None:
            self._uids[str(obj["metadata"]["uid"])] = (key, okey)
            for ref in obj["metadata"].get("ownerReferences") or []:
                self._dependents.setdefault(str(ref.get("uid")), set()).add((key, okey))

    def _put(self, key: StorageKey, obj: Obj, event_type: str, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        okey = (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        self._objects[key][okey] = obj
        self._index(key, okey, obj, old)
        self._publish(key, event_type, obj, old)
        return obj

    def _remove(self, key: StorageKey, obj: Obj) -> Obj:
        """Really delete: DELETED event at a new RV, then the cascades that follow a deletion."""
        meta = obj["metadata"]
        okey = (meta.get("namespace") or "", meta["name"])
        stored = self._objects[key].pop(okey)
        self._index(key, okey, None, stored)
        self._rv += 1
        final = copy.deepcopy(obj) if obj is stored else obj
        final["metadata"]["resourceVersion"] = str(self._rv)
        self._publish(key, "DELETED", final, None)
        self._collect_garbage(str(meta["uid"]))
        if key == CRD_KEY:
            self._uninstall_crd(stored)
        if meta.get("namespace"):
            self._maybe_finish_namespace(meta["namespace"])
        return final

    # ---- namespaces -----------------------------------------------------------------------------

    def _ensure_namespace(self, name: str) -> None:
        existing = self._objects[NAMESPACE_KEY].get(("", name))
        if existing is None:
            self._put(NAMESPACE_KEY, {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339(),
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
            }, "ADDED", None)
        elif (existing.get("metadata") or {}).get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {name} "
                                             f"because it is being terminated",
                           {"name": name, "kind": "namespaces"})

    def _namespace_is_empty(self, namespace: str) -> bool:
        return not any(okey[0] == namespace for objects in self._objects.values() for okey in objects)

    def _maybe_finish_namespace(self, namespace: str) -> None:
        ns = self._objects[NAMESPACE_KEY].get(("", namespace))
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if self._namespace_is_empty(namespace):
            self._remove(NAMESPACE_KEY, ns)

    def _terminate_namespace(self, ns: Obj) -> Obj:
        name = ns["metadata"]["name"]
        new = copy.deepcopy(ns)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new.setdefault("status", {})["phase"] = "Terminating"
        stored = self._put(NAMESPACE_KEY, new, "MODIFIED", ns)
        for key, objects in list(self._objects.items()):
            for okey, obj in list(objects.items()):
                if okey[0] == name and okey in self._objects[key]:
                    self._delete_stored(key, obj, "Background")
        self._maybe_finish_namespace(name)
        return stored

    # ---- CRDs ---------------------------------------------------------------------------------

    def _install_crd(self, crd: Obj, infos: list[ResourceInfo]) -> None:
        name = crd["metadata"]["name"]
        for info in self._crd_infos(name):
            if info.key not in {new.key for new in infos}:
                self._unserve(info)
        for info in infos:
            self.register(info)
        self._crd_owner[name] = [info.key for info in infos]

    def _crd_infos(self, crd_name: str) -> list[ResourceInfo]:
        return [self._resources[key] for key in self._crd_owner.get(crd_name, []) if key in self._resources]

    def _unserve(self, info: ResourceInfo) -> None:
        self._resources.pop(info.key, None)
        for watcher in list(self._watchers.get(info.storage_key, ())):
            if watcher.info.key == info.key:
                watcher.close()
                self._watchers[info.storage_key].discard(watcher)

    def _uninstall_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        infos = self._crd_infos(name)
        self._crd_owner.pop(name, None)
        if not infos:
            return
        key = infos[0].storage_key
        for obj in list(self._objects.get(key, {}).values()):
            self._remove(key, obj)
        for info in infos:
            self._unserve(info)
        self._objects.pop(key, None)
        self._logs.pop(key, None)
        for watcher in self._watchers.pop(key, set()):
            watcher.close()

    # ---- garbage collection -------------------------------------------------------------------

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion, done synchronously right after the owner is gone."""
        for key, okey in sorted(self._dependents.pop(owner_uid, set())):
            obj = self._objects.get(key, {}).get(okey)
            refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
            if obj is None or not any(str(ref.get("uid")) == owner_uid for ref in refs):
                continue
            alive = [ref for ref in refs if str(ref.get("uid")) in self._uids]
            if alive:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = alive
                self._put(key, new, "MODIFIED", obj)
            else:
                self._delete_stored(key, obj, "Background")

    def _orphan(self, owner_uid: str) -> None:
        for key, okey in sorted(self._dependents.pop(owner_uid, set())):
            obj = self._objects.get(key, {}).get(okey)
            refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
            if obj is None or not any(str(ref.get("uid")) == owner_uid for ref in refs):
                continue
            new = copy.deepcopy(obj)
            refs = [ref for ref in new["metadata"].get("ownerReferences") or [] if str(ref.get("uid")) != owner_uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self._put(key, new, "MODIFIED", obj)

    # ---- admission ----------------------------------------------------------------------------

    def _decode(self, info: ResourceInfo, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError.bad_request(f"the body of the request must be a JSON object of kind {info.kind}")
        obj = copy.deepcopy(body)
        if info.custom and not obj.get("kind"):
            raise ApiError.bad_request(f"Object 'Kind' is missing in '{json.dumps(body, separators=(',', ':'))}'")
        if obj.get("kind") not in (None, "", info.kind):
            raise ApiError.bad_request(f"the kind in the data ({obj['kind']}) does not match the expected "
                                       f"kind ({info.kind})")
        if obj.get("apiVersion") not in (None, "", info.api_version):
            raise ApiError.bad_request(f"the API version in the data ({obj['apiVersion']}) does not match "
                                       f"the expected API version ({info.api_version})")
        obj["apiVersion"] = self._storage_info(info.storage_key).api_version
        obj["kind"] = info.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        for name in list(meta):
            if name not in _META_FIELDS:
                del meta[name]
        for name in ("labels", "annotations"):
            value = meta.get(name)
            if value is None:
                meta.pop(name, None)
            elif not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ApiError.bad_request(f"metadata.{name} must be a map of strings to strings")
        if meta.get("finalizers") is not None and (
                not isinstance(meta["finalizers"], list) or not all(isinstance(f, str) for f in meta["finalizers"])):
            raise ApiError.bad_request("metadata.finalizers must be a list of strings")
        if meta.get("ownerReferences") is not None and not isinstance(meta["ownerReferences"], list):
            raise ApiError.bad_request("metadata.ownerReferences must be a list")
        for name in ("labels", "annotations", "finalizers", "ownerReferences"):
            if not meta.get(name):  # empty collections are omitted (omitempty), as in the real ObjectMeta
                meta.pop(name, None)
        return obj

    def _metadata_errors(self, info: ResourceInfo, obj: Obj) -> list[FieldError]:
        meta = obj["metadata"]
        errors: list[FieldError] = []
        name = meta.get("name") or ""
        if not name:
            errors.append(schema.required("metadata.name", "name or generateName is required"))
        elif info.storage_key == NAMESPACE_KEY:
            errors.extend(_dns_errors("metadata.name", name, label=True))
        else:
            errors.extend(_dns_errors("metadata.name", name, label=False))
        if info.namespaced and meta.get("namespace"):
            errors.extend(_dns_errors("metadata.namespace", meta["namespace"], label=True))
        for key, value in (meta.get("labels") or {}).items():
            errors.extend(_qualified_name_errors("metadata.labels", key))
            if len(value) > 63:
                errors.append(schema.invalid("metadata.labels", value, "must be no more than 63 characters"))
            if not re.fullmatch(_LABEL_VALUE, value):
                errors.append(schema.invalid("metadata.labels", value, _LABEL_VALUE_MSG))
        for key in meta.get("annotations") or {}:
            errors.extend(_qualified_name_errors("metadata.annotations", key.lower()))
        for i, finalizer in enumerate(meta.get("finalizers") or []):
            errors.extend(_qualified_name_errors(f"metadata.finalizers[{i}]", finalizer))
        controllers = 0
        for ref in meta.get("ownerReferences") or []:
            if not isinstance(ref, dict):
                errors.append(schema.invalid("metadata.ownerReferences", ref, "must be an object"))
                continue
            for part, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
                if not ref.get(part):
                    errors.append(schema.invalid(f"metadata.ownerReferences.{part}", ref.get(part) or "",
                                                 f"{what} must not be empty"))
            controllers += bool(ref.get("controller"))
        if controllers > 1:
            errors.append(schema.invalid("metadata.ownerReferences", meta["ownerReferences"],
                                         "Only one reference can have Controller set to true"))
        return errors

    def _admit(self, info: ResourceInfo, obj: Obj, old: Obj | None, pending: _Pending) -> None:
        """Kind-specific preparation + metadata + schema validation; 422 on any error."""
        key = info.storage_key
        if key == ("", "secrets"):
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {}) or {}
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        elif key == NAMESPACE_KEY and old is None:
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")
        errors = self._metadata_errors(info, obj)
        if info.schema is not None:
            errors.extend(info.schema.admit(obj, old))
        if errors:
            raise ApiError.invalid(info, obj["metadata"].get("name") or "", errors)
        if key == CRD_KEY:
            infos = crd_resource_infos(obj)
            self._default_crd(obj, infos)
            pending.after.append(lambda: self._install_crd(obj, infos))

    @staticmethod
    def _default_crd(crd: Obj, infos: list[ResourceInfo]) -> None:
        names = crd["spec"]["names"]
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
        crd["spec"].setdefault("conversion", {"strategy": "None"})
        now = now_rfc3339()
        previous = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}
        crd["status"] = {
            "acceptedNames": copy.deepcopy(names),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
                 "lastTransitionTime": previous.get("NamesAccepted", {}).get("lastTransitionTime", now)},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted",
                 "lastTransitionTime": previous.get("Established", {}).get("lastTransitionTime", now)},
            ],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        }

    # ---- create -------------------------------------------------------------------------------

    def create(self, info: ResourceInfo, namespace: str | None, body: Any, *, dry_run: bool = False) -> Obj:
        """POST: 201-worthy stored object, or ApiError (400/403/409/422)."""
        with self.lock:
            obj = self._decode(info, body)
            meta = obj["metadata"]
            if info.namespaced:
                namespace = namespace or meta.get("namespace") or "default"
                if meta.get("namespace") not in (None, "", namespace):
                    raise ApiError.bad_request("the namespace of the provided object does not match the "
                                               "namespace sent on the request")
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if meta.get("resourceVersion"):  # what the real etcd3 storage answers, as a 500
                raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(info, str(meta["generateName"]), namespace)
            for name in (*_SYSTEM_META, "resourceVersion"):
                meta.pop(name, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if info.has_generation:
                meta["generation"] = 1
            if info.has_status and info.custom:
                obj.pop("status", None)  # status is written only through the /status subresource
            pending = _Pending()
            self._admit(info, obj, None, pending)
            name = meta["name"]
            if (meta.get("namespace") or "", name) in self._objects[info.storage_key]:
                raise ApiError.already_exists(info, name)
            if dry_run:
                return self.view(info, obj)
            if info.namespaced:
                self._ensure_namespace(str(namespace))
            stored = self._put(info.storage_key, obj, "ADDED", None)
            for action in pending.after:
                action()
            if info.storage_key in EVENT_KEYS:
                self._expire_events(info.storage_key)
            return self.view(info, stored)

    def _generate_name(self, info: ResourceInfo, prefix: str, namespace: str | None) -> str:
        # generateName is cut to leave room for the suffix within the 63-character limit.
        prefix = prefix[:58]
        for _ in range(8):
            name = prefix + "".join(random.choice(_NAME_ALPHABET) for _ in range(5))
            if ((namespace or "") if info.namespaced else "", name) not in self._objects[info.storage_key]:
                return name
        raise ApiError(409, "AlreadyExists", f'{info.qualified_resource} "{prefix}" already exists, the server '
                                             f"was not able to generate a unique name for the object",
                       _details(info, prefix, kind=info.plural))

    def _expire_events(self, key: StorageKey) -> None:
        objects = self._objects[key]
        while len(objects) > self._max_events:
            oldest = next(iter(objects.values()))
            self._remove(key, oldest)

    # ---- update -------------------------------------------------------------------------------

    def replace(self, info: ResourceInfo, namespace: str | None, name: str, body: Any, *,
                subresource: str | None = None, dry_run: bool = False) -> Obj:
        """PUT: optimistic concurrency on ``metadata.resourceVersion`` (required for custom resources)."""
        with self.lock:
            current = self._get_stored(info, namespace, name)
            obj = self._decode(info, body)
            rv = obj["metadata"].get("resourceVersion")
            if not rv and info.custom:
                raise ApiError.invalid(info, name, [schema.invalid(
                    "metadata.resourceVersion", 0, "must be specified for an update")])
            return self._update(info, current, obj, subresource=subresource, dry_run=dry_run)

    def patch(self, info: ResourceInfo, namespace: str | None, name: str, content_type: str | None,
              body: Any, *, subresource: str | None = None, dry_run: bool = False) -> Obj:
        """PATCH by content type; a ``resourceVersion`` carried by the patch is a precondition."""
        media = (content_type or "").split(";")[0].strip().lower()
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] if info.custom else \
                   [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]
        if media not in accepted or media == APPLY_PATCH:
            # Server-side apply is not emulated; strategic merge is not defined for custom resources.
            raise ApiError.unsupported_media(content_type, accepted)
        with self.lock:
            current = self._get_stored(info, namespace, name)
            base = self.view(info, current)
            if media == JSON_PATCH:
                if not isinstance(body, list):
                    raise ApiError.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
                try:
                    ops = jsonpatch.JsonPatch(body)
                except (jsonpatch.InvalidJsonPatch, TypeError) as e:
                    raise ApiError.bad_request(str(e)) from e
                try:
                    patched = ops.apply(copy.deepcopy(base))
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise ApiError.patch_failed() from e
            else:
                if not isinstance(body, dict):
                    raise ApiError.bad_request(
                        "json: cannot unmarshal array into Go value of type map[string]interface {}")
                patched = _merge_patch(base, body)
            if not isinstance(patched, dict):
                raise ApiError.patch_failed()
            return self._update(info, current, patched, subresource=subresource, dry_run=dry_run,
                                decoded=False)

    def _update(self, info: ResourceInfo, current: Obj, new: Obj, *, subresource: str | None,
                dry_run: bool, decoded: bool = True) -> Obj:
        name = current["metadata"]["name"]
        if not decoded:
            new = self._decode(info, new)
        meta = new["metadata"]
        if meta.get("name") not in (None, name):
            raise ApiError.bad_request(f"the name of the object ({meta.get('name')}) does not match the name "
                                       f"on the URL ({name})")
        if info.namespaced and meta.get("namespace") not in (None, current["metadata"].get("namespace")):
            raise ApiError.bad_request("the namespace of the provided object does not match the namespace "
                                       "sent on the request")
        rv = meta.get("resourceVersion")
        if rv and str(rv) != current["metadata"]["resourceVersion"]:
            raise ApiError.modified(info, name)

        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(current)
            new["apiVersion"] = self._storage_info(info.storage_key).api_version
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            meta["name"] = name
            if info.namespaced:
                meta["namespace"] = current["metadata"]["namespace"]
            else:
                meta.pop("namespace", None)
            for system in _SYSTEM_META:
                if system in current["metadata"]:
                    meta[system] = current["metadata"][system]
                else:
                    meta.pop(system, None)
            if info.has_status:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            if current["metadata"].get("deletionTimestamp"):
                added = [f for f in meta.get("finalizers") or [] if f not in current["metadata"].get("finalizers", [])]
                if added:
                    raise ApiError.invalid(info, name, [schema.forbidden(
                        "metadata.finalizers",
                        f"no new finalizers can be added if the object is being deleted, found new finalizers "
                        f"[]string{{{', '.join(json.dumps(f) for f in added)}}}")])

        pending = _Pending()
        old_view = self.view(info, current)
        self._admit(info, new, old_view, pending)
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if info.has_generation and _content(new, info) != _content(old_view, info):
            new["metadata"]["generation"] = int(current["metadata"].get("generation") or 0) + 1

        if new == current:  # a no-op write changes nothing, not even the resourceVersion
            return self.view(info, current)
        if dry_run:
            return self.view(info, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            okey = (new["metadata"].get("namespace") or "", name)
            self._objects[info.storage_key][okey] = new
            self._index(info.storage_key, okey, new, current)
            return self.view(info, self._remove(info.storage_key, new))
        stored = self._put(info.storage_key, new, "MODIFIED", current)
        for action in pending.after:
            action()
        if info.storage_key == NAMESPACE_KEY:
            self._maybe_finish_namespace(name)
        return self.view(info, stored)

    # ---- delete -------------------------------------------------------------------------------

    def delete(self, info: ResourceInfo, namespace: str | None, name: str, options: Obj | None = None, *,
               dry_run: bool = False) -> tuple[Obj, bool]:
        """DELETE: ``(object, gone)``; with finalizers the object only gets a deletionTimestamp."""
        options = options or {}
        with self.lock:
            current = self._get_stored(info, namespace, name)
            preconditions = options.get("preconditions") or {}
            meta = current["metadata"]
            if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
                raise ApiError.conflict(info, name, f"Precondition failed: UID in precondition: "
                                                    f"{preconditions['uid']}, UID in object meta: {meta['uid']}")
            if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta["resourceVersion"]:
                raise ApiError.conflict(info, name, f"Precondition failed: ResourceVersion in precondition: "
                                                    f"{preconditions['resourceVersion']}, ResourceVersion in "
                                                    f"object meta: {meta['resourceVersion']}")
            policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
            if dry_run:
                return self.view(info, current), not meta.get("finalizers")
            if info.storage_key == NAMESPACE_KEY:
                if meta.get("deletionTimestamp"):
                    return self.view(info, current), False
                result = self._terminate_namespace(current)
                return self.view(info, result), False
            result, gone = self._delete_stored(info.storage_key, current, policy)
            return self.view(info, result), gone

    def _delete_stored(self, key: StorageKey, current: Obj, policy: str) -> tuple[Obj, bool]:
        meta = current["metadata"]
        if policy == "Orphan":
            self._orphan(str(meta["uid"]))
        if meta.get("deletionTimestamp"):
            return current, False
        if meta.get("finalizers"):
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if int(new["metadata"].get("generation") or 0) > 0:
                new["metadata"]["generation"] = int(new["metadata"]["generation"]) + 1
            return self._put(key, new, "MODIFIED", current), False
        return self._remove(key, current), True

    def delete_collection(self, info: ResourceInfo, selector: Selector, options: Obj | None = None, *,
                          dry_run: bool = False) -> list[Obj]:
        with self.lock:
            items = [obj for _, obj in sorted(self._objects[info.storage_key].items()) if selector(obj)]
            result = []
            for obj in items:
                meta = obj["metadata"]
                if (meta.get("namespace") or "", meta["name"]) in self._objects[info.storage_key]:
                    result.append(self.delete(info, meta.get("namespace"), meta["name"], options,
                                              dry_run=dry_run)[0])
            return result


def _content(obj: Obj, info: ResourceInfo) -> Obj:
    """What generation tracks: everything but metadata (and status when it is a subresource)."""
    skipped = {"apiVersion", "kind", "metadata", "status"} if info.has_status else {"apiVersion", "kind", "metadata"}
    return {k: v for k, v in obj.items() if k not in skipped}


def _dns_errors(path: str, name: str, *, label: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    limit = 63 if label else 253
    if len(name) > limit:
        errors.append(schema.invalid(path, name, f"must be no more than {limit} characters"))
    if not re.fullmatch(_DNS1123_LABEL if label else _DNS1123_SUBDOMAIN, name):
        errors.append(schema.invalid(path, name, _LABEL_MSG if label else _SUBDOMAIN_MSG))
    return errors


def _qualified_name_errors(path: str, key: str) -> list[FieldError]:
    prefix, _, name = key.rpartition("/")
    errors: list[FieldError] = []
    if prefix and (len(prefix) > 253 or not re.fullmatch(_DNS1123_SUBDOMAIN, prefix)):
        errors.append(schema.invalid(path, key, "prefix part " + _SUBDOMAIN_MSG))
    if not name:
        errors.append(schema.invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        errors.append(schema.invalid(path, key, "name part must be no more than 63 characters"))
    elif not re.fullmatch(_QUALIFIED_NAME, name):
        errors.append(schema.invalid(path, key, _QUALIFIED_MSG))
    return errors

