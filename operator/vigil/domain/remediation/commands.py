"""What an SSM command's invocations add up to, and how much of their output to keep (pure).

A ``runCommand`` action sends one SSM command to its instances, then polls each
instance's invocation (GetCommandInvocation) until every one has finished or
Vigil's deadline passes. :func:`judge` turns the invocations into the action's
outcome:

* every instance ``Success``: the action Succeeded;
* any other final status (Failed, Cancelled, TimedOut, Undeliverable, ...):
  the action Failed with ``errorCode`` ``CommandFailed`` (``CommandTimedOut``
  if the only failures are timeouts), and the escalation ladder moves on to
  its next step (a remedy that did not work is not a reason to stop climbing);
* an instance still pending at the deadline: Failed/``CommandTimedOut``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vigil.api.v1alpha1.action import (
    COMMAND_FAILED,
    COMMAND_TIMED_OUT,
    OUTPUT_MAX_BYTES,
    OUTPUT_MAX_LINES,
    CommandInvocation,
)

#: GetCommandInvocation statuses that will still change.
PENDING = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})
SUCCESS = "Success"
TIMED_OUT = "TimedOut"
#: Slack on top of SSM's own timeouts before Vigil stops waiting.
DEADLINE_GRACE_S = 60.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    done: bool
    succeeded: bool
    error_code: str | None
    message: str


def deadline(sent_at: float, timeout_seconds: float) -> float:
    """When Vigil stops waiting: SSM may take ``timeout_seconds`` to deliver the command (its delivery
    timeout) and as long again to run it (the execution timeout of AWS-RunShellScript), plus a grace."""
    return sent_at + 2 * timeout_seconds + DEADLINE_GRACE_S


def excerpt(text: str | None, max_lines: int = OUTPUT_MAX_LINES, max_bytes: int = OUTPUT_MAX_BYTES) -> tuple[
        str | None, bool]:
    """The first ``max_lines`` lines of ``text``, at most ``max_bytes`` bytes of UTF-8; and whether it was cut."""
    if not text:
        return None, False
    lines = text.splitlines(keepends=True)
    kept = "".join(lines[:max_lines])
    cut = len(lines) > max_lines
    encoded = kept.encode()
    if len(encoded) > max_bytes:
        kept = encoded[:max_bytes].decode("utf-8", "ignore")
        cut = True
    return kept, cut


def _describe(invocation: CommandInvocation) -> str:
    code = f", exit {invocation.exit_code}" if invocation.exit_code is not None and invocation.exit_code >= 0 else ""
    details = f" ({invocation.status_details})" if invocation.status_details and \
        invocation.status_details != invocation.status else ""
    return f"{invocation.instance_id} {invocation.status}{details}{code}"


def judge(invocations: Sequence[CommandInvocation], instance_ids: Sequence[str], now: float,
          until: float | None) -> Outcome:
    """The outcome of a command on ``instance_ids`` given its polled ``invocations`` (an instance not
    polled yet, or not known to SSM yet, is pending) and the deadline ``until``."""
    by_id = {i.instance_id: i for i in invocations}
    pending = [i for i in instance_ids if i not in by_id or by_id[i].status in PENDING]
    finished = [by_id[i] for i in instance_ids if i not in pending]
    summary = "; ".join(_describe(i) for i in finished)
    if pending:
        if until is None or now < until:
            return Outcome(False, False, None, f"command running: {len(finished)} of {len(instance_ids)} "
                                               f"instance(s) finished" + (f" ({summary})" if summary else ""))
        return Outcome(True, False, COMMAND_TIMED_OUT,
                       f"stopped waiting for the command at its deadline; still pending on {', '.join(pending)}"
                       + (f"; {summary}" if summary else ""))
    failed = [i for i in finished if i.status != SUCCESS]
    if not failed:
        return Outcome(True, True, None, f"command succeeded on {len(finished)} instance(s): {summary}")
    code = COMMAND_TIMED_OUT if all(i.status == TIMED_OUT for i in failed) else COMMAND_FAILED
    return Outcome(True, False, code, f"command did not succeed on {len(failed)} of {len(finished)} instance(s): "
                                      f"{summary}")
