"""The Helm chart, through the real Helm v4 engine: lint, render, RBAC, security, schema errors."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from .conftest import CHART_DIR, NAMESPACE, RELEASE, Manifest, Render, only, render_text, select

IRSA_ROLE = "arn:aws:iam::123456789012:role/vigil-operator"

#: Non-default values: namespaced mode over two namespaces, HA, every optional manifest on.
FULL: dict[str, Any] = {
    "watchNamespaces": ["team-a", "team-b"],
    "replicaCount": 2,
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "apiServer": {"cidrs": ["10.96.0.1/32"]},
        "prometheus": {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    },
    "priorityClassName": "system-cluster-critical",
    "rbac": {"secretNames": ["slack-webhook", "pagerduty-webhook"]},
    "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
    "aws": {"region": "eu-west-1", "endpointUrl": "http://moto.test:5000"},
    "leaderElection": {"leaseDurationSeconds": 30},
    "logFormat": "plain",
    "logLevel": "debug",
    "http": {"port": 9443},
    "extraArgs": ["--heartbeat", "120"],
    "extraEnv": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
    "podDisruptionBudget": {"enabled": True},
    "imagePullSecrets": ["registry-credentials"],
    "image": {"repository": "registry.example.com/vigil", "tag": "1.2.3", "pullPolicy": "Always"},
    "alertmanager": {"enabled": True, "tokenSecretName": "alertmanager-token"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "vigil"}},
    }],
    "podAnnotations": {"example.com/team": "sre"},
    "podLabels": {"team": "sre"},
}

#: Our custom resources and the exact verbs the operator needs on them (tests/security/test_rbac.py checks
#: them against the calls of a recorded run).
CR_RULES: dict[str, set[str]] = {
    "anomalydetectors": {"list", "watch"},
    "remediationpolicies": {"list", "watch"},
    "remediationactions": {"get", "list", "watch", "create", "delete"},
    "anomalydetectors/status": {"patch"},
    "remediationpolicies/status": {"patch"},
    "remediationactions/status": {"patch"},
    "remediationpolicies/finalizers": {"update"},
}
#: Secrets and ConfigMaps only when named (rbac.secretNames / rbac.configMapNames).
SCOPE_RULES: dict[tuple[str, str], set[str]] = {
    **{("vigil.dev", resource): verbs for resource, verbs in CR_RULES.items()},
    ("", "events"): {"create"},
}
NAMED_RULES: dict[tuple[str, str], set[str]] = {**SCOPE_RULES, ("", "secrets"): {"get"}}
LEASE_RULES: dict[tuple[str, str], set[str]] = {
    ("coordination.k8s.io", "leases"): {"get", "create", "update", "list"},
}


def permissions(role: Manifest) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted by a Role/ClusterRole; fails on any wildcard."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"{role['kind']} {role['metadata']['name']}: wildcard in {field}"
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def secret_rules(role: Manifest) -> list[dict[str, Any]]:
    return [r for r in role["rules"] if "secrets" in r["resources"]]


def container(objects: list[Manifest]) -> dict[str, Any]:
    deployment = only(objects, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env(objects: list[Manifest]) -> dict[str, Any]:
    """Env var name -> value, or -> the valueFrom object."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


# ---- lint ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_lint_strict_passes(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


# ---- default rendering --------------------------------------------------------------------------

def test_defaults_render_the_expected_objects(render: Render) -> None:
    kinds = sorted(o["kind"] for o in render())
    assert kinds == sorted([
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole",  # <release>-approver
    ])


