"""Ask Vigil: ``status``, ``why <action>``, ``history <policy>`` and free questions, answered from facts.

The one entry point the chat transports (Slack, Discord), the dashboard and ``vigil ask`` share::

    asker = Asker(reader, llm_config=None, store=ConversationStore(configmaps))
    answer = await asker.ask("why default/web-scale-out-i-1-s1", conversation="C123:1700000000.1")

Facts are read from the Kubernetes API only (:mod:`vigil.chatops.facts`, through a reader that cannot
write). Without an LLM the answer is the deterministic summary (:mod:`vigil.chatops.summary`); with
one, the model writes it from the same facts through read-only tools (:mod:`vigil.chatops.llm`), and
any failure of the model falls back to the summary with a note saying so. A thread remembers its last
subject and turns (:mod:`vigil.chatops.conversation`), so "and what did the detector see?" after a
``why`` is about the same action.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vigil.adapters import redaction
from vigil.chatops import commands, facts, kubeio, llm, summary
from vigil.chatops import conversation as threads
from vigil.chatops.commands import Command, Verb
from vigil.chatops.conversation import ConversationStore, Subject, Turn

logger = logging.getLogger(__name__)

DETERMINISTIC = "deterministic"
LLM = "llm"


@dataclasses.dataclass(frozen=True)
class Answer:
    """What Vigil says, and what it said it from."""

    #: Plain text with light markdown, at most :data:`vigil.chatops.summary.MAX_ANSWER_CHARS` characters.
    text: str
    #: The facts used (JSON-like dicts, each with a ``kind``), for a "show the facts" view.
    facts: list[dict[str, Any]]
    #: "deterministic" or "llm": who wrote ``text``.
    via: str
    #: Why the answer is degraded (the LLM failed, Kubernetes could not be read, the history was not saved);
    #: safe to show: no key, no provider body.
    error: str | None = None
    #: The tools the model called, in order; a refused (not read-only) one is prefixed ``refused:``.
    tool_calls: tuple[str, ...] = ()
    #: What the conversation is now about (``action ns/name`` or ``policy ns/name``), if anything.
    subject: str | None = None


def _subject_text(subject: Subject | None) -> str | None:
    return f"{subject.kind} {subject.namespace}/{subject.name}" if subject else None


class Asker:
    """Answers questions; one per component, shared by every thread (it keeps no per-thread state itself).

    ``reader``: a :class:`~vigil.chatops.facts.KubeReader` (only ``get``/``list``).
    ``llm_config``: None (the default) for deterministic answers only.
    ``store``: where threads are kept; None: no history at all.
    ``default_namespace``: for ``why <action>`` without a namespace.
    ``namespaces``: what ``status`` covers and the LLM's tools may read; None: all namespaces.
    ``read_deadline``: seconds the facts of one question may take to read.
    ``close_with``: callables :meth:`close` runs (what the caller opened for this Asker).
    """

    def __init__(self, reader: facts.KubeReader, *, llm_config: llm.LLMConfig | None = None,
                 store: ConversationStore | None = None, default_namespace: str = "default",
                 namespaces: Sequence[str] | None = None, read_deadline: float = 30.0,
                 clock: Callable[[], float] = time.time, close_with: Sequence[Callable[[], object]] = ()) -> None:
        self.reader = reader
        self.llm_config = llm_config
        self.store = store
        self.default_namespace = default_namespace
        self.namespaces = tuple(namespaces) if namespaces is not None else None
        self.read_deadline = read_deadline
        self._clock = clock
        self._client: Any = None
        self._close_with = list(close_with)

    def _llm_client(self) -> Any:
        if self._client is None and self.llm_config is not None:
            import openai

            # No retries inside the client: the budget (timeout, deadline) is ours, and a retry would double it.
            self._client = openai.AsyncOpenAI(base_url=self.llm_config.base_url,
                                              api_key=self.llm_config.api_key or "no-key",
                                              timeout=self.llm_config.timeout, max_retries=0)
        return self._client

    async def close(self) -> None:
        """Close the LLM client, and what ``close_with`` names (the transport :func:`from_environment` opened)."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        while self._close_with:
            self._close_with.pop()()

    async def ask(self, text: str, *, conversation: str | None = None, user: str = "") -> Answer:
        """Answer ``text``; ``conversation`` names the thread whose history to use and extend."""
        if len(text) > commands.MAX_QUESTION_CHARS:
            return Answer(f"That question is {len(text)} characters long; I read at most "
                          f"{commands.MAX_QUESTION_CHARS}. Ask it shorter.", [], DETERMINISTIC,
                          error="question too long")
        notes: list[str] = []
        thread: threads.Conversation | None = None
        if conversation is not None and self.store is not None:
            try:
                thread = await self.store.load(conversation)
            except (threads.StoreError, ValueError) as exc:
                notes.append(str(exc))
        command = commands.parse(text)
        logger.info("chatops: ask %s from %s", command.verb.value, redaction.redact(user)[:64] or "unknown")
        previous = thread.subject if thread is not None else None
        try:
            subject, gathered, reply = await asyncio.wait_for(self._deterministic(command, previous),
                                                              timeout=self.read_deadline)
        except TimeoutError:
            message = f"I could not read from Kubernetes: no answer within {self.read_deadline:g}s"
            return Answer(message, [], DETERMINISTIC, error=message, subject=_subject_text(previous))
        except Exception as exc:  # the reader's error, or any other reader's: one sentence, never a traceback
            detail = str(exc) if isinstance(exc, kubeio.KubeReadError) else f"{type(exc).__name__}: {exc}"
            message = f"I could not read from Kubernetes: {redaction.redact(detail)[:300]}"
            logger.warning("chatops: %s", message)
            return Answer(message, [], DETERMINISTIC, error=message, subject=_subject_text(previous))
        via = DETERMINISTIC
        calls: tuple[str, ...] = ()
        used = gathered
        if self.llm_config is not None and command.verb != Verb.HELP and command.problem is None:
            history = [(t.role, t.text) for t in thread.turns] if thread is not None else []
            question = command.text
            if subject is not None and command.verb == Verb.QUESTION:
                question += f"\n(This conversation is about {_subject_text(subject)}.)"
            tools = llm.ReadOnlyTools(self.reader, gathered, self.default_namespace, self.namespaces)
            try:
                result = await llm.answer(self._llm_client(), self.llm_config, question, history, tools)
                reply, via = summary.bound(summary.defuse(result.text)), LLM
                used = [*gathered, *[r for r in result.facts if r not in gathered]]
            except Exception as exc:
                failure = llm.describe_failure(exc, self.llm_config)
                logger.warning("chatops: %s; answering without it", failure)
                notes.append(failure)
                reply = summary.bound(f"_({failure[0].upper() + failure[1:]}; this is Vigil's own summary.)_\n{reply}")
            calls = tuple(("refused:" if c.refused else "") + c.name for c in tools.calls)
        error = "; ".join(notes) or None
        if thread is not None and self.store is not None:
            now = self._clock()
            try:
                await self.store.append(thread.key, [Turn("user", command.text, now), Turn("assistant", reply, now)],
                                        subject)
            except (threads.StoreError, ValueError) as exc:
                error = "; ".join([*notes, str(exc)])
        return Answer(reply, used, via, error, calls, _subject_text(subject or previous))

    async def _deterministic(self, command: Command, previous: Subject | None
                             ) -> tuple[Subject | None, list[dict[str, Any]], str]:
        """(new subject, facts, text) for ``command``; the subject is None when it does not change."""
        if command.problem is not None:
            return None, [], f"I did not understand that: {command.problem}.\n\n{summary.HELP}"
        if command.verb == Verb.HELP:
            return None, [], summary.HELP
        if command.verb == Verb.STATUS:
            namespaces: list[str | None] = ([command.namespace] if command.namespace
                                            else list(self.namespaces) if self.namespaces is not None else [None])
            if command.namespace and self.namespaces is not None and command.namespace not in self.namespaces:
                return None, [], f"I may not read namespace {summary.quote(command.namespace)} here."
            gathered = await facts.status(self.reader, namespaces)
            return None, gathered, summary.status(gathered)
        if command.verb in (Verb.WHY, Verb.HISTORY):
            assert command.name is not None
            namespace = command.namespace or self.default_namespace
            if self.namespaces is not None and namespace not in self.namespaces:
                return None, [], f"I may not read namespace {summary.quote(namespace)} here."
            if command.verb == Verb.WHY:
                gathered = await facts.why(self.reader, namespace, command.name)
                found = any(f["kind"] == "action" for f in gathered)
                return (Subject("action", namespace, command.name) if found else None, gathered,
                        summary.why(gathered))
            gathered = await facts.history(self.reader, namespace, command.name)
            found = any(f["kind"] == "policy" for f in gathered)
            return (Subject("policy", namespace, command.name) if found else None, gathered,
                    summary.history(gathered))
        # A free question: about an object it names, else about the thread's subject.
        part = commands.focus(command.text)
        subject = await self._named_action(command.text) or previous
        if subject is None:
            return None, [], "I can answer about a specific action, policy or the overall status.\n\n" + summary.HELP
        if subject.kind == "policy" and part == "detector":
            gathered = await facts.policy_detectors(self.reader, subject.namespace, subject.name)
            return subject, gathered, summary.policy_detectors(gathered)
        if subject.kind == "policy":
            gathered = await facts.history(self.reader, subject.namespace, subject.name)
            return subject, gathered, summary.history(gathered)
        gathered = await facts.why(self.reader, subject.namespace, subject.name)
        return subject, gathered, summary.why(gathered, part)

    async def _named_action(self, text: str) -> Subject | None:
        """The first existing RemediationAction a free question names, if any (at most 3 reads)."""
        for namespace, name in commands.mentioned_names(text):
            namespace = namespace or self.default_namespace
            if self.namespaces is not None and namespace not in self.namespaces:
                continue
            if await facts.get_action(self.reader, namespace, name) is not None:
                return Subject("action", namespace, name)
        return None


