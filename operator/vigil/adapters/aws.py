"""All boto3 I/O for remediation: typed reads, audited writes, classified errors.

Synchronous on purpose: boto3 is, and the engine calls this module from a
thread pool. Every public method returns a small frozen dataclass (reads) or a
:class:`CallResult` carrying the AWS request id (writes), and every failure
is raised as an :class:`AwsError` classified as
:attr:`~vigil.api.v1alpha1.action.ErrorClass.RECOVERABLE` (throttling, "try
later", 5xx, network) or :attr:`~vigil.api.v1alpha1.action.ErrorClass.TERMINAL`
(everything else: permissions, validation, unknown resources).

Retries happen at two levels. botocore's ``standard`` retry mode retries
throttling, 5xx and connection errors *within one call* (``max_attempts``
attempts in total, exponential backoff with jitter, 1 s base for throttling,
and a client-wide retry quota). When those are used up the call raises a
Recoverable :class:`AwsError`, and the engine backs off *across ticks* on top
(``status.nextAttemptAt``); it never retries a Terminal one.

Credentials: the default chain (environment, IRSA web identity, instance
profile, ...). With ``role_arn`` the clients use a role assumed from those base
credentials, refreshed by botocore before it expires, so a long-running
operator never holds stale keys.

Known moto 5.2 gaps (the sandbox and the tests run against moto in server
mode; these are moto's behaviours, not ours):

* SetDesiredCapacity outside [MinSize, MaxSize] is applied (AWS: ValidationError);
  HonorCooldown is ignored, so ScalingActivityInProgress never happens.
* SetDesiredCapacity and TerminateInstanceInAutoScalingGroup on an unknown group
  or instance crash moto (HTTP 500 with an HTML body; botocore raises
  ``ResponseParserError``, classified Recoverable). AWS answers ValidationError.
* SetInstanceHealth Unhealthy only flips HealthStatus; moto never replaces the
  instance. TerminateInstanceInAutoScalingGroup terminates and launches the
  replacement synchronously.
* DescribeScalingActivities is always empty; instance refresh is not implemented.
* EC2 DryRun answers DryRunOperation without looking at the instance ids, and
  never UnauthorizedOperation. Malformed instance ids get
  InvalidInstanceID.NotFound (AWS: InvalidInstanceID.Malformed), which is why
  ids are validated here first. EC2 request ids are the constant "request-id".
* SSM commands "succeed" at once without running anything; SendCommand accepts
  unknown instance ids, and with InstanceIds (no Targets) moto lists *every*
  instance of the region in the command's InstanceIds. ListCommandInvocations
  is not implemented (HTTP 500); ListCommands ignores Filters and does not
  paginate; DescribeInstanceInformation is not implemented.
* ELBv2 RegisterTargets accepts unknown instance ids, targets are "healthy" at
  once, deregistration is immediate (no "draining"), one port per instance.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import boto3
import botocore
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.parsers
import botocore.session

import vigil
from vigil.adapters import redaction
from vigil.api.v1alpha1.action import ErrorClass

logger = logging.getLogger(__name__)

ENDPOINT_ENV: Final = "VIGIL_AWS_ENDPOINT_URL"
ROLE_SESSION_NAME: Final = "vigil-operator"
ROLE_DURATION_S: Final = 3600
SERVICES: Final = ("autoscaling", "ec2", "elbv2", "ssm", "sts")

#: Same pattern as the policy API (``InstanceTargets.instance_ids``).
INSTANCE_ID: Final = re.compile(r"^i-[0-9a-f]{8,17}$")
ASG_NAME_TAG: Final = "aws:autoscaling:groupName"

#: "Slow down / try later": the same call can succeed later.
RECOVERABLE_CODES: Final = frozenset({
    # Throttling.
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "PriorRequestNotComplete", "EC2ThrottledException", "BandwidthLimitExceeded",
    # Auto Scaling: another activity or update is in progress.
    "ScalingActivityInProgress", "ResourceContention",
    # Server side.
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable", "Unavailable",
    "RequestTimeout", "RequestTimeoutException",
    # Credentials: refreshable credentials are renewed on the next call; clock skew passes.
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "IDPCommunicationError",
})

#: Network failures before an answer: the request may not even have arrived.
RECOVERABLE_EXCEPTIONS: Final = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    # A garbled answer (an HTML 5xx page from a proxy, a cut-off body): botocore says retries may succeed.
    botocore.parsers.ResponseParserError,
)

#: What a boto3 call can raise: the service's answer, botocore's own errors, an unparseable answer.
_BOTO_ERRORS: Final = (
    botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, botocore.parsers.ResponseParserError,
)

#: Lifecycle states of instances leaving a group: not counted in its size.
_LEAVING = ("Terminating", "Terminated", "Detaching", "Detached")
#: EC2 operations that accept DryRun=True.
DRY_RUN_EC2: Final = frozenset({"RebootInstances", "TerminateInstances", "StopInstances", "StartInstances"})
#: SSM documents with an ``executionTimeout`` parameter.
_EXECUTION_TIMEOUT_DOCS = frozenset({"AWS-RunShellScript", "AWS-RunPowerShellScript"})
_COMMAND_DONE = frozenset({"Success", "Cancelled", "Failed", "TimedOut"})


# Errors.


class AwsError(Exception):
    """A failed AWS call, classified for the engine."""

    def __init__(
        self,
        error_class: ErrorClass,
        code: str,
        message: str,
        operation: str,
        request_id: str | None = None,
        http_status: int | None = None,
        retry_attempts: int = 0,
    ) -> None:
        super().__init__(f"{operation}: {code}: {message}" if message else f"{operation}: {code}")
        self.error_class = error_class
        self.code = code
        self.message = message
        self.operation = operation
        self.request_id = request_id
        self.http_status = http_status
        self.retry_attempts = retry_attempts  # retries botocore already made inside the call

    @property
    def recoverable(self) -> bool:
        return self.error_class is ErrorClass.RECOVERABLE


def classify(exc: BaseException, operation: str) -> AwsError:
    """Turn a boto3/botocore exception into an :class:`AwsError` (Recoverable or Terminal).

    Recoverable: the throttling family, Auto Scaling's "try later" codes, HTTP
    429 and 5xx, and network errors. Terminal: everything else, notably
    AccessDenied/UnauthorizedOperation, validation errors and unknown resources.
    """
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        response: Mapping[str, Any] = exc.response or {}
        error: Mapping[str, Any] = response.get("Error") or {}
        meta: Mapping[str, Any] = response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "")
        failed_operation = getattr(exc, "operation_name", operation)
        if failed_operation and failed_operation != operation:
            # E.g. the AssumeRole that refreshes credentials failed during SetDesiredCapacity.
            message = f"{failed_operation}: {message}"
        status = meta.get("HTTPStatusCode")
        http_status = int(status) if status is not None else None
        server_side = http_status is not None and (http_status >= 500 or http_status == 429)
        recoverable = code in RECOVERABLE_CODES or server_side
        return AwsError(
            ErrorClass.RECOVERABLE if recoverable else ErrorClass.TERMINAL,
            code=code,
            message=message,
            operation=operation,
            request_id=_request_id(response) or None,
            http_status=http_status,
            retry_attempts=int(meta.get("RetryAttempts") or 0),
        )
    error_class = ErrorClass.RECOVERABLE if isinstance(exc, RECOVERABLE_EXCEPTIONS) else ErrorClass.TERMINAL
    if isinstance(exc, botocore.parsers.ResponseParserError):
        # botocore quotes the raw answer in this message: a body is never recorded (status, Events, logs).
        return AwsError(error_class, code=type(exc).__name__, message="the answer could not be parsed",
                        operation=operation)
    return AwsError(error_class, code=type(exc).__name__, message=str(exc), operation=operation)


def _request_id(response: Mapping[str, Any]) -> str:
    meta: Mapping[str, Any] = response.get("ResponseMetadata") or {}
    request_id = meta.get("RequestId")
    if not request_id:
        headers: Mapping[str, str] = meta.get("HTTPHeaders") or {}
        request_id = headers.get("x-amzn-requestid") or headers.get("x-amz-request-id")
    return str(request_id or "")


# Results.


@dataclasses.dataclass(frozen=True)
class GroupState:
    name: str
    desired: int
    min_size: int
    max_size: int
    default_cooldown: int
    instance_ids: tuple[str, ...]  # all instances attached, sorted
    in_service: int  # of which LifecycleState InService
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class InstanceState:
    id: str
    state: str  # pending, running, stopping, stopped, shutting-down, terminated
    tags: dict[str, str]
    group: str | None  # Auto Scaling Group name, if any
    health: str | None  # Auto Scaling health (Healthy/Unhealthy), if in a group


@dataclasses.dataclass(frozen=True)
class TargetGroupState:
    arn: str
    tags: dict[str, str]
    targets: dict[str, str]  # instance id -> target health state (healthy, draining, ...)
    port: int | None = None  # the group's default port


@dataclasses.dataclass(frozen=True)
class CommandState:
    command_id: str
    status: str  # Pending, InProgress, Success, Cancelled, Failed, TimedOut, Cancelling
    comment: str
    document_name: str
    instance_ids: tuple[str, ...]
    requested_at: datetime.datetime | None
    target_count: int
    completed_count: int
    error_count: int
    status_details: str = ""

    @property
    def done(self) -> bool:
        return self.status in _COMMAND_DONE


@dataclasses.dataclass(frozen=True)
class CallResult:
    """A write that AWS accepted: its request id (for the audit trail) and what was sent or returned."""

    request_id: str
    detail: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DryRunVerdict:
    allowed: bool
    code: str
    message: str


def has_tag(tags: Mapping[str, str], key: str, value: str) -> bool:
    """The allow-guard: does the resource carry ``key=value`` (exactly)?"""
    return tags.get(key) == value


def _tags(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """AWS ``[{"Key": k, "Value": v}]`` lists as a dict (ASG tags carry extra fields, ignored)."""
    return {str(item["Key"]): str(item.get("Value") or "") for item in items or ()}


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# Clients.


class _FixedCredentialProvider(botocore.credentials.CredentialProvider):  # type: ignore[misc]
    """Hands botocore one (refreshable) credentials object."""

    METHOD = "vigil-assume-role"
    CANONICAL_NAME = "vigil-assume-role"

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._credentials


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """The explicit endpoint, else ``VIGIL_AWS_ENDPOINT_URL``; None leaves it to botocore (``AWS_ENDPOINT_URL``)."""
    return endpoint_url or os.environ.get(ENDPOINT_ENV) or None


class AwsClients:
    """boto3 clients for one region and role, created on first use and then reused (they are thread-safe)."""

    def __init__(
        self,
        region: str,
        role_arn: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 3,
        session: boto3.Session | None = None,
    ) -> None:
        self.region = region
        self.role_arn = role_arn
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.max_attempts = max_attempts
        # max_attempts counts the first attempt too (like AWS_MAX_ATTEMPTS); botocore's own
        # "max_attempts" key would count retries only.
        self.config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=20,
            user_agent_extra=f"vigil/{vigil.__version__}",
        )
        self._base = session
        self._session: boto3.Session | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    @property
    def session(self) -> boto3.Session:
        """The session the clients come from: the base one, or one with the assumed role's credentials."""
        with self._lock:
            return self._get_session()

    def _get_session(self) -> boto3.Session:
        if self._session is None:
            if self._base is None:
                self._base = boto3.Session()
            self._session = self._base if self.role_arn is None else self._assume_role(self._base, self.role_arn)
        return self._session

    def _assume_role(self, base: boto3.Session, role_arn: str) -> boto3.Session:
        sts = base.client("sts", region_name=self.region, endpoint_url=self.endpoint_url, config=self.config)
        self._clients["sts:base"] = sts  # closed with the others

        def refresh() -> dict[str, str]:
            response = sts.assume_role(
                RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME, DurationSeconds=ROLE_DURATION_S
            )
            credentials = response["Credentials"]
            # Defense in depth: should anything ever quote them, the log and Event filters know them.
            redaction.remember(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"])
            logger.info("Assumed %s (request %s), valid until %s",
                        role_arn, _request_id(response), credentials["Expiration"])
            return {
                "access_key": credentials["AccessKeyId"],
                "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"],
                "expiry_time": credentials["Expiration"].isoformat(),
            }

        credentials = botocore.credentials.DeferredRefreshableCredentials(refresh_using=refresh, method="assume-role")
        core = botocore.session.Session()
        core.register_component(
            "credential_provider", botocore.credentials.CredentialResolver([_FixedCredentialProvider(credentials)])
        )
        return boto3.Session(botocore_session=core, region_name=self.region)

    def client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._get_session().client(
                    service, region_name=self.region, endpoint_url=self.endpoint_url, config=self.config
                )
                self._clients[service] = client
            return client

    @property
    def autoscaling(self) -> Any:
        return self.client("autoscaling")

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def elbv2(self) -> Any:
        return self.client("elbv2")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def sts(self) -> Any:
        return self.client("sts")

    def close(self) -> None:
        """Close the clients' connection pools; using this object again starts afresh."""
        with self._lock:
            clients, self._clients, self._session = list(self._clients.values()), {}, None
        for client in clients:
            client.close()


