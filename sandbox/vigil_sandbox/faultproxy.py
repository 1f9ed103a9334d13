"""An HTTP proxy in front of moto that fails chosen AWS operations on purpose.

moto never throttles, never answers 503 and never denies access, yet those are
exactly the answers the remediation engine must classify (Recoverable versus
Terminal) and survive. :class:`FaultProxy` sits between boto3 and the moto
server: it forwards every request unchanged and relays the answer byte for
byte, except for requests matching a configured fault, which get an error in
the wire format of the operation's protocol, so botocore parses it into the
same ``ClientError`` (code, message, HTTP status) that real AWS would produce,
and botocore's own retry logic sees a genuine retryable (or final) answer.

How a request is recognised, for the three protocols the operator uses:

* query protocol (autoscaling, elbv2, sts) and the EC2 protocol: the
  form-encoded body carries ``Action=SetDesiredCapacity``;
* JSON protocol (ssm): the ``X-Amz-Target: AmazonSSM.SendCommand`` header;
* the service, for all of them: the SigV4 credential scope in the
  ``Authorization`` header (``Credential=AKID/20240101/us-east-1/autoscaling/aws4_request``).
  That is the *signing* name: elbv2 signs as ``elasticloadbalancing``.

REST protocols (S3, Lambda, ...) and the Smithy RPCv2 CBOR protocol are
forwarded but not recognised: their operation is logged as ``""``.

Test-support code: stdlib only (``http.server`` in a thread), no TLS, binds to
127.0.0.1 on a free port.
"""

from __future__ import annotations

import collections
import email.message
import http.client
import http.server
import io
import json
import re
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Final

from vigil_sandbox import httpserve

__all__ = ["Fault", "FaultProxy", "RequestInfo", "identify"]

#: boto3 client names whose SigV4 signing name differs; ``add_fault(service=...)`` accepts either.
SIGNING_NAMES: Final[dict[str, str]] = {
    "elbv2": "elasticloadbalancing",
    "elb": "elasticloadbalancing",
}

#: Never forwarded: they describe one connection, not the request (RFC 9110 section 7.6.1).
_HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})

#: ``Credential=AKID/DATE/REGION/SERVICE/aws4_request``: the service is the fourth part.
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")


@dataclass(frozen=True)
class RequestInfo:
    """What the proxy recognised in one request."""

    service: str  # SigV4 signing name, "" if the request is unsigned
    operation: str  # "" if not recognised
    protocol: str  # "query", "ec2", "json" or "" (unrecognised)


def identify(headers: email.message.Message | Mapping[str, str], body: bytes, query: str = "") -> RequestInfo:
    """Recognise the AWS service, operation and protocol of a request from its headers and body."""
    get = headers.get
    match = _CREDENTIAL_SCOPE.search(get("Authorization") or "")
    service = match.group(1) if match else ""
    target = get("X-Amz-Target") or ""
    if target:
        return RequestInfo(service=service, operation=target.rsplit(".", 1)[-1], protocol="json")
    action = ""
    content_type = (get("Content-Type") or "").lower()
    if body and (content_type.startswith("application/x-www-form-urlencoded") or body.startswith(b"Action=")):
        action = _form_value(body.decode("utf-8", "replace"), "Action")
    if not action and query:
        action = _form_value(query, "Action")
    if action:
        return RequestInfo(service=service, operation=action, protocol="ec2" if service == "ec2" else "query")
    return RequestInfo(service=service, operation="", protocol="")


def _form_value(form: str, key: str) -> str:
    values = urllib.parse.parse_qs(form, keep_blank_values=True).get(key)
    return values[0] if values else ""


@dataclass
class Fault:
    """One configured failure: the next ``remaining`` matching requests get this error."""

    operation: str
    code: str
    message: str
    http_status: int
    remaining: int
    service: str | None  # signing name; None matches any service

    def matches(self, info: RequestInfo) -> bool:
        return (
            self.remaining > 0
            and info.operation == self.operation
            and (self.service is None or self.service == info.service)
        )


