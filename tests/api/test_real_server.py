"""The CRDs, the examples and the documented validation messages, on a real kube-apiserver.

The emulator (vigil_sandbox.kubeapi) is what most tests run on; these tests check the same things on
the real server (tests/realkube.py), and that both answer a bad spec with the same message, so the
emulator cannot drift from what users get. Differences found are listed in docs/kube-real-vs-emulator.md.
"""

from __future__ import annotations

import json
import pathlib
import re
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.realkube import RealKube, ensure_namespace, install_crds, remediation_action
from tests.sandbox.test_kubeapi import SCHEMA_CASES, WIDGET_CRD, WIDGETS, widget
from vigil.api import crdgen
from vigil.api.v1alpha1.action import RemediationActionSpec
from vigil.api.v1alpha1.detector import AnomalyDetectorSpec
from vigil.api.v1alpha1.policy import RemediationPolicySpec
from vigil_sandbox.kubeapi import ApiError, KubeAPIServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
#: Files of examples/ that hold Kubernetes objects (alertmanager-receiver.yaml is Alertmanager's config).
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml"))
            if all(isinstance(d, dict) and "apiVersion" in d and "kind" in d
                   for d in yaml.safe_load_all(p.read_text()) if d)]
MODELS: dict[str, Any] = {"AnomalyDetector": AnomalyDetectorSpec, "RemediationPolicy": RemediationPolicySpec}
GROUP = "vigil.dev"


@pytest.fixture(scope="module")
def kube(real_kube: RealKube) -> RealKube:
    """The real server with the project's CRDs, Established, and the namespaces these tests use."""
    install_crds(real_kube)
    for namespace in ("shop", "bad-specs", "printer"):
        ensure_namespace(real_kube, namespace)
    return real_kube


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(crds=crdgen.all_crds()) as server:
        yield server


