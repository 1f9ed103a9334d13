"""A faithful in-memory Kubernetes API server for tests and the local sandbox.

No kube-apiserver binary can be had everywhere the operator is tested, and a
lenient fake hides exactly the bugs that a real cluster exposes: a forgotten
``resourceVersion``, a status written through the main endpoint, a field the
schema prunes, a CEL rule that refuses the object, a watch that must resume
after a ``410 Gone``. This server answers over real HTTP, so kopf and the
official ``kubernetes`` client talk to it exactly as they talk to a cluster.

It is built on kmock: :class:`kmock.Server` provides the aiohttp plumbing and
:class:`KubeAPIHandler` is a :class:`kmock.RawHandler`, so kmock's DSL still
works on it for assertions and fault injection, e.g.
``len(server.handler['patch', kmock.subresource('status')])`` or
``server.handler['get', kmock.resource('vigil.dev', 'v1alpha1', 'anomalydetectors')] << 500``.
kmock's own ``KubernetesEmulator`` is not used: its object store lacks resource
versions, subresources, validation and bounded history (see
:mod:`vigil_sandbox.kubeapi_store`, which replaces it).

The server runs in its own thread with its own event loop, so that neither a
synchronous test nor kopf (in yet another thread) ever shares its loop; the
synchronous accessors (:meth:`KubeAPIServer.get`, :meth:`KubeAPIServer.create`,
...) go straight to the thread-safe store and run the same admission as HTTP.

Where it still deviates from a real kube-apiserver (each checked on both by
tests/api/test_emulator_deviations.py, which fails when one is fixed; more in
docs/kube-real-vs-emulator.md):

* no server-side apply: ``application/apply-patch+yaml`` is answered 415;
* no ``metadata.managedFields``;
* authentication by one bearer token, and no authorization: no RBAC;
* ``v1`` and ``events.k8s.io/v1`` Events are two stores, not one resource;
* no admission plugins or ValidatingAdmissionPolicies (the CRD schemas and CEL
  rules are enforced);
* watches are served from its event history, not a watch cache.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import pathlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

import aiohttp.test_utils
import aiohttp.web
import aiohttp.web_runner
import kmock
import yaml

from vigil_sandbox.kubeapi_store import (
    ApiError,
    ResourceInfo,
    Selector,
    Store,
    Watcher,
    parse_field_selector,
    parse_label_selector,
    version_priority,
)

__all__ = ["ApiError", "KubeAPIHandler", "KubeAPIServer", "RequestRecord", "ResourceInfo"]

logger = logging.getLogger(__name__)

Obj: TypeAlias = dict[str, Any]
ObjList: TypeAlias = list[dict[str, Any]]
RecordList: TypeAlias = "list[RequestRecord]"

DEFAULT_TOKEN = "vigil-sandbox-token"
SERVER_VERSION: Obj = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.0-vigil-sandbox", "gitCommit": "0" * 40,
    "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
    "compiler": "gc", "platform": "linux/amd64",
}
# Paths the real server serves to anonymous users (system:public-info-viewer).
_PUBLIC_PATHS = {"/version", "/healthz", "/livez", "/readyz"}
_DEFAULT_WATCH_TIMEOUT = 1800.0  # the real server picks 30..60 minutes when the client sets none


# --------------------------------------------------------------------------------------------------
# Requests: routing and the log.
# --------------------------------------------------------------------------------------------------

@dataclass
class RequestRecord:
    """One served request, kept (boundedly) for assertions such as "how many status patches"."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    verb: str  # get|list|watch|create|update|patch|delete|deletecollection|discovery|other
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    body: Any = None
    status: int | None = None
    #: time.time() when the request arrived, and seconds until its response was ready.
    received: float = 0.0
    duration: float = 0.0


@dataclass(frozen=True)
class Route:
    """A parsed API path; ``kind`` is root/api/apis/group/version/resource/other."""

    kind: str
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_prefix: bool = False


