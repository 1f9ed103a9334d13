"""A small AWS estate in moto (server mode) for the sandbox and the tests.

moto runs as a real HTTP server on 127.0.0.1; the operator reaches it through
``--aws-endpoint-url``. The estate: an Auto Scaling Group ``web`` carrying the
allow-guard tag ``vigil.dev/managed=true`` and the namespace tag
``vigil.dev/namespace=<namespace>`` (both propagated to its instances), an
untagged group ``legacy``, and a tagged ELBv2 target group with ``web``'s
instances registered. State is reset with ``POST /moto-api/reset``.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.request
from typing import Any

import boto3

from vigil_sandbox.ports import free_port

REGION = "us-east-1"
TAG = {"Key": "vigil.dev/managed", "Value": "true"}
NAMESPACE_TAG_KEY = "vigil.dev/namespace"
#: Fake credentials: moto accepts anything, and nothing here may reach real AWS.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def session() -> boto3.Session:
    return boto3.Session(region_name=REGION, **CREDENTIALS)


class MotoServer:
    """moto's ThreadedMotoServer on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        # moto serves through werkzeug, which logs every request to stderr even with verbose=False.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        self.reset()
        return self

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        self._server.stop()

    def client(self, service: str) -> Any:
        return session().client(service, endpoint_url=self.url)


@dataclasses.dataclass
class Estate:
    group: str
    instances: list[str]
    untagged_group: str
    untagged_instances: list[str]
    target_group_arn: str

    def desired(self, moto: MotoServer, group: str | None = None) -> int:
        return int(self.describe(moto, group)["DesiredCapacity"])

    def describe(self, moto: MotoServer, group: str | None = None) -> dict[str, Any]:
        groups = moto.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[group or self.group])["AutoScalingGroups"]
        return dict(groups[0])


def build(moto: MotoServer, desired: int = 2, min_size: int = 1, max_size: int = 10,
          namespace: str = "default") -> Estate:
    """``namespace``: the Kubernetes namespace whose policies may act on ``web`` (its namespace tag)."""
    owner = {"Key": NAMESPACE_TAG_KEY, "Value": namespace}
    ec2 = moto.client("ec2")
    autoscaling = moto.client("autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="web",
                               LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    for name, tags in (("web", [TAG, owner]), ("legacy", [])):
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": "web"},
            MinSize=min_size, MaxSize=max_size, DesiredCapacity=desired, AvailabilityZones=[f"{REGION}a"],
            Tags=[{**t, "PropagateAtLaunch": True, "ResourceId": name, "ResourceType": "auto-scaling-group"}
                  for t in tags],
        )

    def members(group: str) -> list[str]:
        found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return sorted(i["InstanceId"] for i in found["Instances"])

    web, legacy = members("web"), members("legacy")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    elbv2 = moto.client("elbv2")
    arn = elbv2.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance",
                                    Tags=[TAG, owner])["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": 80} for i in web])
    return Estate("web", web, "legacy", legacy, arn)