class ClientCache:
    """One :class:`AwsAdapter` per (region, role_arn, endpoint), shared by all policies that use it."""

    def __init__(
        self, endpoint_url: str | None = None, max_attempts: int = 3, session: boto3.Session | None = None
    ) -> None:
        self._endpoint_url = endpoint_url
        self._max_attempts = max_attempts
        self._session = session
        self._entries: dict[tuple[str, str | None, str | None], AwsAdapter] = {}
        self._lock = threading.Lock()

    def get(self, region: str, role_arn: str | None = None) -> AwsAdapter:
        endpoint = resolve_endpoint(self._endpoint_url)
        key = (region, role_arn, endpoint)
        with self._lock:
            adapter = self._entries.get(key)
            if adapter is None:
                clients = AwsClients(region, role_arn, endpoint, self._max_attempts, self._session)
                adapter = self._entries[key] = AwsAdapter(clients)
            return adapter

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for adapter in entries:
            adapter.clients.close()


# Operations.


class AwsAdapter:
    """The reads and writes remediation needs, on one :class:`AwsClients`.

    Operation names in errors and logs are the AWS API names
    (``SetDesiredCapacity``), the same the engine records as the intent.
    """

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    # Plumbing.

    def _call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self.clients.client(service), botocore.xform_name(operation))
        try:
            response: dict[str, Any] = method(**params)
        except _BOTO_ERRORS as exc:
            raise self._failed(exc, operation) from exc
        logger.debug("%s %s: request %s", service, operation, _request_id(response))
        return response

    def _pages(self, service: str, operation: str, **params: Any) -> Iterator[dict[str, Any]]:
        paginator = self.clients.client(service).get_paginator(botocore.xform_name(operation))
        try:
            for page in paginator.paginate(**params):
                logger.debug("%s %s: request %s", service, operation, _request_id(page))
                yield page
        except _BOTO_ERRORS as exc:
            raise self._failed(exc, operation) from exc

    def _write(self, service: str, operation: str, detail: dict[str, Any], **params: Any) -> CallResult:
        response = self._call(service, operation, **params)
        request_id = _request_id(response)
        logger.info("%s %s: request %s", service, operation, request_id)
        return CallResult(request_id=request_id, detail=detail)

    def _failed(self, exc: BaseException, operation: str) -> AwsError:
        # Debug only: the caller decides what a failure means (a DryRunOperation is good news,
        # a throttle is routine) and reports the AwsError, request id included.
        error = classify(exc, operation)
        logger.debug("%s failed (%s, request %s): %s", operation, error.error_class.value, error.request_id, error)
        return error

    @staticmethod
    def _check_ids(ids: Iterable[str], operation: str) -> list[str]:
        unique = _unique(ids)
        bad = [i for i in unique if not INSTANCE_ID.match(i)]
        if bad:
            raise AwsError(ErrorClass.TERMINAL, "InvalidInstanceID.Malformed",
                           f"invalid instance id(s): {', '.join(bad[:5])}", operation)
        return unique

    # Reads.

    def caller_identity(self) -> str:
        """The ARN the clients act as (the assumed role's session, with ``role_arn``)."""
        return str(self._call("sts", "GetCallerIdentity")["Arn"])

    def describe_group(self, name: str) -> GroupState:
        """One Auto Scaling Group; Terminal ``NotFound`` if it does not exist (or is not visible)."""
        response = self._call("autoscaling", "DescribeAutoScalingGroups", AutoScalingGroupNames=[name])
        groups = response.get("AutoScalingGroups") or []
        if not groups:
            raise AwsError(ErrorClass.TERMINAL, "NotFound", f"Auto Scaling Group {name!r} not found",
                           "DescribeAutoScalingGroups", _request_id(response) or None)
        group = groups[0]
        instances = group.get("Instances") or []
        return GroupState(
            name=group["AutoScalingGroupName"],
            desired=int(group["DesiredCapacity"]),
            min_size=int(group["MinSize"]),
            max_size=int(group["MaxSize"]),
            default_cooldown=int(group.get("DefaultCooldown") or 0),
            instance_ids=tuple(sorted(i["InstanceId"] for i in instances)),
            in_service=sum(1 for i in instances if i.get("LifecycleState") == "InService"),
            tags=_tags(group.get("Tags")),
        )

    def describe_instances(self, ids: Iterable[str]) -> dict[str, InstanceState]:
        """The instances that exist, by id; unknown ids are simply absent. Malformed ids are Terminal.

        Uses an ``instance-id`` filter rather than ``InstanceIds``, which fails
        the whole call on one unknown id. Terminated instances stay visible
        for about an hour, with state ``terminated``.
        """
        wanted = self._check_ids(ids, "DescribeInstances")
        found: dict[str, InstanceState] = {}
        for chunk in _chunks(wanted, 100):
            for page in self._pages("ec2", "DescribeInstances", Filters=[{"Name": "instance-id", "Values": chunk}]):
                for reservation in page.get("Reservations") or []:
                    for item in reservation.get("Instances") or []:
                        tags = _tags(item.get("Tags"))
                        found[item["InstanceId"]] = InstanceState(
                            id=item["InstanceId"], state=str((item.get("State") or {}).get("Name") or "unknown"),
                            tags=tags, group=tags.get(ASG_NAME_TAG), health=None,
                        )
        for chunk in _chunks(sorted(found), 50):
            for page in self._pages("autoscaling", "DescribeAutoScalingInstances", InstanceIds=chunk):
                for item in page.get("AutoScalingInstances") or []:
                    state = found.get(item["InstanceId"])
                    if state is not None:
                        found[state.id] = dataclasses.replace(
                            state, group=item.get("AutoScalingGroupName") or state.group,
                            health=item.get("HealthStatus"),
                        )
        return {i: found[i] for i in wanted if i in found}

    def group_sizes(self, groups: Iterable[str]) -> dict[str, int]:
        """Instances per group (not counting those terminating or detaching), for blast-radius percentages.

        Unknown groups are absent.
        """
        names = _unique(groups)
        sizes: dict[str, int] = {}
        for chunk in _chunks(names, 50):
            for page in self._pages("autoscaling", "DescribeAutoScalingGroups", AutoScalingGroupNames=chunk):
                for group in page.get("AutoScalingGroups") or []:
                    sizes[group["AutoScalingGroupName"]] = sum(
                        1 for i in group.get("Instances") or []
                        if not str(i.get("LifecycleState", "")).startswith(_LEAVING)
                    )
        return sizes

    def describe_target_group(self, arn: str) -> TargetGroupState:
        """An ELBv2 target group, its tags and its targets' health (Terminal ``TargetGroupNotFound`` if absent).

        An instance registered on several ports reports its least healthy state.
        """
        groups = self._call("elbv2", "DescribeTargetGroups", TargetGroupArns=[arn]).get("TargetGroups") or []
        port = groups[0].get("Port") if groups else None
        descriptions = self._call("elbv2", "DescribeTags", ResourceArns=[arn]).get("TagDescriptions") or []
        tags = _tags(descriptions[0].get("Tags")) if descriptions else {}
        health = self._call("elbv2", "DescribeTargetHealth", TargetGroupArn=arn)
        targets: dict[str, str] = {}
        for item in health.get("TargetHealthDescriptions") or []:
            target_id = item["Target"]["Id"]
            state = str((item.get("TargetHealth") or {}).get("State") or "unknown")
            if targets.get(target_id, "healthy") == "healthy":
                targets[target_id] = state
        return TargetGroupState(arn=arn, tags=tags, targets=targets, port=int(port) if port is not None else None)

    def find_command(
        self, comment: str, instance_ids: Iterable[str] = (), since: datetime.datetime | None = None
    ) -> CommandState | None:
        """The newest SSM command with exactly this comment that covers all ``instance_ids``, if any.

        This is how an interrupted ``send_command`` is found again: the engine
        puts the RemediationAction's uid in the comment. ListCommands cannot
        filter on comments, so it is narrowed server-side to the first instance
        (and to ``since``, if given) and matched here.
        """
        ids = self._check_ids(instance_ids, "ListCommands")
        params: dict[str, Any] = {}
        if ids:
            params["InstanceId"] = ids[0]
        if since is not None:
            stamp = since.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            params["Filters"] = [{"key": "InvokedAfter", "value": stamp}]
        best: dict[str, Any] | None = None
        for page in self._pages("ssm", "ListCommands", **params):
            for command in page.get("Commands") or []:
                if command.get("Comment") != comment or not set(ids) <= set(command.get("InstanceIds") or ()):
                    continue
                if best is None or _requested(command) > _requested(best):
                    best = command
        if best is None:
            return None
        return CommandState(
            command_id=best["CommandId"],
            status=str(best.get("Status") or ""),
            comment=str(best.get("Comment") or ""),
            document_name=str(best.get("DocumentName") or ""),
            instance_ids=tuple(sorted(best.get("InstanceIds") or ())),
            requested_at=best.get("RequestedDateTime"),
            target_count=int(best.get("TargetCount") or 0),
            completed_count=int(best.get("CompletedCount") or 0),
            error_count=int(best.get("ErrorCount") or 0),
            status_details=str(best.get("StatusDetails") or ""),
        )

    # Writes.

    def set_desired_capacity(self, name: str, desired: int, honor_cooldown: bool) -> CallResult:
        params = {"AutoScalingGroupName": name, "DesiredCapacity": desired, "HonorCooldown": honor_cooldown}
        return self._write("autoscaling", "SetDesiredCapacity", dict(params), **params)

    def set_instance_unhealthy(self, instance_id: str) -> CallResult:
        """Mark the instance Unhealthy so its group replaces it, grace period or not."""
        self._check_ids([instance_id], "SetInstanceHealth")
        params = {"InstanceId": instance_id, "HealthStatus": "Unhealthy", "ShouldRespectGracePeriod": False}
        return self._write("autoscaling", "SetInstanceHealth", dict(params), **params)

    def terminate_in_group(self, instance_id: str) -> CallResult:
        """Terminate the instance; its group launches a replacement (desired capacity unchanged)."""
        self._check_ids([instance_id], "TerminateInstanceInAutoScalingGroup")
        params = {"InstanceId": instance_id, "ShouldDecrementDesiredCapacity": False}
        response = self._call("autoscaling", "TerminateInstanceInAutoScalingGroup", **params)
        activity = response.get("Activity") or {}
        detail = {**params, "ActivityId": activity.get("ActivityId"), "StatusCode": activity.get("StatusCode")}
        request_id = _request_id(response)
        logger.info("autoscaling TerminateInstanceInAutoScalingGroup: request %s", request_id)
        return CallResult(request_id=request_id, detail=detail)

    def reboot(self, ids: Iterable[str]) -> CallResult:
        instance_ids = self._check_ids(ids, "RebootInstances")
        return self._write("ec2", "RebootInstances", {"InstanceIds": instance_ids}, InstanceIds=instance_ids)

    def send_command(
        self, ids: Iterable[str], document: str, commands: Sequence[str], timeout_seconds: int, comment: str
    ) -> CallResult:
        """Run ``commands`` through SSM; ``detail["CommandId"]`` identifies the command.

        ``timeout_seconds`` is both the delivery timeout and, for the two
        RunShellScript/RunPowerShellScript documents, the execution timeout.
        ``comment`` (at most 100 characters) is what :meth:`find_command` matches.
        """
        instance_ids = self._check_ids(ids, "SendCommand")
        parameters: dict[str, list[str]] = {"commands": list(commands)}
        if document in _EXECUTION_TIMEOUT_DOCS:
            parameters["executionTimeout"] = [str(timeout_seconds)]
        response = self._call(
            "ssm", "SendCommand", InstanceIds=instance_ids, DocumentName=document, Parameters=parameters,
            TimeoutSeconds=timeout_seconds, Comment=comment,
        )
        command = response.get("Command") or {}
        request_id = _request_id(response)
        logger.info("ssm SendCommand: request %s, command %s", request_id, command.get("CommandId"))
        detail = {
            "CommandId": command.get("CommandId"),
            "Status": command.get("Status"),
            "DocumentName": document,
            "InstanceIds": instance_ids,
            "Comment": comment,
        }
        return CallResult(request_id=request_id, detail=detail)

    def deregister_targets(self, arn: str, ids: Iterable[str], port: int | None = None) -> CallResult:
        return self._targets("DeregisterTargets", arn, ids, port)

    def register_targets(self, arn: str, ids: Iterable[str], port: int | None = None) -> CallResult:
        return self._targets("RegisterTargets", arn, ids, port)

    def _targets(self, operation: str, arn: str, ids: Iterable[str], port: int | None) -> CallResult:
        instance_ids = self._check_ids(ids, operation)
        targets = [{"Id": i} if port is None else {"Id": i, "Port": port} for i in instance_ids]
        detail = {"TargetGroupArn": arn, "Targets": targets}
        return self._write("elbv2", operation, detail, TargetGroupArn=arn, Targets=targets)

    # Dry run.

    def dry_run_check(self, operation: str, **params: Any) -> DryRunVerdict:
        """Would ``operation`` with these (AWS-named) parameters go through?

        EC2 operations in :data:`DRY_RUN_EC2` are sent with ``DryRun=True``, so
        AWS checks permissions: DryRunOperation means allowed,
        UnauthorizedOperation means not. Auto Scaling, SSM and ELBv2 have no
        DryRun: for them this is a read-only check that the group, instances
        or target group exist and are visible, and the message says so (IAM
        permission for the write itself is not verified). Recoverable errors
        are raised, not turned into a verdict.
        """
        try:
            if operation in DRY_RUN_EC2:
                return self._ec2_dry_run(operation, params)
            return self._read_only_check(operation, params)
        except AwsError as exc:
            if exc.recoverable:
                raise
            return DryRunVerdict(False, exc.code, exc.message or str(exc))

    def _ec2_dry_run(self, operation: str, params: dict[str, Any]) -> DryRunVerdict:
        self._check_ids(params.get("InstanceIds") or (), operation)
        try:
            self._call("ec2", operation, **{**params, "DryRun": True})
        except AwsError as exc:
            if exc.code == "DryRunOperation":
                return DryRunVerdict(True, exc.code, f"EC2 DryRun: {exc.message}")
            raise
        return DryRunVerdict(True, "Accepted", f"EC2 {operation} with DryRun returned without DryRunOperation")

    def _read_only_check(self, operation: str, params: dict[str, Any]) -> DryRunVerdict:
        note = f"read-only check: {operation} has no DryRun, so its IAM permission is not verified"
        if operation == "SetDesiredCapacity":
            group = self.describe_group(params["AutoScalingGroupName"])
            return DryRunVerdict(True, "Validated", f"group {group.name} exists (desired {group.desired}); {note}")
        if operation in ("SetInstanceHealth", "TerminateInstanceInAutoScalingGroup"):
            instance_id = params["InstanceId"]
            instance = self.describe_instances([instance_id]).get(instance_id)
            if instance is None or instance.state in ("shutting-down", "terminated"):
                return DryRunVerdict(False, "NotFound", f"instance {instance_id} does not exist or is terminated")
            if instance.group is None:
                return DryRunVerdict(False, "NotInGroup", f"instance {instance_id} is not in an Auto Scaling Group")
            return DryRunVerdict(True, "Validated", f"instance {instance_id} is in group {instance.group}; {note}")
        if operation == "SendCommand":
            ids = list(params["InstanceIds"])
            instances = self.describe_instances(ids)
            missing = [i for i in ids if i not in instances or instances[i].state != "running"]
            if missing:
                return DryRunVerdict(False, "NotRunning", f"instances not running: {', '.join(missing)}")
            return DryRunVerdict(True, "Validated", f"{len(ids)} instance(s) running; {note}")
        if operation in ("RegisterTargets", "DeregisterTargets"):
            target_group = self.describe_target_group(params["TargetGroupArn"])
            count = len(target_group.targets)
            return DryRunVerdict(True, "Validated", f"target group exists ({count} targets); {note}")
        raise ValueError(f"dry_run_check does not know {operation!r}")


def _requested(command: Mapping[str, Any]) -> datetime.datetime:
    value = command.get("RequestedDateTime")
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    return datetime.datetime.min.replace(tzinfo=datetime.UTC)
