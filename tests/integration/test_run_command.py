"""runCommand end to end: the operator follows the SSM command it sent until every instance has finished.

Peers: real Prometheus, the API emulator, ``vigil run``, moto behind the FaultProxy, and in front of both the
scripted SSM of tests/integration/ssm_script.py, which answers GetCommandInvocation (moto runs nothing and
reports Success at once). SendCommand and ListCommands are moto's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OperatorFactory
from tests.harness import steady, wait_for
from tests.integration import scenario
from tests.integration.aws_world import Estate, Moto
from tests.integration.ssm_script import IN_PROGRESS, ScriptedSsm, failed, success
from tests.integration.test_remediation import (
    INCIDENT,
    actions,
    apply_detector,
    apply_policy,
    event,
    wait_phase,
    with_instance,
)
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.kubeapi import KubeAPIServer
from vigil_sandbox.prometheus import PrometheusServer

SECRET = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(history=scenario.cpu_history("incident")) as server:
        yield server


@pytest.fixture
def ssm(proxy: FaultProxy) -> Iterator[ScriptedSsm]:
    with ScriptedSsm(proxy.url) as server:
        yield server


def args(prometheus: PrometheusServer, ssm: ScriptedSsm) -> tuple[str, ...]:
    return ("--prometheus-url", prometheus.url, "--aws-endpoint-url", ssm.url, "--no-leader-election",
            "--command-poll-interval", "0.5")


def run_command(name: str = "restart-nginx", after: str = "0s") -> dict[str, Any]:
    return {"name": name, "after": after, "runCommand": {"targets": {"fromLabel": "instance_id"},
                                                         "commands": ["systemctl restart nginx"],
                                                         "timeoutSeconds": 60}}


def command_status(kubeapi: KubeAPIServer, policy: str = "web") -> dict[str, Any] | None:
    for action in actions(kubeapi):
        if action["spec"]["policyRef"]["name"] == policy and action["spec"]["step"].get("runCommand"):
            found = (action.get("status") or {}).get("commandStatus")
            return dict(found) if found else None
    return None


def sent_command(moto: Moto, action_uid: str) -> str:
    """The id of the command moto received with the action's uid as its comment (how a restart finds it)."""
    found = [c["CommandId"] for c in moto.client("ssm").list_commands()["Commands"]
             if c.get("Comment") == f"vigil {action_uid}"]
    assert len(found) == 1, found
    return str(found[0])


def test_the_command_is_followed_until_every_instance_succeeds(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy,
        ssm: ScriptedSsm, estate: Estate, moto: Moto) -> None:
    victim = estate.instances[0]
    ssm.script(victim, IN_PROGRESS)  # until the test says otherwise
    operator = run_operator(*args(prometheus, ssm))
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, [run_command()])
    # Another policy on the same trigger acts while the command runs: polling holds nothing up.
    apply_policy(kubeapi, [{"name": "scale", "scaleAutoScalingGroup": {"name": "web", "by": 1, "min": 1, "max": 5}}],
                 name="scaler")
    running = wait_for(lambda: (s := command_status(kubeapi)) and s["status"] == "InProgress" and s.get("polls", 0) >= 3
                       and s, what="the command polled while it runs")
    action = next(a for a in actions(kubeapi) if a["spec"]["policyRef"]["name"] == "web")
    assert action["status"]["phase"] == "Executing"
    assert running["commandId"] == sent_command(moto, action["metadata"]["uid"])
    assert running["invocations"] == [{"instanceId": victim, "status": "InProgress", "exitCode": -1,
                                       "statusDetails": "InProgress", "truncated": False}]
    assert running["deadline"] > running["sentAt"]
    scaled = wait_for(lambda: [a for a in actions(kubeapi) if a["spec"]["policyRef"]["name"] == "scaler"
                               and (a.get("status") or {}).get("phase") == "Succeeded"], what="the other policy acts")
    assert scaled and estate.desired(moto) == 3
    assert (command_status(kubeapi) or {}).get("status") == "InProgress"  # still running meanwhile
    event(kubeapi, "RemediationAction", action["metadata"]["name"], "CommandSent")

    output = "".join(f"line {i}\n" for i in range(40)).replace("line 3\n", f"key {SECRET}\n")
    ssm.script(victim, success(output))
    done = wait_for(lambda: [a for a in actions(kubeapi) if a["spec"]["policyRef"]["name"] == "web"
                             and (a.get("status") or {}).get("phase") == "Succeeded"], what="command succeeded")[0]
    result = done["status"]["commandStatus"]
    assert result["status"] == "Success" and result["commandId"] == running["commandId"]
    (invocation,) = result["invocations"]
    assert invocation["instanceId"] == victim and invocation["status"] == "Success" and invocation["exitCode"] == 0
    kept = invocation["output"].splitlines()
    assert len(kept) == 20 and kept[0] == "line 0" and kept[-1] == "line 19" and invocation["truncated"] is True
    assert SECRET not in invocation["output"] and "key <redacted>" in invocation["output"]
    assert "command succeeded on 1 instance(s)" in done["status"]["message"]
    polls = ssm.polls(victim)
    steady(lambda: ssm.polls(victim) == polls and proxy.hits("SendCommand") == 1, operator.passes)
    assert not operator.errors()


