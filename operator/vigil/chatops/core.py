"""What Slack and Discord share: the ``/vigil`` command language, replay refusal, and the approval board.

* :func:`parse_command` turns ``/vigil approve shop/web-1`` into a :class:`Command` (pure).
* :class:`ReplayGuard` remembers each request's signature (and trigger or interaction id) for the
  platform's timestamp window, so a captured request sent again inside that window is refused;
  outside it the timestamp check (Bolt's, or :mod:`vigil.chatops.discord`'s) refuses it.
* :class:`Board` is the single place that posts approval messages and updates them. It polls the
  RemediationActions as the component's ServiceAccount: a new one in ``PendingApproval`` gets an
  approval message with buttons on every configured platform; one that leaves ``PendingApproval``
  (decided here, by ``vigil approve``, by ``kubectl annotate``, or expired) gets its messages
  rewritten in place without buttons, and again as the operator carries the decision out
  (``(now Executing)``, ``(now Succeeded)``) until the action ends. Posted message references live
  in memory (the component may not write to the cluster): after a restart, actions still pending
  are posted again, and the buttons of the earlier messages keep working because they name the
  action, not the message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from vigil.api.v1alpha1 import action as api_action
from vigil.api.v1alpha1.common import API_VERSION
from vigil.chatops import messages
from vigil.chatops.approve import ActionRef, BadReference, ChatUser, Decider, Result, Status, Verb, parse_ref
from vigil.chatops.kube import KubeApi, KubeError
from vigil.domain.remediation import approvals

logger = logging.getLogger(__name__)

#: Slack and Discord both refuse requests older than five minutes; the replay memory spans the same.
REPLAY_WINDOW = 300.0
#: Most remembered request keys; beyond it the oldest are forgotten (they are outside the window by then
#: unless the component receives more than this many requests in five minutes).
REPLAY_MAX_KEYS = 50_000
#: Longest ``/vigil`` text accepted (Slack allows 4000 characters of command text).
MAX_COMMAND = 1000
#: The most actions the board tracks at once, and the page size of its list.
MAX_TRACKED = 5000
LIST_LIMIT = 500
#: New approval messages posted per pass at most (chat.postMessage allows about one a second per channel):
#: a backlog after a restart is posted over several passes instead of being rate limited.
MAX_POSTS_PER_PASS = 20


class Kind(enum.StrEnum):
    STATUS = "status"
    WHY = "why"
    HISTORY = "history"
    APPROVE = "approve"
    REJECT = "reject"
    HELP = "help"


USAGE = ("Usage: /vigil status | why <namespace>/<action> | history <namespace>/<policy> | "
         "approve <namespace>/<action> | reject <namespace>/<action>")


@dataclasses.dataclass(frozen=True)
class Command:
    kind: Kind
    argument: str = ""
    text: str = ""

    @property
    def verb(self) -> Verb | None:
        return {Kind.APPROVE: Verb.APPROVE, Kind.REJECT: Verb.REJECT}.get(self.kind)


def parse_command(text: str) -> Command:
    """``status``, ``why x``, ``history p``, ``approve x``, ``reject x``; anything else is ``help``."""
    text = " ".join(text.split())[:MAX_COMMAND]
    word, _, rest = text.partition(" ")
    try:
        kind = Kind(word.lower())
    except ValueError:
        return Command(Kind.HELP, text=text)
    needs_argument = kind in (Kind.WHY, Kind.HISTORY, Kind.APPROVE, Kind.REJECT)
    if needs_argument and not rest:
        return Command(Kind.HELP, text=text)
    return Command(kind, rest, text)


class ReplayGuard:
    """Keys seen in the last :data:`REPLAY_WINDOW` seconds; :meth:`first` is False for a repeat."""

    def __init__(self, window: float = REPLAY_WINDOW, max_keys: int = REPLAY_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, *keys: str) -> bool:
        """Record ``keys`` (empty ones are ignored); False when any was seen within the window."""
        now = self._clock()
        while self._seen and (next(iter(self._seen.values())) <= now - self.window
                              or len(self._seen) > self.max_keys):
            self._seen.popitem(last=False)
        present = [k for k in keys if k]
        if any(k in self._seen for k in present):
            return False
        for key in present:
            self._seen[key] = now
        return True


class Asker(Protocol):
    """What the ``status``, ``why`` and ``history`` commands call (vigil.chatops.ask)."""

    def ask(self, text: str, *, conversation: str | None = None, user: str = "") -> Any: ...


class Poster(Protocol):
    """One platform's way to post an approval message and rewrite it later."""

    platform: str

    async def post(self, event: Any, obj: Mapping[str, Any]) -> Any: ...

    async def update(self, ref: Any, event: Any, action: str, outcome: messages.Outcome) -> None: ...