@pytest.mark.parametrize("path", CRDS, ids=[p.name for p in CRDS])
def test_every_crd_is_accepted_without_warnings_and_established(real_kube: RealKube, path: pathlib.Path) -> None:
    applied = real_kube.kubectl("apply", "-f", str(path))
    # The real server warns about schema parts it ignores or finds dubious (unknown formats, ...): none.
    assert "Warning" not in applied.stderr, applied.stderr
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    real_kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    crd = json.loads(real_kube.kubectl("get", f"crd/{name}", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}, crd["status"]
    # The server keeps the schema as we wrote it: nothing was pruned or rewritten on the way in.
    committed = yaml.safe_load(path.read_text())
    assert crd["spec"]["versions"] == committed["spec"]["versions"]


def _objects(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("mode", ["client-side", "server-side"])
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies(kube: RealKube, path: pathlib.Path, mode: str) -> None:
    flags = ["--server-side", "--field-manager=vigil-test"] if mode == "server-side" else []
    try:
        applied = kube.kubectl("apply", *flags, "-f", str(path))
        assert "Warning" not in applied.stderr, applied.stderr
        for doc in _objects(path):
            kind, name = doc["kind"], doc["metadata"]["name"]
            namespace = doc["metadata"].get("namespace", "default")
            stored = json.loads(kube.kubectl("get", kind, name, "-n", namespace, "-o", "json",
                                             "--show-managed-fields").stdout)
            if kind in MODELS:
                # what the server stored (with its schema defaults) is what the operator can read
                MODELS[kind].model_validate(stored["spec"])
                if mode == "server-side":
                    managers = {m["manager"] for m in stored["metadata"]["managedFields"]}
                    assert "vigil-test" in managers, managers
    finally:
        kube.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", str(path))


def test_schema_defaults_are_applied_by_the_real_server(kube: RealKube) -> None:
    body = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "AnomalyDetector",
            "metadata": {"name": "defaults", "namespace": "bad-specs"}, "spec": {"query": "up"}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(body))
    stored = json.loads(kube.kubectl("get", "ad", "defaults", "-n", "bad-specs", "-o", "json").stdout)
    kube.kubectl("delete", "ad", "defaults", "-n", "bad-specs")
    assert stored["spec"]["interval"] == "60s"
    assert stored["spec"]["missingData"] == "ignore"


def test_kubectl_get_shows_the_printer_columns(kube: RealKube) -> None:
    detector = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "AnomalyDetector",
                "metadata": {"name": "web-cpu", "namespace": "printer"}, "spec": {"query": "up"}}
    policy = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "RemediationPolicy",
              "metadata": {"name": "web-scale-out", "namespace": "printer"},
              "spec": {"detectors": ["web-cpu"], "actions": [
                  {"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "max": 12}}],
                       "aws": {"region": "eu-west-1"}}}
    action = remediation_action("web-scale-out-1", "printer")
    RemediationActionSpec.model_validate(action["spec"])
    for body in (detector, policy, action):
        kube.kubectl("apply", "-f", "-", input=json.dumps(body))
    shown = kube.kubectl("get", "ad,rp,ra", "-n", "printer").stdout
    headers = [line.split() for line in shown.splitlines() if line.startswith("NAME")]
    assert headers == [
        ["NAME", "SCORE", "ANOMALOUS", "READY", "LAST-EVAL", "AGE"],
        ["NAME", "PHASE", "ALLOWED", "REASON", "LAST-ACTION", "DRY-RUN", "AGE"],
        ["NAME", "POLICY", "STEP", "PHASE", "DRY-RUN", "AGE"],
    ], shown
    assert re.search(r"web-scale-out-1\s+web-scale-out\s+scale-out\s+.*false", shown), shown
    wide = kube.kubectl("get", "ra", "-n", "printer", "-o", "wide").stdout
    assert "MESSAGE" in wide.splitlines()[0], wide  # priority-1 column, only with -o wide


def test_kubectl_explain_describes_the_fields(kube: RealKube) -> None:
    explained = kube.kubectl("explain", "anomalydetector.spec.query").stdout
    assert "FIELD: query <string>" in explained, explained
    description = AnomalyDetectorSpec.model_fields["query"].description
    assert description and description.split()[0] in explained, explained
    short = kube.kubectl("explain", "ra.spec.step").stdout
    assert "scaleAutoScalingGroup" in short, short


#: Bad specs: (kind, spec, the message the real server must answer). The CEL messages are the ones the
#: models declare (and README.md paraphrases); the field messages are the API server's own.
BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("AnomalyDetector", {"query": "up", "threshold": 2},
     "spec.threshold: Invalid value: 2: spec.threshold in body should be less than or equal to 1"),
    ("AnomalyDetector", {"query": "up", "interval": "5 minutes"}, "spec.interval: Invalid value: \"5 minutes\""),
    ("AnomalyDetector", {"interval": "1m"}, "spec.query: Required value"),
    ("AnomalyDetector", {"query": "up", "missingData": "maybe"},
     'spec.missingData: Unsupported value: "maybe": supported values: "ignore", "alert"'),
    ("AnomalyDetector", {"query": "up", "model": {"builtin": "default", "configMapRef": {"name": "m", "key": "k"}}},
     "model: set either builtin or configMapRef, not both"),
    ("AnomalyDetector", {"query": "up", "interval": "0s"}, 'spec.interval: Invalid value: "0s"'),
    ("RemediationPolicy", {"actions": [{"scaleAutoScalingGroup": {"name": "web", "by": 1, "max": 3}}],
                           "aws": {"region": "eu-west-1"}},
     "set detectorSelector, detectors or alertSelector: something must trigger the policy"),
    ("RemediationPolicy", {"detectors": ["a"], "actions": [{"name": "none"}], "aws": {"region": "eu-west-1"}},
     "each step of actions must set exactly one of"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"}, "actions": [
        {"rebootInstances": {"targets": {"fromLabel": "instance"}},
         "runCommand": {"commands": ["true"], "targets": {"fromLabel": "instance"}}}]},
     "each step of actions must set exactly one of"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"},
                           "actions": [{"scaleAutoScalingGroup": {"name": "web", "by": 1, "to": 2, "max": 3}}]},
     "scaleAutoScalingGroup needs exactly one of by or to, and min <= max"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"},
                           "actions": [{"scaleAutoScalingGroup": {"name": "web", "max": 3}}]},
     "scaleAutoScalingGroup needs exactly one of by or to, and min <= max"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"},
                           "actions": [{"scaleAutoScalingGroup": {"name": "web", "by": 1, "min": 5, "max": 3}}]},
     "scaleAutoScalingGroup needs exactly one of by or to, and min <= max"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"}, "blastRadius": {},
                           "actions": [{"rebootInstances": {"targets": {"fromLabel": "instance"}}}]},
     "blastRadius needs maxInstances or maxPercent"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"},
                           "actions": [{"rebootInstances": {"targets": {}}}]},
     "targets need fromLabel or instanceIds"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"},
                           "actions": [{"rebootInstances": {"targets": {"fromLabel": "instance"}}, "restore": {}}]},
     "restore is only allowed on a scaleAutoScalingGroup step"),
    ("RemediationPolicy", {"detectors": ["a"], "aws": {"region": "eu-west-1"},
                           "actions": [{"scaleAutoScalingGroup": {"name": "web", "by": 1, "max": 3},
                                        "restore": {"step": 0}}]},
     "spec.actions[0].restore.step"),
]
PLURALS = {"AnomalyDetector": "anomalydetectors", "RemediationPolicy": "remediationpolicies"}


