"""Fixtures for the ChatOps tests.

Ask Vigil: the recorded incident, a reader on the API server, and the LLM peer. The API server is the
``kubeapi`` fixture: the emulator by default, the real kube-apiserver with ``VIGIL_TEST_KUBE=real``. The
LLM is the scripted local server (tests/chatops/llm_server.py), or a real provider when
``VIGIL_TEST_LLM_BASE_URL``, ``VIGIL_TEST_LLM_MODEL`` (and ``VIGIL_TEST_LLM_KEY``) are set: then the
assertions that depend on the script are skipped and the rest run unchanged.

Approving from chat: the chart's RBAC and admission policy on a real kube-apiserver, and ``vigil chatops``
as a process.

The chart is rendered with ChatOps on and :data:`IDENTITIES` as its identity map; its ServiceAccounts,
ClusterRoles, bindings and ValidatingAdmissionPolicy are applied to the real server (tests/realkube.py).
The component runs as the chart's ``vigil-chatops`` ServiceAccount (a TokenRequest token), reading the
identity map the chart's ConfigMap holds, so what it may do is exactly what the chart grants: read
Vigil objects and impersonate the mapped users and groups. People's rights come from a RoleBinding
of the chart's ``vigil-approver`` ClusterRole to the group ``sre`` in each test namespace.

RemediationActions are created as the operator's ServiceAccount would (create, then the status
subresource to ``PendingApproval``): the operator itself acting on an approval is tested elsewhere.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.conftest import CHART_DIR, NAMESPACE, RELEASE, Manifest, parse, render_text
from tests.chatops import incident
from tests.harness import ROOT, wait_for
from tests.realkube import RealKube, ensure_namespace, install_crds, remediation_action
from vigil.adapters import kubeaccess
from vigil.chatops import kubeio
from vigil.chatops.llm import LLMConfig
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.ports import free_port

REAL_LLM_URL = os.environ.get("VIGIL_TEST_LLM_BASE_URL", "")
REAL_LLM_MODEL = os.environ.get("VIGIL_TEST_LLM_MODEL", "")
REAL_LLM_KEY = os.environ.get("VIGIL_TEST_LLM_KEY", "")
#: True when the tests talk to a real provider: scripted-only assertions are skipped.
REAL_LLM = bool(REAL_LLM_URL and REAL_LLM_MODEL)

#: The fake key the scripted tests send: it must reach the server as a Bearer token and nowhere else.
FAKE_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


@pytest.fixture
def recorded(kubeapi: KubeAPIServer) -> incident.Incident:
    return incident.seed(kubeapi, "default")


@pytest.fixture
def transport(kubeapi: KubeAPIServer, tmp_path: pathlib.Path) -> Iterator[kubeio.Transport]:
    config = kubeapi.write_kubeconfig(tmp_path / "kubeconfig")
    opened = kubeio.Transport(kubeaccess.load(str(config), in_cluster_first=False), timeout=10)
    yield opened
    opened.close()


@pytest.fixture
def reader(transport: kubeio.Transport) -> kubeio.ApiReader:
    return kubeio.ApiReader(transport)


def writes(kubeapi: KubeAPIServer, plural: str | None = None) -> int:
    """Requests that change something (create, update, patch, delete), of ``plural`` or of anything."""
    return sum(kubeapi.count_requests(method=method, plural=plural) for method in ("POST", "PUT", "PATCH", "DELETE"))


def real_llm_config(**budgets: object) -> LLMConfig:
    return LLMConfig(base_url=REAL_LLM_URL, model=REAL_LLM_MODEL, api_key=REAL_LLM_KEY, **budgets)  # type: ignore[arg-type]


CHATOPS_SA = f"{RELEASE}-chatops"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
CHATOPS_USER = f"system:serviceaccount:{NAMESPACE}:{CHATOPS_SA}"
RAS = "/apis/vigil.dev/v1alpha1/namespaces/{ns}/remediationactions"
APPROVERS_GROUP = "sre"
DISCORD_ALICE = "80351110224678912"
DISCORD_ONCALL_ROLE = "41771983423143936"

IDENTITIES: dict[str, list[dict[str, Any]]] = {
    "slack": [
        {"user": "U0ALICE", "as": {"user": "alice@example.com", "groups": [APPROVERS_GROUP]}},
        # mapped, but nothing in RBAC lets bob approve: Kubernetes says no, not Vigil
        {"user": "U0BOB", "as": {"user": "bob@example.com"}},
        {"group": "S0ONCALL", "as": {"user": "slack-oncall", "groups": [APPROVERS_GROUP]}},
    ],
    "discord": [
        {"user": DISCORD_ALICE, "as": {"user": "alice@example.com", "groups": [APPROVERS_GROUP]}},
        {"role": DISCORD_ONCALL_ROLE, "as": {"user": "discord-oncall", "groups": [APPROVERS_GROUP]}},
    ],
}
APPLIED_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


class Cluster:
    """The real server with the chart's objects, and the tokens and files the tests need."""

    def __init__(self, kube: RealKube, workdir: pathlib.Path, identities_yaml: str) -> None:
        self.kube = kube
        self.operator_token = self._token(RELEASE)
        self.chatops_kubeconfig = kube.write_kubeconfig(workdir / "chatops.kubeconfig", self._token(CHATOPS_SA),
                                                        user="chatops")
        self.identity_map = workdir / "identities.yaml"
        self.identity_map.write_text(identities_yaml)

    def _token(self, account: str) -> str:
        return self.kube.kubectl("create", "token", account, "-n", NAMESPACE, "--duration=1h").stdout.strip()

    def namespace(self, name: str) -> str:
        """A namespace where the group ``sre`` holds the chart's approver role."""
        ensure_namespace(self.kube, name)
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "sre-approvers", "namespace": name},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": f"{RELEASE}-approver"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": APPROVERS_GROUP}]}
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(binding))
        wait_for(lambda: self.kube.kubectl("auth", "can-i", "approve", "remediationactions.vigil.dev", "-n", name,
                                           "--as", "alice@example.com", "--as-group", APPROVERS_GROUP,
                                           check=False).returncode == 0,
                 timeout=30, what="the approver binding")
        return name

    def pending(self, namespace: str, name: str, policy: str = "web-scale-out") -> dict[str, Any]:
        """A RemediationAction waiting for approval, written as the operator's ServiceAccount writes one."""
        body = remediation_action(name, namespace, policy)
        body["metadata"]["annotations"] = {"vigil.dev/provenance": "policy-uid=00000000-0000-0000-0000-000000000001"}
        status, created = self.kube.request("POST", RAS.format(ns=namespace), body, token=self.operator_token)
        assert status == 201, created
        expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        status, written = self.kube.request(
            "PATCH", RAS.format(ns=namespace) + f"/{name}/status",
            {"status": {"phase": "PendingApproval", "expiresAt": expires,
                        "message": "waiting for approval"}},
            token=self.operator_token, content_type="application/merge-patch+json")
        assert status == 200, written
        return written

    def action(self, namespace: str, name: str) -> dict[str, Any]:
        status, body = self.kube.request("GET", RAS.format(ns=namespace) + f"/{name}")
        assert status == 200, body
        return body

    def annotations(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.action(namespace, name)["metadata"].get("annotations") or {})

    def audit(self, namespace: str, name: str, verb: str = "patch") -> list[dict[str, Any]]:
        """The audit log's records of ``verb`` on this action (not its status)."""
        return [e for e in self.kube.audit_events()
                if e.get("verb") == verb and (e.get("objectRef") or {}).get("name") == name
                and (e.get("objectRef") or {}).get("namespace") == namespace
                and (e.get("objectRef") or {}).get("resource") == "remediationactions"
                and not (e.get("objectRef") or {}).get("subresource")]


