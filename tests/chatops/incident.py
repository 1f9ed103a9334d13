"""One incident recorded in the Kubernetes API as the operator records it, for the Ask Vigil tests.

The bodies come from the operator's own pieces: the API models (``RemediationActionSpec``,
``AnomalyDetectorStatus``, ...) serialised with ``to_wire``, the engine's ``action_name``, the labels,
owner references and Event shape of ``engine/remediation/engine.py`` and ``adapters/kube.py``; status
goes through the status subresource, as the operator writes it.

The story: detector ``web-cpu`` flags one instance; policy ``web-scale-out`` (approval required)
proposes scaling group ``web`` 2 → 4; alice approves it in Slack; it succeeds. A second incident
during the cooldown is skipped (``CooldownActive``); a third waits for approval.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from vigil.api.v1alpha1 import action as api_action
from vigil.api.v1alpha1.action import (
    ActionPhase,
    Decision,
    PolicyRef,
    Reason,
    RemediationActionSpec,
    RemediationActionStatus,
    SkipReason,
    Target,
)
from vigil.api.v1alpha1.common import API_VERSION, Condition, ConditionStatus
from vigil.api.v1alpha1.detector import AnomalyDetectorStatus, SeriesState, SeriesStatus
from vigil.api.v1alpha1.policy import LastAction, PolicyPhase, RemediationPolicyStatus, Step
from vigil.domain.notifications import EngineEvent, EventKind
from vigil.engine.remediation.engine import action_name

POLICY = "web-scale-out"
DETECTOR = "web-cpu"


@dataclasses.dataclass(frozen=True)
class Incident:
    namespace: str
    succeeded: str
    skipped: str
    pending: str
    label: str


def _at(minutes_ago: float) -> datetime.datetime:
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes_ago)).replace(microsecond=0)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: ConditionStatus, reason: str, message: str, minutes_ago: float) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message,
                     last_transition_time=_at(minutes_ago), observed_generation=1)


def _event(kube: Any, involved: dict[str, Any], type_: str, reason: str, message: str, minutes_ago: float) -> None:
    """An Event shaped as KubeClient.post_event writes it."""
    stamp = _stamp(_at(minutes_ago))
    kube.create({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
        "involvedObject": involved, "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": "vigil"}, "reportingComponent": "vigil", "reportingInstance": "vigil-0",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    })


def _involved(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": API_VERSION, "kind": obj["kind"], "namespace": meta["namespace"], "name": meta["name"],
            "uid": meta["uid"]}


def seed(kube: Any, namespace: str = "default", label: str = "i-0abc1234") -> Incident:
    """Create the detector, the policy, three actions and their Events in ``namespace``."""
    series_labels = {"instance_id": label, "job": "node"}
    detector = kube.create({
        "apiVersion": API_VERSION, "kind": "AnomalyDetector",
        "metadata": {"name": DETECTOR, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"query": "avg by (instance_id, job) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))",
                 "interval": "60s"},
    })
    detector_status = AnomalyDetectorStatus(
        observed_generation=1, score=0.93, threshold=0.8, anomalous=True, anomalous_since=_at(50),
        last_evaluation_time=_at(0.5), series_count=3, anomalous_series=1, missing_series=0,
        series=[SeriesStatus(labels=series_labels, score=0.93, anomalous=True, state=SeriesState.ANOMALOUS,
                             since=_at(50)),
                SeriesStatus(labels={"instance_id": "i-0def5678", "job": "node"}, score=0.21, anomalous=False,
                             state=SeriesState.NORMAL, since=_at(300))],
        conditions=[_condition("Ready", ConditionStatus.TRUE, "Evaluating", "3 series scored", 300),
                    _condition("Anomalous", ConditionStatus.TRUE, "AnomalyDetected", "1 of 3 series anomalous", 50),
                    _condition("Degraded", ConditionStatus.FALSE, "AsExpected", "Prometheus answered", 300)],
    )
    kube.patch(API_VERSION, "anomalydetectors", namespace, DETECTOR, {"status": detector_status.to_wire()},
               subresource="status")

    step = Step.model_validate({"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 2,
                                                                               "max": 8}})
    policy = kube.create({
        "apiVersion": API_VERSION, "kind": "RemediationPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {"detectors": [DETECTOR], "actions": [step.to_wire()], "aws": {"region": "eu-west-1"},
                 "approval": {"required": True, "timeout": "30m"}, "cooldown": "1h",
                 "rateLimit": {"maxActions": 3, "window": "1h"}},
    })
    uid = policy["metadata"]["uid"]

    def create_action(incident: str, status: RemediationActionStatus, minutes_ago: float,
                      skip: SkipReason | None = None, approval: bool = True) -> dict[str, Any]:
        name = action_name(POLICY, incident, 0, skip)
        spec = RemediationActionSpec(
            policy_ref=PolicyRef(name=POLICY, uid=uid), incident=incident, step_index=0, step=step,
            targets=[Target(kind="AutoScalingGroup", id="web")],
            reason=Reason(source="detector", detector=DETECTOR, series=[series_labels], score=0.93, threshold=0.8,
                          anomalous_since=_at(minutes_ago + 5), time=_at(minutes_ago)),
            approval_required=approval, region="eu-west-1")
        created = kube.create({
            "apiVersion": API_VERSION, "kind": api_action.KIND,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {api_action.POLICY_LABEL: POLICY, api_action.INCIDENT_LABEL: incident,
                                    "app.kubernetes.io/managed-by": "vigil"},
                         "ownerReferences": [{"apiVersion": API_VERSION, "kind": "RemediationPolicy", "name": POLICY,
                                              "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec.to_wire(),
        })
        status.created_at = _at(minutes_ago)
        kube.patch(API_VERSION, api_action.PLURAL, namespace, name, {"status": status.to_wire()},
                   subresource="status")
        return created

    succeeded = create_action("i-1", RemediationActionStatus(
        phase=ActionPhase.SUCCEEDED, message="SetDesiredCapacity web 2 -> 4",
        decision=Decision(by="alice@example.com", at=_at(40), via="slack", field_manager="vigil-chatops"),
        started_at=_at(39), completed_at=_at(38), before={"desiredCapacity": 2}, after={"desiredCapacity": 4},
        aws_request_ids=["req-1"], attempts=1, notified=["slack"]), 45)
    skipped = create_action("i-2", RemediationActionStatus(
        phase=ActionPhase.SKIPPED, skip_reason=SkipReason.COOLDOWN_ACTIVE,
        message=f"cooldown until {_stamp(_at(-22))}", completed_at=_at(10)), 10,
        skip=SkipReason.COOLDOWN_ACTIVE, approval=False)
    pending = create_action("i-3", RemediationActionStatus(
        phase=ActionPhase.PENDING_APPROVAL, message="waiting for approval", expires_at=_at(-28)), 2)

    policy_status = RemediationPolicyStatus(
        observed_generation=1, phase=PolicyPhase.AWAITING_APPROVAL, cooldown_until=_at(-22), actions_in_window=2,
        in_flight=1, incident="i-3", incident_since=_at(3), escalation_step=0,
        last_action=LastAction(name=pending["metadata"]["name"], step=0, phase="PendingApproval", time=_at(2)),
        matched_detectors=[DETECTOR],
        conditions=[_condition("Ready", ConditionStatus.TRUE, "Valid", "1 detector matched", 300),
                    _condition("ActionAllowed", ConditionStatus.FALSE, "AwaitingApproval",
                               "an action waits for approval", 2),
                    _condition("Degraded", ConditionStatus.FALSE, "AsExpected", "", 300)])
    kube.patch(API_VERSION, "remediationpolicies", namespace, POLICY, {"status": policy_status.to_wire()},
               subresource="status")

    detector_ref, policy_ref = _involved(detector), _involved(policy)
    series_text = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(series_labels.items())) + "}"
    _event(kube, detector_ref, "Warning", "AnomalyDetected",
           f"1 series anomalous (threshold 0.8): {series_text} score 0.930", 50)
    s_ref = _involved(succeeded)
    proposal = f"scale-out on web because detector {DETECTOR} score 0.93"
    _event(kube, s_ref, "Normal", EventKind.APPROVAL_REQUESTED, proposal, 45)
    _event(kube, policy_ref, "Normal", EventKind.APPROVAL_REQUESTED, f"{s_ref['name']}: {proposal}", 45)
    _event(kube, s_ref, "Normal", EngineEvent.ACTION_APPROVED, "approved by alice@example.com via slack", 40)
    _event(kube, s_ref, "Normal", EventKind.ACTION_EXECUTED, "SetDesiredCapacity web 2 -> 4", 38)
    k_ref = _involved(skipped)
    _event(kube, k_ref, "Normal", EventKind.ACTION_SKIPPED, f"CooldownActive: cooldown until {_stamp(_at(-22))}", 10)
    return Incident(namespace, succeeded["metadata"]["name"], skipped["metadata"]["name"],
                    pending["metadata"]["name"], label)
