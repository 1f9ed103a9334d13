"""Read a Prometheus ``query_range`` answer as it streams in, within a series and a byte budget.

Why not ``response.json()``: a query matching 20,000 series answered with 61 MB of JSON, and
``json.loads`` turned it into ~1.2 GB of Python lists, strings and floats before the operator could
even count the series (issue 11, item 6). Here the body is read in chunks, each series object is
parsed on its own (``json.JSONDecoder.raw_decode``: the C scanner, no new dependency) and turned into
numpy arrays at once. The operator so holds one series' JSON at a time, stops reading after
``max_series + 1`` series, and never reads more than ``max_bytes`` of body.

Also here: :func:`error_message`, the one place a non-200 body is looked at. Only a Prometheus JSON
error contributes text (its ``errorType`` and a bounded, sanitized ``error``); anything else is
reduced to the status code, so a URL that is not a Prometheus never gets its body echoed into a
status, an Event or a log (issue 11, item 8).
"""

from __future__ import annotations

import codecs
import dataclasses
import http
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from vigil.domain.history import Samples

#: JSON a legitimate series may take besides its points: its labels (Prometheus sets no limit; real
#: series carry well under 1 KiB) and the object's own punctuation.
SERIES_LABEL_BYTES = 64 << 10
#: JSON one point may take: ``[1700000000.123,"<value>"],``. Prometheus prints values with Go's
#: ``'f'`` format (no exponent), so 1e300 is 301 digits; 512 bytes covers every float64.
POINT_BYTES = 512
#: The prologue ``{"status":"success","data":{"resultType":"matrix","result":[`` must come this soon.
_HEAD_LIMIT = 4096
#: Error bodies are read this far and no further (Prometheus' own errors are a few hundred bytes).
ERROR_BODY_LIMIT = 64 << 10
#: Characters of Prometheus' ``error`` text kept in a message.
ERROR_TEXT_LIMIT = 200

_RESULT = re.compile(r'"result"\s*:\s*\[')
_SUCCESS = re.compile(r'"status"\s*:\s*"success"')
_MATRIX = re.compile(r'"resultType"\s*:\s*"matrix"')
_WHITESPACE = " \t\n\r"
_ERROR_TYPE = re.compile(r"^[a-z_]{1,32}$")
_DECODER = json.JSONDecoder()


class AnswerError(Exception):
    """The answer cannot be used; ``message`` says why, in words fit for a condition."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManySeries(AnswerError):
    """More series than the operator's ``--max-series``."""


class TooLarge(AnswerError):
    """More bytes than ``--max-response-bytes``, or one series bigger than any real one."""


class Malformed(AnswerError):
    """Not a Prometheus range-query answer (or a truncated one)."""


class Deadline(AnswerError):
    """The body kept coming for longer than the query timeout."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one answer may cost. ``points`` is what the query asked for per series."""

    max_series: int
    max_bytes: int
    points: int
    deadline: float | None = None  # time.monotonic() value after which reading stops
    clock: Callable[[], float] = time.monotonic

    @property
    def max_series_bytes(self) -> int:
        """Most JSON one legitimate series of ``points`` points can take (see the module constants)."""
        return SERIES_LABEL_BYTES + POINT_BYTES * max(1, self.points)