def _bad(kind: str, spec: dict[str, Any], index: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": kind,
            "metadata": {"name": f"bad-{index}", "namespace": "bad-specs"}, "spec": spec}


@pytest.mark.parametrize(("index", "kind", "spec", "message"),
                         [(i, *case) for i, case in enumerate(BAD_SPECS)], ids=[str(i) for i in range(len(BAD_SPECS))])
def test_bad_specs_are_rejected_with_the_documented_message(kube: RealKube, emulator: KubeAPIServer, index: int,
                                                            kind: str, spec: dict[str, Any], message: str) -> None:
    body = _bad(kind, spec, index)
    status, answer = kube.request("POST", f"/apis/{GROUP}/v1alpha1/namespaces/bad-specs/{PLURALS[kind]}", body)
    assert (status, answer.get("reason")) == (422, "Invalid"), answer
    assert message in answer["message"], answer["message"]
    # the emulator answers the same, word for word
    with pytest.raises(ApiError) as refused:
        emulator.create(body)
    assert refused.value.code == 422
    assert refused.value.message == answer["message"]


@pytest.fixture(scope="module")
def widgets(real_kube: RealKube) -> RealKube:
    """The emulator's own test CRD (tests/sandbox/test_kubeapi.py), on the real server."""
    real_kube.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    real_kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{WIDGET_CRD['metadata']['name']}")
    return real_kube


@pytest.mark.parametrize(("spec", "message"), SCHEMA_CASES, ids=[str(i) for i in range(len(SCHEMA_CASES))])
def test_the_emulators_schema_messages_are_the_real_servers(widgets: RealKube, spec: dict[str, Any],
                                                            message: str) -> None:
    """Each message tests/sandbox/test_kubeapi.py expects from the emulator is the real server's too."""
    body = widget("bad")
    body["spec"] = spec
    status, answer = widgets.request("POST", WIDGETS, body)
    assert (status, answer["reason"]) == (422, "Invalid"), answer
    cause = answer["details"]["causes"][0]
    assert f'{cause["field"]}: {cause["message"]}' == message


def test_cel_transition_rules_and_skipped_rules_read_the_same(widgets: RealKube, emulator: KubeAPIServer) -> None:
    emulator.register_crd(WIDGET_CRD)
    for server in (widgets, emulator):
        if isinstance(server, RealKube):
            server.request("POST", WIDGETS, widget("fixed", fixed="one"))
        else:
            server.create(widget("fixed", fixed="one"))
    status, immutable = widgets.request("PATCH", f"{WIDGETS}/fixed", {"spec": {"fixed": "two"}},
                                        content_type="application/merge-patch+json")
    assert status == 422
    with pytest.raises(ApiError) as refused:
        emulator.patch(WIDGET_CRD["spec"]["group"] + "/v1", "widgets", "default", "fixed", {"spec": {"fixed": "two"}})
    assert refused.value.message == immutable["message"]
    status, skipped = widgets.request("POST", WIDGETS, widget("bad", size=11, mode="warp"))
    assert status == 422
    with pytest.raises(ApiError) as refused:
        emulator.create(widget("bad", size=11, mode="warp"))
    # The real server lists several schema errors in no fixed order (it walks Go maps); the emulator in
    # the schema's: the same causes, and the same message up to that order.
    real_causes = skipped["details"]["causes"]
    assert sorted(map(str, refused.value.details["causes"])) == sorted(map(str, real_causes))  # type: ignore[index]
    assert len(refused.value.message) == len(skipped["message"])
    assert real_causes[-1] == {"reason": "FieldValueInvalid", "field": "<nil>", "message": (
        "Invalid value: null: some validation rules were not checked because the object was invalid; correct the "
        "existing errors to complete validation")}


