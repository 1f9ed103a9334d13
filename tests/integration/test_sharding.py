"""Sharding and HA with real peers: several ``vigil run`` processes against one emulated API server.

What a user can see is what is checked: which process exports a detector's
``vigil_detector_last_evaluation_timestamp_seconds`` (only the evaluating one
does), the ``reportingInstance`` of the Events (the replica's identity), the
shard Leases, and the statuses.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OperatorFactory, conditions_of, detector
from tests.harness import OperatorProcess, steady, wait_for
from tests.integration import scenario
from vigil.domain import freshness
from vigil.domain.sharding import selector_digest, shard_of
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer

AD = ("vigil.dev/v1alpha1", "anomalydetectors")
RP = ("vigil.dev/v1alpha1", "remediationpolicies")
LEASES = ("coordination.k8s.io/v1", "leases")
INCIDENT = 'nab_cpu{scenario="incident"}'
NORMAL = 'nab_cpu{scenario="normal"}'
NAMES = [f"det-{i}" for i in range(8)]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident", "normal")) as server:
        yield server


def shard_args(prometheus: PrometheusServer, shard: int, identity: str) -> tuple[str, ...]:
    return ("--prometheus-url", prometheus.url, "--leader-election", "--leader-election-namespace", "default",
            "--lease-duration", "3", "--shards", "2", "--shard-index", str(shard), "--identity", identity,
            "--heartbeat", "1")


def evaluated(process: OperatorProcess) -> set[str]:
    """Detectors this process evaluated: only the evaluating replica exports their per-detector gauges."""
    return {labels["detector"] for labels, _ in process.samples("vigil_detector_last_evaluation_timestamp_seconds")}


def create_detectors(kubeapi: KubeAPIServer, names: list[str], query: str = NORMAL) -> None:
    for name in names:
        kubeapi.create(detector(name, query, interval="1s", step="5m"))


def ready(kubeapi: KubeAPIServer, name: str) -> bool:
    return conditions_of(kubeapi.get(*AD, "default", name)).get("Ready", {}).get("status") == "True"


def reporters(kubeapi: KubeAPIServer, kind: str, name: str) -> set[str]:
    return {e.get("reportingInstance", "") for e in kubeapi.events_for(kind, "default", name)}


def last_evaluation(kubeapi: KubeAPIServer, name: str) -> float:
    stamp = ((kubeapi.get(*AD, "default", name) or {}).get("status") or {}).get("lastEvaluationTime")
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def holder(kubeapi: KubeAPIServer, lease: str) -> str:
    obj: dict[str, Any] = kubeapi.get(*LEASES, "default", lease) or {}
    return str((obj.get("spec") or {}).get("holderIdentity") or "")


def lease_notes(kubeapi: KubeAPIServer, lease: str) -> dict[str, str]:
    obj: dict[str, Any] = kubeapi.get(*LEASES, "default", lease) or {}
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def test_every_detector_is_evaluated_by_exactly_one_shard(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                          prometheus: PrometheusServer) -> None:
    owner = {name: shard_of("default", name, 2) for name in NAMES}
    expected = [{n for n, s in owner.items() if s == shard} for shard in (0, 1)]
    assert all(expected), f"the names must cover both shards: {owner}"
    zero = run_operator(*shard_args(prometheus, 0, "zero"), name="zero")
    one = run_operator(*shard_args(prometheus, 1, "one"), name="one")
    wait_for(lambda: holder(kubeapi, "vigil-leader-shard-0-of-2") == "zero"
             and holder(kubeapi, "vigil-leader-shard-1-of-2") == "one", what="one Lease per shard")
    create_detectors(kubeapi, NAMES)

    wait_for(lambda: all(ready(kubeapi, n) for n in NAMES), timeout=40, what="every detector Ready")
    wait_for(lambda: [evaluated(zero), evaluated(one)] == expected, timeout=20,
             what=f"each shard evaluates its own detectors {expected}")
    # Exactly one, and it stays that way: no detector ever shows up on the other process.
    steady(lambda: [evaluated(zero), evaluated(one)] == expected, lambda: min(zero.evaluations(), one.evaluations()))
    for name, shard in owner.items():
        assert reporters(kubeapi, "AnomalyDetector", name) == {("zero", "one")[shard]}, name
    # Each shard's Lease says, with every renewal, how fresh the shard is (issue 16): `kubectl get lease`.
    for shard in (0, 1):
        lease = f"vigil-leader-shard-{shard}-of-2"
        notes = wait_for(lambda lease=lease, shard=shard: (a := lease_notes(kubeapi, lease)).get(
            freshness.DETECTORS) == str(len(expected[shard])) and a, what=f"{lease} annotated")
        assert notes[freshness.OVERDUE] == "0"
        last = datetime.datetime.fromisoformat(notes[freshness.LAST_EVALUATION].replace("Z", "+00:00"))
        assert time.time() - last.timestamp() < 10, notes
    for process in (zero, one):
        assert (process.value("vigil_evaluations_total", result="evaluated") or 0) > 0
        assert process.errors() == []


def test_a_policy_reads_detectors_of_another_shard(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                   prometheus: PrometheusServer) -> None:
    """The policy's shard reconciles it; the verdict it acts on comes from the detector's shard, via the API."""
    name = "cpu"
    policy = next(p for p in (f"web-{i}" for i in range(20)) if shard_of("default", p, 2) != shard_of("default",
                                                                                                         name, 2))
    processes = {shard: run_operator(*shard_args(prometheus, shard, f"r{shard}"), name=f"r{shard}")
                 for shard in (0, 1)}
    body = detector(name, INCIDENT, interval="1s", step="5m")
    body["metadata"]["labels"] = {"app": "web"}  # type: ignore[index]
    kubeapi.create(body)
    # Paused: the policy decides (incident, Skipped action) but never calls AWS, so no AWS is needed here.
    kubeapi.create({"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
                    "metadata": {"name": policy, "namespace": "default"},
                    "spec": {"detectorSelector": {"matchLabels": {"app": "web"}}, "paused": True,
                             "aws": {"region": "us-east-1"},
                             "actions": [{"name": "scale", "scaleAutoScalingGroup": {"name": "web", "by": 1,
                                                                                     "min": 1, "max": 4}}]}})
    detector_shard, policy_shard = shard_of("default", name, 2), shard_of("default", policy, 2)
    got = wait_for(lambda: (kubeapi.get(*RP, "default", policy) or {}).get("status", {}).get("incident") and
                   kubeapi.get(*RP, "default", policy), timeout=40, what="the policy sees the remote incident")
    assert got["status"]["matchedDetectors"] == [name]
    assert evaluated(processes[detector_shard]) == {name} and evaluated(processes[policy_shard]) == set()
    wait_for(lambda: reporters(kubeapi, "RemediationPolicy", policy) == {f"r{policy_shard}"},
             what="the policy's shard records the decision")
    assert reporters(kubeapi, "AnomalyDetector", name) == {f"r{detector_shard}"}
    assert (processes[policy_shard].value("vigil_policy_action_allowed", namespace="default", policy=policy)
            is not None)
    assert processes[detector_shard].value("vigil_policy_action_allowed", namespace="default", policy=policy) is None


def test_two_replicas_of_one_shard_fail_over(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                             prometheus: PrometheusServer) -> None:
    owner = {name: shard_of("default", name, 2) for name in NAMES}
    mine = {n for n, s in owner.items() if s == 0}
    a = run_operator(*shard_args(prometheus, 0, "a"), name="a")
    b = run_operator(*shard_args(prometheus, 0, "b"), name="b")
    lease = "vigil-leader-shard-0-of-2"
    wait_for(lambda: holder(kubeapi, lease) in ("a", "b"), what="a holder for shard 0")
    leader, standby = (a, b) if holder(kubeapi, lease) == "a" else (b, a)
    create_detectors(kubeapi, NAMES)

    wait_for(lambda: evaluated(leader) == mine and all(ready(kubeapi, n) for n in mine), timeout=40,
             what=f"the holder evaluates shard 0 {mine}")
    steady(lambda: evaluated(standby) == set() and standby.evaluations() == 0, leader.evaluations)
    # Shard 1 has no replica here: nobody evaluates its detectors, least of all shard 0's.
    assert all(not conditions_of(kubeapi.get(*AD, "default", n)) for n in set(NAMES) - mine)

    leader.kill()  # a crash: no release, the standby waits for the Lease to expire
    killed = time.time()
    identity = standby.name.rsplit("-", 1)[0]
    wait_for(lambda: holder(kubeapi, lease) == identity, timeout=20, what="the standby takes the Lease")
    wait_for(lambda: evaluated(standby) == mine, timeout=20, what="the standby evaluates shard 0")
    # Its evaluations reach the statuses (--heartbeat 1 makes every evaluation a write).
    wait_for(lambda: all(last_evaluation(kubeapi, n) > killed for n in mine), timeout=20,
             what="shard 0's statuses evaluated after the takeover")
    assert all(not conditions_of(kubeapi.get(*AD, "default", n)) for n in set(NAMES) - mine)
    # On takeover it re-lists detectors, policies and actions before deciding anything.
    log = standby.log()
    assert log.index(f"acquired leadership of lease {lease}") < log.index("remediation engine synced")
    assert standby.errors() == []


def test_label_selector_groups(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                               prometheus: PrometheusServer) -> None:
    """Two replica groups split by labels: each evaluates its team's detectors; a relabel moves one."""
    common = ("--prometheus-url", prometheus.url, "--leader-election", "--leader-election-namespace", "default",
              "--lease-duration", "3")
    a = run_operator(*common, "--selector", "team=a", "--identity", "a", name="a")
    b = run_operator(*common, "--selector", "team in (b, c)", "--identity", "b", name="b")
    for name, team in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("none", None)):
        body = detector(name, NORMAL, interval="1s", step="5m")
        if team:
            body["metadata"]["labels"] = {"team": team}  # type: ignore[index]
        kubeapi.create(body)
    wait_for(lambda: (evaluated(a), evaluated(b)) == ({"a1", "a2"}, {"b1"}), timeout=40,
             what="each group evaluates its own team")
    kubeapi.patch(*AD, "default", "a2", {"metadata": {"labels": {"team": "c"}}})
    wait_for(lambda: (evaluated(a), evaluated(b)) == ({"a1"}, {"b1", "a2"}), timeout=20,
             what="a relabelled detector moves to the other group")
    steady(lambda: (evaluated(a), evaluated(b)) == ({"a1"}, {"b1", "a2"}),
           lambda: min(a.evaluations(), b.evaluations()))
    assert not conditions_of(kubeapi.get(*AD, "default", "none"))  # matched by no group: nobody evaluates it
    assert {holder(kubeapi, f"vigil-leader-sel-{selector_digest(s)}") for s in ("team=a", "team in (b, c)")} == {
        "a", "b"}


