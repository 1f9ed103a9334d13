"""The ask box's backend: Ask Vigil (:mod:`vigil.chatops.ask`) reading with the user's own credentials.

The same Asker that ``vigil ask`` and the chat component use, so the box answers what they answer:
deterministically from the facts when no LLM is configured, through read-only tools when one is.
Each browser session is one conversation (``dashboard:<session>``), so a follow-up keeps its subject;
the dashboard writes nothing but decisions to the cluster, so the conversations live in this process
(:class:`vigil.chatops.conversation.ConversationStore` in memory: bounded in turns, bytes, age and
:data:`MAX_CONVERSATIONS`). Facts are shown under the answer as compact text, bounded and escaped like the rest.
"""

from __future__ import annotations

import json
from typing import Any

from vigil.dashboard import pages

#: Most facts listed under an answer, and the longest text of one.
MAX_FACTS = 30
MAX_FACT_CHARS = 300
#: Browser sessions whose conversations are kept; the least recently used are forgotten beyond it.
MAX_CONVERSATIONS = 100


def fact_text(fact: object) -> str:
    """One fact as ``kind: {...}``, bounded."""
    if isinstance(fact, dict):
        kind = str(fact.get("kind") or "fact")
        rest = {k: v for k, v in fact.items() if k != "kind"}
        shown = f"{kind}: {json.dumps(rest, default=str, sort_keys=True)}"
    else:
        shown = str(fact)
    return shown if len(shown) <= MAX_FACT_CHARS else shown[: MAX_FACT_CHARS - 1] + "…"


class Asking:
    """Owns the Asker and its transport; :meth:`answer` is the server's answerer."""

    def __init__(self, access: Any, namespace: str | None, llm_config: Any = None, timeout: float = 10.0) -> None:
        from vigil.chatops import ask, conversation, kubeio

        self._transport = kubeio.Transport(access, timeout=timeout)
        self._store = conversation.ConversationStore(
            None, conversation.HistoryLimits(max_conversations=MAX_CONVERSATIONS))
        self._asker = ask.Asker(kubeio.ApiReader(self._transport), llm_config=llm_config, store=self._store,
                                default_namespace=namespace or access.namespace,
                                namespaces=[namespace] if namespace else None)

    async def answer(self, question: str, user: str, conversation: str) -> pages.Reply:
        result = await self._asker.ask(question, conversation=conversation, user=user)
        facts = [fact_text(f) for f in list(result.facts)[:MAX_FACTS]]
        return pages.Reply(result.text, result.via, result.error or "", facts)

    async def history(self, conversation: str) -> list[tuple[str, str]]:
        """The session's turns so far, oldest first (as stored: redacted and bounded)."""
        thread = await self._store.load(conversation)
        return [(turn.role, turn.text) for turn in thread.turns]

    async def close(self) -> None:
        await self._asker.close()
        self._transport.close()