def _render(values: dict[str, Any]) -> list[Manifest]:
    with helm.Chart.load(CHART_DIR) as chart:
        return parse(render_text(chart, values))


@pytest.fixture(scope="module")
def cluster(real_kube: RealKube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    install_crds(real_kube)
    ensure_namespace(real_kube, NAMESPACE)
    objects = _render({"chatops": {"enabled": True, "identities": IDENTITIES,
                                  "slack": {"existingSecret": "chat-slack", "channel": "C0APPROVALS"},
                                  "discord": {"existingSecret": "chat-discord", "channel": "1200000000000000001"}}})
    applied = [o for o in objects if o["kind"] in APPLIED_KINDS]
    real_kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(applied))
    config_map = next(o for o in objects
                      if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{CHATOPS_SA}-identities")
    cluster = Cluster(real_kube, tmp_path_factory.mktemp("chatops"), config_map["data"]["identities.yaml"])
    # The policy is compiled and loaded asynchronously: wait until it refuses the admin's dry run.
    probe = json.dumps(remediation_action("probe", NAMESPACE))
    wait_for(lambda: real_kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                       check=False).returncode != 0, timeout=30, what="the policy in force")
    yield cluster
    # Module scope: other tests on this server create RemediationActions as admin, which the policy refuses.
    policies = [o for o in applied if o["kind"].startswith("ValidatingAdmissionPolicy")]
    real_kube.kubectl("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(policies))
    wait_for(lambda: real_kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                       check=False).returncode == 0, timeout=30, what="the policy gone")


class ChatopsProcess:
    """``python -m vigil chatops`` in a subprocess, its log in a file; ready once its board made a pass."""

    def __init__(self, cluster: Cluster, workdir: pathlib.Path, args: Sequence[str], name: str = "chatops",
                 kubeconfig: pathlib.Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        kubeconfig = kubeconfig or cluster.chatops_kubeconfig
        self.command = [sys.executable, "-m", "vigil", "chatops", "--kubeconfig", str(kubeconfig),
                        "--identity-map", str(cluster.identity_map), "--http-host", "127.0.0.1",
                        "--http-port", str(self.port), "--poll-interval", "0.5",
                        "--conversation-namespace", NAMESPACE, *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChatopsProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "VIGIL_", "SLACK_"))}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        try:
            wait_for(self._ready, timeout=60, what="vigil chatops /readyz")
        except BaseException:
            self.stop()
            raise AssertionError(f"vigil chatops not ready:\n{self.log()[-3000:]}") from None
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"vigil chatops exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def secret_file(directory: pathlib.Path, name: str, value: str) -> str:
    """A token as a mounted Secret file (0600)."""
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)
