"""Conversation history per chat thread: bounded, redacted, and kept in ConfigMaps so it survives a restart.

A thread (a Slack thread, a Discord channel, a ``--conversation`` on the CLI) is one ConfigMap in the
component's namespace, named from a digest of the thread's key and labelled
``app.kubernetes.io/component=chatops``. What it holds is bounded three ways: turns, bytes and age
(:class:`HistoryLimits`); the number of threads is bounded too, the least recently used going first.
Every text is redacted before it is stored (:mod:`vigil.adapters.redaction`).

Deciding what to keep (:func:`trim`) is pure; :class:`ConversationStore` only reads and writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from vigil.adapters import redaction

logger = logging.getLogger(__name__)

COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "chatops"
KIND_LABEL = "vigil.dev/chatops-kind"
KIND = "conversation"
SELECTOR = f"{COMPONENT_LABEL}={COMPONENT},{KIND_LABEL}={KIND}"
DATA_KEY = "conversation.json"
NAME_PREFIX = "vigil-ask-"
#: Longest thread key accepted (Slack's channel + thread ts, Discord's ids, a CLI name are far shorter).
MAX_KEY_CHARS = 256


@dataclasses.dataclass(frozen=True)
class HistoryLimits:
    """How much of a conversation is kept."""

    #: Turns (one question or one answer each) kept per thread; older ones are dropped first.
    max_turns: int = 20
    #: Bytes of the stored JSON per thread (a ConfigMap holds at most 1 MiB).
    max_bytes: int = 32 * 1024
    #: Seconds a turn is kept; a thread idle this long is forgotten.
    max_age: float = 24 * 3600.0
    #: Characters of one turn's text kept.
    max_turn_chars: int = 4000
    #: Threads kept in the namespace; the least recently used are deleted beyond it.
    max_conversations: int = 200


@dataclasses.dataclass(frozen=True)
class Subject:
    """What the thread is about: the object the last ``why``/``history`` named."""

    kind: str  # "action" or "policy"
    namespace: str
    name: str


@dataclasses.dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str
    at: float


@dataclasses.dataclass(frozen=True)
class Conversation:
    key: str
    turns: tuple[Turn, ...] = ()
    subject: Subject | None = None
    updated: float = 0.0

    def to_json(self) -> str:
        return json.dumps({
            "version": 1, "key": self.key, "updated": self.updated,
            "subject": dataclasses.asdict(self.subject) if self.subject else None,
            "turns": [{"role": t.role, "text": t.text, "at": t.at} for t in self.turns],
        }, separators=(",", ":"))

    @staticmethod
    def from_json(key: str, data: str) -> Conversation:
        """Parse what :meth:`to_json` wrote; anything else (an edited, foreign or corrupt ConfigMap) gives an
        empty conversation rather than an error: the history is a convenience, not a record."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("key") != key:
                return Conversation(key)
            subject = raw.get("subject")
            turns = tuple(Turn(str(t["role"]), str(t["text"]), float(t["at"])) for t in raw.get("turns") or []
                          if isinstance(t, dict) and t.get("role") in ("user", "assistant"))
            return Conversation(
                key, turns,
                Subject(str(subject["kind"]), str(subject["namespace"]), str(subject["name"]))
                if isinstance(subject, dict) else None,
                float(raw.get("updated") or 0.0))
        except (ValueError, KeyError, TypeError):
            return Conversation(key)


def trim(conversation: Conversation, limits: HistoryLimits, now: float) -> Conversation:
    """The conversation within ``limits`` at ``now``: old turns dropped, texts cut, the newest kept."""
    if conversation.updated and now - conversation.updated > limits.max_age:
        return Conversation(conversation.key, updated=conversation.updated)
    turns = [Turn(t.role, t.text[: limits.max_turn_chars], t.at) for t in conversation.turns
             if now - t.at <= limits.max_age][-limits.max_turns:]
    trimmed = dataclasses.replace(conversation, turns=tuple(turns))
    while turns and len(trimmed.to_json().encode()) > limits.max_bytes:
        turns.pop(0)
        trimmed = dataclasses.replace(conversation, turns=tuple(turns))
    return trimmed


def configmap_name(key: str) -> str:
    return NAME_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class ConfigMaps(Protocol):
    """ConfigMaps of one namespace. :class:`vigil.chatops.kubeio.ConfigMapClient` is one."""

    namespace: str

    async def get(self, name: str) -> dict[str, Any] | None: ...

    async def list(self, label_selector: str, limit: int = 500) -> list[dict[str, Any]]: ...

    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, name: str) -> None: ...


class StoreError(Exception):
    """The history could not be read or written; the answer is still given, without it."""


