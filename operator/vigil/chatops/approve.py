"""Approve or reject a RemediationAction on behalf of a chat user, as their mapped Kubernetes identity.

Deciding is pure (:func:`plan`): given the action as the API server returned it, the verb and
who asks, either a refusal in words fit for chat or the merge patch to send. Doing is thin
(:class:`Decider`): resolve the identity, read the action *as that identity*, plan, patch *as that
identity*. Kubernetes then applies the same checks as to ``vigil approve``: RBAC (``patch`` and the
custom verb ``approve``), the chart's admission policy (``vigil.dev/decided-by`` must equal the
requesting user, which under impersonation is the mapped user) and the audit log, which records
both the component's ServiceAccount and the impersonated user.

The patch writes what ``vigil approve`` writes (the approve or reject annotation and
``vigil.dev/decided-by``), plus where the decision came from: ``vigil.dev/decided-via`` (``slack``
or ``discord``), ``vigil.dev/chat-user`` (``slack:U012ABC``), ``vigil.dev/chat-channel`` and
``vigil.dev/decided-groups`` (the impersonated groups). It carries the ``resourceVersion`` it
planned from, so two people pressing at once cannot both decide: the second gets a conflict
and is told what happened.

Everything that reaches chat is bounded and holds no credential: Kubernetes' own refusal
messages are passed on (they name the user, the verb and the namespace, which the person
needs to ask for access) but clipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from vigil.api.v1alpha1 import action
from vigil.api.v1alpha1.common import API_VERSION
from vigil.chatops.identity import Identity, IdentityMap, Platform
from vigil.chatops.kube import KubeApi, KubeError

logger = logging.getLogger(__name__)

VIA_ANNOTATION = action.VIA_ANNOTATION
CHAT_USER_ANNOTATION = "vigil.dev/chat-user"
CHAT_CHANNEL_ANNOTATION = "vigil.dev/chat-channel"
GROUPS_ANNOTATION = "vigil.dev/decided-groups"
#: The managedFields manager of a chat decision (``status.decision.fieldManager``).
FIELD_MANAGER = "vigil-chatops"
#: The most characters of a Kubernetes refusal shown in chat.
MAX_REASON = 300

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Verb(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"

    @property
    def done(self) -> str:
        return "approved" if self is Verb.APPROVE else "rejected"


@dataclasses.dataclass(frozen=True)
class ActionRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def path(self) -> str:
        return f"/apis/{API_VERSION}/namespaces/{self.namespace}/{action.PLURAL}/{self.name}"


class BadReference(ValueError):
    pass


def parse_ref(text: str, default_namespace: str | None = None) -> ActionRef:
    """``namespace/name`` (or ``name`` with a default namespace) from a button value or a command."""
    text = text.strip()
    namespace, _, name = text.rpartition("/")
    namespace = namespace or (default_namespace or "")
    if not namespace:
        raise BadReference("name the action as namespace/name")
    if not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
        raise BadReference("that is not a valid namespace/name")
    return ActionRef(namespace, name)


@dataclasses.dataclass(frozen=True)
class ChatUser:
    """Who pressed the button, as the chat platform (signature-checked) says."""

    platform: Platform
    id: str
    channel: str = ""
    #: The user's group or role ids the identity map names (nothing else is kept).
    groups: tuple[str, ...] = ()
    #: A display name, for messages only: never used to decide.
    name: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.platform.value}:{self.id}"


class Status(enum.StrEnum):
    DECIDED = "decided"
    #: Not mapped: refused before any request.
    UNMAPPED = "unmapped"
    #: Nothing to decide (not found, not pending, already decided) or a bad request.
    REFUSED = "refused"
    #: Kubernetes said no (RBAC, admission).
    FORBIDDEN = "forbidden"
    #: Someone else decided in between.
    CONFLICT = "conflict"
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class Result:
    status: Status
    text: str
    ref: ActionRef | None = None
    verb: Verb | None = None
    identity: Identity | None = None
    at: datetime.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.DECIDED


def _clean(text: str, limit: int = 128) -> str:
    """A chat-supplied value fit for an annotation: printable, bounded."""
    return "".join(c for c in text if c.isprintable())[:limit]


def plan(obj: Mapping[str, Any] | None, verb: Verb, ref: ActionRef, who: Identity,
         chat: ChatUser) -> dict[str, Any] | Result:
    """The merge patch that decides, or a :class:`Result` saying why not. Pure."""
    if obj is None:
        return Result(Status.REFUSED, f"RemediationAction {ref} does not exist.", ref, verb, who)
    metadata = obj.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    for annotation, done in ((action.APPROVE_ANNOTATION, "approved"), (action.REJECT_ANNOTATION, "rejected")):
        if annotations.get(annotation):
            by = annotations.get(action.ACTOR_ANNOTATION) or "someone"
            return Result(Status.REFUSED, f"{ref} was already {done} by {_clean(by)}.", ref, verb, who)
    phase = (obj.get("status") or {}).get("phase")
    if phase != action.ActionPhase.PENDING_APPROVAL.value:
        return Result(Status.REFUSED, f"{ref} is {_clean(str(phase or 'not initialised yet'))}, not waiting "
                      "for approval: nothing to decide.", ref, verb, who)
    decision = action.APPROVE_ANNOTATION if verb is Verb.APPROVE else action.REJECT_ANNOTATION
    return {"metadata": {
        "resourceVersion": str(metadata.get("resourceVersion") or ""),
        "annotations": {
            decision: "true",
            action.ACTOR_ANNOTATION: who.user,
            VIA_ANNOTATION: chat.platform.value,
            CHAT_USER_ANNOTATION: _clean(chat.qualified),
            CHAT_CHANNEL_ANNOTATION: _clean(chat.channel),
            GROUPS_ANNOTATION: ",".join(who.groups),
        },
    }}


def refusal_for_unmapped(chat: ChatUser) -> str:
    return ("Sorry, your chat account is not mapped to a Kubernetes identity, so Vigil cannot let you "
            "approve or reject. Ask your cluster admin to add you to the ChatOps identity map.")


class Decider:
    """Resolves, reads and patches; one per component. ``clock`` is injectable for tests."""

    def __init__(self, kube: KubeApi, identity_map: Callable[[], IdentityMap],
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        self.kube = kube
        self._identity_map = identity_map
        self._clock = clock

    def resolve(self, chat: ChatUser) -> Identity | None:
        return self._identity_map().resolve(chat.platform, chat.id, chat.groups)

    async def decide(self, verb: Verb, ref: ActionRef, chat: ChatUser) -> Result:
        who = self.resolve(chat)
        if who is None:
            logger.info("Refused %s of %s from unmapped %s.", verb.value, ref, chat.qualified)
            return Result(Status.UNMAPPED, refusal_for_unmapped(chat), ref, verb)
        try:
            obj: dict[str, Any] | None = await self.kube.request("GET", ref.path, as_=who)
        except KubeError as exc:
            if exc.status == 404:
                obj = None
            elif exc.status == 403:
                return self._forbidden(verb, ref, who, exc)
            else:
                return self._error(verb, ref, who, exc)
        except Exception as exc:  # connection errors: say so, in one line
            return self._error(verb, ref, who, exc)
        planned = plan(obj, verb, ref, who, chat)
        if isinstance(planned, Result):
            return planned
        try:
            await self.kube.request("PATCH", f"{ref.path}?fieldManager={FIELD_MANAGER}", planned, as_=who,
                                    content_type="application/merge-patch+json")
        except KubeError as exc:
            if exc.status == 409:
                return Result(Status.CONFLICT, f"{ref} changed while you decided (someone else may have); "
                              "look again before retrying.", ref, verb, who)
            if exc.status in (401, 403):
                return self._forbidden(verb, ref, who, exc)
            return self._error(verb, ref, who, exc)
        except Exception as exc:
            return self._error(verb, ref, who, exc)
        at = self._clock()
        logger.info("%s %s as %s for %s in %s.", verb.done.capitalize(), ref, who.user, chat.qualified,
                    chat.channel or "a direct message")
        return Result(Status.DECIDED, f"{verb.done.capitalize()} {ref} as {who.user}.", ref, verb, who, at)

    def _forbidden(self, verb: Verb, ref: ActionRef, who: Identity, exc: KubeError) -> Result:
        reason = _clean(exc.message, MAX_REASON) or f"HTTP {exc.status}"
        logger.info("Kubernetes refused %s of %s as %s: %s", verb.value, ref, who.user, reason)
        return Result(Status.FORBIDDEN, f"Kubernetes refused to let {who.user} {verb.value} {ref}: {reason}",
                      ref, verb, who)

    def _error(self, verb: Verb, ref: ActionRef, who: Identity, exc: BaseException) -> Result:
        detail = (f"HTTP {exc.status} {exc.reason}" if isinstance(exc, KubeError)
                  else f"cannot reach the Kubernetes API ({type(exc).__name__})")
        logger.warning("Could not %s %s as %s: %s", verb.value, ref, who.user, detail)
        return Result(Status.ERROR, f"Could not {verb.value} {ref}: {detail}. Look at the action before trying again.",
                      ref, verb, who)

