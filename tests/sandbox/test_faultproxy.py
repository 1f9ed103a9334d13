"""The FaultProxy in front of a real moto server, checked with real boto3 clients.

What matters: requests and answers pass through unchanged, faults hit only the
named operation (and service) and only ``times`` times, and botocore parses
every injected fault, in each protocol, into the ``ClientError`` real AWS
would give (code, message, HTTP status).
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from vigil_sandbox import faultproxy
from vigil_sandbox import moto as sandbox_moto
from vigil_sandbox.faultproxy import FaultProxy
from vigil_sandbox.ports import free_port

pytestmark = pytest.mark.timeout(60)

REGION = "us-east-1"
NO_RETRIES = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
SIGNED = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{}/aws4_request, SignedHeaders=host, Signature=0"


@pytest.fixture(scope="module")
def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10):
        pass
    with FaultProxy(moto_url) as fault_proxy:
        yield fault_proxy


class _Clients(dict[str, Any]):
    """boto3 clients through the proxy, without retries (one request per call), created on first use."""

    def __init__(self, session: boto3.Session, url: str) -> None:
        super().__init__()
        self._session, self._url = session, url

    def __missing__(self, service: str) -> Any:
        client = self[service] = self._session.client(service, endpoint_url=self._url, config=NO_RETRIES)
        return client


@pytest.fixture
def clients(session: boto3.Session, proxy: FaultProxy) -> dict[str, Any]:
    return _Clients(session, proxy.url)


def _post(url: str, body: bytes, service: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Authorization": SIGNED.format(service),
        **(headers or {}),
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def test_pass_through_is_byte_faithful(moto_url: str, proxy: FaultProxy) -> None:
    body = b"Action=DescribeRegions&Version=2016-11-15"
    assert _post(proxy.url, body, "ec2") == _post(moto_url, body, "ec2")
    # An error answer from moto itself is relayed untouched as well.
    bad = b"Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"
    direct, proxied = _post(moto_url, bad, "ec2"), _post(proxy.url, bad, "ec2")
    assert proxied == direct and proxied[0] == 400 and b"InvalidInstanceID.NotFound" in proxied[1]
    assert proxy.requests == [("ec2", "DescribeRegions"), ("ec2", "DescribeInstances")]


def test_boto3_round_trip_through_the_proxy(session: boto3.Session, moto_url: str, clients: dict[str, Any],
                                            proxy: FaultProxy) -> None:
    # Writes through the proxy, reads directly: the request body reaches moto unchanged.
    value = "ünïcode & <xml> = ok?%20"
    direct = session.client("ec2", endpoint_url=moto_url)
    vpc = direct.describe_vpcs()["Vpcs"][0]["VpcId"]
    clients["ec2"].create_tags(Resources=[vpc], Tags=[{"Key": "probe", "Value": value}])
    tags = direct.describe_tags(Filters=[{"Name": "key", "Values": ["probe"]}])["Tags"]
    assert [t["Value"] for t in tags] == [value]
    # And a JSON-protocol call.
    clients["ssm"].put_parameter(Name="/vigil/probe", Value=value, Type="String")
    assert clients["ssm"].get_parameter(Name="/vigil/probe")["Parameter"]["Value"] == value
    assert proxy.requests == [("ec2", "CreateTags"), ("ssm", "PutParameter"), ("ssm", "GetParameter")]


def _raises(call: Callable[[], object]) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(("service", "operation", "code", "status"), [
    ("autoscaling", "DescribeAutoScalingGroups", "Throttling", 400),
    ("autoscaling", "DescribeAutoScalingGroups", "InternalFailure", 500),
    ("elbv2", "DescribeTargetGroups", "AccessDenied", 403),
    ("sts", "GetCallerIdentity", "ExpiredToken", 400),
    ("ec2", "DescribeInstances", "RequestLimitExceeded", 503),
    ("ec2", "DescribeInstances", "UnauthorizedOperation", 403),
    ("ssm", "ListCommands", "ThrottlingException", 400),
    ("ssm", "ListCommands", "InternalServerError", 500),
])
def test_faults_parse_in_botocore(clients: dict[str, Any], proxy: FaultProxy, service: str, operation: str,
                                  code: str, status: int) -> None:
    message = "injected: <fault> & more"
    proxy.add_fault(operation, code, message, http_status=status)
    call = getattr(clients[service], botocore.xform_name(operation))
    error = _raises(call)
    assert error.response["Error"]["Code"] == code
    assert error.response["Error"]["Message"] == message
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.response["ResponseMetadata"]["RequestId"]
    assert error.operation_name == operation
    if service == "ssm":
        assert error.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == code
    call()  # used up: the next one reaches moto
    assert proxy.hits(operation) == 2


def test_faults_hit_only_the_named_operation_and_only_times_times(clients: dict[str, Any], proxy: FaultProxy) -> None:
    autoscaling = clients["autoscaling"]
    proxy.add_fault("DescribeAutoScalingGroups", "Throttling", "Rate exceeded", times=2)
    autoscaling.describe_launch_configurations()
    for _ in range(2):
        assert _raises(autoscaling.describe_auto_scaling_groups).response["Error"]["Code"] == "Throttling"
    autoscaling.describe_launch_configurations()
    assert autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert proxy.hits("DescribeAutoScalingGroups") == 3
    assert proxy.hits("DescribeLaunchConfigurations") == 2
    assert proxy.hits("SetDesiredCapacity") == 0


def test_faults_are_used_up_in_order(clients: dict[str, Any], proxy: FaultProxy) -> None:
    proxy.add_fault("GetCallerIdentity", "Throttling", times=1)
    proxy.add_fault("GetCallerIdentity", "AccessDenied", http_status=403, times=1)
    codes = [_raises(clients["sts"].get_caller_identity).response["Error"]["Code"] for _ in range(2)]
    assert codes == ["Throttling", "AccessDenied"]
    assert clients["sts"].get_caller_identity()["Account"] == "123456789012"


def test_service_filter(clients: dict[str, Any], proxy: FaultProxy) -> None:
    # DescribeTags exists in autoscaling, ec2 and elbv2; elbv2 signs as "elasticloadbalancing".
    proxy.add_fault("DescribeTags", "AccessDenied", http_status=403, service="elbv2", times=3)
    clients["autoscaling"].describe_tags()
    clients["ec2"].describe_tags()
    error = _raises(lambda: clients["elbv2"].describe_tags(ResourceArns=["arn:aws:elasticloadbalancing:x"]))
    assert error.response["Error"]["Code"] == "AccessDenied"
    assert proxy.requests == [("autoscaling", "DescribeTags"), ("ec2", "DescribeTags"),
                              ("elasticloadbalancing", "DescribeTags")]
    assert proxy.hits("DescribeTags") == 3


def test_standard_retries_see_the_faults(session: boto3.Session, proxy: FaultProxy) -> None:
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 3})
    ssm = session.client("ssm", endpoint_url=proxy.url, config=config)
    proxy.add_fault("ListCommands", "ServiceUnavailable", http_status=503, times=2)
    assert ssm.list_commands()["ResponseMetadata"]["RetryAttempts"] == 2
    assert proxy.hits("ListCommands") == 3


def test_clear(clients: dict[str, Any], proxy: FaultProxy) -> None:
    proxy.add_fault("GetCallerIdentity", "Throttling", times=5)
    _raises(clients["sts"].get_caller_identity)
    proxy.clear()
    assert (proxy.requests, proxy.hits("GetCallerIdentity")) == ([], 0)
    clients["sts"].get_caller_identity()
    assert proxy.requests == [("sts", "GetCallerIdentity")]


def test_add_fault_validation(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="times"):
        proxy.add_fault("DescribeInstances", "Throttling", times=0)
    with pytest.raises(ValueError, match="status"):
        proxy.add_fault("DescribeInstances", "Throttling", http_status=200)


@pytest.mark.parametrize(("headers", "body", "query", "expected"), [
    ({"X-Amz-Target": "AmazonSSM.SendCommand", "Authorization": SIGNED.format("ssm"),
      "Content-Type": "application/x-amz-json-1.1"}, b"{}", "",
     faultproxy.RequestInfo("ssm", "SendCommand", "json")),
    ({"Authorization": SIGNED.format("autoscaling"), "Content-Type": "application/x-www-form-urlencoded"},
     b"Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName=web", "",
     faultproxy.RequestInfo("autoscaling", "SetDesiredCapacity", "query")),
    ({"Authorization": SIGNED.format("ec2")}, b"Action=RebootInstances&DryRun=true", "",
     faultproxy.RequestInfo("ec2", "RebootInstances", "ec2")),
    ({}, b"", "Action=GetCallerIdentity&Version=2011-06-15",  # unsigned, action in the query string
     faultproxy.RequestInfo("", "GetCallerIdentity", "query")),
    ({"Authorization": SIGNED.format("s3")}, b"", "", faultproxy.RequestInfo("s3", "", "")),
])
def test_identify(headers: dict[str, str], body: bytes, query: str, expected: faultproxy.RequestInfo) -> None:
    assert faultproxy.identify(headers, body, query) == expected


def test_unreachable_target_answers_502(session: boto3.Session) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with FaultProxy(dead) as proxy:
        status, body = _post(proxy.url, b"Action=DescribeRegions", "ec2")
        assert status == 502 and b"cannot reach" in body


def test_stop_closes_the_port_and_keep_alive_connections(moto_url: str) -> None:
    proxy = FaultProxy(moto_url).start()
    url = urllib.parse.urlsplit(proxy.url)
    idle = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    # A form POST as botocore sends it: moto answers a body without this Content-Type with an empty 404.
    form = {"Authorization": SIGNED.format("ec2"), "Content-Type": "application/x-www-form-urlencoded"}
    try:
        idle.request("POST", "/", body=b"Action=DescribeRegions&Version=2016-11-15", headers=form)
        answer = idle.getresponse()
        body = answer.read()
        assert answer.status == 200 and b"DescribeRegionsResponse" in body, (answer.status, body[:300])
        assert not answer.will_close  # the connection stays open (HTTP/1.1 keep-alive)
        proxy.stop()
        with pytest.raises(OSError):
            socket.create_connection((url.hostname or "", url.port or 0), timeout=2).close()
        with pytest.raises((OSError, http.client.HTTPException)):
            idle.request("POST", "/", body=b"Action=DescribeRegions&Version=2016-11-15", headers=form)
            idle.getresponse()
    finally:
        idle.close()
        proxy.stop()
    with pytest.raises(RuntimeError):
        _ = proxy.url
    with pytest.raises(ValueError):
        FaultProxy("https://example.com")


def test_hold_keeps_the_answer_or_the_request_back(moto_url: str) -> None:
    """``hold`` makes an AWS call hang in flight; with forward_first the target still applies it."""
    with FaultProxy(moto_url) as proxy:
        moto = sandbox_moto.session().client("autoscaling", endpoint_url=proxy.url)
        results: list[object] = []

        def call() -> None:
            try:
                results.append(moto.describe_auto_scaling_groups())
            except Exception as exc:  # the dropped request ends as a connection error
                results.append(exc)

        release = proxy.hold("DescribeAutoScalingGroups", forward_first=True)
        worker = threading.Thread(target=call)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and results == []  # forwarded, answer held
        release()
        worker.join(timeout=10)
        assert isinstance(results[0], dict)

        release = proxy.hold("DescribeAutoScalingGroups", forward_first=False)
        worker = threading.Thread(target=call)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive()
        release()
        worker.join(timeout=60)
        assert proxy.hits("DescribeAutoScalingGroups") >= 2