def test_the_provenance_key_is_the_admins_secret_mounted_read_only(render: Render) -> None:
    """Issue 11, finding 1: the operator signs its actions with a key only it reads. The chart never makes
    one up (renders stay deterministic for ArgoCD); without it nothing is mounted and the flag is unset."""
    def pod(values: dict[str, Any] | None) -> dict[str, Any]:
        return next(o for o in render(values) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    plain = pod(None)
    assert "VIGIL_PROVENANCE_KEY_FILE" not in {e["name"] for e in plain["containers"][0]["env"]}
    own = pod({"provenance": {"existingSecret": "my-key", "secretKey": "k"}})
    env = {e["name"]: e.get("value") for e in own["containers"][0]["env"]}
    assert env["VIGIL_PROVENANCE_KEY_FILE"] == "/etc/vigil/provenance/k"
    volume = next(v for v in own["volumes"] if v["name"] == "provenance")
    assert volume["secret"] == {"secretName": "my-key", "defaultMode": 0o440, "items": [{"key": "k", "path": "k"}]}
    mount = next(m for m in own["containers"][0]["volumeMounts"] if m["name"] == "provenance")
    assert mount["readOnly"] is True


def test_tenancy_values_become_the_operator_flags(render: Render) -> None:
    """Issue 11, finding 4: what a policy may ask for is the admin's, set through the chart."""
    def env(values: dict[str, Any] | None) -> dict[str, str]:
        pod = next(o for o in render(values) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    defaults = env(None)
    assert defaults["VIGIL_GUARD_TAG"] == "vigil.dev/managed=true"
    assert defaults["VIGIL_NAMESPACE_TAG_KEY"] == "vigil.dev/namespace"
    assert defaults["VIGIL_SSM_DOCUMENTS"] == "AWS-RunShellScript" and defaults["VIGIL_SSM_MAX_TIMEOUT"] == "3600"
    assert defaults["VIGIL_COMMAND_POLL_INTERVAL"] == "5"
    assert "VIGIL_ALLOWED_ROLE_ARNS" not in defaults and "VIGIL_SSM_COMMAND_PATTERNS" not in defaults
    custom = env({"tenancy": {"roleArns": {"shop": ["arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b"],
                                           "*": ["arn:aws:iam::1:role/all"]},
                              "ssm": {"commandPatterns": ["systemctl restart [a-z]+", "uptime"],
                                      "commandPollIntervalSeconds": 0.5}}})
    assert custom["VIGIL_COMMAND_POLL_INTERVAL"] == "0.5"
    assert custom["VIGIL_ALLOWED_ROLE_ARNS"] == \
        "*=arn:aws:iam::1:role/all;shop=arn:aws:iam::1:role/a,arn:aws:iam::1:role/b"
    assert custom["VIGIL_SSM_COMMAND_PATTERNS"] == "systemctl restart [a-z]+\nuptime"


def test_every_namespaced_object_lands_in_the_release_namespace(render: Render) -> None:
    for obj in render(FULL):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                           "ValidatingAdmissionPolicyBinding"):
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] in ("team-a", "team-b", NAMESPACE)
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_pod_security_restricted(render: Render) -> None:
    objects = render()
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "add" not in sc["capabilities"]
    # The only writable path: /tmp on an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert not any("hostPath" in v for v in pod["volumes"])
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_image_runtime_uid_matches_the_chart() -> None:
    dockerfile = (CHART_DIR.parents[1] / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile and "USER 10001:10001" in dockerfile


def test_probes_and_port(render: Render) -> None:
    for values, port in ((None, 8080), (FULL, 9443)):
        c = container(render(values))
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_resources_have_requests_and_a_memory_limit(render: Render) -> None:
    resources = container(render())["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_default_env(render: Render) -> None:
    objects = render()
    values = env(objects)
    assert values["VIGIL_NAMESPACES"] == ""
    assert values["VIGIL_LOG_FORMAT"] == "json"
    assert values["VIGIL_LOG_LEVEL"] == "info"
    assert values["VIGIL_HTTP_PORT"] == "8080"
    assert values["VIGIL_MAX_MODEL_BYTES"] == "1048576"
    assert values["VIGIL_LEADER_ELECTION"] == "true"
    assert values["VIGIL_LEADER_ELECTION_NAME"] == "vigil-leader"
    downward = {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert values["VIGIL_LEADER_ELECTION_NAMESPACE"] == downward
    assert values["POD_NAMESPACE"] == downward
    assert values["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Unset optional settings are absent, not empty (an empty URL is not "no URL").
    for absent in ("VIGIL_PROMETHEUS_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "VIGIL_AWS_ENDPOINT_URL",
                   "VIGIL_ALERTMANAGER_TOKEN_FILE"):
        assert absent not in values
    assert container(objects)["args"] == ["--lease-duration", "15"]
    assert container(objects)["image"] == "ghcr.io/vigil-dev/vigil:0.1.0"  # default tag = appVersion


def test_full_env_args_and_image(render: Render) -> None:
    objects = render(FULL)
    values = env(objects)
    assert values["VIGIL_NAMESPACES"] == "team-a,team-b"
    assert values["VIGIL_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"
    assert values["VIGIL_LOG_FORMAT"] == "plain"
    assert values["VIGIL_LOG_LEVEL"] == "debug"
    assert values["VIGIL_HTTP_PORT"] == "9443"
    assert values["AWS_REGION"] == values["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert values["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    assert values["VIGIL_AWS_ENDPOINT_URL"] == "http://moto.test:5000"
    c = container(objects)
    assert c["args"] == ["--lease-duration", "30", "--heartbeat", "120"]
    assert c["image"] == "registry.example.com/vigil:1.2.3"
    assert c["imagePullPolicy"] == "Always"


def test_alertmanager_token_is_a_mounted_file_not_rbac(render: Render) -> None:
    objects = render(FULL)
    assert env(objects)["VIGIL_ALERTMANAGER_TOKEN_FILE"] == "/etc/vigil/alertmanager/token"
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["/etc/vigil/alertmanager"]["readOnly"] is True
    volumes = {v["name"]: v for v in only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/vigil/alertmanager"]["name"]]["secret"] == {
        "secretName": "alertmanager-token", "defaultMode": 0o440, "items": [{"key": "token", "path": "token"}],
    }


def test_leader_election_can_be_disabled_for_one_replica(chart: helm.Chart, render: Render) -> None:
    objects = render({"leaderElection": {"enabled": False}})
    assert env(objects)["VIGIL_LEADER_ELECTION"] == "false"
    assert not select(objects, "Role")
    with pytest.raises(helm.HelmError, match=re.escape("replicaCount > 1 needs leaderElection.enabled")):
        render_text(chart, {"leaderElection": {"enabled": False}, "replicaCount": 2})


def test_leader_election_namespace_override(render: Render) -> None:
    objects = render({"leaderElection": {"namespace": "ops", "name": "vigil-lock"}})
    values = env(objects)
    assert values["VIGIL_LEADER_ELECTION_NAMESPACE"] == "ops"
    assert values["VIGIL_LEADER_ELECTION_NAME"] == "vigil-lock"
    lease_role = only(objects, "Role", name=f"{RELEASE}-leader-election")
    assert lease_role["metadata"]["namespace"] == "ops"
    assert any(r.get("resourceNames") == ["vigil-lock"] for r in lease_role["rules"])
    assert only(objects, "RoleBinding", name=f"{RELEASE}-leader-election")["metadata"]["namespace"] == "ops"


def test_pod_scheduling_and_metadata(render: Render) -> None:
    deployment = only(render(FULL), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == FULL["nodeSelector"]
    assert pod["tolerations"] == FULL["tolerations"]
    assert pod["topologySpreadConstraints"] == FULL["topologySpreadConstraints"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert template["metadata"]["annotations"] == {"example.com/team": "sre"}
    assert template["metadata"]["labels"]["team"] == "sre"
    # Selector labels are a stable subset of the pod labels (a changed selector breaks upgrades).
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "vigil", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= template["metadata"]["labels"].items()


# ---- service account ----------------------------------------------------------------------------

def test_service_account_irsa_annotation(render: Render) -> None:
    objects = render(FULL)
    sa = only(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA_ROLE}
    assert sa["automountServiceAccountToken"] is True
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_service_account_can_be_brought(render: Render) -> None:
    objects = render({"serviceAccount": {"create": False, "name": "existing"}})
    assert not select(objects, "ServiceAccount")
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    for binding in select(objects, "ClusterRoleBinding") + select(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "existing", "namespace": NAMESPACE}]


# ---- RBAC ---------------------------------------------------------------------------------------

def test_all_namespaces_rbac_is_exact(render: Render) -> None:
    objects = render()
    cluster_role = only(objects, "ClusterRole", name=RELEASE)
    assert permissions(cluster_role) == SCOPE_RULES
    assert secret_rules(cluster_role) == []
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    # Leases only in the release namespace, never cluster-wide.
    lease_role = only(objects, "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert permissions(lease_role) == LEASE_RULES
    named = [r for r in lease_role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": ["vigil-leader"], "verbs": ["get", "update"]}]


def test_no_crd_or_namespace_access(render: Render) -> None:
    for values in (None, FULL):
        for role in select(render(values), "ClusterRole") + select(render(values), "Role"):
            resources = {resource for _, resource in permissions(role)}
            assert not resources & {"customresourcedefinitions", "namespaces", "pods", "nodes"}


def test_secret_names_restrict_secret_access(render: Render) -> None:
    cluster_role = only(render({"rbac": {"secretNames": ["slack-webhook", "pager"]}}), "ClusterRole", name=RELEASE)
    assert secret_rules(cluster_role) == [{
        "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["slack-webhook", "pager"],
    }]


def test_namespaced_mode_renders_roles_only(render: Render) -> None:
    objects = render(FULL)
    assert not select(objects, "ClusterRole")
    assert not select(objects, "ClusterRoleBinding")
    for namespace in ("team-a", "team-b"):
        role = only(objects, "Role", name=RELEASE, namespace=namespace)
        assert permissions(role) == NAMED_RULES
        assert secret_rules(role) == [{
            "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
            "resourceNames": ["slack-webhook", "pagerduty-webhook"],
        }]
        binding = only(objects, "RoleBinding", name=RELEASE, namespace=namespace)
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == RELEASE
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    lease_role = only(objects, "Role", name=f"{RELEASE}-leader-election", namespace=NAMESPACE)
    assert permissions(lease_role) == LEASE_RULES
    # Nothing grants Secrets outside the watched namespaces.
    for role in select(objects, "Role"):
        if role["metadata"]["namespace"] not in ("team-a", "team-b"):
            assert not secret_rules(role)


def test_rbac_can_be_disabled(render: Render) -> None:
    objects = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not select(objects, kind)


# ---- optional manifests -------------------------------------------------------------------------

def test_service(render: Render) -> None:
    service = only(render(), "Service")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "vigil", "app.kubernetes.io/instance": RELEASE}
    assert not select(render({"service": {"enabled": False}}), "Service")


def test_optional_manifests(render: Render) -> None:
    objects = render(FULL)
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == only(objects, "Service")["spec"]["selector"]
    rule = only(objects, "PrometheusRule")
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"VigilOperatorDown", "VigilNoLeader", "VigilEvaluationsFailing", "VigilDetectorStale",
            "VigilActionsFailing", "VigilModelLoadErrors", "VigilPrometheusQueryErrors",
            "VigilRemediationStalled"} <= alerts
    dashboard = only(objects, "ConfigMap", name=f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    policy = only(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 9090}


def test_optional_manifests_are_off_by_default(render: Render) -> None:
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap", "PodDisruptionBudget"}


def test_the_default_render_has_a_network_policy(render: Render) -> None:
    """On by default (issue 11, item 3): the HTTP port serves POST /alertmanager. Ingress from the
    `monitoring` namespace only, until the values name other peers."""
    policy = only(render(), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }]
    assert only(render({"networkPolicy": {"ingressFrom": []}}), "NetworkPolicy")["spec"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert not select(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_grafana_label_is_configurable(render: Render) -> None:
    # Helm merges maps with the defaults: null removes the default label.
    labels = {"dashboards": "vigil", "grafana_dashboard": None}
    values = {"grafanaDashboard": {"enabled": True, "labels": labels, "namespace": "grafana"}}
    dashboard = only(render(values), "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["labels"]["dashboards"] == "vigil"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]


def test_service_monitor_needs_the_service(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match=re.escape("serviceMonitor.enabled needs service.enabled")):
        render_text(chart, {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}})


# ---- GitOps: determinism ------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_rendering_is_deterministic(chart: helm.Chart, values: dict[str, Any] | None) -> None:
    first = render_text(chart, values)
    assert render_text(chart, values) == first
    # An upgrade renders exactly what an install renders: nothing depends on the release revision.
    upgrade = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_upgrade=True, revision=7)
    assert upgrade == first


def test_templates_use_no_nondeterministic_functions() -> None:
    # Hashes of values (sha256sum) are pure functions of the values, so they are allowed; the lease names
    # of a selector group use one.
    banned = re.compile(r"\b(randAlphaNum|randAlpha|randNumeric|randAscii|randBytes|randInt|uuidv4|lookup|now|date|"
                        r"dateInZone|unixEpoch|genCA|genPrivateKey|genSelfSignedCert|genSignedCert)\b")
    for template in sorted((CHART_DIR / "templates").iterdir()):
        text = template.read_text()
        assert "helm.sh/hook" not in text, f"{template.name}: hooks are not applied the same way by ArgoCD"
        for action in re.findall(r"{{.*?}}", text, flags=re.DOTALL):
            found = banned.search(action)
            assert found is None, f"{template.name} uses {found.group(1)!r}: ArgoCD would see a diff on every sync"


# ---- schema -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"logFormat": "xml"}, "at '/logFormat': value must be one of 'plain', 'full', 'json'"),
        ({"logLevel": "trace"}, "at '/logLevel': value must be one of"),
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"http": {"port": 70000}}, "at '/http/port': maximum"),
        ({"http": {"port": 80}}, "at '/http/port': minimum"),
        ({"image": {"repository": ""}}, "at '/image/repository': minLength"),
        ({"image": {"tag": 3}}, "at '/image/tag': got number, want string"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of"),
        ({"serviceAccount": {"annotation": {}}}, "additional properties 'annotation' not allowed"),
        ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
        ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
        ({"prometheus": {"url": "prometheus:9090"}}, "at '/prometheus/url'"),
        ({"service": {"type": "ExternalName"}}, "at '/service/type': value must be one of"),
    ],
)
def test_bad_values_fail_with_a_clear_schema_error(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as error:
        render_text(chart, values)
    assert "values don't meet the specifications of the schema" in str(error.value)
    assert message in str(error.value)


def test_defaults_and_full_values_pass_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema({})
    chart.validate_schema(FULL)