def parse_route(path: str) -> Route | None:
    """Parse ``/api[s]/...`` paths, including ``/api/v1/namespaces[/x[/status]]`` (kmock's parser fails there)."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        return Route("root")
    if parts[0] == "api":
        if len(parts) == 1:
            return Route("api")
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) == 1:
            return Route("apis")
        if len(parts) == 2:
            return Route("group", group=parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Route("other")
    if not rest:
        return Route("version", group=group, version=version)
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace = None
    namespace_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if len(rest) >= 3 and rest[0] == "namespaces" and not namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return Route(
        "resource", group=group, version=version, plural=rest[0], namespace=namespace,
        name=rest[1] if len(rest) > 1 else None, subresource=rest[2] if len(rest) > 2 else None,
        watch_prefix=watch_prefix,
    )


def _json(payload: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(payload).encode(), status=status, content_type="application/json")


def _error(error: ApiError) -> aiohttp.web.Response:
    return _json(error.status(), error.code)


def _dry_run(query: Mapping[str, str]) -> bool:
    value = query.get("dryRun")
    if value in (None, ""):
        return False
    if value != "All":
        raise ApiError.bad_request(f"unsupported dry run flag: {value!r}; only 'All' is supported")
    return True


# --------------------------------------------------------------------------------------------------
# The handler.
# --------------------------------------------------------------------------------------------------

class KubeAPIHandler(kmock.RawHandler):
    """kmock handler that serves the Kubernetes API from a :class:`Store`.

    kmock reactions added with its DSL take precedence (for fault injection); every
    request is also recorded in kmock's request list (bounded), so kmock's filters
    can be used in assertions.
    """

    def __init__(self, store: Store, *, token: str | None, bookmark_interval: float,
                 request_log_size: int, server_address: Callable[[], str]) -> None:
        super().__init__()
        self.store = store
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.unavailable = False
        self.stopping = False
        self.records: collections.deque[RequestRecord] = collections.deque(maxlen=request_log_size)
        self._request_log_size = request_log_size
        self._server_address = server_address
        self._records_lock = threading.Lock()
        #: Called (in the server's thread) with every served request's record, e.g. to count writes
        #: without keeping every record; a failing listener is logged, never fails the request.
        self.listeners: list[Callable[[RequestRecord], None]] = []

    # ---- entry point --------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        raw_body = await raw_request.read()
        query = dict(raw_request.query)
        route = parse_route(raw_request.path)
        content_type = raw_request.headers.get("Content-Type")
        record = RequestRecord(method=raw_request.method, path=raw_request.path, query=query,
                               content_type=content_type, verb=_verb(raw_request.method, route, query),
                               received=time.time())
        started = time.perf_counter()
        if route is not None and route.kind == "resource":
            record.group, record.version, record.plural = route.group, route.version, route.plural
            record.namespace, record.name, record.subresource = route.namespace, route.name, route.subresource
        try:
            record.body = json.loads(raw_body) if raw_body else None
        except ValueError:
            record.body = raw_body.decode(errors="replace")
        with self._records_lock:
            self.records.append(record)
        kmock_request = self._remember_for_kmock(raw_request, route, record, raw_body)
        try:
            response = await self._respond(raw_request, route, record, raw_body, kmock_request)
        except ApiError as e:
            response = _error(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let a bug look like a dropped connection to the client
            logger.exception("Internal error while serving %s %s", raw_request.method, raw_request.path)
            response = _error(ApiError(500, "InternalError", f"Internal error occurred: {e!r}", {}))
        if record.status is None:
            record.status = response.status
        record.duration = time.perf_counter() - started
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("request listener failed")
        return response

    def _remember_for_kmock(self, raw: aiohttp.web.BaseRequest, route: Route | None, record: RequestRecord,
                            raw_body: bytes) -> kmock.Request:
        """Mirror the request into kmock's own (bounded) request list for kmock-style assertions."""
        resource = None
        if route is not None and route.kind == "resource":
            resource = kmock.resource(route.group, route.version, route.plural)
        action = {"list": kmock.action.LIST, "watch": kmock.action.WATCH, "get": kmock.action.FETCH,
                  "create": kmock.action.CREATE, "patch": kmock.action.UPDATE,
                  "delete": kmock.action.DELETE}.get(record.verb)
        request = kmock.Request(
            id=len(self._requests), method=raw.method, url=raw.url, params=record.query,
            headers=dict(raw.headers), body=raw_body, text=raw_body.decode(errors="replace"),
            data=record.body, action=action, resource=resource,
            namespace=record.namespace, name=record.name, subresource=record.subresource,
        )
        self._requests.append(request)
        excess = len(self._requests) - self._request_log_size
        if excess > 0:
            del self._requests[:excess]
        return request

    async def _respond(self, raw: aiohttp.web.BaseRequest, route: Route | None, record: RequestRecord,
                       raw_body: bytes, kmock_request: kmock.Request) -> aiohttp.web.StreamResponse:
        authorized = self.token is None or raw.headers.get("Authorization", "") == f"Bearer {self.token}"
        if not authorized and raw.path not in _PUBLIC_PATHS:
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "Unauthorized", "reason": "Unauthorized", "code": 401}, 401)
        if self.unavailable:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request", {})
        if self._payloads:
            with contextlib.suppress(NotImplementedError):
                return await super()._handle(kmock_request)
        if route is None:
            raise ApiError.no_route()
        if route.kind == "resource":
            return await self._serve_resource(raw, route, record, raw_body)
        if raw.method != "GET":
            raise ApiError.method_not_allowed() if route.kind != "other" else ApiError.no_route()
        return self._serve_discovery(raw.path, route)

    # ---- discovery ----------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        for info in self.store.resources():
            if info.group:
                groups.setdefault(info.group, set()).add(info.version)
        return {group: sorted(versions, key=version_priority, reverse=True) for group, versions in groups.items()}

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{version}", "version": version} for version in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _serve_discovery(self, path: str, route: Route) -> aiohttp.web.StreamResponse:
        if route.kind == "other":
            if path in ("/healthz", "/livez", "/readyz"):
                return aiohttp.web.Response(text="ok")
            if path == "/version":
                return _json(SERVER_VERSION)
            raise ApiError.no_route()
        if route.kind == "root":
            paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz"}
            for group, versions in self._groups().items():
                paths.add(f"/apis/{group}")
                paths.update(f"/apis/{group}/{version}" for version in versions)
            return _json({"paths": sorted(paths)})
        if route.kind == "api":
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self._server_address()}]})
        groups = self._groups()
        if route.kind == "apis":
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                self._api_group(group, versions) for group, versions in sorted(groups.items())]})
        if route.kind == "group":
            if route.group not in groups:
                raise ApiError.no_route()
            assert route.group is not None
            return _json({"kind": "APIGroup", "apiVersion": "v1", **self._api_group(route.group, groups[route.group])})
        infos = sorted((info for info in self.store.resources()
                        if info.group == route.group and info.version == route.version), key=lambda i: i.plural)
        if not infos:
            raise ApiError.no_route()
        resources: list[Obj] = []
        for info in infos:
            entry: Obj = {"name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
                          "kind": info.kind, "verbs": list(info.verbs)}
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            if info.categories:
                entry["categories"] = list(info.categories)
            entry["storageVersionHash"] = base64.b64encode(
                f"{info.group}/{info.version}/{info.kind}".encode()).decode()[:11]
            resources.append(entry)
            for sub in info.subresources:
                resources.append({"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                                  "kind": info.kind, "verbs": ["get", "patch", "update"]})
        group_version = f"{route.group}/{route.version}" if route.group else str(route.version)
        return _json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                      "resources": resources})

    # ---- resources ----------------------------------------------------------------------------

    async def _serve_resource(self, raw: aiohttp.web.BaseRequest, route: Route, record: RequestRecord,
                              raw_body: bytes) -> aiohttp.web.StreamResponse:
        assert route.group is not None and route.version is not None and route.plural is not None
        info = self.store.resolve(route.group, route.version, route.plural)
        if route.namespace is not None and not info.namespaced:
            raise ApiError.no_route()
        if route.subresource is not None and route.subresource not in info.subresources:
            raise ApiError.no_route()
        query = record.query
        method = raw.method
        if route.name is None:
            if method == "GET":
                selector = self._selector(info, route.namespace, query)
                if record.verb == "watch":
                    return await self._serve_watch(raw, info, selector, query, record)
                return self._serve_list(info, selector, query)
            if method == "POST":
                if info.namespaced and route.namespace is None:
                    raise ApiError.no_route()
                created = self.store.create(info, route.namespace, self._body(raw, raw_body),
                                            dry_run=_dry_run(query))
                return _json(created, 201)
            if method == "DELETE":
                selector = self._selector(info, route.namespace, query)
                items = self.store.delete_collection(info, selector, self._delete_options(raw_body, query),
                                                     dry_run=_dry_run(query))
                return _json({"apiVersion": info.api_version, "kind": info.list_kind,
                              "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": items})
            raise ApiError.method_not_allowed()
        if info.namespaced and route.namespace is None:
            raise ApiError.no_route()
        if method == "GET" and record.verb == "watch":
            selector = self._selector(info, route.namespace, query, name=route.name)
            return await self._serve_watch(raw, info, selector, query, record)
        if method == "GET":
            return _json(self.store.get(info, route.namespace, route.name))
        if method == "PUT":
            return _json(self.store.replace(info, route.namespace, route.name, self._body(raw, raw_body),
                                            subresource=route.subresource, dry_run=_dry_run(query)))
        if method == "PATCH":
            return _json(self.store.patch(info, route.namespace, route.name, raw.headers.get("Content-Type"),
                                          self._patch_body(raw_body), subresource=route.subresource,
                                          dry_run=_dry_run(query)))
        if method == "DELETE" and route.subresource is None:
            obj, gone = self.store.delete(info, route.namespace, route.name, self._delete_options(raw_body, query),
                                          dry_run=_dry_run(query))
            if not gone:
                return _json(obj)
            details: Obj = {"name": route.name}
            if info.group:
                details["group"] = info.group
            details.update({"kind": info.plural, "uid": obj["metadata"]["uid"]})
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": details})
        raise ApiError.method_not_allowed()

    @staticmethod
    def _body(raw: aiohttp.web.BaseRequest, raw_body: bytes) -> Any:
        if not raw_body.strip():
            raise ApiError.bad_request("the body of the request is empty")
        content_type = (raw.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            if content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                return yaml.safe_load(raw_body)
            return json.loads(raw_body)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError.bad_request(f"the body of the request could not be decoded: {e}") from e

    @staticmethod
    def _patch_body(raw_body: bytes) -> Any:
        try:
            return json.loads(raw_body)
        except ValueError as e:
            raise ApiError.bad_request(f"the patch could not be decoded as JSON: {e}") from e

    @staticmethod
    def _delete_options(raw_body: bytes, query: Mapping[str, str]) -> Obj:
        options: Obj = {}
        if raw_body.strip():
            try:
                decoded = json.loads(raw_body)
            except ValueError as e:
                raise ApiError.bad_request(f"the DeleteOptions could not be decoded: {e}") from e
            if isinstance(decoded, dict):
                options.update(decoded)
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if options.get("propagationPolicy") not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError.bad_request(f"propagationPolicy: Unsupported value: {options['propagationPolicy']!r}")
        return options

    @staticmethod
    def _selector(info: ResourceInfo, namespace: str | None, query: Mapping[str, str], *,
                  name: str | None = None) -> Selector:
        fields = parse_field_selector(query.get("fieldSelector"), info)
        if name is not None:
            fields.append(("metadata.name", "=", name))
        return Selector(namespace=namespace, labels=tuple(parse_label_selector(query.get("labelSelector"))),
                        fields=tuple(fields))

    def _serve_list(self, info: ResourceInfo, selector: Selector, query: Mapping[str, str]) -> aiohttp.web.Response:
        start: tuple[str, str] | None = None
        token_rv: int | None = None
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"]))
                token_rv, start = int(token["rv"]), (str(token["start"][0]), str(token["start"][1]))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise ApiError.bad_request("continue key is not valid: incorrect encoded start "
                                           "resourceVersion") from e
        limit = int(query.get("limit") or 0)
        items, rv, remaining = self.store.select(info, selector, after=start, limit=limit)
        rv = token_rv if token_rv is not None else rv
        metadata: Obj = {"resourceVersion": str(rv)}
        if remaining:
            token_data = {"rv": rv, "start": list(_okey(items[-1]))}
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token_data).encode()).decode()
            metadata["remainingItemCount"] = remaining
        return _json({"apiVersion": info.api_version, "kind": info.list_kind, "metadata": metadata,
                      "items": items})

    # ---- watch --------------------------------------------------------------------------------

    async def _serve_watch(self, raw: aiohttp.web.BaseRequest, info: ResourceInfo, selector: Selector,
                           query: Mapping[str, str], record: RequestRecord) -> aiohttp.web.StreamResponse:
        raw_rv = query.get("resourceVersion") or ""
        initial_events = query.get("sendInitialEvents") == "true"
        try:
            since = None if raw_rv in ("", "0") or initial_events else int(raw_rv)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f'resourceVersion: Invalid value: "{raw_rv}": must be an integer',
                           {}) from e
        try:
            timeout = float(query.get("timeoutSeconds") or _DEFAULT_WATCH_TIMEOUT)
        except ValueError as e:
            raise ApiError.bad_request(f"invalid timeoutSeconds: {query.get('timeoutSeconds')!r}") from e
        bookmarks = query.get("allowWatchBookmarks") == "true"
        loop = asyncio.get_running_loop()

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher: Watcher | None = self.store.open_watch(info, selector, since, loop)
            expired = None
        except ApiError as e:
            if e.code != 410:
                raise
            watcher, expired = None, e
        await response.prepare(raw)
        record.status = 200

        async def send(event_type: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

        try:
            if watcher is None:
                assert expired is not None
                await send("ERROR", expired.status())  # the real server, too, answers 200 + an ERROR event
                return response
            initial_left = watcher.initial_events
            announce_initial_end = initial_events and bookmarks
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                while watcher.pending:
                    event_type, obj = watcher.pending.popleft()
                    await send(event_type, self.store.view(info, obj))
                    initial_left -= 1
                    if announce_initial_end and initial_left == 0:
                        await send("BOOKMARK", self._bookmark(info, watcher.initial_rv, initial_end=True))
                        announce_initial_end = False
                if announce_initial_end:  # nothing existed: the initial state is empty
                    await send("BOOKMARK", self._bookmark(info, watcher.initial_rv, initial_end=True))
                    announce_initial_end = False
                if watcher.closed or self.stopping:
                    break
                now = loop.time()
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    rv = self.store.bookmark_rv(watcher)
                    if rv is not None:  # else events are pending: deliver them first, bookmark later
                        await send("BOOKMARK", self._bookmark(info, rv))
                    next_bookmark = now + self.bookmark_interval
                    continue
                watcher.wakeup.clear()
                if watcher.pending or watcher.closed:
                    continue
                until = min(deadline, next_bookmark) if bookmarks else deadline
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.wakeup.wait(), timeout=max(0.0, until - now))
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError is one, too
            return response  # the client went away; nothing to finish
        finally:
            if watcher is not None:
                self.store.close_watch(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    @staticmethod
    def _bookmark(info: ResourceInfo, rv: int, *, initial_end: bool = False) -> Obj:
        """A BOOKMARK object: only the kind and the resource version (plus the initial-events-end mark)."""
        metadata: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": info.kind, "apiVersion": info.api_version, "metadata": metadata}


def _okey(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _verb(method: str, route: Route | None, query: Mapping[str, str]) -> str:
    if route is None or route.kind == "other":
        return "other"
    if route.kind != "resource":
        return "discovery"
    watch = route.watch_prefix or query.get("watch") in ("true", "1")
    if method == "GET":
        return "watch" if watch else "list" if route.name is None else "get"
    if route.name is None:
        return {"POST": "create", "DELETE": "deletecollection"}.get(method, "other")
    return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "other")


#: Seconds a stopping server lets requests still being served finish before cancelling them. aiohttp's
#: default is 60, longer than ``KubeAPIServer.stop``'s join: a request caught mid-flight by an outage a
#: test makes on purpose (seen once in CI, on a loaded machine) made ``stop`` time out.
_SHUTDOWN_TIMEOUT = 2.0


class _RawServer(aiohttp.test_utils.RawTestServer):
    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web_runner.ServerRunner:
        runner = await super()._make_runner(debug=debug, **kwargs)
        runner._shutdown_timeout = _SHUTDOWN_TIMEOUT  # ServerRunner takes it, but the Server beside it would not
        return runner


class _QuietServer(kmock.Server):
    """kmock's server without its client session and DNS interceptor, and with a short shutdown.

    The interceptor patches aiohttp process-wide and must be exited in LIFO order,
    which servers started and stopped from different threads cannot promise;
    nothing here needs hostname interception, so it is skipped.
    """

    _server_cls = _RawServer

    async def __aenter__(self) -> Self:
        if self._managed_server is not None:
            raise RuntimeError("The server can be started/entered only once.")
        self._managed_server = self._server_cls(self.handler, host=self._host, port=self._port)
        await self._managed_server.__aenter__()
        self.handler.servers.append(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.handler.servers.remove(self)
        assert self._managed_server is not None
        await self._managed_server.__aexit__(exc_type, exc_value, traceback)
        self._managed_server = None


# --------------------------------------------------------------------------------------------------
# The public server.
# --------------------------------------------------------------------------------------------------

class KubeAPIServer:
    """An emulated Kubernetes API server on a local port, in its own thread and event loop.

    Usage::

        with KubeAPIServer(crds=[my_crd]) as server:
            kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
            ...  # point kopf / kubernetes / kubectl-like clients at it
            assert server.get("vigil.dev/v1alpha1", "anomalydetectors", "default", "x")["status"]

    Everything the HTTP API does is also reachable synchronously (and thread-safely)
    for seeding and assertions; those accessors raise :class:`ApiError` like the API.
    """

    def __init__(
        self,
        crds: Iterable[Obj] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        require_auth: bool = True,
        bookmark_interval: float = 5.0,
        event_log_size: int = 10_000,
        request_log_size: int = 5_000,
        max_events: int = 10_000,
    ) -> None:
        self._host = host
        self._port = port
        self.token = token
        self.store = Store(event_log_size=event_log_size, max_events=max_events)
        self.handler = KubeAPIHandler(self.store, token=token if require_auth else None,
                                      bookmark_interval=bookmark_interval, request_log_size=request_log_size,
                                      server_address=lambda: f"{self._host}:{self._bound_port}")
        self._bound_port = port
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        for crd in crds:
            self.register_crd(crd)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving in a daemon thread; return once the port is bound (or raise why not)."""
        if self._thread is not None:
            raise RuntimeError("The server is already started.")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name=f"kubeapi-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("The emulated Kubernetes API did not start in time.")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("The emulated Kubernetes API failed to start.") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close all watch streams, stop serving, and join the thread. Idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop might be already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("The emulated Kubernetes API did not stop in time.")
        self._thread = None
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to start() instead of dying silently in the thread
            if not self._ready.is_set():
                self._startup_error = e
                self._ready.set()
            else:
                logger.exception("The emulated Kubernetes API crashed.")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self.handler.stopping = False
        async with self.handler, _QuietServer(self.handler, host=self._host, port=self._port) as server:
            self._bound_port = server.port
            self._url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop_event.wait()
            self.handler.stopping = True
            self.store.close_all_watches()
        # aiohttp's shutdown closes the connections it tracks; one accepted while the server stops (a
        # client retrying into an outage the test made) can be left open, and its transport then warns
        # from __del__ in whichever test the garbage collector next runs in. Close every transport this
        # loop still has (the selector loop keeps them in ``_transports``) before the loop ends.
        for transport in list(getattr(self._loop, "_transports", {}).values()):
            if transport is not None and not transport.is_closing():
                transport.close()
        await asyncio.sleep(0)
        self._loop = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` while running."""
        if self._url is None:
            raise RuntimeError("The server is not running.")
        return self._url

    @property
    def port(self) -> int:
        """The bound port while running (the requested one, possibly 0, before that)."""
        return self._bound_port

    def write_kubeconfig(self, path: str | pathlib.Path, *, namespace: str = "default") -> pathlib.Path:
        """A kubeconfig (cluster, user with the token, current context) that kopf and kubernetes accept."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "vigil-sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "vigil-sandbox", "user": {"token": self.token}}],
            "contexts": [{"name": "vigil-sandbox",
                          "context": {"cluster": "vigil-sandbox", "user": "vigil-sandbox", "namespace": namespace}}],
            "current-context": "vigil-sandbox",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def set_unavailable(self, unavailable: bool = True) -> None:
        """Simulate an API outage: every request gets 503 and open watch streams are cut."""
        self.handler.unavailable = unavailable
        if unavailable:
            self.store.close_all_watches()

    # ---- synchronous accessors ----------------------------------------------------------------

    def _resource(self, api_version: str, plural: str) -> ResourceInfo:
        group, _, version = api_version.rpartition("/")
        return self.store.resolve(group, version, plural)

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        """The object as the API would serve it, or None if it does not exist."""
        info = self._resource(api_version, plural)
        try:
            return _copy(self.store.get(info, namespace, name))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(self, api_version: str, plural: str, namespace: str | None = None,
             label_selector: str | None = None) -> ObjList:
        """Objects of a resource, in one namespace or (None) across all namespaces."""
        info = self._resource(api_version, plural)
        selector = Selector(namespace=namespace, labels=tuple(parse_label_selector(label_selector)))
        items, _, _ = self.store.select(info, selector)
        return [_copy(item) for item in items]

    def create(self, obj: Obj) -> Obj:
        """Create through the same admission as ``POST`` (namespaced kinds default to ``default``)."""
        info = self.store.resolve_kind(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))
        namespace = (obj.get("metadata") or {}).get("namespace") if info.namespaced else None
        return _copy(self.store.create(info, namespace or ("default" if info.namespaced else None), obj))

    def patch(self, api_version: str, plural: str, namespace: str | None, name: str, patch: Obj | ObjList, *,
              subresource: str | None = None, content_type: str | None = None) -> Obj:
        """Merge-patch (or JSON-patch, for a list) like ``PATCH``; ``subresource="status"`` for status."""
        info = self._resource(api_version, plural)
        content_type = content_type or ("application/json-patch+json" if isinstance(patch, list)
                                        else "application/merge-patch+json")
        return _copy(self.store.patch(info, namespace, name, content_type, patch, subresource=subresource))

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str, *,
               propagation_policy: str | None = None) -> Obj:
        """``DELETE``: with finalizers the object stays (with a deletionTimestamp) until they are gone."""
        info = self._resource(api_version, plural)
        options = {"propagationPolicy": propagation_policy} if propagation_policy else {}
        obj, _ = self.store.delete(info, namespace, name, options)
        return _copy(obj)

    def register_crd(self, crd: Obj) -> Obj:
        """Create or update a CustomResourceDefinition; its resources are served at once (422 if invalid)."""
        info = self.store.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        name = str((crd.get("metadata") or {}).get("name") or "")
        body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", **crd}
        with self.store.lock:
            existing = self.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)
            if existing is None:
                return _copy(self.store.create(info, None, body))
            body = {**body, "metadata": {**(body.get("metadata") or {}),
                                         "resourceVersion": existing["metadata"]["resourceVersion"]}}
            return _copy(self.store.replace(info, None, name, body))

    def events_for(self, kind: str, namespace: str | None, name: str) -> ObjList:
        """Events (``v1`` and ``events.k8s.io/v1``) about one object, oldest first."""
        def about(event: Obj) -> bool:
            ref = event.get("involvedObject") or event.get("regarding") or {}
            return bool(ref.get("kind") == kind and ref.get("name") == name
                        and (namespace is None or ref.get("namespace") == namespace))

        events = self.store.find(about, [("", "events"), ("events.k8s.io", "events")])
        return sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))

    # ---- the request log ----------------------------------------------------------------------

    @property
    def requests(self) -> RecordList:
        """A snapshot of the (bounded) request log, oldest first."""
        with self.handler._records_lock:
            return [*self.handler.records]

    def count_requests(self, *, method: str | None = None, verb: str | None = None, plural: str | None = None,
                       name: str | None = None, namespace: str | None = None, subresource: str | None = None,
                       status: int | None = None) -> int:
        """How many logged requests match all the given criteria (e.g. status patches of one object)."""
        def matches(record: RequestRecord) -> bool:
            return ((method is None or record.method == method.upper()) and (verb is None or record.verb == verb)
                    and (plural is None or record.plural == plural) and (name is None or record.name == name)
                    and (namespace is None or record.namespace == namespace)
                    and (subresource is None or record.subresource == subresource)
                    and (status is None or record.status == status))
        return sum(1 for record in self.requests if matches(record))


def _copy(obj: Obj) -> Obj:
    result: Obj = json.loads(json.dumps(obj))
    return result
