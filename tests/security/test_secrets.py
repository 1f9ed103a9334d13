"""Issue 11, item 9: secrets never reach the operator's logs, Events or status.

Finding 9a: a webhook that echoes its token back in an error answer had the token copied into the
``NotificationFailed`` Event and the warning log line (the redaction only knew the whole URL, its
path and its query). Finding 9b: ``--log-level debug`` let botocore log the STS answer (with
``SecretAccessKey`` and ``SessionToken``) and every signed request's ``X-Amz-Security-Token``.

Real peers: ``vigil run`` as a subprocess (its stderr captured to a file), the Kubernetes API
emulator, moto in server mode (in this process, so its STS backend tells us which credentials it
issued), and a real local HTTP server standing in for Slack, Discord and a generic webhook that
answers every POST with an error carrying the token in the body and in headers.
"""

from __future__ import annotations

import http.server
import json
import logging
import pathlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OperatorFactory
from tests.harness import OperatorProcess, wait_for
from tests.integration import aws_world
from tests.integration.aws_world import Moto
from vigil.adapters import redaction
from vigil_sandbox.kubeapi import KubeAPIServer

TOKEN = "Tk9pZWNobzQyLXNlY3JldC10b2tlbg"  # the webhook's secret part, as Slack and Discord put it in the path
ALERTMANAGER_TOKEN = "am-bearer-5f0c1d2e3b4a"
ROLE_ARN = "arn:aws:iam::123456789012:role/vigil-remediation"
RA = ("vigil.dev/v1alpha1", "remediationactions")
RP = ("vigil.dev/v1alpha1", "remediationpolicies")

#: path -> (status, reason): what the echoing receiver answers there. Each echoes the token.
ANSWERS = {
    f"/services/T0001/B0002/{TOKEN}": 400,  # Slack: a 4xx body used to be quoted
    f"/api/webhooks/1234567890/{TOKEN}": 500,  # Discord: 5xx, retried
    f"/hooks/vigil?token={TOKEN}": 404,  # generic webhook: token in the query
}


# --- the echoing webhook receiver -------------------------------------------------------------------


