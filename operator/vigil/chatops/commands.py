"""What a question to Vigil asks for: ``status``, ``why``, ``history`` or a free question. Pure parsing.

Parsed once, at the edge, into a :class:`Command`; names are checked against Kubernetes' own rules
here, so nothing downstream builds an API path from text that is not a valid object name.
``approve`` and ``reject`` are not questions: the chat transport handles them behind RBAC.
"""

from __future__ import annotations

import dataclasses
import enum
import re

#: Longest question accepted, in characters; a longer one is refused with a clear answer.
MAX_QUESTION_CHARS = 2000

#: RFC 1123 subdomain (object names) and label (namespaces), as the API server checks them.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Verb(enum.StrEnum):
    STATUS = "status"
    WHY = "why"
    HISTORY = "history"
    HELP = "help"
    #: Anything else: answered from the conversation's subject, or with help.
    QUESTION = "question"


@dataclasses.dataclass(frozen=True)
class Command:
    verb: Verb
    text: str
    namespace: str | None = None
    name: str | None = None
    #: Why the command's argument was refused (not a valid name), for a polite answer.
    problem: str | None = None


def valid_name(name: str) -> bool:
    return len(name) <= 253 and bool(_NAME.match(name))


def valid_namespace(namespace: str) -> bool:
    return len(namespace) <= 63 and bool(_NAMESPACE.match(namespace))


def _reference(argument: str) -> tuple[str | None, str | None, str | None]:
    """``ns/name`` or ``name`` -> (namespace, name, problem)."""
    namespace, _, name = argument.rpartition("/")
    if namespace and not valid_namespace(namespace):
        return None, None, f"{namespace[:64]!r} is not a valid namespace name"
    if not name or not valid_name(name):
        return None, None, f"{name[:64]!r} is not a valid object name"
    return namespace or None, name, None


def parse(text: str) -> Command:
    """The command in ``text`` (a leading ``/vigil`` or ``vigil`` is ignored, as are case and spaces)."""
    cleaned = " ".join(text.split())
    words = cleaned.split(" ") if cleaned else []
    if words and words[0].lower() in ("/vigil", "vigil"):
        words = words[1:]
    cleaned = " ".join(words)
    if not words:
        return Command(Verb.HELP, cleaned)
    head = words[0].lower()
    if head in ("help", "?") and len(words) == 1:
        return Command(Verb.HELP, cleaned)
    if head == "status" and len(words) <= 2:
        if len(words) == 2:
            namespace = words[1].strip("/")
            if not valid_namespace(namespace):
                return Command(Verb.STATUS, cleaned, problem=f"{namespace[:64]!r} is not a valid namespace name")
            return Command(Verb.STATUS, cleaned, namespace=namespace)
        return Command(Verb.STATUS, cleaned)
    if head in ("why", "history") and len(words) == 2:
        ref_namespace, name, problem = _reference(words[1])
        return Command(Verb(head), cleaned, ref_namespace, name, problem)
    if head in ("why", "history") and len(words) == 1:
        return Command(Verb(head), cleaned, problem=f"say which one: {head} <namespace>/<name>")
    return Command(Verb.QUESTION, cleaned)


#: Words that narrow a follow-up question to one part of a ``why`` answer (checked in this order).
_FOCUS = (
    ("detector", ("detector", "series", "score", "see", "saw", "metric", "anomal", "threshold", "signal")),
    ("guards", ("guard", "refus", "skip", "cooldown", "rate", "blast", "allowed", "block", "stop", "safe")),
    ("approval", ("approv", "reject", "who ", "decid", "expire")),
    ("change", ("before", "after", "change", "capacity", "result", "outcome", "did it do", "effect", "aws")),
    ("events", ("event", "timeline", "happen")),
)


def focus(text: str) -> str:
    """Which part of a ``why`` answer a follow-up asks about: one of summary.PARTS ("all" if unclear)."""
    lowered = f" {text.lower()} "
    for part, words in _FOCUS:
        if any(word in lowered for word in words):
            return part
    return "all"


def mentioned_names(text: str, limit: int = 3) -> list[tuple[str | None, str]]:
    """Words of a free question that could name an object (``ns/name`` or a dashed name), at most ``limit``."""
    found: list[tuple[str | None, str]] = []
    for word in text.split():
        word = word.strip("`'\".,;:!?()[]{}")
        if "-" not in word and "/" not in word:
            continue
        namespace, name, problem = _reference(word.lower())
        if problem is None and name is not None and (namespace, name) not in found:
            found.append((namespace, name))
        if len(found) >= limit:
            break
    return found
