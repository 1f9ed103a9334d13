"""What the approval board's messages say as an action goes from pending to done (pure: ``core.outcome_for``)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from vigil.chatops import core, messages

AT = datetime.datetime(2026, 12, 7, 0, 30, tzinfo=datetime.UTC)
CHAT = messages.Outcome("Approved", by="U0ALICE", identity="alice@example.com", at=AT, via="slack")


def action(phase: str, annotations: dict[str, str] | None = None, decision: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if decision is not None:
        status["decision"] = decision
    return {"metadata": {"namespace": "shop", "name": "web-1", "annotations": annotations or {}}, "status": status}


APPROVED = {"vigil.dev/approve": "true", "vigil.dev/decided-by": "alice@example.com",
            "vigil.dev/decided-via": "cli"}
RECORDED = {"by": "alice@example.com", "at": "2026-12-07T00:31:00Z", "via": "cli"}


@pytest.mark.parametrize(("decided", "obj", "text", "ended"), [
    # still waiting for a human: nothing to say yet
    (None, action("PendingApproval"), None, False),
    # decided in chat: the chat wording, then the phase the operator reports, until it ends
    (CHAT, action("PendingApproval", APPROVED), "Approved by U0ALICE as alice@example.com at "
     "2026-12-07T00:30:00Z via slack", False),
    (CHAT, action("Approved", APPROVED, RECORDED), "Approved by U0ALICE as alice@example.com at "
     "2026-12-07T00:30:00Z via slack", False),
    (CHAT, action("Executing", APPROVED, RECORDED), "Approved by U0ALICE as alice@example.com at "
     "2026-12-07T00:30:00Z via slack (now Executing)", False),
    (CHAT, action("Succeeded", APPROVED, RECORDED), "Approved by U0ALICE as alice@example.com at "
     "2026-12-07T00:30:00Z via slack (now Succeeded)", True),
    (CHAT, action("Failed", APPROVED, RECORDED), "Approved by U0ALICE as alice@example.com at "
     "2026-12-07T00:30:00Z via slack (now Failed)", True),
    # decided elsewhere: as the annotations say, then as the status records it
    (None, action("PendingApproval", APPROVED), "Approved by alice@example.com via cli", False),
    (None, action("Executing", APPROVED, RECORDED), "Approved by alice@example.com at 2026-12-07T00:31:00Z via cli"
     " (now Executing)", False),
    (None, action("Expired"), "Expired", True),
    # gone, or in a phase that is no decision: closed and forgotten
    (None, None, "Closed (now deleted)", True),
    (None, action("Skipped"), "Closed (now no longer pending)", True),
    (None, action("NoSuchPhase"), "Closed (now no longer pending)", True),
])
def test_outcome_for(decided: messages.Outcome | None, obj: dict[str, Any] | None, text: str | None,
                     ended: bool) -> None:
    outcome, done = core.outcome_for(core.Tracked("uid", decided=decided), obj)
    assert (outcome.text() if outcome else None, done) == (text, ended)
