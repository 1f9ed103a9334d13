"""ArgoCD: the custom Lua health checks, run in Lua 5.1 (ArgoCD's dialect), and the Application example.

The objects fed to the Lua are built from the operator's own status models
(``to_wire()``), so a renamed status field breaks this test, not a dashboard.
"""

from __future__ import annotations

import datetime
from typing import Any

import helm_python as helm
import pytest
import yaml

from vigil.api.v1alpha1 import common, detector, policy

from .conftest import ROOT

EXAMPLES = ROOT / "examples" / "argocd"
HEALTH = EXAMPLES / "health"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def condition(kind: str, status: str, reason: str, message: str = "") -> common.Condition:
    return common.Condition(type=kind, status=common.ConditionStatus(status), reason=reason, message=message,
                            last_transition_time=T0, observed_generation=1)


def detector_obj(*conditions: common.Condition, generation: int = 1, observed: int | None = 1) -> dict[str, Any]:
    status = detector.AnomalyDetectorStatus(observed_generation=observed, conditions=list(conditions))
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
            "metadata": {"name": "d", "namespace": "n", "generation": generation}, "status": status.to_wire()}


def policy_obj(*conditions: common.Condition, phase: policy.PolicyPhase | None = None,
               generation: int = 1, observed: int | None = 1) -> dict[str, Any]:
    status = policy.RemediationPolicyStatus(observed_generation=observed, conditions=list(conditions), phase=phase)
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "p", "namespace": "n", "generation": generation}, "status": status.to_wire()}


R = detector.Reason
P = policy.PolicyReason

DETECTOR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no status", {"kind": "AnomalyDetector", "metadata": {"name": "d", "generation": 1}}, "Progressing"),
    ("empty status", detector_obj(), "Progressing"),
    ("ready", detector_obj(condition("Ready", "True", R.EVALUATING),
                           condition("Anomalous", "False", R.NORMAL),
                           condition("Degraded", "False", R.AS_EXPECTED)), "Healthy"),
    ("anomalous is still healthy", detector_obj(condition("Ready", "True", R.EVALUATING),
                                                condition("Anomalous", "True", R.ANOMALY_DETECTED)), "Healthy"),
    ("ready but degraded", detector_obj(condition("Ready", "True", R.EVALUATING),
                                        condition("Degraded", "True", R.PROMETHEUS_UNAVAILABLE, "connection refused")),
     "Degraded"),
    ("paused", detector_obj(condition("Ready", "False", R.PAUSED, "spec.paused is true")), "Suspended"),
    ("invalid query", detector_obj(condition("Ready", "False", R.INVALID_QUERY, "parse error")), "Degraded"),
    ("model missing", detector_obj(condition("Ready", "False", R.MODEL_NOT_FOUND)), "Degraded"),
    ("pending", detector_obj(condition("Ready", "Unknown", R.PENDING)), "Progressing"),
    ("stale generation", detector_obj(condition("Ready", "True", R.EVALUATING), generation=3, observed=2),
     "Progressing"),
]

POLICY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no status", {"kind": "RemediationPolicy", "metadata": {"name": "p", "generation": 1}}, "Progressing"),
    ("idle", policy_obj(condition("Ready", "True", P.VALID), phase=policy.PolicyPhase.IDLE), "Healthy"),
    ("cooldown is healthy", policy_obj(condition("Ready", "True", P.VALID),
                                       condition("ActionAllowed", "False", P.COOLDOWN_ACTIVE),
                                       phase=policy.PolicyPhase.COOLDOWN), "Healthy"),
    ("invalid", policy_obj(condition("Ready", "False", P.INVALID_SPEC, "bad step"),
                           phase=policy.PolicyPhase.INVALID), "Degraded"),
    ("no detectors", policy_obj(condition("Ready", "False", P.NO_DETECTORS)), "Degraded"),
    ("paused", policy_obj(condition("Ready", "True", P.VALID), condition("ActionAllowed", "False", P.PAUSED),
                          phase=policy.PolicyPhase.PAUSED), "Suspended"),
    ("status without conditions", policy_obj(phase=policy.PolicyPhase.IDLE), "Healthy"),
    ("stale generation", policy_obj(condition("Ready", "True", P.VALID), generation=2, observed=1), "Progressing"),
]


@pytest.fixture(scope="module")
def lua51() -> Any:
    lua = pytest.importorskip(
        "lupa.lua51",
        reason="lupa (Lua 5.1 from PyPI, the dialect ArgoCD runs) is not installed: "
               "pip install lupa to run the ArgoCD health-check tests",
    )
    return lua


def run_health(lua51: Any, script: str, obj: dict[str, Any]) -> dict[str, str]:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script)
    assert result is not None, "the health script returned nothing"
    return {str(k): str(v) for k, v in result.items()}


@pytest.mark.parametrize(("case", "obj", "expected"), DETECTOR_CASES, ids=[c[0] for c in DETECTOR_CASES])
def test_anomalydetector_health(lua51: Any, case: str, obj: dict[str, Any], expected: str) -> None:
    health = run_health(lua51, (HEALTH / "anomalydetector.lua").read_text(), obj)
    assert health["status"] == expected, health
    assert health.get("message"), "ArgoCD shows the message: it must say why"


@pytest.mark.parametrize(("case", "obj", "expected"), POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_remediationpolicy_health(lua51: Any, case: str, obj: dict[str, Any], expected: str) -> None:
    health = run_health(lua51, (HEALTH / "remediationpolicy.lua").read_text(), obj)
    assert health["status"] == expected, health
    assert health.get("message")


def test_health_messages_carry_the_reason(lua51: Any) -> None:
    obj = detector_obj(condition("Ready", "False", R.INVALID_QUERY, "1:5: parse error"))
    assert run_health(lua51, (HEALTH / "anomalydetector.lua").read_text(), obj)["message"] == (
        "InvalidQuery: 1:5: parse error"
    )


def test_health_checks_configmap_embeds_the_lua_verbatim() -> None:
    config_map = yaml.safe_load((EXAMPLES / "health-checks.yaml").read_text())
    assert config_map["metadata"]["name"] == "argocd-cm"
    data = config_map["data"]
    assert data["resource.customizations.health.vigil.dev_AnomalyDetector"] == (
        HEALTH / "anomalydetector.lua"
    ).read_text(), "health-checks.yaml is out of date with health/anomalydetector.lua"
    assert data["resource.customizations.health.vigil.dev_RemediationPolicy"] == (
        HEALTH / "remediationpolicy.lua"
    ).read_text(), "health-checks.yaml is out of date with health/remediationpolicy.lua"


def test_application_installs_the_chart_with_server_side_apply(chart: helm.Chart) -> None:
    app = yaml.safe_load((EXAMPLES / "application.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    source = app["spec"]["source"]
    assert source["path"] == "charts/vigil"
    assert source["helm"]["skipCrds"] is False
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    # Deleting the Application must not cascade to the CRDs (and every custom resource).
    assert "resources-finalizer.argocd.argoproj.io" not in app["metadata"].get("finalizers", [])
    # The example's values are valid for the chart.
    chart.validate_schema(source["helm"]["valuesObject"])
    chart.render(source["helm"]["valuesObject"], name=source["helm"]["releaseName"],
                 namespace=app["spec"]["destination"]["namespace"])


def test_argocd_doc_shows_the_tested_lua() -> None:
    doc = (ROOT / "docs" / "argocd.md").read_text()
    for script in ("anomalydetector.lua", "remediationpolicy.lua"):
        assert f"```lua\n{(HEALTH / script).read_text()}```" in doc, f"docs/argocd.md is out of date with {script}"