def render_error(info: RequestInfo, fault: Fault) -> tuple[dict[str, str], bytes]:
    """The headers and body AWS sends for an error, in the wire format of the request's protocol."""
    request_id = str(uuid.uuid4())
    if info.protocol == "json":
        body = json.dumps({"__type": fault.code, "message": fault.message}).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": fault.code,
        }
        return headers, body
    code, message = _xml_escape(fault.code), _xml_escape(fault.message)
    if info.protocol == "ec2":
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
    else:
        # The query protocol; also the fallback for unrecognised requests.
        kind = "Receiver" if fault.http_status >= 500 else "Sender"
        text = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    return {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, text.encode()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Server(httpserve.Server):
    block_on_close = False
    proxy: FaultProxy


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's urllib3 pool expects
    timeout = 30  # idle keep-alive connections are dropped after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        """Silence: the proxy's log is :attr:`FaultProxy.requests`."""

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        query = urllib.parse.urlsplit(self.path).query
        info = identify(self.headers, body, query)
        fault = self.server.proxy._record(info)
        hold = self.server.proxy._take_hold(info)
        if hold is not None:
            self._held(body, hold)
            return
        if fault is not None:
            headers, payload = render_error(info, fault)
            self.send_response_only(fault.http_status)
            for name, value in headers.items():
                self.send_header(name, value)
            self._send_body(payload)
            return
        self._forward(body)

    def _held(self, body: bytes, hold: _Hold) -> None:
        """Keep a request (or its answer) back until released: an AWS call 'in flight' for as long as a
        test needs, e.g. to kill the client while it waits."""
        if not hold.forward_first:
            hold.released.wait()
            self.close_connection = True  # never forwarded, never answered: lost in flight
            return
        buffer = io.BytesIO()
        real, self.wfile = self.wfile, buffer
        try:
            self._forward(body)
        finally:
            self.wfile = real
        hold.released.wait()
        try:
            self.wfile.write(buffer.getvalue())
        except OSError:
            pass  # the client is gone; AWS has applied the change anyway

    def _forward(self, body: bytes) -> None:
        target = self.server.proxy.target
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self._send_body(payload)
        except OSError as exc:
            # The target is down: answer as a gateway would, so the client sees an HTTP error.
            payload = f"faultproxy: cannot reach {target.geturl()}: {exc}".encode()
            self.send_response_only(502)
            self.send_header("Content-Type", "text/plain")
            self._send_body(payload)
        finally:
            connection.close()

    def _send_body(self, payload: bytes) -> None:
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


@dataclass
class _Hold:
    operation: str
    forward_first: bool
    released: threading.Event = field(default_factory=threading.Event)
    taken: bool = False


class FaultProxy:
    """Forward everything to ``target_url``, except the faults configured with :meth:`add_fault`.

    Thread-safe: faults can be added and counters read while requests flow.
    """

    def __init__(self, target_url: str) -> None:
        self.target = urllib.parse.urlsplit(target_url)
        if self.target.scheme != "http" or not self.target.port:
            raise ValueError(f"target_url must be http://host:port, got {target_url!r}")
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._holds: list[_Hold] = []
        self._hits: collections.Counter[str] = collections.Counter()
        self._requests: list[tuple[str, str]] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle.

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("FaultProxy is already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="faultproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        with self._lock:
            for hold in self._holds:
                hold.released.set()  # never leave a handler thread blocked
        server.shutdown()
        server.server_close()
        thread.join()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # unblock handlers waiting on idle keep-alive connections
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Faults.

    def add_fault(
        self,
        operation: str,
        code: str,
        message: str = "Injected by FaultProxy",
        http_status: int = 400,
        times: int = 1,
        service: str | None = None,
    ) -> None:
        """Fail the next ``times`` requests for ``operation`` (e.g. ``SetDesiredCapacity``) with ``code``.

        ``service`` restricts the fault to one service (signing name, or the
        boto3 client name ``elbv2``); faults for the same operation are used up
        in the order they were added.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if not 400 <= http_status <= 599:
            raise ValueError("http_status must be an error status (4xx or 5xx)")
        if service is not None:
            service = SIGNING_NAMES.get(service, service)
        with self._lock:
            self._faults.append(Fault(operation, code, message, http_status, times, service))

    def hold(self, operation: str, forward_first: bool = True) -> Callable[[], None]:
        """Hold the next request for ``operation`` until the returned ``release()`` is called.

        ``forward_first``: the request reaches the target (AWS applies it) but the answer is kept
        back; after release it is sent, if the client is still there. Otherwise the request itself is
        kept back and, after release, dropped without ever being forwarded. Either way the client
        sees a call that does not return, which is how a test kills an operator mid-call.
        """
        hold = _Hold(operation, forward_first)
        with self._lock:
            self._holds.append(hold)
        return hold.released.set

    def clear(self) -> None:
        """Drop all faults and forget all requests."""
        with self._lock:
            self._faults.clear()
            self._hits.clear()
            self._requests.clear()

    def hits(self, operation: str) -> int:
        """How many requests for ``operation`` came through, failed or forwarded."""
        with self._lock:
            return self._hits[operation]

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(service, operation) of every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    # Called by the handler threads.

    def _record(self, info: RequestInfo) -> Fault | None:
        """Count the request and return the fault it must get, if any (using one up)."""
        with self._lock:
            self._hits[info.operation] += 1
            self._requests.append((info.service, info.operation))
            for fault in self._faults:
                if fault.matches(info):
                    fault.remaining -= 1
                    return replace(fault)
            return None

    def _take_hold(self, info: RequestInfo) -> _Hold | None:
        with self._lock:
            for hold in self._holds:
                if not hold.taken and hold.operation == info.operation:
                    hold.taken = True
                    return hold
            return None

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