def test_a_new_shard_count_waits_for_the_old_layout(kubeapi: KubeAPIServer, run_operator: OperatorFactory,
                                                    prometheus: PrometheusServer) -> None:
    """Changing the shard count moves objects between shards: the new layout starts only once the old is gone."""
    old = run_operator(*shard_args(prometheus, 0, "old"), name="old")
    wait_for(lambda: holder(kubeapi, "vigil-leader-shard-0-of-2") == "old", what="the 2-shard layout leads")
    args = list(shard_args(prometheus, 0, "new"))
    args[args.index("--shards") + 1] = "3"
    new = run_operator(*args, name="new")
    create_detectors(kubeapi, NAMES)
    wait_for(lambda: "of the 2-shard layout is still held by old" in new.log(), what="the new layout held back")
    steady(lambda: holder(kubeapi, "vigil-leader-shard-0-of-3") == "" and evaluated(new) == set(), old.evaluations,
           seconds=4)  # longer than --lease-duration 3: the new layout had its chance to (wrongly) take over
    old.stop()  # a clean stop releases the Lease: the new layout may start at once
    wait_for(lambda: holder(kubeapi, "vigil-leader-shard-0-of-3") == "new", what="the 3-shard layout leads")
    mine = {n for n in NAMES if shard_of("default", n, 3) == 0}
    wait_for(lambda: evaluated(new) == mine, timeout=30, what=f"the new layout evaluates its shard {mine}")
    assert new.errors() == []
