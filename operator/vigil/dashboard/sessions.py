"""Browser sessions of the dashboard, and the outcomes of their POSTs (Post/Redirect/Get).

Why: a page that answers a POST is sent again when the user reloads it: a second approve, the
same question put to a paid LLM twice. So every POST that passed the CSRF and Origin checks is
answered ``303 See Other`` to a GET page showing its outcome, and the outcome waits here under a
random id, bound to the session that made it (another browser guessing ids reads nothing).

A session is a random cookie (HttpOnly, SameSite=Strict): it also names the ask box's conversation,
so follow-up questions keep their subject per browser. A local tool for one user: all of it lives
in this process only, bounded (:data:`MAX_OUTCOMES`; the conversations by their store's limits).
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from typing import Generic, TypeVar

COOKIE = "vigil_dashboard_session"
#: What :func:`new_session` makes (32 random bytes, URL-safe base64); any other cookie value is ignored.
SESSION = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: Outcomes kept at once; the oldest are forgotten first (its page then shows no outcome, nothing else).
MAX_OUTCOMES = 256
OUTCOME_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")

T = TypeVar("T")


def new_session() -> str:
    return secrets.token_urlsafe(32)


def valid_session(value: str | None) -> str | None:
    """The cookie's value if it is one of ours in form, else None (a new session is started)."""
    return value if value is not None and SESSION.match(value) else None


class Outcomes(Generic[T]):
    """``put`` an outcome for a session, get its id for the redirect; ``get`` it back on the GET page."""

    def __init__(self, limit: int = MAX_OUTCOMES) -> None:
        self.limit = limit
        self._items: OrderedDict[str, tuple[str, T]] = OrderedDict()

    def put(self, session: str, outcome: T) -> str:
        key = secrets.token_urlsafe(12)
        self._items[key] = (session, outcome)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return key

    def get(self, session: str, key: str | None) -> T | None:
        """The outcome, if ``key`` names one of this session's (reloading the page shows it again)."""
        if key is None or not OUTCOME_ID.match(key):
            return None
        found = self._items.get(key)
        return found[1] if found is not None and secrets.compare_digest(found[0], session) else None

    def __len__(self) -> int:
        return len(self._items)
