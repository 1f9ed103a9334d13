"""Issue 12, item 2: the chart installed for real, then the operator run as its ServiceAccount.

``helm install`` of charts/vigil into a real kube-apiserver (tests/realkube.py) through helm-python-sdk,
which embeds Helm v4: CRDs from the chart's crds/, then every template, recorded as a Helm release. There
is no kubelet (nor controller-manager), so the Deployment's pod never starts: the test runs the pod's
command itself, ``vigil run`` as a process (tests/harness.py), with the container's arguments and
environment taken from the installed Deployment, the ServiceAccount's token (TokenRequest, ``kubectl
create token``) in its kubeconfig and the provenance key read back from the Secret the chart mounts.
Prometheus and moto (through the fault proxy) are real, as in tests/integration/.

A person bound to the ``<fullname>-approver`` ClusterRole approves the action with ``kubectl annotate``
under their own token; the admission policy lets that through and refuses their hand-made action.
"""

from __future__ import annotations

import base64
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.conftest import CHART_DIR
from tests.conftest import detector
from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import aws_world, scenario
from tests.integration.aws_world import Moto
from tests.realkube import TEST_USER, RealKube, RealKubeAPI, ensure_namespace, remediation_action, wait_crds_served
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.prometheus import PrometheusServer

RELEASE = "vigil-live"  # contains "vigil": the full name is the release name
NAMESPACE = "vigil-live"
TEAM = "shop"
PROVENANCE = f"{RELEASE}-provenance"
INCIDENT = 'nab_cpu{scenario="incident"}'
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
RA = ("vigil.dev/v1alpha1", "remediationactions")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident")) as server:
        yield server


