"""Issue 12, item 3: least privilege across the whole suite, from the real API server's audit log.

``make test`` runs every ``kubeapi`` test on the session's real kube-apiserver, and most of them start
``vigil run``. The operator names itself in every request (User-Agent ``vigil/<version>`` for its own
client, ``kopf/<version>`` for kopf's), so the audit log holds every call the operator made across the
suite: detection, remediation, approvals, pruning, sharding, leader election, notifications, outages.

``make test`` runs the suite on pytest-xdist workers, each with its own API server writing its audit log
into ``VIGIL_AUDIT_DIR``, then runs this test alone, on every worker's log. A plain ``pytest`` session
(no xdist) runs it last instead (tests/conftest.py moves it there) on its own server's log. Either way,
when the whole suite ran on the real server, it:

* takes every distinct call those operators made (group, resource[/subresource], verb, namespace, and
  the name for Secrets and ConfigMaps, which the chart grants by name);
* installs the chart's ServiceAccount and RBAC (cluster-wide mode, the mode those runs used; no admission
  policy) as a release of its own, with ``rbac.secretNames`` / ``rbac.configMapNames`` set to the names
  the policies and detectors referenced, as an admin would list them;
* asks the real authorizer, one SubjectAccessReview per call as that ServiceAccount, whether the chart
  allows it: none may be denied;
* fails if the chart grants a (group, resource, verb) that no run used.

Leases are left out of the SubjectAccessReviews (not out of the unused-verb check): their name and
namespace are flags the tests vary on purpose (``vigil-leader-shard-0-of-3``, selector-hashed names, a
namespace per test), which the chart sets from its own values (``shards``, ``leaderElection``). The
chart's lease rules are proven by the runs as the chart's ServiceAccount in ``test_rbac.py`` (both
modes) and ``tests/chart/test_install.py``, and its sharded lease names by ``tests/chart/test_sharding.py``.

The namespaced install mode (``watchNamespaces``) is proven by
``test_rbac.test_item10_the_real_api_server_allows_every_call_as_the_charts_service_account[namespaced]``,
which runs the operator as the chart's ServiceAccount with ``--namespace``: the suite's own runs watch
all namespaces, so their calls say nothing about the namespaced Roles.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import ssl
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.conftest import CHART_DIR, parse
from tests.conftest import AUDIT_DIR, TEST_KUBE, WORKER
from tests.realkube import RealKube, ensure_namespace
from tests.security.test_rbac import ADMISSION_ONLY, ON_CONFLICT_ONLY, grants, roles

RELEASE = NAMESPACE = "vigil-suite"
#: Resources the chart grants by name (``resourceNames``): their calls keep the name.
BY_NAME = {"secrets", "configmaps"}
#: Asked about elsewhere (see the module docstring): names and namespaces the tests vary on purpose.
NOT_REVIEWED = {"leases"}
OPERATOR_AGENTS = ("vigil/", "kopf/")


def whole_suite(config: pytest.Config) -> bool:
    """Whether this session runs every test of the suite: no paths, ``-k``, ``-m`` or ``--deselect``."""
    return (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.option.keyword
            and not config.option.markexpr and not config.option.deselect and not getattr(config.option, "lf", False))


def run_before() -> list[dict[str, Any]]:
    """The operator's calls from the audit logs of the run `make test` made before this one (every xdist
    worker's real API server wrote its own into ``VIGIL_AUDIT_DIR``); skips unless that run was whole."""
    directory = pathlib.Path(AUDIT_DIR)
    record = directory / "suite.json"
    if not record.exists():
        pytest.skip(f"no suite.json in VIGIL_AUDIT_DIR={AUDIT_DIR}: the suite did not run before this")
    ran = json.loads(record.read_text())
    if not ran["whole"]:
        pytest.skip(f"the run before was not the whole suite (-m {ran['markexpr']!r}, a path or -k)")
    logs = sorted(directory.glob("*.audit.log"))
    events = []
    for log in logs:
        events += [json.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    return operator_calls(events)


def operator_calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Resource requests made by `vigil run` (its own client or kopf's), as any user."""
    return [e for e in events if str(e.get("userAgent", "")).startswith(OPERATOR_AGENTS)
            and "resource" in (e.get("objectRef") or {})]


def call_of(event: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """(group, resource, subresource, verb, namespace, name) as RBAC sees the request."""
    ref = event["objectRef"]
    name = ref.get("name", "") if ref["resource"] in BY_NAME else ""
    return (ref.get("apiGroup") or "", ref["resource"], ref.get("subresource") or "", event["verb"],
            ref.get("namespace") or "", name)


class Reviewer:
    """SubjectAccessReviews over one kept-alive connection (thousands of calls, a few ms each)."""

    def __init__(self, kube: RealKube) -> None:
        host, port = kube.url.removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(kube.ca_path))
        self._connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        self._token = kube.admin_token

    def allowed(self, user: str, groups: list[str], call: tuple[str, str, str, str, str, str]) -> bool:
        group, resource, subresource, verb, namespace, name = call
        attributes = {"group": group, "resource": resource, "subresource": subresource, "verb": verb,
                      "namespace": namespace, "name": name}
        body = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                           "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}})
        self._connection.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body,
                                 headers={"Authorization": f"Bearer {self._token}",
                                          "Content-Type": "application/json"})
        response = self._connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 201, answer
        return bool(answer["status"].get("allowed"))

    def close(self) -> None:
        self._connection.close()


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.mark.suite_last
def test_the_chart_allows_every_call_the_suite_made_and_grants_nothing_unused(
        request: pytest.FixtureRequest, chart: helm.Chart) -> None:
    if TEST_KUBE != "real":
        pytest.skip("the suite ran on the emulator (VIGIL_TEST_KUBE=emulator): no audit log to read")
    if AUDIT_DIR:
        events = run_before()
    elif WORKER:
        pytest.skip("under pytest-xdist the other workers may still run: `make test` runs this after the suite")
    elif not whole_suite(request.config):
        pytest.skip("needs the whole suite (`make test`): a part of it does not use every verb the chart grants")
    kube: RealKube = request.getfixturevalue("real_kube")
    if not AUDIT_DIR:
        events = operator_calls(kube.audit_events())
    assert len(events) > 1000, f"only {len(events)} operator requests in the audit log: did the suite run?"
    calls = {call_of(e) for e in events}

    secrets = sorted({c[5] for c in calls if c[1] == "secrets" and c[5]})
    configmaps = sorted({c[5] for c in calls if c[1] == "configmaps" and c[5]})
    # A release of its own: its names cannot meet those of the tests that install the chart.
    values = {"rbac": {"secretNames": secrets, "configMapNames": configmaps}, "admissionPolicy": {"enabled": False}}
    objects = parse(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))
    installed = [o for o in objects if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                      "Role", "RoleBinding")]
    text = yaml.safe_dump_all(installed)
    ensure_namespace(kube, NAMESPACE)
    kube.kubectl("apply", "-f", "-", input=text)
    user = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]
    reviewer = Reviewer(kube)
    try:
        reviewed = {c for c in calls if c[1] not in NOT_REVIEWED}
        denied = sorted(c for c in reviewed if not reviewer.allowed(user, groups, c))
    finally:
        reviewer.close()
        kube.kubectl("delete", "--ignore-not-found", "-f", "-", input=text)
    assert not denied, (f"the chart forbids {len(denied)} of the {len(reviewed)} distinct calls the operator made "
                        f"in the suite (group, resource, subresource, verb, namespace, name): {denied[:40]}")

    used = {(g, f"{r}/{s}" if s else r, v) for g, r, s, v, _, _ in calls}
    operator_subject = {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
    bound = {b["roleRef"]["name"] for b in installed
             if b["kind"] in ("ClusterRoleBinding", "RoleBinding") and operator_subject in b["subjects"]}
    granted = set().union(*(grants(r) for r in roles(installed) if r["metadata"]["name"] in bound))
    unused = granted - used - ADMISSION_ONLY - ON_CONFLICT_ONLY
    assert not unused, f"the chart grants verbs no operator run in the suite used: {sorted(unused)}"