class ConversationStore:
    """Threads in ConfigMaps (``configmaps``), or in this process only when ``configmaps`` is None.

    ``load`` and ``append`` never raise for a missing or unreadable thread: they start afresh. A failed
    write raises :class:`StoreError` (the caller says the history was not saved).
    """

    def __init__(self, configmaps: ConfigMaps | None, limits: HistoryLimits = HistoryLimits(),
                 clock: Callable[[], float] = time.time) -> None:
        self._configmaps = configmaps
        self.limits = limits
        self._clock = clock
        self._memory: dict[str, Conversation] = {}

    @property
    def persistent(self) -> bool:
        return self._configmaps is not None

    @staticmethod
    def check_key(key: str) -> str:
        if not key or len(key) > MAX_KEY_CHARS:
            raise ValueError(f"a conversation key must be 1 to {MAX_KEY_CHARS} characters")
        return key

    async def load(self, key: str) -> Conversation:
        key = self.check_key(key)
        now = self._clock()
        if self._configmaps is None:
            return trim(self._memory.get(key, Conversation(key)), self.limits, now)
        try:
            found = await self._configmaps.get(configmap_name(key))
        except Exception as exc:
            raise StoreError(f"cannot read the conversation: {redaction.redact(str(exc))[:300]}") from None
        if found is None:
            return Conversation(key)
        data = (found.get("data") or {}).get(DATA_KEY) or ""
        return trim(Conversation.from_json(key, str(data)), self.limits, now)

    async def append(self, key: str, turns: list[Turn], subject: Subject | None) -> Conversation:
        """Add ``turns`` (and the new subject, if any) to the thread and save it. Retries a concurrent write."""
        key = self.check_key(key)
        clean = [Turn(t.role, redaction.redact(t.text)[: self.limits.max_turn_chars], t.at) for t in turns]
        if self._configmaps is None:
            now = self._clock()
            current = trim(self._memory.get(key, Conversation(key)), self.limits, now)
            updated = trim(Conversation(key, current.turns + tuple(clean), subject or current.subject, now),
                           self.limits, now)
            self._memory[key] = updated
            self._memory = dict(sorted(self._memory.items(), key=lambda kv: kv[1].updated)[
                -self.limits.max_conversations:])
            return updated
        last: Exception | None = None
        for _ in range(4):  # a 409 means another replica wrote this thread meanwhile: read again and add
            try:
                return await self._write(key, clean, subject)
            except Exception as exc:
                last = exc
                if getattr(exc, "status", None) != 409:
                    break
        raise StoreError(f"cannot save the conversation: {redaction.redact(str(last))[:300]}")

    async def _write(self, key: str, turns: list[Turn], subject: Subject | None) -> Conversation:
        assert self._configmaps is not None
        name = configmap_name(key)
        now = self._clock()
        found = await self._configmaps.get(name)
        current = (trim(Conversation.from_json(key, str((found.get("data") or {}).get(DATA_KEY) or "")),
                        self.limits, now) if found is not None else Conversation(key))
        updated = trim(Conversation(key, current.turns + tuple(turns), subject or current.subject, now),
                       self.limits, now)
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self._configmaps.namespace,
                         "labels": {COMPONENT_LABEL: COMPONENT, KIND_LABEL: KIND,
                                    "app.kubernetes.io/name": "vigil", "app.kubernetes.io/managed-by": "vigil"},
                         "annotations": {"vigil.dev/updated": str(int(now))}},
            "data": {DATA_KEY: updated.to_json()},
        }
        if found is None:
            await self._prune(now)
            await self._configmaps.create(body)
        else:
            body["metadata"]["resourceVersion"] = (found.get("metadata") or {}).get("resourceVersion")
            await self._configmaps.replace(name, body)
        return updated

    async def _prune(self, now: float) -> None:
        """Before a new thread: delete expired threads, and the least recently used beyond the bound."""
        assert self._configmaps is not None
        try:
            threads = await self._configmaps.list(SELECTOR, limit=self.limits.max_conversations * 2 + 10)
        except Exception as exc:  # pruning is housekeeping: a failure must not lose the answer
            logger.warning("chatops: cannot list conversations to prune: %s", redaction.redact(str(exc))[:300])
            return

        def updated(cm: dict[str, Any]) -> float:
            try:
                return float(((cm.get("metadata") or {}).get("annotations") or {}).get("vigil.dev/updated") or 0)
            except ValueError:
                return 0.0

        threads.sort(key=updated)
        doomed = [cm for cm in threads if now - updated(cm) > self.limits.max_age]
        alive = [cm for cm in threads if cm not in doomed]
        doomed += alive[: max(0, len(alive) - self.limits.max_conversations + 1)]
        for cm in doomed:
            try:
                await self._configmaps.delete(str((cm.get("metadata") or {}).get("name")))
            except Exception as exc:
                logger.warning("chatops: cannot delete an old conversation: %s", redaction.redact(str(exc))[:300])