@dataclasses.dataclass
class Tracked:
    """An action whose messages the board keeps: posted while pending, rewritten until it ends."""

    uid: str
    refs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: How it was decided in chat (who, as whom, when): kept, so later rewrites only add the phase.
    decided: messages.Outcome | None = None
    #: The outcome line the messages show now ("" while pending): rewritten only when it changes.
    shown: str = ""


def outcome_for(tracked: Tracked, obj: Mapping[str, Any] | None) -> tuple[messages.Outcome | None, bool]:
    """What the messages of a tracked action should say now, and whether it is done changing (pure).

    None while it still waits for a human. A chat decision keeps its wording (the chat name, the
    identity) and takes the phase the operator reports; a decision made elsewhere reads as the action
    records it. A deleted action is done; so is one that no longer parses as decided.
    """
    if obj is None:
        return messages.Outcome("Closed", phase="deleted"), True
    if _pending(obj):
        return None, False
    phase = str((obj.get("status") or {}).get("phase") or "")
    ended = phase in {p.value for p in api_action.TERMINAL_PHASES}  # rewritten a last time, then forgotten
    if tracked.decided is not None:
        # no phase while the decision waits for the operator (still PendingApproval, annotated)
        shown = "" if phase == api_action.ActionPhase.PENDING_APPROVAL.value else phase
        return dataclasses.replace(tracked.decided, phase=shown), ended
    outcome = messages.outcome_of(obj)
    if outcome is None:
        return messages.Outcome("Closed", phase="no longer pending"), True
    return outcome, ended


