"""The AWS adapter against real peers: moto in server mode, and the FaultProxy for what moto never does.

One moto server per module, reset before each test (``POST /moto-api/reset``)
and repopulated: a launch template, a managed Auto Scaling Group of three
instances (tagged ``vigil.dev/managed=true``, propagated at launch), an
untagged group of two, an ELBv2 target group with the managed instances, and
an instance profile that makes them "SSM-managed" (moto does not care, AWS would).
Credentials are fixed ``testing`` keys on a Session built here, and the AWS_*
environment is isolated, so the machine's configuration does not leak in.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.credentials
import botocore.exceptions
import pytest

from vigil.adapters import aws
from vigil.api.v1alpha1.action import ErrorClass
from vigil.api.v1alpha1.policy import DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.ports import free_port

pytestmark = pytest.mark.timeout(60)

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/vigil-remediator"
MANAGED = "web"
UNMANAGED = "legacy"
UNKNOWN_ID = "i-0123456789abcdef0"


@dataclasses.dataclass(frozen=True)
class World:
    """What the fixture built in moto, and plain boto3 clients to check state with."""

    url: str
    session: boto3.Session
    managed_ids: tuple[str, ...]
    unmanaged_ids: tuple[str, ...]
    target_group_arn: str

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.url)

    def group(self, name: str = MANAGED) -> dict[str, Any]:
        groups: list[dict[str, Any]] = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return groups[0]


@pytest.fixture(scope="module", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No AWS configuration from the machine: no profiles, endpoints, keys or retry settings."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", aws.ENDPOINT_ENV):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", str(empty))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def session(isolated_env: None) -> boto3.Session:
    """One session for the module: botocore loads each service model once per session (~0.1 s per client)."""
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@pytest.fixture(scope="module")
def seed_clients(session: boto3.Session, moto_url: str) -> dict[str, Any]:
    return {name: session.client(name, endpoint_url=moto_url) for name in ("ec2", "autoscaling", "iam", "elbv2")}


@pytest.fixture
def world(moto_url: str, session: boto3.Session, seed_clients: dict[str, Any]) -> World:
    with urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10):
        pass
    ec2, autoscaling, iam, elbv2 = (seed_clients[name] for name in ("ec2", "autoscaling", "iam", "elbv2"))

    # "SSM-managed": an instance profile whose role AWS would need AmazonSSMManagedInstanceCore on
    # (moto has no AWS managed policies unless told to load them, and runs commands regardless).
    iam.create_role(RoleName="vigil-ssm", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }))
    iam.create_instance_profile(InstanceProfileName="vigil-ssm")
    iam.add_role_to_instance_profile(InstanceProfileName="vigil-ssm", RoleName="vigil-ssm")

    ec2.create_launch_template(LaunchTemplateName="vigil-app", LaunchTemplateData={
        "ImageId": _image(ec2), "InstanceType": "t3.micro", "IamInstanceProfile": {"Name": "vigil-ssm"},
    })
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    template = {"LaunchTemplateName": "vigil-app", "Version": "$Latest"}
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=MANAGED, LaunchTemplate=template, MinSize=1, MaxSize=6, DesiredCapacity=3,
        DefaultCooldown=120, VPCZoneIdentifier=subnet,
        Tags=[{"Key": DEFAULT_TAG_KEY, "Value": DEFAULT_TAG_VALUE, "PropagateAtLaunch": True},
              {"Key": "team", "Value": "payments", "PropagateAtLaunch": False}],
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=UNMANAGED, LaunchTemplate=template, MinSize=0, MaxSize=4, DesiredCapacity=2,
        VPCZoneIdentifier=subnet,
    )
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[MANAGED, UNMANAGED])
    ids = {g["AutoScalingGroupName"]: tuple(sorted(i["InstanceId"] for i in g["Instances"]))
           for g in groups["AutoScalingGroups"]}
    target_group = elbv2.create_target_group(
        Name="vigil-web", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="instance",
        Tags=[{"Key": DEFAULT_TAG_KEY, "Value": DEFAULT_TAG_VALUE}],
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=target_group, Targets=[{"Id": i} for i in ids[MANAGED]])
    assert len(ids[MANAGED]) == 3 and len(ids[UNMANAGED]) == 2
    return World(moto_url, session, ids[MANAGED], ids[UNMANAGED], target_group)


def _image(ec2: Any) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
    image_id: str = images["Images"][0]["ImageId"]
    return image_id


@pytest.fixture
def adapter(world: World) -> aws.AwsAdapter:
    return aws.AwsAdapter(aws.AwsClients(REGION, endpoint_url=world.url, session=world.session))


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as fault_proxy:
        yield fault_proxy


def _through(world: World, proxy: FaultProxy, max_attempts: int = 1, role_arn: str | None = None) -> aws.AwsAdapter:
    """An adapter whose every request goes through the proxy (one attempt per call unless told otherwise)."""
    clients = aws.AwsClients(REGION, role_arn, proxy.url, max_attempts=max_attempts, session=world.session)
    return aws.AwsAdapter(clients)


# Reads.


def test_describe_group(adapter: aws.AwsAdapter, world: World) -> None:
    group = adapter.describe_group(MANAGED)
    assert group == aws.GroupState(
        name=MANAGED, desired=3, min_size=1, max_size=6, default_cooldown=120,
        instance_ids=world.managed_ids, in_service=3,
        tags={DEFAULT_TAG_KEY: DEFAULT_TAG_VALUE, "team": "payments"},
    )
    assert aws.has_tag(group.tags, DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE)
    assert not aws.has_tag(adapter.describe_group(UNMANAGED).tags, DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE)


def test_describe_group_absent_is_terminal_not_found(adapter: aws.AwsAdapter) -> None:
    with pytest.raises(aws.AwsError) as caught:
        adapter.describe_group("no-such-group")
    assert caught.value.error_class is ErrorClass.TERMINAL
    assert caught.value.code == "NotFound"
    assert caught.value.operation == "DescribeAutoScalingGroups"


def test_describe_instances(adapter: aws.AwsAdapter, world: World) -> None:
    wanted = [*world.managed_ids, world.unmanaged_ids[0], UNKNOWN_ID]
    found = adapter.describe_instances(wanted)
    assert list(found) == [*world.managed_ids, world.unmanaged_ids[0]]  # request order, unknown id absent
    for instance_id in world.managed_ids:
        state = found[instance_id]
        assert (state.state, state.group, state.health) == ("running", MANAGED, "Healthy")
        assert aws.has_tag(state.tags, DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE)  # propagated at launch
        assert "team" not in state.tags  # not propagated
    unmanaged = found[world.unmanaged_ids[0]]
    assert unmanaged.group == UNMANAGED
    assert not aws.has_tag(unmanaged.tags, DEFAULT_TAG_KEY, DEFAULT_TAG_VALUE)
    assert adapter.describe_instances([]) == {}
    assert adapter.describe_instances([UNKNOWN_ID]) == {}


def test_standalone_instance_has_no_group(adapter: aws.AwsAdapter, world: World) -> None:
    ec2 = world.client("ec2")
    instance_id = ec2.run_instances(ImageId=_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    state = adapter.describe_instances([instance_id])[instance_id]
    assert (state.group, state.health, state.state) == (None, None, "running")


@pytest.mark.parametrize("bad", ["bogus", "i-XYZ", "i-123", "vol-0123456789abcdef0"])
def test_malformed_instance_ids_are_terminal(adapter: aws.AwsAdapter, bad: str) -> None:
    with pytest.raises(aws.AwsError) as caught:
        adapter.describe_instances([UNKNOWN_ID, bad])
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.TERMINAL, "InvalidInstanceID.Malformed")
    with pytest.raises(aws.AwsError, match="Malformed"):
        adapter.reboot([bad])


def test_group_sizes(adapter: aws.AwsAdapter) -> None:
    assert adapter.group_sizes([MANAGED, UNMANAGED, "no-such-group", MANAGED]) == {MANAGED: 3, UNMANAGED: 2}
    assert adapter.group_sizes([]) == {}


def test_describe_target_group(adapter: aws.AwsAdapter, world: World) -> None:
    state = adapter.describe_target_group(world.target_group_arn)
    assert state == aws.TargetGroupState(
        arn=world.target_group_arn, tags={DEFAULT_TAG_KEY: DEFAULT_TAG_VALUE},
        targets=dict.fromkeys(world.managed_ids, "healthy"), port=8080,
    )
    missing = world.target_group_arn.rsplit("/", 1)[0] + "/0123456789abcdef"
    with pytest.raises(aws.AwsError) as caught:
        adapter.describe_target_group(missing)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.TERMINAL, "TargetGroupNotFound")


# Writes, each checked through plain boto3 afterwards.


def test_set_desired_capacity(adapter: aws.AwsAdapter, world: World) -> None:
    result = adapter.set_desired_capacity(MANAGED, 5, honor_cooldown=True)
    assert result.request_id
    assert result.detail == {"AutoScalingGroupName": MANAGED, "DesiredCapacity": 5, "HonorCooldown": True}
    group = world.group()
    assert group["DesiredCapacity"] == 5
    assert len(group["Instances"]) == 5
    assert adapter.describe_group(MANAGED).in_service == 5


def test_set_instance_unhealthy(adapter: aws.AwsAdapter, world: World) -> None:
    victim = world.managed_ids[0]
    result = adapter.set_instance_unhealthy(victim)
    assert result.request_id
    assert result.detail == {"InstanceId": victim, "HealthStatus": "Unhealthy", "ShouldRespectGracePeriod": False}
    asg = world.client("autoscaling")
    health = {i["InstanceId"]: i["HealthStatus"] for i in asg.describe_auto_scaling_instances()["AutoScalingInstances"]}
    assert health[victim] == "Unhealthy"
    assert all(health[i] == "Healthy" for i in world.managed_ids[1:])
    assert adapter.describe_instances([victim])[victim].health == "Unhealthy"


def test_terminate_in_group_replaces_without_decrementing(adapter: aws.AwsAdapter, world: World) -> None:
    victim = world.managed_ids[1]
    result = adapter.terminate_in_group(victim)
    assert result.request_id
    assert result.detail["ShouldDecrementDesiredCapacity"] is False
    assert result.detail["ActivityId"]
    ec2 = world.client("ec2")
    reservation = ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    group = adapter.describe_group(MANAGED)
    assert group.desired == 3
    assert group.in_service == 3
    assert victim not in group.instance_ids
    assert len(set(group.instance_ids) - set(world.managed_ids)) == 1  # the replacement


def test_reboot(adapter: aws.AwsAdapter, world: World, proxy: FaultProxy) -> None:
    result = _through(world, proxy).reboot([world.managed_ids[0], world.managed_ids[0], world.managed_ids[2]])
    assert result.detail == {"InstanceIds": [world.managed_ids[0], world.managed_ids[2]]}  # deduplicated
    assert result.request_id  # moto's EC2 answers carry the constant "request-id"
    assert proxy.requests == [("ec2", "RebootInstances")]
    states = adapter.describe_instances(world.managed_ids)
    assert {s.state for s in states.values()} == {"running"}


def test_send_command_then_find_it_by_comment(adapter: aws.AwsAdapter, world: World) -> None:
    targets = list(world.managed_ids[:2])
    comment = "vigil ra 4a0c1a52-0a5e-4a55-9a0e-1f0d7b1d2c3e"
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    assert adapter.find_command(comment, targets) is None
    adapter.send_command(targets, "AWS-RunShellScript", ["echo other"], 60, "someone else")
    result = adapter.send_command(targets, "AWS-RunShellScript", ["systemctl restart app"], 120, comment)
    command_id = result.detail["CommandId"]
    assert command_id and result.request_id
    assert result.detail["InstanceIds"] == targets

    found = adapter.find_command(comment, targets, since=before)
    assert found is not None
    assert (found.command_id, found.comment, found.document_name) == (command_id, comment, "AWS-RunShellScript")
    assert found.status == "Success" and found.done  # moto: every command succeeds at once, without running
    assert set(targets) <= set(found.instance_ids)
    assert adapter.find_command(comment) is not None  # without instances: all commands are searched
    assert adapter.find_command("vigil ra another-uid", targets) is None

    ssm = world.client("ssm")
    sent = ssm.list_commands(CommandId=command_id)["Commands"][0]
    assert sent["Parameters"] == {"commands": ["systemctl restart app"], "executionTimeout": ["120"]}


def test_deregister_then_register_targets(adapter: aws.AwsAdapter, world: World) -> None:
    elbv2 = world.client("elbv2")

    def registered() -> set[str]:
        health = elbv2.describe_target_health(TargetGroupArn=world.target_group_arn)
        return {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]}

    drained = world.managed_ids[:2]
    result = adapter.deregister_targets(world.target_group_arn, drained)
    assert result.request_id
    assert result.detail["Targets"] == [{"Id": i} for i in drained]
    assert registered() == {world.managed_ids[2]}
    assert set(adapter.describe_target_group(world.target_group_arn).targets) == {world.managed_ids[2]}

    result = adapter.register_targets(world.target_group_arn, drained, port=8080)
    assert result.detail["Targets"] == [{"Id": i, "Port": 8080} for i in drained]
    assert registered() == set(world.managed_ids)


def test_deregistering_an_unregistered_target_is_terminal(adapter: aws.AwsAdapter, world: World) -> None:
    with pytest.raises(aws.AwsError) as caught:
        adapter.deregister_targets(world.target_group_arn, [world.unmanaged_ids[0]])
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.TERMINAL, "InvalidTarget")
    assert caught.value.request_id


# Dry runs.


def test_dry_run_reboot_is_allowed_and_changes_nothing(adapter: aws.AwsAdapter, world: World, proxy: FaultProxy
                                                       ) -> None:
    verdict = _through(world, proxy).dry_run_check("RebootInstances", InstanceIds=list(world.managed_ids))
    assert verdict.allowed and verdict.code == "DryRunOperation"
    assert proxy.requests == [("ec2", "RebootInstances")]


def test_dry_run_unauthorized_is_not_allowed(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("RebootInstances", "UnauthorizedOperation", "You are not authorized to perform this operation.",
                    http_status=403)
    verdict = _through(world, proxy).dry_run_check("RebootInstances", InstanceIds=[world.managed_ids[0]])
    assert verdict == aws.DryRunVerdict(False, "UnauthorizedOperation",
                                        "You are not authorized to perform this operation.")


def test_dry_run_throttled_is_raised_not_a_verdict(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("RebootInstances", "RequestLimitExceeded", "Request limit exceeded.", http_status=503)
    with pytest.raises(aws.AwsError) as caught:
        _through(world, proxy).dry_run_check("RebootInstances", InstanceIds=[world.managed_ids[0]])
    assert caught.value.recoverable


def test_dry_run_read_only_checks(adapter: aws.AwsAdapter, world: World) -> None:
    group = world.group()
    verdict = adapter.dry_run_check("SetDesiredCapacity", AutoScalingGroupName=MANAGED, DesiredCapacity=4)
    assert verdict.allowed and verdict.code == "Validated" and "read-only" in verdict.message
    assert world.group()["DesiredCapacity"] == group["DesiredCapacity"]

    verdict = adapter.dry_run_check("SetDesiredCapacity", AutoScalingGroupName="no-such-group", DesiredCapacity=4)
    assert (verdict.allowed, verdict.code) == (False, "NotFound")

    victim = world.managed_ids[0]
    assert adapter.dry_run_check("TerminateInstanceInAutoScalingGroup", InstanceId=victim).allowed
    assert adapter.dry_run_check("SetInstanceHealth", InstanceId=victim, HealthStatus="Unhealthy").allowed
    assert adapter.dry_run_check("SetInstanceHealth", InstanceId=UNKNOWN_ID).code == "NotFound"
    assert adapter.dry_run_check("SetInstanceHealth", InstanceId="bogus").code == "InvalidInstanceID.Malformed"
    assert adapter.dry_run_check("SendCommand", InstanceIds=list(world.managed_ids)).allowed
    assert adapter.dry_run_check("SendCommand", InstanceIds=[victim, UNKNOWN_ID]).code == "NotRunning"
    arn = world.target_group_arn
    assert adapter.dry_run_check("DeregisterTargets", TargetGroupArn=arn, Targets=[{"Id": victim}]).allowed
    verdict = adapter.dry_run_check("RegisterTargets", TargetGroupArn=arn.rsplit("/", 1)[0] + "/0123456789abcdef")
    assert (verdict.allowed, verdict.code) == (False, "TargetGroupNotFound")
    assert adapter.describe_instances([victim])[victim].health == "Healthy"  # nothing was changed
    with pytest.raises(ValueError, match="does not know"):
        adapter.dry_run_check("DeleteAutoScalingGroup", AutoScalingGroupName=MANAGED)


# Classification of real errors.


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("Throttling", 400, ErrorClass.RECOVERABLE),
    ("ScalingActivityInProgress", 400, ErrorClass.RECOVERABLE),
    ("ServiceUnavailable", 503, ErrorClass.RECOVERABLE),
    ("AccessDenied", 403, ErrorClass.TERMINAL),
    ("ValidationError", 400, ErrorClass.TERMINAL),
])
def test_classify_faults_from_the_wire(world: World, proxy: FaultProxy, code: str, status: int,
                                       expected: ErrorClass) -> None:
    proxy.add_fault("SetDesiredCapacity", code, f"injected {code}", http_status=status)
    with pytest.raises(aws.AwsError) as caught:
        _through(world, proxy).set_desired_capacity(MANAGED, 4, honor_cooldown=False)
    error = caught.value
    assert (error.error_class, error.code, error.http_status) == (expected, code, status)
    assert (error.operation, error.message) == ("SetDesiredCapacity", f"injected {code}")
    assert error.request_id  # from the error body
    assert isinstance(error.__cause__, botocore.exceptions.ClientError)
    assert world.group()["DesiredCapacity"] == 3  # never reached moto


def test_json_protocol_fault_is_classified(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("SendCommand", "ThrottlingException", "Rate exceeded")
    proxy.add_fault("ListCommands", "AccessDeniedException", "not allowed: ssm:ListCommands")
    adapter = _through(world, proxy)
    with pytest.raises(aws.AwsError) as throttled:
        adapter.send_command([world.managed_ids[0]], "AWS-RunShellScript", ["true"], 60, "c")
    assert (throttled.value.error_class, throttled.value.code) == (ErrorClass.RECOVERABLE, "ThrottlingException")
    with pytest.raises(aws.AwsError) as denied:
        adapter.find_command("c", [world.managed_ids[0]])
    assert (denied.value.error_class, denied.value.code) == (ErrorClass.TERMINAL, "AccessDeniedException")


def test_moto_instance_not_found_is_terminal(adapter: aws.AwsAdapter) -> None:
    with pytest.raises(aws.AwsError) as caught:
        adapter.reboot([UNKNOWN_ID])
    error = caught.value
    assert (error.error_class, error.code, error.http_status) == (ErrorClass.TERMINAL, "InvalidInstanceID.NotFound",
                                                                  400)
    assert UNKNOWN_ID in error.message


def test_connection_refused_is_recoverable(session: boto3.Session) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    adapter = aws.AwsAdapter(aws.AwsClients(REGION, endpoint_url=endpoint, max_attempts=1, session=session))
    with pytest.raises(aws.AwsError) as caught:
        adapter.describe_group(MANAGED)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.RECOVERABLE, "EndpointConnectionError")
    assert caught.value.request_id is None


@pytest.mark.parametrize(("code", "status", "expected"), [
    *[(code, 400, ErrorClass.RECOVERABLE) for code in (
        "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled",
        "SlowDown", "PriorRequestNotComplete", "ScalingActivityInProgress", "ResourceContention")],
    ("InternalError", 500, ErrorClass.RECOVERABLE),
    ("InternalFailure", 500, ErrorClass.RECOVERABLE),
    ("Unavailable", 503, ErrorClass.RECOVERABLE),
    ("SomethingNew", 502, ErrorClass.RECOVERABLE),  # any 5xx
    ("SomethingNew", 429, ErrorClass.RECOVERABLE),
    *[(code, 400, ErrorClass.TERMINAL) for code in (
        "ValidationError", "InvalidParameterValue", "InvalidParameterCombination", "InvalidInstanceID.NotFound",
        "InvalidInstanceID.Malformed", "TargetGroupNotFound", "InvalidTarget", "InvalidInstanceId", "SomethingNew")],
    *[(code, 403, ErrorClass.TERMINAL) for code in (
        "AccessDenied", "AccessDeniedException", "UnauthorizedOperation")],
    ("AuthFailure", 401, ErrorClass.TERMINAL),
])
def test_classify_grid(code: str, status: int, expected: ErrorClass) -> None:
    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"},
         "ResponseMetadata": {"RequestId": "r-1", "HTTPStatusCode": status, "RetryAttempts": 2}},
        "SetDesiredCapacity",
    )
    error = aws.classify(exc, "SetDesiredCapacity")
    assert (error.error_class, error.code, error.http_status, error.request_id, error.retry_attempts) == (
        expected, code, status, "r-1", 2)
    assert aws.classify(error, "Other") is error


@pytest.mark.parametrize(("exc", "expected"), [
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), ErrorClass.RECOVERABLE),
    (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), ErrorClass.RECOVERABLE),
    (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), ErrorClass.RECOVERABLE),
    (botocore.exceptions.NoCredentialsError(), ErrorClass.TERMINAL),
    (botocore.exceptions.ParamValidationError(report="bad"), ErrorClass.TERMINAL),
])
def test_classify_botocore_exceptions(exc: Exception, expected: ErrorClass) -> None:
    error = aws.classify(exc, "DescribeInstances")
    assert (error.error_class, error.code) == (expected, type(exc).__name__)


# botocore's own retries, underneath the engine's.


def test_standard_retries_absorb_throttling(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("SetDesiredCapacity", "Throttling", "Rate exceeded", times=2)
    result = _through(world, proxy, max_attempts=3).set_desired_capacity(MANAGED, 4, honor_cooldown=False)
    assert result.request_id
    assert proxy.hits("SetDesiredCapacity") == 3
    assert world.group()["DesiredCapacity"] == 4


def test_standard_retries_give_up_recoverable(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("SetDesiredCapacity", "Throttling", "Rate exceeded", times=5)
    with pytest.raises(aws.AwsError) as caught:
        _through(world, proxy, max_attempts=3).set_desired_capacity(MANAGED, 4, honor_cooldown=False)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.RECOVERABLE, "Throttling")
    assert caught.value.retry_attempts == 2
    assert proxy.hits("SetDesiredCapacity") == 3  # max_attempts counts the first attempt
    assert world.group()["DesiredCapacity"] == 3


def test_access_denied_is_not_retried(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("SetDesiredCapacity", "AccessDenied", "not authorized", http_status=403, times=5)
    with pytest.raises(aws.AwsError) as caught:
        _through(world, proxy, max_attempts=3).set_desired_capacity(MANAGED, 4, honor_cooldown=False)
    assert caught.value.error_class is ErrorClass.TERMINAL
    assert proxy.hits("SetDesiredCapacity") == 1


# Clients: assumed role, cache, endpoint resolution.


def test_assume_role_uses_refreshable_credentials(world: World, proxy: FaultProxy) -> None:
    adapter = _through(world, proxy, role_arn=ROLE_ARN)
    assert proxy.requests == []  # lazy: nothing happens before the first call
    assert adapter.caller_identity() == f"arn:aws:sts::{ACCOUNT}:assumed-role/vigil-remediator/{aws.ROLE_SESSION_NAME}"
    adapter.describe_group(MANAGED)
    assert proxy.requests == [("sts", "AssumeRole"), ("sts", "GetCallerIdentity"),
                              ("autoscaling", "DescribeAutoScalingGroups")]
    credentials = adapter.clients.session.get_credentials()
    assert isinstance(credentials, botocore.credentials.RefreshableCredentials)
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key != "testing" and frozen.token  # the role's temporary keys
    assert proxy.hits("AssumeRole") == 1  # valid for an hour: not refreshed per call


def test_assume_role_denied_is_terminal(world: World, proxy: FaultProxy) -> None:
    proxy.add_fault("AssumeRole", "AccessDenied", "not authorized to perform: sts:AssumeRole", http_status=403)
    with pytest.raises(aws.AwsError) as caught:
        _through(world, proxy, role_arn=ROLE_ARN).describe_group(MANAGED)
    assert caught.value.error_class is ErrorClass.TERMINAL
    assert (caught.value.code, caught.value.operation) == ("AccessDenied", "DescribeAutoScalingGroups")
    assert caught.value.message.startswith("AssumeRole: ")
    assert proxy.hits("DescribeAutoScalingGroups") == 0


def test_client_config(world: World) -> None:
    clients = aws.AwsClients(REGION, endpoint_url=world.url, max_attempts=4, session=world.session)
    config = clients.ec2.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (5, 20)
    assert config.user_agent_extra.startswith("vigil/")
    assert clients.ec2 is clients.ec2  # cached
    assert clients.ec2.meta.region_name == REGION
    clients.close()


def test_endpoint_from_environment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(aws.ENDPOINT_ENV, world.url)
    clients = aws.AwsClients(REGION, session=world.session)
    assert clients.endpoint_url == world.url
    assert aws.AwsAdapter(clients).group_sizes([MANAGED]) == {MANAGED: 3}
    assert aws.AwsClients(REGION, endpoint_url="http://127.0.0.1:1", session=world.session).endpoint_url == (
        "http://127.0.0.1:1")  # explicit wins
    monkeypatch.delenv(aws.ENDPOINT_ENV)
    monkeypatch.setenv("AWS_ENDPOINT_URL", world.url)  # botocore's own variable still works
    clients = aws.AwsClients(REGION, session=world.session)
    assert clients.endpoint_url is None
    assert aws.AwsAdapter(clients).group_sizes([UNMANAGED]) == {UNMANAGED: 2}


def test_client_cache_shares_by_region_role_and_endpoint(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = aws.ClientCache(endpoint_url=world.url, session=world.session)
    first = cache.get(REGION)
    assert cache.get(REGION) is first
    assert cache.get(REGION, ROLE_ARN) is not first
    assert cache.get("eu-west-1") is not first
    assert len(cache) == 3
    assert first.describe_group(MANAGED).desired == 3
    cache.close()
    assert len(cache) == 0

    monkeypatch.setenv(aws.ENDPOINT_ENV, world.url)
    by_env = aws.ClientCache(session=world.session)
    adapter = by_env.get(REGION)
    monkeypatch.setenv(aws.ENDPOINT_ENV, "http://127.0.0.1:1")
    assert by_env.get(REGION) is not adapter  # the endpoint is part of the key
    assert adapter.clients.endpoint_url == world.url


# moto's own behaviour, pinned: if moto changes, the gap notes in aws.py need updating.


def test_moto_gaps_set_desired_capacity(adapter: aws.AwsAdapter, world: World) -> None:
    adapter.set_desired_capacity(MANAGED, 9, honor_cooldown=True)  # above MaxSize 6: AWS says ValidationError
    assert world.group()["DesiredCapacity"] == 9
    adapter.set_desired_capacity(MANAGED, 2, honor_cooldown=True)  # within the 120 s cooldown: no error either
    assert world.group()["DesiredCapacity"] == 2
    with pytest.raises(aws.AwsError) as caught:  # AWS: ValidationError; moto: HTTP 500 with an HTML page
        adapter.set_desired_capacity("no-such-group", 1, honor_cooldown=False)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.RECOVERABLE, "ResponseParserError")
