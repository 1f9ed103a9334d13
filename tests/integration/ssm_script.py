"""A scripted SSM in front of moto: GetCommandInvocation answers from a script, everything else is forwarded.

moto's SSM "runs" a command by marking it Success at once, and has no
ListCommandInvocations. To test how the operator follows a command (InProgress,
then Success, Failed with an exit code and output, TimedOut), this server sits
between the operator and moto (or the FaultProxy in front of moto): requests
with ``X-Amz-Target: AmazonSSM.GetCommandInvocation`` get the next scripted
state of that instance, in SSM's JSON protocol; every other request (SendCommand,
ListCommands, EC2, Auto Scaling, ...) is forwarded unchanged.

This is the only part of the command's life that is scripted rather than real:
whether the operator's polling, status fields and ladder behave against *real*
SSM is not tested here (see the README, "runCommand results").

Test scaffolding, stdlib only, 127.0.0.1 on a free port.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import threading
import time
import urllib.parse
import uuid
from types import TracebackType
from typing import Any

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "content-length"})


@dataclasses.dataclass(frozen=True)
class Invocation:
    """One answer of GetCommandInvocation for an instance."""

    status: str  # Pending, InProgress, Delayed, Success, Cancelled, TimedOut, Failed, Cancelling
    response_code: int = -1
    stdout: str = ""
    stderr: str = ""
    status_details: str | None = None

    def body(self, command_id: str, instance_id: str) -> dict[str, Any]:
        return {
            "CommandId": command_id, "InstanceId": instance_id, "Comment": "", "DocumentName": "AWS-RunShellScript",
            "DocumentVersion": "1", "PluginName": "aws:runShellScript", "ResponseCode": self.response_code,
            "ExecutionStartDateTime": "", "ExecutionElapsedTime": "", "ExecutionEndDateTime": "",
            "Status": self.status, "StatusDetails": self.status_details or self.status,
            "StandardOutputContent": self.stdout, "StandardOutputUrl": "",
            "StandardErrorContent": self.stderr, "StandardErrorUrl": "",
            "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
        }


IN_PROGRESS = Invocation("InProgress")


def success(stdout: str = "", code: int = 0) -> Invocation:
    return Invocation("Success", code, stdout)


def failed(code: int, stdout: str = "", stderr: str = "") -> Invocation:
    return Invocation("Failed", code, stdout, stderr)


TIMED_OUT = Invocation("TimedOut", -1, status_details="ExecutionTimedOut")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: ScriptedSsm


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if (self.headers.get("X-Amz-Target") or "") == "AmazonSSM.GetCommandInvocation":
            request = json.loads(body or b"{}")
            status, answer = self.server.owner._answer(str(request.get("CommandId")), str(request.get("InstanceId")))
            payload = json.dumps(answer).encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            if status != 200:
                self.send_header("x-amzn-ErrorType", str(answer["__type"]))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        target = self.server.owner.target
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            connection.close()

    do_GET = do_POST = _handle


class ScriptedSsm:
    """Answer GetCommandInvocation per instance from :meth:`script`; forward the rest to ``target_url``.

    Each poll of an instance takes the next scripted :class:`Invocation`; the last one repeats. An
    instance without a script gets ``InvocationDoesNotExist`` (what SSM answers before it knows the
    invocation).
    """

    def __init__(self, target_url: str) -> None:
        self.target = urllib.parse.urlsplit(target_url)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Invocation]] = {}
        #: (time, command id, instance id) of every GetCommandInvocation asked.
        self.asked: list[tuple[float, str, str]] = []
        self._server: _Server | None = None

    def script(self, instance_id: str, *states: Invocation) -> None:
        """Replace what the next polls of ``instance_id`` answer."""
        with self._lock:
            self._scripts[instance_id] = list(states)

    def polls(self, instance_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, _, i in self.asked if instance_id in (None, i))

    def command_ids(self) -> set[str]:
        with self._lock:
            return {c for _, c, _ in self.asked}

    def _answer(self, command_id: str, instance_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.asked.append((time.time(), command_id, instance_id))
            states = self._scripts.get(instance_id)
            if not states:
                return 400, {"__type": "InvocationDoesNotExist", "message": f"no invocation for {instance_id}"}
            state = states.pop(0) if len(states) > 1 else states[0]
        return 200, state.body(command_id, instance_id)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ScriptedSsm:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="scripted-ssm").start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
