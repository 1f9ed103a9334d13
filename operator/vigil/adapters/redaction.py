"""Keep credentials out of everything the operator writes: logs, Events, status, exceptions.

Two layers. The first is at the source: no module logs or records a remote
response body (a webhook may echo back its own token, an AWS answer may carry
credentials), and the third-party loggers that do log bodies and headers at
DEBUG (botocore, boto3, urllib3, s3transfer, the kubernetes client) are held at
WARNING whatever ``--log-level`` says (:func:`install`).

The second is defense in depth: :class:`RedactingFilter` sits on every log
handler (the root's and kopf's Event poster) and :func:`redact` is applied to
Event messages and status text. It removes the secrets this process has read
(:func:`remember`: webhook URLs from Secrets, their path and query pieces, the
Alertmanager bearer token) and anything shaped like a credential: AWS access key
ids (``AKIA…``, ``ASIA…``), the values of ``SecretAccessKey`` / ``SessionToken``
/ ``X-Amz-Security-Token`` in JSON, XML, headers or ``key=value`` text, and
``Bearer`` tokens.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

REDACTED: Final = "<redacted>"

#: Loggers that write request or response bodies or credential headers at DEBUG (botocore: the
#: signed headers, X-Amz-Security-Token and STS answers with SecretAccessKey; kubernetes.client.rest:
#: response bodies, Secrets included). They stay at WARNING or above whatever the log level.
CREDENTIAL_LOGGERS: Final = (
    "botocore", "boto3", "s3transfer", "urllib3", "kubernetes.client.rest", "aiohttp.client",
)

#: Path segments and query values at least this long are remembered as secrets on their own:
#: a webhook token (Slack's is 24 characters, Discord's 68) echoed without the rest of its URL.
MIN_PIECE: Final = 12

_PATTERNS: Final = (
    # AWS access key ids: long-term (AKIA) and temporary (ASIA, from STS).
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"), REDACTED),
    # JSON / Python repr / header / key=value forms of the secret parts of AWS credentials.
    (re.compile(r"(?i)((?:secret_?access_?key|aws_secret_access_key|secret_key|session_?token|aws_session_token|"
                r"security[-_]?token|x-amz-security-token)[\"']?\s*[:=]\s*b?[\"']?)[^\"'\s,;}&<>)]+"),
     r"\1" + REDACTED),
    # XML (STS answers): <SecretAccessKey>...</SecretAccessKey>, <SessionToken>...</SessionToken>.
    (re.compile(r"(?i)(<(SecretAccessKey|SessionToken)>)[^<]*(</\2>)"), r"\1" + REDACTED + r"\3"),
    # Bearer tokens, in an Authorization header or anywhere else.
    (re.compile(r"(?i)\b(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
)

#: Every pattern above needs one of these words: one search instead of four substitutions for the
#: ordinary text (status messages) that has none.
_TRIGGER: Final = re.compile(r"(?i)AKIA|ASIA|secret|token|bearer")

_lock = threading.Lock()
_known: set[str] = set()
_ordered: tuple[str, ...] = ()  # longest first, so a URL is replaced before its pieces


def remember(*secrets: str | None) -> None:
    """Redact these exact strings from now on (empty and very short ones are ignored)."""
    global _ordered
    fresh = {s for s in secrets if s and len(s) >= 4} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def remember_url(url: str) -> None:
    """A webhook URL is a credential: remember it, its path and query, and their long pieces."""
    parts = urllib.parse.urlsplit(url)
    pieces: list[str] = [url, url.rstrip("/"), parts.query]
    if len(parts.path) > 1:
        pieces.append(parts.path)
    pieces += [p for p in parts.path.split("/") if len(p) >= MIN_PIECE]
    for _, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=False):
        if len(value) >= MIN_PIECE:
            pieces.append(value)
    remember(*pieces)


def forget_all() -> None:
    """For tests: drop every remembered secret."""
    global _ordered
    with _lock:
        _known.clear()
        _ordered = ()


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without remembered secrets, ``extra`` strings, or anything shaped like a credential."""
    for secret in (*sorted((e for e in extra if e), key=len, reverse=True), *_ordered):
        if secret in text:
            text = text.replace(secret, REDACTED)
    if _TRIGGER.search(text):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


def redact_strings(value: Any) -> Any:
    """``value`` (JSON-like) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_strings(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) through :func:`redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            safe = redact(text)
            if safe != text:
                # JSON formatters format exc_info themselves, ignoring exc_text: hand them the safe text only.
                record.msg, record.args = f"{cleaned}\n{safe}", ()
                record.exc_info, record.exc_text = None, None
        return True


def quiet_credential_loggers(level: int = logging.WARNING) -> None:
    """Hold the body-logging libraries at ``level`` or above, whatever the root level is."""
    for name in CREDENTIAL_LOGGERS:
        library = logging.getLogger(name)
        if library.level == logging.NOTSET or library.level < level:
            library.setLevel(level)


def install() -> RedactingFilter:
    """Quiet the credential loggers and put one :class:`RedactingFilter` on every handler that writes out:
    the root logger's (where kopf's configure puts its stream handler) and kopf's Event poster."""
    quiet_credential_loggers()
    redacting = RedactingFilter()
    for name in ("", "kopf.objects"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(redacting)
    return redacting
