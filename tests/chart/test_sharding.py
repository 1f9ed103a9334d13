"""The chart's sharding: a StatefulSet whose ordinals pick the shards; Lease RBAC names the operator's Leases."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from vigil.domain.sharding import Layout

from .conftest import NAMESPACE, RELEASE, Manifest, Render, only, render_text, select


def env_of(workload: Manifest) -> dict[str, Any]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def lease_names(objects: list[Manifest]) -> list[str]:
    role = only(objects, "Role", name=f"{RELEASE}-leader-election")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert len(named) == 1 and named[0]["verbs"] == ["get", "update"]
    assert any("list" in r["verbs"] and not r.get("resourceNames") for r in role["rules"])
    return list(named[0]["resourceNames"])


def test_unsharded_is_one_deployment_on_one_lease(render: Render) -> None:
    objects = render()
    assert select(objects, "StatefulSet") == []
    env = env_of(only(objects, "Deployment"))
    assert "VIGIL_SHARDS" not in env and "VIGIL_SELECTOR" not in env
    assert lease_names(objects) == [Layout().lease_name("vigil-leader")]


def test_shards_render_a_statefulset_of_shards_times_replicas(render: Render) -> None:
    objects = render({"sharding": {"shards": 3}, "replicaCount": 2})
    assert select(objects, "Deployment") == []
    sts = only(objects, "StatefulSet", name=RELEASE, namespace=NAMESPACE)
    assert sts["spec"]["replicas"] == 6
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = only(objects, "Service", name=sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    env = env_of(sts)
    # The operator takes the shard from the pod name's ordinal: vigil-4 of 3 shards serves shard 1.
    assert env["VIGIL_SHARDS"] == "3" and env["VIGIL_SHARD_INDEX"] == "auto"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # RBAC names exactly the Leases the operator will ask for.
    assert lease_names(objects) == [Layout(i, 3).lease_name("vigil-leader") for i in range(3)]


def test_pods_are_scraped_once(render: Render) -> None:
    """The ServiceMonitor selects the metrics Service only, not the headless one (no double scrape)."""
    objects = render({"sharding": {"shards": 2}, "serviceMonitor": {"enabled": True}})
    wanted = only(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    scraped = [s["metadata"]["name"] for s in select(objects, "Service")
               if wanted.items() <= s["metadata"]["labels"].items()]
    assert scraped == [RELEASE]


def test_statefulset_pods_are_the_deployment_pods(render: Render) -> None:
    deployment = only(render({"replicaCount": 2}), "Deployment")["spec"]["template"]
    sts = only(render({"sharding": {"shards": 2}}), "StatefulSet")["spec"]["template"]
    for template in (deployment, sts):
        template["spec"]["containers"][0].pop("env")
    assert sts == deployment


def test_selector_groups_get_their_own_leases(render: Render) -> None:
    selector = "team in (payments, checkout),tier!=batch"
    objects = render({"sharding": {"selector": selector}, "leaderElection": {"name": "vigil-lock"}})
    assert env_of(only(objects, "Deployment"))["VIGIL_SELECTOR"] == selector
    assert lease_names(objects) == [Layout(0, 1, selector).lease_name("vigil-lock")]
    objects = render({"sharding": {"selector": selector, "shards": 2}})
    assert env_of(only(objects, "StatefulSet"))["VIGIL_SELECTOR"] == selector
    assert lease_names(objects) == [Layout(i, 2, selector).lease_name("vigil-leader") for i in range(2)]


def test_alerts_about_leaders_are_per_lease(render: Render) -> None:
    rule = only(render({"sharding": {"shards": 2}, "prometheusRule": {"enabled": True}}), "PrometheusRule")
    exprs = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"] if "alert" in r}
    assert "sum by (lease) (vigil_leader" in exprs["VigilSplitBrain"]
    assert "sum by (lease) (vigil_leader" in exprs["VigilNoLeader"]


def test_shards_need_leader_election(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match=re.escape("sharding.shards > 1 needs leaderElection.enabled")):
        render_text(chart, {"sharding": {"shards": 2}, "leaderElection": {"enabled": False}})


@pytest.mark.parametrize("values", [{"sharding": {"shards": 0}}, {"sharding": {"shard": 2}},
                                    {"sharding": {"selector": 3}}])
def test_bad_sharding_values_are_refused(chart: helm.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render_text(chart, values)
