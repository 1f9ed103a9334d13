"""The emulated Kubernetes API, exercised over real HTTP as kopf and the official client see it.

Each test pins one behaviour where a lenient fake (stock kmock included) would
let an operator pass here and then fail against a real cluster. Expected error
texts are the real kube-apiserver's. Nothing sleeps blindly: waits poll with a
deadline.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kmock
import kopf
import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.client.rest import ApiException

from vigil_sandbox.kubeapi import ApiError, KubeAPIServer

# Every test here starts the emulator (an HTTP server with its watch threads): out of `make test-fast`.
pytestmark = pytest.mark.slow

T = TypeVar("T")
GROUP, VERSION, PLURAL = "test.vigil.dev", "v1", "widgets"
API_VERSION = f"{GROUP}/{VERSION}"
WIDGETS = f"/apis/{GROUP}/{VERSION}/namespaces/default/widgets"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": PLURAL, "singular": "widget",
                  "shortNames": ["wd"], "categories": ["vigil-test"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "x-kubernetes-validations": [
                            {"rule": "self.size <= self.max", "message": "size must not exceed max"},
                            {"rule": "!has(self.name) || self.name != 'forbidden'",
                             "messageExpression": "'name ' + self.name + ' is reserved'", "fieldPath": ".name"},
                        ],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "max": {"type": "integer", "default": 5},
                            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True},
                            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                            "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 1, "maxLength": 12},
                            "when": {"type": "string", "format": "date-time"},
                            "note": {"type": "string"},
                            "enabled": {"type": "boolean"},
                            "tags": {"type": "array", "maxItems": 3, "x-kubernetes-list-type": "set",
                                     "items": {"type": "string"}},
                            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                      "x-kubernetes-list-map-keys": ["name"],
                                      "items": {"type": "object", "required": ["name"], "properties": {
                                          "name": {"type": "string"}, "port": {"type": "integer"}}}},
                            "labels": {"type": "object", "maxProperties": 2,
                                       "additionalProperties": {"type": "string"}},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "fixed": {"type": "string", "x-kubernetes-validations": [
                                {"rule": "self == oldSelf", "message": "fixed is immutable"}]},
                        },
                    },
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                               "properties": {"x": {"type": "string"}, "count": {"type": "integer"}}},
                },
            }},
        }],
    },
}


def widget(name: str = "w", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1, **spec}}


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll until ``fn()`` is truthy (never a blind sleep); fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------------
# Fixtures and raw HTTP helpers.
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(crds=[WIDGET_CRD], bookmark_interval=0.2) as srv:
        yield srv


class Http:
    """Bare ``urllib`` calls with the bearer token: what a client sends, nothing interpreted."""

    def __init__(self, srv: KubeAPIServer) -> None:
        self.srv = srv

    def __call__(self, method: str, path: str, body: Any = None, *,
                 content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.srv.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.srv.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.headers["Content-Type"].startswith("application/json")
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                assert e.headers["Content-Type"].startswith("application/json")
                return e.code, json.loads(e.read())

    def create(self, obj: dict[str, Any], path: str = WIDGETS) -> dict[str, Any]:
        status, body = self("POST", path, obj)
        assert status == 201, body
        return body


@pytest.fixture
def http(server: KubeAPIServer) -> Http:
    return Http(server)


@pytest.fixture
def api_client(server: KubeAPIServer, tmp_path: Path) -> Iterator[kubernetes.client.ApiClient]:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")),
                                       client_configuration=configuration)
    with kubernetes.client.ApiClient(configuration) as client:
        yield client


def watch(srv: KubeAPIServer, path: str, *, until: Callable[[list[dict[str, Any]]], bool] | None = None,
          timeout: float = 5.0) -> list[dict[str, Any]]:
    """Read a watch stream with aiohttp until ``until(events)`` holds or the server closes it."""
    async def read() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        headers = {"Authorization": f"Bearer {srv.token}"}
        async with aiohttp.ClientSession() as session, session.get(
                srv.url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            assert response.status == 200
            async for line in response.content:
                events.append(json.loads(line))
                if until is not None and until(events):
                    break
        return events
    return asyncio.run(read())


def status_body(code: int, reason: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


# --------------------------------------------------------------------------------------------------
# Object store: the gaps of stock kmock.
# --------------------------------------------------------------------------------------------------

def test_create_answers_201_and_stamps_metadata(http: Http) -> None:
    status, first = http("POST", WIDGETS, widget("a"))
    second = http.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
                         "/api/v1/namespaces/default/configmaps")
    assert status == 201
    meta = first["metadata"]
    assert uuid.UUID(meta["uid"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["namespace"] == "default"  # taken from the URL
    assert meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str)
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])  # one global counter
    assert "generation" not in second["metadata"]  # built-in ConfigMaps have none
    assert http("GET", f"{WIDGETS}/a") == (200, first)


def test_create_with_a_resource_version_is_refused(http: Http) -> None:
    body = widget("a")
    body["metadata"]["resourceVersion"] = "1"
    status, answer = http("POST", WIDGETS, body)
    assert (status, answer["message"]) == (500, "resourceVersion should not be set on objects to be created")


def test_create_existing_name_is_409_already_exists(http: Http) -> None:
    http.create(widget("a"))
    assert http("POST", WIDGETS, widget("a")) == (409, status_body(
        409, "AlreadyExists", 'widgets.test.vigil.dev "a" already exists',
        {"name": "a", "group": GROUP, "kind": "widgets"}))


def test_missing_object_is_404_with_a_real_status(http: Http) -> None:
    assert http("GET", f"{WIDGETS}/nope") == (404, status_body(
        404, "NotFound", 'widgets.test.vigil.dev "nope" not found',
        {"name": "nope", "group": GROUP, "kind": "widgets"}))
    assert http("GET", "/api/v1/namespaces/default/configmaps/nope") == (404, status_body(
        404, "NotFound", 'configmaps "nope" not found', {"name": "nope", "kind": "configmaps"}))
    status, body = http("GET", "/apis/unknown.dev/v1/things")
    assert (status, body["message"]) == (404, "the server could not find the requested resource")


def test_generate_name_appends_five_random_characters(http: Http) -> None:
    body = widget()
    body["metadata"] = {"generateName": "gen-"}
    names = {http.create(body)["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3
    assert all(re.fullmatch(r"gen-[a-z0-9]{5}", name) for name in names)


def test_namespaces_are_listed_and_auto_created(http: Http) -> None:
    status, namespaces = http("GET", "/api/v1/namespaces")
    assert status == 200 and namespaces["kind"] == "NamespaceList"
    assert "default" in {ns["metadata"]["name"] for ns in namespaces["items"]}
    http.create(widget("a"), f"/apis/{GROUP}/{VERSION}/namespaces/team-a/widgets")
    status, namespace = http("GET", "/api/v1/namespaces/team-a")
    assert status == 200
    assert (namespace["kind"], namespace["status"]["phase"]) == ("Namespace", "Active")
    status, posted = http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "team-b"}})
    assert (status, posted["status"]["phase"]) == (201, "Active")
    status, body = http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": "team.b"}})  # a label, not a subdomain
    assert (status, body["details"]["causes"][0]["field"]) == (422, "metadata.name")


def test_lists_carry_kind_and_span_namespaces(http: Http) -> None:
    http.create(widget("a"))
    http.create(widget("b"), f"/apis/{GROUP}/{VERSION}/namespaces/other/widgets")
    status, listed = http("GET", WIDGETS)
    assert status == 200
    assert (listed["apiVersion"], listed["kind"]) == (API_VERSION, "WidgetList")
    assert listed["metadata"]["resourceVersion"].isdigit()
    assert [(i["apiVersion"], i["kind"], i["metadata"]["name"]) for i in listed["items"]] == [
        (API_VERSION, "Widget", "a")]
    _, everywhere = http("GET", f"/apis/{GROUP}/{VERSION}/widgets")
    assert {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]} == {
        ("default", "a"), ("other", "b")}


def test_list_pagination_with_limit_and_continue(http: Http) -> None:
    for name in "abcde":
        http.create(widget(name))
    _, page = http("GET", f"{WIDGETS}?limit=2")
    names = [i["metadata"]["name"] for i in page["items"]]
    while page["metadata"].get("continue"):
        _, page = http("GET", f"{WIDGETS}?limit=2&continue={page['metadata']['continue']}")
        names += [i["metadata"]["name"] for i in page["items"]]
    assert names == list("abcde")


@pytest.mark.parametrize(("selector", "expected"), [
    ("labelSelector=tier%3Dweb", {"a", "b"}),
    ("labelSelector=tier%3D%3Dweb", {"a", "b"}),
    ("labelSelector=tier!%3Dweb", {"c", "d"}),
    ("labelSelector=tier+in+(web,db)", {"a", "b", "c"}),
    ("labelSelector=tier+notin+(web)", {"c", "d"}),
    ("labelSelector=tier", {"a", "b", "c"}),
    ("labelSelector=!tier", {"d"}),
    ("labelSelector=tier%3Dweb,env%3Dprod", {"a"}),
    ("fieldSelector=metadata.name%3Dc", {"c"}),
    ("fieldSelector=metadata.name!%3Dc", {"a", "b", "d"}),
    ("fieldSelector=metadata.namespace%3Ddefault", {"a", "b", "c", "d"}),
])
def test_label_and_field_selectors(http: Http, selector: str, expected: set[str]) -> None:
    for name, labels in {"a": {"tier": "web", "env": "prod"}, "b": {"tier": "web"}, "c": {"tier": "db"},
                         "d": {}}.items():
        body = widget(name)
        body["metadata"]["labels"] = labels
        http.create(body)
    status, listed = http("GET", f"{WIDGETS}?{selector}")
    assert status == 200
    assert {i["metadata"]["name"] for i in listed["items"]} == expected


def test_unsupported_field_selector_is_400(http: Http) -> None:
    status, body = http("GET", f"{WIDGETS}?fieldSelector=spec.size%3D1")
    assert (status, body["reason"], body["message"]) == (400, "BadRequest", "field label not supported: spec.size")


def test_put_replaces_with_optimistic_concurrency(http: Http) -> None:
    created = http.create(widget("a"))
    stale = copy.deepcopy(created)
    updated = copy.deepcopy(created)
    updated["spec"]["size"] = 2
    status, replaced = http("PUT", f"{WIDGETS}/a", updated)
    assert status == 200
    assert replaced["spec"]["size"] == 2
    assert int(replaced["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert replaced["metadata"]["generation"] == 2

    stale["spec"]["size"] = 3
    assert http("PUT", f"{WIDGETS}/a", stale) == (409, status_body(
        409, "Conflict", 'Operation cannot be fulfilled on widgets.test.vigil.dev "a": the object has been '
                         "modified; please apply your changes to the latest version and try again",
        {"name": "a", "group": GROUP, "kind": "widgets"}))

    del stale["metadata"]["resourceVersion"]  # custom resources forbid unconditional updates
    status, body = http("PUT", f"{WIDGETS}/a", stale)
    assert (status, body["message"]) == (422, 'Widget.test.vigil.dev "a" is invalid: metadata.resourceVersion: '
                                              "Invalid value: 0: must be specified for an update")


def test_merge_patch_deletes_with_null_and_honours_resource_version(http: Http) -> None:
    created = http.create(widget("a", note="hello", labels={"k": "v"}))
    status, patched = http("PATCH", f"{WIDGETS}/a", {"spec": {"note": None, "labels": {"k2": "v2"}}},
                           content_type="application/merge-patch+json")
    assert status == 200
    assert "note" not in patched["spec"]
    assert patched["spec"]["labels"] == {"k": "v", "k2": "v2"}
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"size": 2}}
    status, body = http("PATCH", f"{WIDGETS}/a", stale, content_type="application/merge-patch+json")
    assert (status, body["reason"]) == (409, "Conflict")


def test_json_patch_applies_and_a_failed_test_op_is_422(http: Http) -> None:
    created = http.create(widget("a"))
    rv = created["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "add", "path": "/metadata/finalizers", "value": ["test.vigil.dev/hold"]}]
    status, patched = http("PATCH", f"{WIDGETS}/a", ops, content_type="application/json-patch+json")
    assert status == 200 and patched["metadata"]["finalizers"] == ["test.vigil.dev/hold"]
    assert http("PATCH", f"{WIDGETS}/a", ops, content_type="application/json-patch+json") == (422, status_body(
        422, "Invalid", "the server rejected our request due to an error in our request", {}))


def test_patch_content_types_like_the_real_server(http: Http) -> None:
    http.create(widget("a"))
    for content_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
        status, body = http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 2}}, content_type=content_type)
        assert (status, body["reason"]) == (415, "UnsupportedMediaType")  # no strategic merge for CRs
    http.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}},
                "/api/v1/namespaces/default/configmaps")
    status, body = http("PATCH", "/api/v1/namespaces/default/configmaps/c", {"data": {"b": "2"}},
                        content_type="application/strategic-merge-patch+json")
    assert (status, body["data"]) == (200, {"a": "1", "b": "2"})


def test_no_op_writes_do_not_bump_the_resource_version(http: Http, server: KubeAPIServer) -> None:
    created = http.create(widget("a"))
    _, patched = http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 1}}, content_type="application/merge-patch+json")
    assert patched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_generation_tracks_spec_but_not_metadata_or_status(http: Http) -> None:
    http.create(widget("a"))
    merge = "application/merge-patch+json"
    _, labelled = http("PATCH", f"{WIDGETS}/a", {"metadata": {"labels": {"x": "y"}}}, content_type=merge)
    _, with_status = http("PATCH", f"{WIDGETS}/a/status", {"status": {"x": "y"}}, content_type=merge)
    assert labelled["metadata"]["generation"] == with_status["metadata"]["generation"] == 1
    _, respecced = http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 2}}, content_type=merge)
    assert respecced["metadata"]["generation"] == 2


def test_status_subresource_is_separate_from_the_main_endpoint(http: Http) -> None:
    body = widget("a")
    body["status"] = {"x": "dropped-on-create"}
    created = http.create(body)
    assert "status" not in created
    merge = "application/merge-patch+json"
    _, main = http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 2}, "status": {"x": "ignored"}}, content_type=merge)
    assert main["spec"]["size"] == 2 and "status" not in main
    _, status_write = http("PATCH", f"{WIDGETS}/a/status", {"spec": {"size": 9}, "metadata": {"labels": {"a": "b"}},
                                                            "status": {"x": "y"}}, content_type=merge)
    assert status_write["status"] == {"x": "y"}
    assert status_write["spec"]["size"] == 2 and "labels" not in status_write["metadata"]
    assert status_write["metadata"]["generation"] == 2
    assert http("GET", f"{WIDGETS}/a/status") == (200, status_write)
    # PUT on /status needs the current resourceVersion as well.
    stale = copy.deepcopy(status_write)
    stale["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    status, conflict = http("PUT", f"{WIDGETS}/a/status", stale)
    assert (status, conflict["reason"]) == (409, "Conflict")
    # JSON patches on /status may test the metadata (kopf does), but change only the status.
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": status_write["metadata"]["resourceVersion"]},
           {"op": "replace", "path": "/status/x", "value": "z"}]
    status, json_patched = http("PATCH", f"{WIDGETS}/a/status", ops, content_type="application/json-patch+json")
    assert (status, json_patched["status"]["x"]) == (200, "z")


# --------------------------------------------------------------------------------------------------
# Schema: pruning, defaulting, validation, CEL.
# --------------------------------------------------------------------------------------------------

def test_schema_pruning_drops_undeclared_fields(http: Http) -> None:
    body = widget("a", unknown=1, extra={"anything": {"goes": True}})
    body["metadata"]["bogus"] = "x"
    body["topLevel"] = "x"
    created = http.create(body)
    assert "unknown" not in created["spec"]
    assert created["spec"]["extra"] == {"anything": {"goes": True}}  # x-kubernetes-preserve-unknown-fields
    assert "topLevel" not in created and "bogus" not in created["metadata"]
    _, with_status = http("PATCH", f"{WIDGETS}/a/status", {"status": {"kopf": {"progress": {}}, "count": 1}},
                          content_type="application/merge-patch+json")
    assert with_status["status"] == {"kopf": {"progress": {}}, "count": 1}


def test_schema_defaulting_on_create_and_update(http: Http) -> None:
    created = http.create(widget("a"))
    assert (created["spec"]["max"], created["spec"]["mode"]) == (5, "fast")
    _, patched = http("PATCH", f"{WIDGETS}/a", {"spec": {"mode": None, "max": 7}},
                      content_type="application/merge-patch+json")
    assert (patched["spec"]["max"], patched["spec"]["mode"]) == (7, "fast")


def test_nullable_fields_keep_null_and_non_nullable_nulls_are_dropped(http: Http) -> None:
    created = http.create(widget("a", ratio=None, note=None, mode=None))
    assert created["spec"]["ratio"] is None  # nullable: kept
    assert "note" not in created["spec"]  # non-nullable without default: pruned, as the real server does
    assert created["spec"]["mode"] == "fast"  # non-nullable with default: defaulted
    status, body = http("POST", WIDGETS, widget("b", tags=["a", None]))
    assert status == 422
    assert body["details"]["causes"][0] == {"reason": "FieldValueTypeInvalid", "field": "spec.tags[1]",
                                            "message": 'Invalid value: "null": spec.tags[1] in body must be of type '
                                                       'string: "null"'}


#: Bad Widget specs and the message the real server answers (tests/api/test_real_server.py checks
#: these against a real kube-apiserver, so the emulator cannot drift from it).
SCHEMA_CASES: list[tuple[dict[str, Any], str]] = [
    ({"size": 11, "max": 20}, "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"),
    ({"size": 0}, "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
    ({"size": 1, "ratio": 1.5}, "spec.ratio: Invalid value: 1.5: spec.ratio in body should be less than or equal to 1"),
    ({}, "spec.size: Required value"),
    ({"size": "2"}, 'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"'),
    ({"size": 1.5}, 'spec.size: Invalid value: "number": spec.size in body must be of type integer: "number"'),
    ({"size": True}, 'spec.size: Invalid value: "boolean": spec.size in body must be of type integer: "boolean"'),
    ({"size": 1, "enabled": 1}, 'spec.enabled: Invalid value: "integer": spec.enabled in body must be of type '
                                'boolean: "integer"'),
    ({"size": 1, "mode": "warp"}, 'spec.mode: Unsupported value: "warp": supported values: "fast", "slow"'),
    ({"size": 1, "name": "Bad"}, "spec.name: Invalid value: \"Bad\": spec.name in body should match '^[a-z]+$'"),
    ({"size": 1, "name": "a" * 13}, "spec.name: Too long: may not be more than 12 bytes"),
    ({"size": 1, "name": ""}, 'spec.name: Invalid value: "": spec.name in body should be at least 1 chars long'),
    ({"size": 1, "when": "yesterday"}, 'spec.when: Invalid value: "yesterday": spec.when in body must be of type '
                                       'date-time: "yesterday"'),
    ({"size": 1, "tags": ["a", "b", "c", "d"]}, "spec.tags: Too many: 4: must have at most 3 items"),
    ({"size": 1, "tags": ["a", "b", "a"]}, 'spec.tags[2]: Duplicate value: "a"'),
    ({"size": 1, "ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]},
     'spec.ports[1]: Duplicate value: {"name":"http"}'),
    ({"size": 1, "labels": {"a": "1", "b": 2}}, 'spec.labels.b: Invalid value: "integer": spec.labels.b in body '
                                                'must be of type string: "integer"'),
    ({"size": 1, "labels": {"a": "1", "b": "2", "c": "3"}}, "spec.labels: Too many: 3: must have at most 2 items"),
    ({"size": 6}, "spec: Invalid value: size must not exceed max"),
    ({"size": 1, "name": "forbidden"}, "spec.name: Invalid value: name forbidden is reserved"),
]


@pytest.mark.parametrize(("spec", "message"), SCHEMA_CASES)
def test_schema_validation_errors_read_like_the_real_server(http: Http, spec: dict[str, Any], message: str) -> None:
    body = widget("bad")
    body["spec"] = spec
    status, answer = http("POST", WIDGETS, body)
    assert status == 422, answer
    assert answer["reason"] == "Invalid"
    prefix = 'Widget.test.vigil.dev "bad" is invalid: '
    assert answer["message"] == prefix + message or answer["message"].startswith(f"{prefix}[{message}, ")
    assert answer["details"]["name"] == "bad" and answer["details"]["kind"] == "Widget"
    cause = answer["details"]["causes"][0]
    assert f'{cause["field"]}: {cause["message"]}' == message


def test_several_errors_are_joined_in_brackets(http: Http) -> None:
    body = widget("bad", size=11, mode="warp")
    status, answer = http("POST", WIDGETS, body)
    assert status == 422
    assert answer["message"] == (
        'Widget.test.vigil.dev "bad" is invalid: [spec.size: Invalid value: 11: spec.size in body should be less '
        'than or equal to 10, spec.mode: Unsupported value: "warp": supported values: "fast", "slow", <nil>: '
        "Invalid value: null: some validation rules were not checked because the object was invalid; correct "
        "the existing errors to complete validation]")
    assert [cause["reason"] for cause in answer["details"]["causes"]] == [
        "FieldValueInvalid", "FieldValueNotSupported", "FieldValueInvalid"]


def test_cel_transition_rules_run_only_on_update(http: Http) -> None:
    http.create(widget("a", fixed="one"))
    status, body = http("PATCH", f"{WIDGETS}/a", {"spec": {"fixed": "two"}},
                        content_type="application/merge-patch+json")
    assert (status, body["message"]) == (
        422, 'Widget.test.vigil.dev "a" is invalid: spec.fixed: Invalid value: "two": fixed is immutable')
    status, _ = http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 2}}, content_type="application/merge-patch+json")
    assert status == 200


def test_schema_applies_to_status_writes_too(http: Http) -> None:
    http.create(widget("a"))
    status, body = http("PATCH", f"{WIDGETS}/a/status", {"status": {"count": "many"}},
                        content_type="application/merge-patch+json")
    assert (status, body["details"]["causes"][0]["field"]) == (422, "status.count")


def test_object_names_must_be_dns_subdomains(http: Http) -> None:
    status, body = http("POST", WIDGETS, widget("Not_Valid"))
    assert status == 422
    assert body["message"].startswith('Widget.test.vigil.dev "Not_Valid" is invalid: metadata.name: Invalid value: '
                                      '"Not_Valid": a lowercase RFC 1123 subdomain must consist of')
    status, body = http("POST", "/api/v1/namespaces/default/configmaps",
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert (status, body["message"]) == (
        422, 'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required')


def test_crd_with_an_uncompilable_cel_rule_is_refused(http: Http) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "gadgets.test.vigil.dev"
    crd["spec"]["names"] = {"kind": "Gadget", "plural": "gadgets"}
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    rules.append({"rule": "self.size >"})
    rules.append({"rule": "self.sizee > 0"})
    status, body = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert (status, body["reason"]) == (422, "Invalid")
    assert [cause["field"] for cause in body["details"]["causes"]] == [
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[2].rule",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[3].rule"]
    assert "undefined field 'sizee'" in body["details"]["causes"][1]["message"]
    assert http("GET", "/apis/test.vigil.dev/v1/namespaces/default/gadgets")[0] == 404
    with pytest.raises(ApiError) as raised:
        KubeAPIServer(crds=[crd])
    assert raised.value.code == 422


# --------------------------------------------------------------------------------------------------
# Watching.
# --------------------------------------------------------------------------------------------------

def test_watch_sends_existing_objects_then_live_events(http: Http, server: KubeAPIServer) -> None:
    http.create(widget("a"))

    def act_when_listed(events: list[dict[str, Any]]) -> bool:
        if len(events) == 1:  # the initial ADDED arrived: now change things while watching
            http.create(widget("b"))
            http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 2}}, content_type="application/merge-patch+json")
            http("DELETE", f"{WIDGETS}/b")
        return len(events) >= 4

    events = watch(server, f"{WIDGETS}?watch=true", until=act_when_listed)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert events[2]["object"]["spec"]["size"] == 2
    assert all(e["object"]["kind"] == "Widget" for e in events)
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events[1:]]
    assert rvs == sorted(rvs)


def test_watch_resumes_from_a_resource_version(http: Http, server: KubeAPIServer) -> None:
    a = http.create(widget("a"))
    http.create(widget("b"))
    http("PATCH", f"{WIDGETS}/a", {"spec": {"size": 3}}, content_type="application/merge-patch+json")
    rv = a["metadata"]["resourceVersion"]
    events = watch(server, f"{WIDGETS}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("MODIFIED", "a")]


def test_watch_from_an_expired_resource_version_gets_410() -> None:
    with KubeAPIServer(crds=[WIDGET_CRD], event_log_size=3) as srv:
        first = srv.create(widget("a"))
        for name in "bcde":
            srv.create(widget(name))
        events = watch(srv, f"{WIDGETS}?watch=true&resourceVersion={first['metadata']['resourceVersion']}")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    error = events[0]["object"]
    assert (error["kind"], error["code"], error["reason"]) == ("Status", 410, "Expired")
    assert error["message"].startswith("too old resource version:")


def test_watch_honours_timeout_seconds(http: Http, server: KubeAPIServer) -> None:
    started = time.monotonic()
    events = watch(server, f"{WIDGETS}?watch=true&timeoutSeconds=1", timeout=5)
    assert events == []
    assert 0.9 <= time.monotonic() - started < 3


def test_watch_bookmarks_carry_only_the_resource_version(http: Http, server: KubeAPIServer) -> None:
    http.create(widget("a"))
    events = watch(server, f"{WIDGETS}?watch=true&allowWatchBookmarks=true",
                   until=lambda events: events[-1]["type"] == "BOOKMARK")
    bookmark = events[-1]["object"]
    assert bookmark == {"kind": "Widget", "apiVersion": API_VERSION,
                        "metadata": {"resourceVersion": bookmark["metadata"]["resourceVersion"]}}
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(events[0]["object"]["metadata"]["resourceVersion"])


def test_watch_with_initial_events_ends_them_with_a_marked_bookmark(http: Http, server: KubeAPIServer) -> None:
    created = http.create(widget("a"))
    query = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    events = watch(server, f"{WIDGETS}?{query}", until=lambda events: events[-1]["type"] == "BOOKMARK")
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"] == {"resourceVersion": created["metadata"]["resourceVersion"],
                                               "annotations": {"k8s.io/initial-events-end": "true"}}


def test_watch_selectors_turn_leaving_objects_into_deletions(http: Http, server: KubeAPIServer) -> None:
    body = widget("a")
    body["metadata"]["labels"] = {"team": "x"}
    http.create(body)

    def relabel(events: list[dict[str, Any]]) -> bool:
        if len(events) == 1:
            http("PATCH", f"{WIDGETS}/a", {"metadata": {"labels": {"team": "y"}}},
                 content_type="application/merge-patch+json")
        return len(events) >= 2

    events = watch(server, f"{WIDGETS}?watch=true&labelSelector=team%3Dx", until=relabel)
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


# --------------------------------------------------------------------------------------------------
# Deletion: finalizers, garbage collection, namespaces.
# --------------------------------------------------------------------------------------------------

def test_finalizers_hold_deletion_until_removed(http: Http, server: KubeAPIServer) -> None:
    body = widget("a")
    body["metadata"]["finalizers"] = ["test.vigil.dev/hold"]
    created = http.create(body)
    collected: list[dict[str, Any]] = []

    def steps(events: list[dict[str, Any]]) -> bool:
        collected[:] = events
        return events[-1]["type"] == "DELETED"

    def delete_and_release() -> None:
        status, deleting = http("DELETE", f"{WIDGETS}/a")
        assert status == 200
        assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["deletionGracePeriodSeconds"] == 0
        assert deleting["metadata"]["generation"] == 2
        assert http("GET", f"{WIDGETS}/a")[0] == 200  # still there
        status, refused = http("PATCH", f"{WIDGETS}/a", {"metadata": {"finalizers": ["test.vigil.dev/hold", "more"]}},
                               content_type="application/merge-patch+json")
        assert (status, refused["details"]["causes"][0]["reason"]) == (422, "FieldValueForbidden")
        status, released = http("PATCH", f"{WIDGETS}/a", {"metadata": {"finalizers": None}},
                                 content_type="application/merge-patch+json")
        assert status == 200 and "finalizers" not in released["metadata"]

    rv = created["metadata"]["resourceVersion"]
    thread = threading.Thread(target=delete_and_release)
    thread.start()
    events = watch(server, f"{WIDGETS}?watch=true&resourceVersion={rv}", until=steps)
    thread.join()
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert http("GET", f"{WIDGETS}/a")[0] == 404


def test_delete_without_finalizers_is_immediate_and_answers_a_status(http: Http) -> None:
    created = http.create(widget("a"))
    assert http("DELETE", f"{WIDGETS}/a") == (200, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "a", "group": GROUP, "kind": "widgets", "uid": created["metadata"]["uid"]}})
    assert http("GET", f"{WIDGETS}/a")[0] == 404


def test_garbage_collection_follows_owner_references(http: Http, server: KubeAPIServer) -> None:
    owner = http.create(widget("owner"))
    other = http.create(widget("other"))

    def ref(obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": "Widget", "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"], "controller": obj is owner}

    configmaps = "/api/v1/namespaces/default/configmaps"
    for name, owners in {"owned": [owner], "shared": [owner, other], "orphan": [other]}.items():
        http.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "ownerReferences": [ref(o) for o in owners]}}, configmaps)
    http("DELETE", f"{WIDGETS}/owner")
    assert http("GET", f"{configmaps}/owned")[0] == 404
    _, shared = http("GET", f"{configmaps}/shared")
    assert [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["other"]  # dangling reference removed
    status, _ = http("DELETE", f"{WIDGETS}/other?propagationPolicy=Orphan")
    assert status == 200
    _, orphan = http("GET", f"{configmaps}/orphan")
    assert "ownerReferences" not in orphan["metadata"]


def test_garbage_collection_spares_a_recreated_namesake(http: Http) -> None:
    owner = http.create(widget("owner"))
    configmaps = "/api/v1/namespaces/default/configmaps"
    ref = {"apiVersion": API_VERSION, "kind": "Widget", "name": "owner", "uid": owner["metadata"]["uid"]}
    http.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "ownerReferences": [ref]}},
                configmaps)
    http("PATCH", f"{configmaps}/c", {"metadata": {"ownerReferences": None}},
         content_type="application/merge-patch+json")
    http("DELETE", f"{WIDGETS}/owner")
    assert http("GET", f"{configmaps}/c")[0] == 200  # no longer owned: not collected


def test_deleting_a_namespace_deletes_its_content(http: Http, server: KubeAPIServer) -> None:
    http.create(widget("a"), f"/apis/{GROUP}/{VERSION}/namespaces/doomed/widgets")
    status, namespace = http("DELETE", "/api/v1/namespaces/doomed")
    assert (status, namespace["status"]["phase"]) == (200, "Terminating")
    assert server.get(API_VERSION, PLURAL, "doomed", "a") is None
    assert server.get("v1", "namespaces", None, "doomed") is None


# --------------------------------------------------------------------------------------------------
# Discovery and CRDs.
# --------------------------------------------------------------------------------------------------

def test_discovery_describes_builtins_and_custom_resources(http: Http) -> None:
    _, api = http("GET", "/api")
    assert (api["kind"], api["versions"]) == ("APIVersions", ["v1"])
    _, core = http("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert {"namespaces", "namespaces/status", "events", "configmaps", "secrets"} <= set(by_name)
    assert by_name["namespaces"]["namespaced"] is False and by_name["configmaps"]["namespaced"] is True
    assert (by_name["configmaps"]["kind"], by_name["configmaps"]["shortNames"]) == ("ConfigMap", ["cm"])
    _, groups = http("GET", "/apis")
    names = {g["name"]: g for g in groups["groups"]}
    assert {"events.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io", GROUP} <= set(names)
    assert names[GROUP]["preferredVersion"] == {"groupVersion": API_VERSION, "version": VERSION}
    _, group = http("GET", f"/apis/{GROUP}")
    assert group["kind"] == "APIGroup" and group["versions"] == [{"groupVersion": API_VERSION, "version": VERSION}]
    _, resources = http("GET", f"/apis/{GROUP}/{VERSION}")
    assert resources["kind"] == "APIResourceList" and resources["groupVersion"] == API_VERSION
    widgets, status = resources["resources"]
    assert {k: widgets[k] for k in ("name", "singularName", "namespaced", "kind", "shortNames", "categories")} == {
        "name": "widgets", "singularName": "widget", "namespaced": True, "kind": "Widget",
        "shortNames": ["wd"], "categories": ["vigil-test"]}
    assert set(widgets["verbs"]) == {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
    assert (status["name"], status["verbs"]) == ("widgets/status", ["get", "patch", "update"])
    _, crds = http("GET", "/apis/apiextensions.k8s.io/v1")
    assert {r["name"]: r["namespaced"] for r in crds["resources"]} == {
        "customresourcedefinitions": False, "customresourcedefinitions/status": False}
    _, leases = http("GET", "/apis/coordination.k8s.io/v1")
    assert leases["resources"][0]["name"] == "leases"
    status_code, version = http("GET", "/version")
    assert status_code == 200 and version["major"] == "1"


def test_crds_posted_through_the_api_are_served_and_unserved(http: Http) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "gizmos.test.vigil.dev"
    crd["spec"]["names"] = {"kind": "Gizmo", "plural": "gizmos"}
    gizmos = f"/apis/{GROUP}/{VERSION}/namespaces/default/gizmos"
    status, created = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    assert {c["type"]: c["status"] for c in created["status"]["conditions"]} == {
        "NamesAccepted": "True", "Established": "True"}
    assert created["spec"]["names"]["listKind"] == "GizmoList"
    same = {**crd, "metadata": {**crd["metadata"], "resourceVersion": created["metadata"]["resourceVersion"]}}
    status, again = http("PUT", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.test.vigil.dev", same)
    assert (status, again) == (200, created)  # re-applying the same CRD is a no-op
    gizmo = http.create({"apiVersion": API_VERSION, "kind": "Gizmo", "metadata": {"name": "g"}, "spec": {"size": 1}},
                        gizmos)
    assert gizmo["spec"]["max"] == 5  # the new schema (with its defaults) applies at once
    status, _ = http("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.test.vigil.dev")
    assert status == 200
    assert http("GET", gizmos)[0] == 404
    _, resources = http("GET", f"/apis/{GROUP}/{VERSION}")
    assert "gizmos" not in {r["name"] for r in resources["resources"]}


def test_the_projects_own_crds_are_served() -> None:
    from vigil.api import crdgen

    crds = crdgen.all_crds()
    with KubeAPIServer(crds=crds) as srv:
        for crd in crds:
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            for version in crd["spec"]["versions"]:
                assert srv.list(f"{group}/{version['name']}", plural) == []


# --------------------------------------------------------------------------------------------------
# Clients, accessors and the server's own features.
# --------------------------------------------------------------------------------------------------

def test_the_official_kubernetes_client_works(api_client: kubernetes.client.ApiClient) -> None:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("a"))
    assert created["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "a",
                                                           {"status": {"x": "y"}})
    assert patched["status"] == {"x": "y"}
    fetched = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a")
    assert fetched == patched
    listed = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    with pytest.raises(ApiException) as raised:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("a"))
    assert raised.value.status == 409
    with pytest.raises(ApiException) as raised:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("b", size=99))
    assert raised.value.status == 422
    assert json.loads(raised.value.body)["details"]["causes"][0]["field"] == "spec.size"
    namespaces = core.list_namespace()
    assert "default" in {ns.metadata.name for ns in namespaces.items}
    core.create_namespaced_config_map("default", kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name="c"), data={"k": "v"}))
    assert core.read_namespaced_config_map("c", "default").data == {"k": "v"}
    secret = core.create_namespaced_secret("default", kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="s"), string_data={"k": "v"}))
    assert secret.data == {"k": base64.b64encode(b"v").decode()} and secret.type == "Opaque"
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a")
    with pytest.raises(ApiException) as raised:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "a")
    assert raised.value.status == 404


def test_synchronous_accessors_and_the_request_log(server: KubeAPIServer, http: Http) -> None:
    created = server.create(widget("a"))
    assert created["metadata"]["namespace"] == "default" and created["spec"]["max"] == 5
    with pytest.raises(ApiError) as raised:
        server.create(widget("b", size=99))  # the same admission as over HTTP
    assert raised.value.code == 422
    server.patch(API_VERSION, PLURAL, "default", "a", {"status": {"x": "y"}}, subresource="status")
    http("PATCH", f"{WIDGETS}/a/status", {"status": {"x": "z"}}, content_type="application/merge-patch+json")
    assert server.get(API_VERSION, PLURAL, "default", "a")["status"] == {"x": "z"}  # type: ignore[index]
    assert server.get(API_VERSION, PLURAL, "default", "nope") is None
    assert [o["metadata"]["name"] for o in server.list(API_VERSION, PLURAL)] == ["a"]
    assert server.list(API_VERSION, PLURAL, label_selector="x=y") == []
    assert server.count_requests(method="PATCH", plural=PLURAL, subresource="status") == 1
    assert server.requests[-1].status == 200
    assert len(server.handler[kmock.method.PATCH]) == 1  # kmock's own request filters work as well
    server.create({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "e-", "namespace": "default"},
                   "involvedObject": {"apiVersion": API_VERSION, "kind": "Widget", "name": "a",
                                      "namespace": "default"}, "reason": "Test", "message": "hi"})
    assert [e["message"] for e in server.events_for("Widget", "default", "a")] == ["hi"]
    server.delete(API_VERSION, PLURAL, "default", "a")
    assert server.get(API_VERSION, PLURAL, "default", "a") is None


def test_events_are_capped_to_keep_memory_bounded() -> None:
    with KubeAPIServer(max_events=3) as srv:
        for i in range(5):
            srv.create({"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e{i}"},
                        "involvedObject": {"kind": "Widget", "name": "a", "namespace": "default"}})
        assert [e["metadata"]["name"] for e in srv.events_for("Widget", "default", "a")] == ["e2", "e3", "e4"]


def test_dry_run_does_not_persist(http: Http) -> None:
    status, body = http("POST", f"{WIDGETS}?dryRun=All", widget("a"))
    assert status == 201 and body["spec"]["max"] == 5
    assert http("GET", f"{WIDGETS}/a")[0] == 404


def test_outage_answers_503_and_requires_the_token(http: Http, server: KubeAPIServer) -> None:
    server.set_unavailable(True)
    status, body = http("GET", WIDGETS)
    assert (status, body["reason"]) == (503, "ServiceUnavailable")
    server.set_unavailable(False)
    assert http("GET", WIDGETS)[0] == 200
    request = urllib.request.Request(server.url + WIDGETS)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    with raised.value:
        assert raised.value.code == 401


def test_kmock_reactions_can_inject_faults(http: Http, server: KubeAPIServer) -> None:
    server.handler[kmock.method.PATCH, kmock.subresource("status")] << 500
    http.create(widget("a"))
    request = urllib.request.Request(server.url + f"{WIDGETS}/a/status", method="PATCH", data=b"{}", headers={
        "Authorization": f"Bearer {server.token}", "Content-Type": "application/merge-patch+json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    with raised.value:
        assert raised.value.code == 500
    assert http("GET", f"{WIDGETS}/a")[0] == 200  # other requests still reach the emulator


# --------------------------------------------------------------------------------------------------
# kopf, end to end.
# --------------------------------------------------------------------------------------------------

class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_kopf_operator_runs_against_the_emulator(server: KubeAPIServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 10
        settings.networking.request_timeout = 10

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def on_create(patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        patch.status["x"] = "y"
        kopf.info(body, reason="Greeting", message="hello from kopf")

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        deleted.append(name)

    collected = _Collect()
    kopf_logger = logging.getLogger("kopf")
    kopf_logger.addHandler(collected)
    stop_flag, ready_flag = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(kopf.operator(registry=registry, clusterwide=False, namespaces=["default"], standalone=True,
                                  stop_flag=stop_flag, ready_flag=ready_flag))

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready_flag.wait(10), "kopf did not start"
        server.create(widget("w"))

        def handled() -> dict[str, Any] | None:
            obj = server.get(API_VERSION, PLURAL, "default", "w")
            return obj if obj and obj.get("status", {}).get("x") == "y" else None

        obj = wait_for(handled, what="the create handler's status patch")
        assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert obj["metadata"]["generation"] == 1  # kopf's status & metadata writes never bump it
        assert server.count_requests(method="PATCH", plural=PLURAL, name="w", subresource="status") >= 1
        wait_for(lambda: any(e["message"] == "hello from kopf" for e in server.events_for("Widget", "default", "w")),
                 what="kopf's event")

        server.delete(API_VERSION, PLURAL, "default", "w")
        wait_for(lambda: server.get(API_VERSION, PLURAL, "default", "w") is None, what="the finalized deletion")
        assert deleted == ["w"]
    finally:
        stop_flag.set()
        thread.join(10)
        kopf_logger.removeHandler(collected)
    assert not thread.is_alive()
    problems = [(r.name, r.levelname, r.getMessage()) for r in collected.records
                if r.getMessage() != "OS signals are ignored: running not in the main thread."]
    assert problems == []