class EchoReceiver:
    """A real HTTP server on 127.0.0.1 that answers each POST with its planned error status, the
    token in the body (``invalid token <TOKEN>``) and in headers; it records what it received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.received.append((self.path, body))
                status = ANSWERS.get(self.path, 400)
                text = f'{{"error": "invalid token {TOKEN}", "url": "{self.path}"}}'.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Echo-Token", TOKEN)
                self.send_header("WWW-Authenticate", f'Bearer realm="hooks", error="invalid_token {TOKEN}"')
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="echo-receiver", daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def paths(self) -> set[str]:
        return {path for path, _ in self.received}

    def __enter__(self) -> EchoReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[EchoReceiver]:
    with EchoReceiver() as server:
        yield server


# --- helpers ----------------------------------------------------------------------------------------


def alert_fires(operator: OperatorProcess, token: str = ALERTMANAGER_TOKEN) -> None:
    """Alertmanager posts one firing HighLatency alert to the operator (the policies' trigger)."""
    alert = {"version": "4", "status": "firing", "receiver": "vigil", "groupKey": "{}:{}", "truncatedAlerts": 0,
             "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
             "alerts": [{"status": "firing",
                         "labels": {"alertname": "HighLatency", "service": "web", "namespace": "default"},
                         "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                         "generatorURL": "http://prom", "fingerprint": "abc123"}]}
    request = urllib.request.Request(f"{operator.url}/alertmanager", data=json.dumps(alert).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def apply_policy(kubeapi: KubeAPIServer, **spec: Any) -> None:
    kubeapi.create({"apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationPolicy",
                    "metadata": {"name": "latency", "namespace": "default"},
                    "spec": {"alertSelector": {"matchLabels": {"alertname": "HighLatency"}},
                             "actions": [{"name": "scale-web", "scaleAutoScalingGroup": {"name": "web", "by": 1,
                                                                                          "min": 1, "max": 10}}],
                             "cooldown": "0s", **spec}})


def everything_recorded(kubeapi: KubeAPIServer) -> str:
    """Every Event, RemediationPolicy and RemediationAction the emulator holds, as one text."""
    objects = [*kubeapi.list("v1", "events"), *kubeapi.list(*RP), *kubeapi.list(*RA)]
    return json.dumps(objects, sort_keys=True)


def token_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "alertmanager-token"
    path.write_text(ALERTMANAGER_TOKEN + "\n")
    return path


# --- finding 9a: the webhook echoes its token -------------------------------------------------------


def test_item9_a_webhook_echoing_its_token_in_an_error_answer_leaks_it_nowhere(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, moto: Moto, receiver: EchoReceiver,
        tmp_path: pathlib.Path) -> None:
    """Slack answers 400, Discord 500 (retried), the generic webhook 404, each with the token in the
    body and in two headers. The operator reports ``HTTP <status>`` only: the token is in no log line
    (debug level), no Event, no status."""
    moto.reset()
    aws_world.build(moto)
    slack, discord, webhook = ANSWERS
    kubeapi.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat", "namespace": "default"},
                    "stringData": {"slack": receiver.url(slack), "discord": receiver.url(discord),
                                   "webhook": receiver.url(webhook)}})
    operator = run_operator("--aws-endpoint-url", moto.url, "--no-leader-election", "--log-level", "debug",
                            "--alertmanager-token-file", str(token_file(tmp_path)))
    apply_policy(kubeapi, aws={"region": aws_world.REGION},
                 notify={kind: {"urlSecretRef": {"name": "chat", "key": kind}}
                         for kind in ("slack", "discord", "webhook")})
    alert_fires(operator)

    def failures() -> list[str]:
        messages = [e["message"] for e in kubeapi.list("v1", "events", "default")
                    if e["reason"] == "NotificationFailed"]
        return messages if all(any(f"HTTP {status}" in m for m in messages) for status in ANSWERS.values()) else []

    messages = wait_for(failures, timeout=60, what="NotificationFailed events for all three channels")
    assert receiver.paths() == set(ANSWERS), "the notifier posted to the real receiver"
    operator.stop()  # flush the log
    assert any("HTTP 400" in m and "slack webhook (secret default/chat key slack)" in m for m in messages)
    recorded, log = everything_recorded(kubeapi), operator.log()
    assert "NotificationFailed" in recorded and "Could not send" in log
    for where, text in (("Events, policy and action status", recorded), ("the operator log", log)):
        assert TOKEN not in text, f"the echoed webhook token reached {where}"
        assert "X-Echo-Token" not in text and "invalid token" not in text, f"the receiver's words reached {where}"
    assert ALERTMANAGER_TOKEN not in log


# --- finding 9b: --log-level debug and botocore -----------------------------------------------------


def issued_credentials() -> list[tuple[str, str, str]]:
    """(access key id, secret access key, session token) of every role moto's STS has handed out."""
    from moto.sts.models import sts_backends

    issued = []
    for account in list(sts_backends.keys()):
        for backend in list(sts_backends[account].values()):
            issued += [(r.access_key_id, r.secret_access_key, r.session_token) for r in backend.assumed_roles]
    return issued


def test_item9_debug_logging_never_shows_the_assumed_role_credentials(
        kubeapi: KubeAPIServer, run_operator: OperatorFactory, moto: Moto, tmp_path: pathlib.Path) -> None:
    """``vigil run --log-level debug`` with a policy that assumes a role: moto's STS returns real-looking
    credentials, the operator uses them for the scaling call, and neither the secret access key nor the
    session token (nor the temporary access key id) appears in the log."""
    moto.reset()
    estate = aws_world.build(moto)
    operator = run_operator("--aws-endpoint-url", moto.url, "--no-leader-election", "--log-level", "debug",
                            "--alertmanager-token-file", str(token_file(tmp_path)),
                            "--allowed-role-arns", f"default={ROLE_ARN}")  # roles are the admin's to allow
    apply_policy(kubeapi, aws={"region": aws_world.REGION, "roleArn": ROLE_ARN})
    alert_fires(operator)
    wait_for(lambda: [a for a in kubeapi.list(*RA, "default") if (a.get("status") or {}).get("phase") == "Succeeded"],
             timeout=60, what="the action Succeeded with the assumed role")
    assert estate.desired(moto) == 3
    operator.stop()
    issued = issued_credentials()
    assert issued, "the operator assumed the role through moto's STS"
    log = operator.log()
    assert "[DEBUG" in log and f"Assumed {ROLE_ARN}" in log, "debug logging was on and the role was assumed"
    for access_key_id, secret_key, session_token in issued:
        assert secret_key not in log, "the SecretAccessKey from STS reached the log"
        assert session_token not in log, "the SessionToken from STS reached the log"
        assert access_key_id not in log, "the temporary access key id reached the log"
    assert ALERTMANAGER_TOKEN not in log
    assert not operator.errors()


# --- defense in depth: the filter on the handlers ---------------------------------------------------


@pytest.mark.parametrize("line", [
    "Response body:\nb'<AssumeRoleResult><Credentials><AccessKeyId>ASIAQWERTYUIOPASDFGH</AccessKeyId>"
    "<SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>"
    "<SessionToken>FQoGZXIvYXdzEXAMPLEsessionTOKEN</SessionToken></Credentials></AssumeRoleResult>'",
    "{'Credentials': {'AccessKeyId': 'ASIAQWERTYUIOPASDFGH', 'SecretAccessKey': "
    "'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'SessionToken': 'FQoGZXIvYXdzEXAMPLEsessionTOKEN'}}",
    "headers={'X-Amz-Security-Token': b'FQoGZXIvYXdzEXAMPLEsessionTOKEN', 'Authorization': "
    "b'AWS4-HMAC-SHA256 Credential=ASIAQWERTYUIOPASDFGH/20260101/us-east-1/sts/aws4_request'}",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY aws_session_token=FQoGZXIvYXdzEXAMPLEsessionTOKEN",
    "GET /apis with Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.FQoGZXIvYXdzEXAMPLEsessionTOKEN.sig",
])
def test_item9_the_log_filter_redacts_credential_shapes(line: str) -> None:
    """Whatever a library might still log: AWS key ids, secret keys and session tokens in XML, JSON,
    repr, header or key=value form, and bearer tokens are redacted by the filter on every handler."""
    record = logging.LogRecord("botocore.parsers", logging.WARNING, __file__, 1, "%s", (line,), None)
    assert redaction.RedactingFilter().filter(record)
    text = record.getMessage()
    for secret in ("ASIAQWERTYUIOPASDFGH", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                   "FQoGZXIvYXdzEXAMPLEsessionTOKEN"):
        assert secret not in text, text
    assert redaction.REDACTED in text


def test_item9_a_remembered_webhook_token_is_redacted_from_a_traceback() -> None:
    """A webhook token read from a Secret is redacted even on its own, even inside a traceback."""
    redaction.remember_url(f"https://hooks.slack.com/services/T0001/B0002/{TOKEN}")
    try:
        raise RuntimeError(f"receiver said: invalid token {TOKEN}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("vigil", logging.ERROR, __file__, 1, "failed %s", (TOKEN[:10],), sys.exc_info())
    redaction.RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted and "receiver said: invalid token <redacted>" in formatted


def test_item9_credential_loggers_stay_quiet_at_debug() -> None:
    """At ``--log-level debug`` the root logger is DEBUG; the body-logging libraries stay at WARNING."""
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.DEBUG)
        redaction.quiet_credential_loggers()
        for name in ("botocore", "botocore.parsers", "botocore.endpoint", "boto3", "urllib3",
                     "kubernetes.client.rest", "s3transfer"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    finally:
        root.setLevel(level)