def _ref_of(obj: Mapping[str, Any]) -> ActionRef:
    metadata = obj.get("metadata") or {}
    return ActionRef(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _pending(obj: Mapping[str, Any]) -> bool:
    """Waiting for a human: ``PendingApproval`` and nobody has set the approve or reject annotation yet
    (once set, the action waits for the operator, not for chat)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    decided = any(str(annotations.get(a, "")).strip().lower() in approvals.TRUE
                  for a in (api_action.APPROVE_ANNOTATION, api_action.REJECT_ANNOTATION))
    return not decided and (obj.get("status") or {}).get("phase") == api_action.ActionPhase.PENDING_APPROVAL.value


class Board:
    """Posts an approval message per pending action and rewrites it once the action is decided."""

    def __init__(self, kube: KubeApi, posters: Sequence[Poster], namespaces: Sequence[str] = (),
                 interval: float = 5.0,
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        self.kube = kube
        self.posters = list(posters)
        self.namespaces = list(namespaces)
        self.interval = interval
        self._clock = clock
        self.tracked: dict[ActionRef, Tracked] = {}
        self._lock = asyncio.Lock()
        #: Set after each completed pass (tests and readiness wait on it).
        self.passes = 0

    async def _list(self) -> list[dict[str, Any]]:
        paths = ([f"/apis/{API_VERSION}/namespaces/{ns}/{api_action.PLURAL}" for ns in self.namespaces]
                 or [f"/apis/{API_VERSION}/{api_action.PLURAL}"])
        items: list[dict[str, Any]] = []
        for path in paths:
            token = ""
            while True:
                query = f"?limit={LIST_LIMIT}" + (f"&continue={token}" if token else "")
                page = await self.kube.request("GET", path + query)
                items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
                token = str((page.get("metadata") or {}).get("continue") or "")
                if not token or len(items) > MAX_TRACKED * 4:
                    break
        return items

    async def sync(self) -> None:
        """One pass: post what is newly pending, rewrite what was decided elsewhere."""
        async with self._lock:
            objects = await self._list()
            now = self._clock()
            seen: dict[ActionRef, dict[str, Any]] = {_ref_of(o): o for o in objects}
            fresh = [(ref, listed) for ref, listed in seen.items() if _pending(listed) and ref not in self.tracked]
            for ref, listed in fresh[:max(0, min(MAX_POSTS_PER_PASS, MAX_TRACKED - len(self.tracked)))]:
                await self._post(ref, listed, now)
            for ref, tracked in list(self.tracked.items()):
                obj = seen.get(ref)
                outcome, ended = outcome_for(tracked, obj)
                if ended:
                    self.tracked.pop(ref)
                if outcome is None or outcome.text() == tracked.shown:
                    continue
                tracked.shown = outcome.text()
                event = messages.event_from_object(obj, now) if obj is not None else None
                await self._update(tracked, event, str(ref), outcome)
            self.passes += 1

    async def _post(self, ref: ActionRef, obj: Mapping[str, Any], now: datetime.datetime) -> None:
        event = messages.event_from_object(obj, now)
        if event is None:
            logger.warning("Not posting an approval for %s: its spec does not parse.", ref)
            return
        tracked = Tracked(str((obj.get("metadata") or {}).get("uid") or ""))
        for poster in self.posters:
            try:
                tracked.refs[poster.platform] = await poster.post(event, obj)
            except Exception as exc:  # a chat outage must not stop the other platform or the board
                logger.warning("Could not post the approval of %s to %s: %s", ref, poster.platform,
                               type(exc).__name__)
        self.tracked[ref] = tracked
        logger.info("Posted the approval request of %s to %s.", ref, ", ".join(sorted(tracked.refs)) or "nowhere")

    async def _update(self, tracked: Tracked, event: Any, action: str, outcome: messages.Outcome,
                      skip: tuple[str, Any] | None = None) -> None:
        for poster in self.posters:
            ref = tracked.refs.get(poster.platform)
            if ref is None or (skip is not None and skip == (poster.platform, ref)):
                continue
            try:
                await poster.update(ref, event, action, outcome)
            except Exception as exc:
                logger.warning("Could not update the %s message of %s: %s", poster.platform, action,
                               type(exc).__name__)

    async def decided_here(self, result: Result, chat: ChatUser, *, pressed: tuple[str, Any] | None = None) -> None:
        """After a chat decision: rewrite this action's messages (but ``pressed``, the ``(platform, message
        reference)`` already rewritten by the interaction's answer), and keep them for the later passes,
        which add the phase as the operator carries the decision out."""
        if result.ref is None or result.verb is None:
            return
        async with self._lock:
            tracked = self.tracked.get(result.ref)
            if tracked is None:
                return
            obj = await self.object(result.ref)
            event = messages.event_from_object(obj, self._clock()) if obj else None
            tracked.decided = chat_outcome(result, chat)
            tracked.shown = tracked.decided.text()
            await self._update(tracked, event, str(result.ref), tracked.decided, skip=pressed)

    async def object(self, ref: ActionRef) -> dict[str, Any] | None:
        """The action as the component's ServiceAccount reads it, None if missing or unreadable."""
        try:
            return await self.kube.request("GET", ref.path)
        except Exception as exc:
            logger.info("Could not read %s: %s", ref, type(exc).__name__)
            return None

    async def by_uid(self, uid: str) -> ActionRef | None:
        for ref, tracked in self.tracked.items():
            if tracked.uid == uid:
                return ref
        for obj in await self._list():
            if (obj.get("metadata") or {}).get("uid") == uid:
                return _ref_of(obj)
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Sync every ``interval`` seconds until ``stop`` is set; failures are logged and retried."""
        while not stop.is_set():
            try:
                await self.sync()
            except KubeError as exc:
                logger.warning("Approval board pass failed: HTTP %s %s: %s", exc.status, exc.reason, exc.message[:200])
            except Exception as exc:
                logger.warning("Approval board pass failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass


def chat_outcome(result: Result, chat: ChatUser) -> messages.Outcome:
    return messages.Outcome(
        (result.verb.done if result.verb else "decided").capitalize(),
        by=chat.name or chat.qualified,
        identity=result.identity.user if result.identity else "",
        at=result.at, via=chat.platform.value)


class ChatOps:
    """The component's behaviour behind both platforms: decide, answer, and keep the board."""

    def __init__(self, decider: Decider, board: Board, asker: Asker | None = None,
                 default_namespace: str | None = None) -> None:
        self.decider = decider
        self.board = board
        self.asker = asker
        self.default_namespace = default_namespace

    def ref(self, text: str) -> ActionRef:
        return parse_ref(text, self.default_namespace)

    async def decide(self, verb: Verb, target: str, chat: ChatUser) -> Result:
        try:
            ref = self.ref(target)
        except BadReference as exc:
            return Result(Status.REFUSED, f"{exc}.", None, verb)
        return await self.decider.decide(verb, ref, chat)

    async def ask(self, command: Command, chat: ChatUser, conversation: str) -> str:
        """The answer to ``status``, ``why`` and ``history``, from the Asker (vigil.chatops.ask)."""
        if self.asker is None:
            return "Asking Vigil is not enabled in this ChatOps component."
        if self.decider.resolve(chat) is None:
            # What Vigil recorded (series labels, targets, Events) is for the people the cluster admin mapped.
            return ("Sorry, your chat account is not mapped to a Kubernetes identity, so Vigil cannot answer "
                    "you. Ask your cluster admin to add you to the ChatOps identity map.")
        try:
            answer = self.asker.ask(command.text, conversation=conversation, user=chat.qualified)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            logger.warning("Asking Vigil failed: %s", type(exc).__name__)
            return "Vigil could not answer that right now."
        text = str(getattr(answer, "text", answer) or "")
        error = getattr(answer, "error", None)
        if not text and error:
            text = f"Vigil could not answer: {error}"
        return text[:3500] or "Vigil has no answer."