def operator_process(manifest: list[dict[str, Any]], config: pathlib.Path, key_file: pathlib.Path,
                     workdir: pathlib.Path, *extra: str) -> OperatorProcess:
    """``vigil run`` as the installed Deployment's container would run it: its args and env, the
    downward API resolved as the kubelet would, the mounted provenance key at ``key_file``."""
    deployment = next(o for o in manifest if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    fields = {"metadata.name": f"{RELEASE}-0", "metadata.namespace": NAMESPACE}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    assert env["VIGIL_PROVENANCE_KEY_FILE"].startswith("/etc/vigil/provenance/")
    env["VIGIL_PROVENANCE_KEY_FILE"] = str(key_file)
    return OperatorProcess(config, workdir, [*container.get("args", []), *extra], env, name="chart-operator")


def _status(kube: RealKube, namespace: str) -> list[tuple[str, str]]:
    items = RealKubeAPI(kube).list(*RA, namespace)
    return [(a["metadata"]["name"], (a.get("status") or {}).get("phase", "")) for a in items]


@pytest.mark.slow
def test_helm_install_then_the_operator_runs_as_the_charts_service_account(
        real_kube: RealKube, moto: Moto, prometheus: PrometheusServer, tmp_path: pathlib.Path) -> None:
    began = time.monotonic()
    for namespace in (NAMESPACE, TEAM):
        ensure_namespace(real_kube, namespace)
    real_kube.kubectl("create", "secret", "generic", PROVENANCE, "-n", NAMESPACE,
                      f"--from-literal=key={os.urandom(32).hex()}")
    values = {"admissionPolicy": {"enabled": True}, "provenance": {"existingSecret": PROVENANCE},
              "alertmanager": {"enabled": False}}
    api = RealKubeAPI(real_kube)
    operator: OperatorProcess | None = None
    with helm.Config(kubeconfig_path=real_kube.kubeconfig, namespace=NAMESPACE) as helm_config:
        try:
            with helm.Chart.load(CHART_DIR) as chart:
                release = helm_config.install(chart, RELEASE, values, namespace=NAMESPACE, timeout=120)
            manifest = [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]
            # The release is recorded as Helm records it (a Secret in the release namespace) and every
            # object of it is in the server.
            assert release["status"] == "deployed" and helm_config.status(RELEASE)["status"] == "deployed"
            for obj in manifest:
                namespaced = ["-n", obj["metadata"].get("namespace") or NAMESPACE] \
                    if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                                           "ValidatingAdmissionPolicyBinding") else []
                real_kube.kubectl("get", obj["kind"], obj["metadata"]["name"], *namespaced)
            wait_crds_served(real_kube)
            kinds = {o["kind"] for o in manifest}
            assert {"Deployment", "ServiceAccount", "ClusterRole", "ValidatingAdmissionPolicy"} <= kinds

            # The pod's inputs, as the kubelet would give them: a TokenRequest token, the Secret's key.
            token = real_kube.kubectl("create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h").stdout.strip()
            config = real_kube.write_kubeconfig(tmp_path / "operator.kubeconfig", token, user="operator")
            secret = real_kube.kubectl("get", "secret", PROVENANCE, "-n", NAMESPACE, "-o", "yaml").stdout
            key_file = tmp_path / "provenance-key"
            key_file.write_bytes(base64.b64decode(yaml.safe_load(secret)["data"]["key"]))

            # An approver: the unprivileged user, bound to the chart's approver ClusterRole in the team's
            # namespace, and (as a namespace editor would be) allowed by RBAC to create actions.
            real_kube.kubectl("create", "rolebinding", "approvers", "-n", TEAM,
                              f"--clusterrole={RELEASE}-approver", f"--user={TEST_USER}")
            real_kube.kubectl("create", "role", "action-editor", "-n", TEAM, "--verb=create",
                              "--resource=remediationactions.vigil.dev")
            real_kube.kubectl("create", "rolebinding", "action-editor", "-n", TEAM, "--role=action-editor",
                              f"--user={TEST_USER}")
            user = real_kube.write_kubeconfig(tmp_path / "user.kubeconfig", real_kube.user_token, user=TEST_USER,
                                              namespace=TEAM)

            moto.reset()
            estate = aws_world.build(moto, namespace=TEAM)
            with FaultProxy(moto.url) as proxy:
                operator = operator_process(manifest, config, key_file, tmp_path, "--prometheus-url",
                                            prometheus.url, "--aws-endpoint-url", proxy.url).start()
                body = detector("cpu", INCIDENT, TEAM, interval="1s", step="5m")
                body["metadata"]["labels"] = {"app": "web"}  # type: ignore[index]
                api.create(body)
                api.create({"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
                            "metadata": {"name": "web", "namespace": TEAM},
                            "spec": {"detectorSelector": {"matchLabels": {"app": "web"}},
                                     "actions": [{"name": "scale-web", "after": "0s", "scaleAutoScalingGroup":
                                                  {"name": "web", "by": 1, "min": 1, "max": 10}}],
                                     "aws": {"region": aws_world.REGION}, "cooldown": "0s",
                                     "approval": {"required": True, "timeout": "10m"}}})
                pending = wait_for(lambda: [n for n, p in _status(real_kube, TEAM) if p == "PendingApproval"],
                                   timeout=90, what="an action PendingApproval")[0]
                assert estate.desired(moto) == 2 and proxy.hits("SetDesiredCapacity") == 0
                ra = api.get(*RA, TEAM, pending)
                assert ra is not None and ra["metadata"]["annotations"].get("vigil.dev/provenance")

                real_kube.kubectl("annotate", "remediationaction", pending, "vigil.dev/approve=true",
                                  f"vigil.dev/decided-by={TEST_USER}", kubeconfig=user)
                wait_for(lambda: dict(_status(real_kube, TEAM)).get(pending) == "Succeeded", timeout=60,
                         what="the approved action Succeeded")
                done = api.get(*RA, TEAM, pending)
                assert done is not None and done["status"]["decision"]["by"] == TEST_USER
                assert estate.desired(moto) == 3
                steady(lambda: proxy.hits("SetDesiredCapacity") == 1, operator.passes,
                       what="one SetDesiredCapacity")

                # The approver's hand-made action: RBAC allows the create, the admission policy refuses it.
                forged = remediation_action("forged", TEAM, policy="web")
                status, answer = real_kube.request("POST", f"/apis/vigil.dev/v1alpha1/namespaces/{TEAM}"
                                                   "/remediationactions", forged, token=real_kube.user_token)
                assert status == 403, answer
                assert f"ValidatingAdmissionPolicy '{RELEASE}-remediationactions'" in answer["message"], answer
                assert f"created only by the Vigil operator ({OPERATOR})" in answer["message"]
                operator.stop()
                assert not operator.errors(), operator.errors()

            # Not one request of the ServiceAccount was refused by the real authorizer or admission.
            mine = [e for e in real_kube.audit_events() if e["user"]["username"] == OPERATOR]
            assert len(mine) > 20, "the operator's requests are in the audit log"
            refused = [(e["verb"], e["requestURI"], e["responseStatus"].get("code")) for e in mine
                       if e["responseStatus"].get("code") in (401, 403)]
            assert not refused, f"the real API server refused the chart's ServiceAccount: {refused}"
            print(f"helm install + scenario on the real server: {time.monotonic() - began:.1f}s")
        finally:
            wait_crds_served(real_kube)  # also when the install failed half way
            if operator is not None:
                operator.stop()
            helm_config.uninstall(RELEASE, ignore_not_found=True, timeout=60)
            # other tests on this server create RemediationActions as admin: wait until they may again
            probe = yaml.safe_dump(remediation_action("probe", TEAM))
            wait_for(lambda: real_kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                               check=False).returncode == 0, timeout=30, what="the policy gone")
            api.close()
            for kind, name in (("rolebinding", "approvers"), ("rolebinding", "action-editor"),
                               ("role", "action-editor")):
                real_kube.kubectl("delete", kind, name, "-n", TEAM, "--ignore-not-found")
