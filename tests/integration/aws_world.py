"""A small AWS estate in moto (server mode): a tagged Auto Scaling Group, an untagged one, a target group.

moto runs as a real HTTP server on 127.0.0.1 and the operator talks to it
through ``--aws-endpoint-url`` (optionally through the fault proxy). State is
reset with ``POST /moto-api/reset`` between tests.
"""

from __future__ import annotations

import dataclasses
import urllib.request
from typing import Any

import boto3

from tests.harness import AWS_ENV, free_port, wait_for

REGION = "us-east-1"
TAG = {"Key": "vigil.dev/managed", "Value": "true"}


def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"], region_name=REGION)


class Moto:
    """moto's ThreadedMotoServer on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Moto:
        self.server.start()
        wait_for(lambda: self.reset() or True, timeout=20, what="moto up")
        return self

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        self.server.stop()

    def client(self, service: str) -> Any:
        return session().client(service, endpoint_url=self.url)


@dataclasses.dataclass
class Estate:
    group: str
    instances: list[str]
    untagged_group: str
    untagged_instances: list[str]
    target_group_arn: str

    def desired(self, moto: Moto, group: str | None = None) -> int:
        found = moto.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[group or self.group])["AutoScalingGroups"][0]
        return int(found["DesiredCapacity"])


def build(moto: Moto, desired: int = 2, min_size: int = 1, max_size: int = 10) -> Estate:
    ec2 = moto.client("ec2")
    autoscaling = moto.client("autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": image,
                                                                             "InstanceType": "t3.micro"})
    for name, tags in (("web", [TAG]), ("legacy", [])):
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
                                    Tags=[TAG])["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": 80} for i in web])
    return Estate("web", web, "legacy", legacy, arn)