def test_a_failed_command_ends_failed_and_the_ladder_climbs(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy,
        ssm: ScriptedSsm, estate: Estate, moto: Moto) -> None:
    victim = estate.instances[0]
    ssm.script(victim, IN_PROGRESS, IN_PROGRESS,
               failed(3, stdout="restarting nginx\n", stderr="Job for nginx.service failed.\n"))
    run_operator(*args(prometheus, ssm))
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, [run_command(),
                           {"name": "reboot", "after": "1s",
                            "rebootInstances": {"targets": {"fromLabel": "instance_id"}}}])
    failed_action = wait_phase(kubeapi, "Failed")[0]
    status = failed_action["status"]
    assert status["errorCode"] == "CommandFailed" and status["errorClass"] == "Terminal"
    assert f"{victim} Failed, exit 3" in status["message"]
    (invocation,) = status["commandStatus"]["invocations"]
    assert invocation["exitCode"] == 3 and invocation["output"] == "restarting nginx\n"
    assert invocation["errorOutput"] == "Job for nginx.service failed.\n"
    assert status["commandStatus"]["status"] == "Failed"
    event(kubeapi, "RemediationAction", failed_action["metadata"]["name"], "ActionFailed")
    # The remedy did not work and the detector still fires: the next rung runs.
    rebooted = wait_phase(kubeapi, "Succeeded")[0]
    assert rebooted["spec"]["stepIndex"] == 1 and rebooted["spec"]["targets"][0]["id"] == victim
    assert proxy.hits("RebootInstances") == 1 and proxy.hits("SendCommand") == 1


def test_a_restart_while_the_command_runs_polls_the_same_command(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy,
        ssm: ScriptedSsm, estate: Estate, moto: Moto) -> None:
    victim = estate.instances[0]
    ssm.script(victim, IN_PROGRESS)
    first = run_operator(*args(prometheus, ssm))
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, [run_command()])
    running = wait_for(lambda: (s := command_status(kubeapi)) and s.get("polls", 0) >= 1 and s,
                       what="the command polled")
    first.kill()
    ssm.script(victim, success("done\n"))
    restarted = run_operator(*args(prometheus, ssm), name="restarted")
    done = wait_phase(kubeapi, "Succeeded")[0]
    assert done["status"]["commandStatus"]["commandId"] == running["commandId"]
    assert ssm.command_ids() == {running["commandId"]}
    assert proxy.hits("SendCommand") == 1 and len(actions(kubeapi)) == 1
    steady(lambda: proxy.hits("SendCommand") == 1, restarted.passes)


def test_a_restart_before_the_command_id_is_recorded_finds_it_by_its_comment(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, prometheus: PrometheusServer, proxy: FaultProxy,
        ssm: ScriptedSsm, estate: Estate, moto: Moto) -> None:
    victim = estate.instances[0]
    ssm.script(victim, success("ok\n"))
    first = run_operator(*args(prometheus, ssm))
    release = proxy.hold("SendCommand", forward_first=True)  # moto gets it; the answer never comes back
    apply_detector(kubeapi, query=with_instance(INCIDENT, victim))
    apply_policy(kubeapi, [run_command()])
    executing = wait_phase(kubeapi, "Executing")[0]
    wait_for(lambda: proxy.hits("SendCommand") == 1, what="SendCommand in flight")
    assert "commandStatus" not in executing["status"]
    first.kill()
    release()
    run_operator(*args(prometheus, ssm), name="restarted")
    done = wait_phase(kubeapi, "Succeeded")[0]
    assert done["status"]["commandStatus"]["commandId"] == sent_command(moto, done["metadata"]["uid"])
    assert proxy.hits("SendCommand") == 1 and proxy.hits("ListCommands") >= 1