def test_remediation_action_spec_is_immutable(kube: RealKube, emulator: KubeAPIServer) -> None:
    action = remediation_action("immutable", "bad-specs")
    kube.kubectl("apply", "-f", "-", input=json.dumps(action))
    path = f"/apis/{GROUP}/v1alpha1/namespaces/bad-specs/remediationactions/immutable"
    patch = {"spec": {"region": "us-east-1"}}
    status, answer = kube.request("PATCH", path, patch, content_type="application/merge-patch+json")
    assert status == 422, answer
    assert "spec is immutable: it is the audit record of a decision" in answer["message"], answer
    emulator.create(action)
    with pytest.raises(ApiError) as refused:
        emulator.patch(f"{GROUP}/v1alpha1", "remediationactions", "bad-specs", "immutable", patch)
    assert refused.value.message == answer["message"]


def test_audit_log_records_every_request_with_its_user(kube: RealKube) -> None:
    kube.kubectl("get", "ad", "-n", "bad-specs")
    events = kube.audit_events()
    lists = [e for e in events if e["verb"] == "list" and e["objectRef"].get("resource") == "anomalydetectors"
             and e["objectRef"].get("namespace") == "bad-specs"]
    assert lists and lists[-1]["user"]["username"] == "vigil-admin", lists[-1:]
    assert all(e["level"] == "Metadata" for e in events)


def test_a_watch_from_before_the_watch_cache_window_gets_410_gone(kube: RealKube) -> None:
    """kube-apiserver serves watches from its watch cache (as in any cluster): a resourceVersion older than
    the cache's window, here one from before the resource existed, is answered 410 Expired."""
    old = json.loads(kube.kubectl("create", "configmap", "before-crd", "-n", "bad-specs", "-o", "json").stdout)
    crd = yaml.safe_load((ROOT / "crds" / "vigil.dev_anomalydetectors.yaml").read_text())
    crd["metadata"]["name"] = "watchtests.test.vigil.dev"
    crd["spec"]["group"] = "test.vigil.dev"
    crd["spec"]["names"] = {"plural": "watchtests", "singular": "watchtest", "kind": "WatchTest",
                            "listKind": "WatchTestList"}
    kube.kubectl("apply", "-f", "-", input=json.dumps(crd))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/watchtests.test.vigil.dev")
    try:
        version = old["metadata"]["resourceVersion"]
        events = kube.watch(f"/apis/test.vigil.dev/v1alpha1/namespaces/bad-specs/watchtests?resourceVersion={version}")
    finally:
        kube.kubectl("delete", "crd", "watchtests.test.vigil.dev")
        kube.kubectl("delete", "configmap", "before-crd", "-n", "bad-specs")
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [("ERROR", 410, "Expired")]
    assert events[0]["object"]["message"].startswith(f"too old resource version: {version} ("), events


def test_etcd_compaction_removes_old_revisions(kube: RealKube) -> None:
    before = kube.etcd_revision()
    kube.kubectl("create", "configmap", "compacted", "-n", "bad-specs")
    kube.kubectl("delete", "configmap", "compacted", "-n", "bad-specs")
    compacted = kube.compact()
    assert compacted > before
    with pytest.raises(urllib.error.HTTPError) as gone:
        kube.etcd_range(revision=before)
    with gone.value:
        assert "required revision has been compacted" in gone.value.read().decode()