def from_environment(env: Mapping[str, str] | None = None) -> Asker:
    """An Asker for a component: credentials in-cluster (else KUBECONFIG), settings from the environment
    (:mod:`vigil.chatops.asksettings`: VIGIL_ASK_*, VIGIL_LLM_*, VIGIL_CHATOPS_NAMESPACE), conversations kept in
    ConfigMaps of the component's namespace. Raises ValueError or kubeaccess.AccessError, never showing a key."""
    import os

    from vigil.adapters import kubeaccess
    from vigil.chatops import asksettings

    env = os.environ if env is None else env
    settings = asksettings.from_env(env)
    config = None
    if settings.llm is not None:
        key = llm.LLMConfig.read_key(settings.llm.key_file) if settings.llm.key_file else ""
        config = llm.LLMConfig(
            base_url=settings.llm.base_url, model=settings.llm.model, api_key=key, timeout=settings.llm.timeout,
            deadline=settings.llm.deadline, max_tool_rounds=settings.llm.max_tool_rounds,
            max_tokens=settings.llm.max_tokens, max_total_tokens=settings.llm.max_total_tokens,
            token_field=settings.llm.token_field)
    kubeconfig = env.get("KUBECONFIG") or None
    access = kubeaccess.load(kubeconfig if kubeconfig and os.pathsep not in kubeconfig else None)
    transport = kubeio.Transport(access, timeout=settings.timeout)
    store = (ConversationStore(kubeio.ConfigMapClient(transport, settings.store_namespace or access.namespace))
             if settings.conversations else None)
    return Asker(kubeio.ApiReader(transport), llm_config=config, store=store,
                 default_namespace=settings.default_namespace, namespaces=settings.namespaces,
                 close_with=[transport.close])