class _Stream:
    """Decoded text from a chunk iterator, counted against the budget; ``text[pos:]`` is unread."""

    def __init__(self, chunks: Iterator[bytes], budget: Budget) -> None:
        self._chunks = chunks
        self._budget = budget
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.read = 0
        self.text = ""
        self.pos = 0
        self.done = False

    def more(self, at_least: int = 1) -> bool:
        """Append at least ``at_least`` more characters (fewer at the end). False when nothing came."""
        if self.done:
            return False
        parts = [self.text[self.pos:]]
        self.pos = 0
        got = 0
        while got < at_least:
            chunk = next(self._chunks, None)
            if chunk is None:
                tail = self._decode(b"", final=True)
                parts.append(tail)
                got += len(tail)
                self.done = True
                break
            self.read += len(chunk)
            if self.read > self._budget.max_bytes:
                raise TooLarge(f"Prometheus' answer is larger than {_mib(self._budget.max_bytes)} "
                               "(--max-response-bytes); narrow the query or shorten the lookback")
            deadline = self._budget.deadline
            if deadline is not None and self._budget.clock() > deadline:
                raise Deadline("Prometheus' answer was still arriving when the query timeout passed")
            text = self._decode(chunk)
            parts.append(text)
            got += len(text)
        self.text = "".join(parts)
        return got > 0

    def _decode(self, chunk: bytes, final: bool = False) -> str:
        try:
            return self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError:
            raise Malformed("the answer is not UTF-8 text") from None

    def peek(self) -> str:
        """The next non-blank character ('' at the end), reading more as needed."""
        while True:
            text, pos = self.text, self.pos
            while pos < len(text) and text[pos] in _WHITESPACE:
                pos += 1
            self.pos = pos
            if pos < len(text):
                return text[pos]
            if not self.more():
                return ""


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def read_matrix(chunks: Iterator[bytes], budget: Budget) -> list[Samples]:
    """Every series of a ``resultType: matrix`` answer, parsed one series object at a time.

    Raises :class:`TooManySeries` as soon as series ``max_series + 1`` is seen (before it is
    converted), :class:`TooLarge` past ``max_bytes`` of body or when one series object outgrows
    ``budget.max_series_bytes``, :class:`Malformed` for anything that is not a range-query answer.
    """
    stream = _Stream(chunks, budget)
    while (match := _RESULT.search(stream.text)) is None:
        if len(stream.text) > _HEAD_LIMIT or not stream.more():
            raise Malformed("the answer is not a Prometheus range-query result")
    head = stream.text[: match.start()]
    if not _SUCCESS.search(head) or not _MATRIX.search(head):
        raise Malformed("the answer is not a successful Prometheus range-query (matrix) result")
    stream.pos = match.end()
    samples: list[Samples] = []
    while True:
        char = stream.peek()
        if char == "]":
            break
        if samples:
            if char != ",":
                raise Malformed("the answer's result list is malformed")
            stream.pos += 1
            stream.peek()
        if len(samples) >= budget.max_series:
            raise TooManySeries(f"the query returns more than {budget.max_series} series (--max-series); "
                                "narrow it with label matchers or an aggregation")
        samples.append(_series(_next_object(stream, budget.max_series_bytes)))
    _drain(stream)
    return samples


def _next_object(stream: _Stream, limit: int) -> Any:
    """Decode the JSON value at ``stream.pos``, reading more until it is complete."""
    while True:
        try:
            value, end = _DECODER.raw_decode(stream.text, stream.pos)
        except json.JSONDecodeError:
            pending = len(stream.text) - stream.pos
            if pending > limit:
                raise TooLarge(f"one series of the answer exceeds {_mib(limit)}, more than any series "
                               "of the requested points can take") from None
            # Read at least as much again as is pending: a long series costs O(size), not O(size²).
            if not stream.more(at_least=max(pending, 1)):
                raise Malformed("the answer ended in the middle of a series") from None
            continue
        if end - stream.pos > limit:
            raise TooLarge(f"one series of the answer exceeds {_mib(limit)}, more than any series "
                           "of the requested points can take")
        stream.pos = end
        return value


def _drain(stream: _Stream) -> None:
    """Read the (small) rest of the answer, still within the byte budget, so the connection is reused."""
    stream.pos = len(stream.text)
    while stream.more():
        stream.pos = len(stream.text)


def _series(item: Any) -> Samples:
    if not isinstance(item, dict):
        raise Malformed("a series of the answer is not an object")
    metric = item.get("metric") or {}
    values = item.get("values") or []
    if not isinstance(metric, dict) or not all(isinstance(v, str) for v in metric.values()):
        raise Malformed("a series of the answer has malformed labels")
    if not isinstance(values, list):
        raise Malformed("a series of the answer has malformed values")
    try:
        timestamps = np.fromiter((float(t) for t, _ in values), dtype=np.float64, count=len(values))
        numbers = np.fromiter((float(v) for _, v in values), dtype=np.float64, count=len(values))  # "NaN", "+Inf"
    except (TypeError, ValueError) as exc:
        raise Malformed("a series of the answer has malformed values") from exc
    return Samples(labels=dict(metric), timestamps=timestamps, values=numbers)


def error_message(code: int, body: bytes) -> tuple[str | None, str]:
    """(Prometheus' ``errorType`` or None, a message) for a non-200 answer; never echoes a foreign body.

    A Prometheus error (``{"status": "error", "errorType": ..., "error": ...}``) keeps its type and
    the first :data:`ERROR_TEXT_LIMIT` characters of its text, control characters removed: a PromQL
    parse error is what the user needs to fix the query. Any other body (an HTML login page, a
    metadata service's answer) is reduced to the status code.
    """
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "unknown status"
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        payload = None
    if (isinstance(payload, dict) and payload.get("status") == "error"
            and isinstance(payload.get("errorType"), str) and _ERROR_TYPE.match(payload["errorType"])
            and isinstance(payload.get("error", ""), str)):
        kind = payload["errorType"]
        return kind, f"HTTP {code} {kind}: {sanitize(payload.get('error', ''), ERROR_TEXT_LIMIT)}"
    return None, f"HTTP {code} {phrase} (not a Prometheus API error; the body is not shown)"


def sanitize(text: str, limit: int) -> str:
    """``text`` on one line, without control or format characters, at most ``limit`` characters."""
    clean = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text[: limit * 4])
    clean = " ".join(clean.split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
