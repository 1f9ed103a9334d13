"""The deterministic answers: facts in, text out, no LLM. Pure.

Every feature of "Ask Vigil" works with these alone; the LLM only rewrites the same facts. The text
is light markdown (``**bold**``, backticks, ``-`` lists) that reads well in Slack, Discord and a
terminal. Values that come from outside Vigil (series labels, alert labels, Event messages) are shown
between backticks by :func:`quote`, with the characters that could become a mention or break out of
the quote replaced: they are shown as data, never as formatting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Longest answer, in characters (Discord allows 2,000 per message and 4,096 per embed; Slack 3,000 per
#: text block): the chat transports may split it, but never receive more than this.
MAX_ANSWER_CHARS = 3500

HELP = ("I answer from what Vigil recorded in Kubernetes:\n"
        "- `status`: detectors and their verdicts, policies and their phase, actions waiting for approval\n"
        "- `why <namespace>/<action>` (or `why <action>`): why Vigil proposed, ran or skipped an action\n"
        "- `history <namespace>/<policy>`: a policy's actions over time\n"
        "After a `why`, follow-up questions (\"what did the detector see?\", \"which guard rails?\", "
        "\"what changed?\") are about the same action.")


def quote(value: Any) -> str:
    """``value`` as inline data: backticked, with what could end the quote or notify people neutralised.

    A backtick would close the quote; ``<`` opens Slack's and Discord's mentions and links (``<!channel>``,
    ``<@U123>``, ``<https://…|text>``); ``@everyone`` and ``@here`` notify a whole Discord channel.
    """
    inner = defuse(str(value).replace("`", "'"))
    return f"`{inner}`"


def defuse(text: str) -> str:
    """Free text written by the LLM (which has read hostile labels): no mention, channel ping or chat link.

    ``<`` opens every Slack and Discord mention and link (``<!channel>``, ``<@U123>``, ``<https://…|here>``),
    and ``@everyone`` / ``@here`` ping a Discord channel; the rest of the markdown is kept.
    """
    text = text.replace("<", "\u2039")
    return text.replace("@everyone", "@\u200beveryone").replace("@here", "@\u200bhere")


#: Code in standard markdown (fenced blocks first, then inline spans): left as written by :func:`slack_mrkdwn`.
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
#: Marks bold while italics are rewritten (a private-use character no answer contains once removed).
_MARK = "\ue000"


def _slack_prose(text: str) -> str:
    """Markdown outside code as Slack mrkdwn (already escaped)."""
    text = text.replace(_MARK, "")
    text = _HEADING.sub(lambda m: f"{_MARK}{m.group(1)}{_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_MARK}{m.group(1) or m.group(2)}{_MARK}", text)
    text = _ITALIC.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    # a link as its text and its address, never Slack's <url|text>: the address is shown, not hidden
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    return text.replace(_MARK, "*")


def slack_mrkdwn(text: str) -> str:
    """An answer (standard markdown, as Discord and terminals take it) as Slack's mrkdwn.

    ``&``, ``<``, ``>`` escaped everywhere as Slack documents, so nothing becomes a mention or a link;
    outside code: ``**bold**`` and ``__bold__`` as ``*bold*``, ``*italic*`` as ``_italic_``,
    ``~~strike~~`` as ``~strike~``, ``# headings`` as bold lines, ``[text](url)`` as ``text (url)``.
    Code spans and fenced blocks are kept as written (Slack reads backticks as markdown does).
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out: list[str] = []
    last = 0
    for code in _CODE.finditer(escaped):
        out.append(_slack_prose(escaped[last:code.start()]))
        out.append(code.group(0))
        last = code.end()
    out.append(_slack_prose(escaped[last:]))
    return "".join(out)


def series_text(labels: Mapping[str, Any]) -> str:
    return quote("{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}")


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def bound(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    note = "\n… (cut: the answer was longer; ask a narrower question)"
    return text[: max(0, limit - len(note))].rstrip() + note


def _condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _condition_text(condition: Mapping[str, Any] | None) -> str:
    if condition is None:
        return "unknown"
    message = f": {quote(condition['message'])}" if condition.get("message") else ""
    return f"{condition.get('status')} ({condition.get('reason')}){message}"


# --- why -------------------------------------------------------------------------------------------------

def _step_line(action: Mapping[str, Any]) -> str:
    step = action["step"]
    targets = ", ".join(f"{t.get('kind', '?')} {quote(t.get('id', '?'))}" for t in action["targets"]) or "no targets"
    mode = " (dry-run: nothing changed in AWS)" if action["dryRun"] else ""
    return f"Step {step['index']} {quote(step['name'])} ({step['kind']}) on {targets}{mode}."


def evidence_lines(action: Mapping[str, Any]) -> list[str]:
    """What the operator saw when it decided (frozen on the action at decision time)."""
    evidence = action["evidence"]
    lines = []
    if evidence.get("detector"):
        since = f", anomalous since {evidence['anomalousSince']}" if evidence.get("anomalousSince") else ""
        lines.append(f"Why: detector {quote(evidence['detector'])} scored {_score(evidence.get('score'))} "
                     f"(threshold {_score(evidence.get('threshold'))}){since}; decided at {evidence.get('decidedAt')}.")
    elif evidence.get("alert"):
        lines.append(f"Why: Alertmanager alert {series_text(evidence['alert'])}; "
                     f"decided at {evidence.get('decidedAt')}.")
    else:
        lines.append(f"Why: source {quote(evidence.get('source') or 'unknown')}; "
                     f"decided at {evidence.get('decidedAt')}.")
    if evidence.get("why"):
        lines.append("The detector's evidence: " + "; ".join(quote(w) for w in evidence["why"]) + ".")
    if evidence.get("series"):
        lines.append("Series flagged at that moment: " + ", ".join(series_text(s) for s in evidence["series"][:5])
                     + (f" and {len(evidence['series']) - 5} more" if len(evidence["series"]) > 5 else ""))
    return lines


def _guard_line(action: Mapping[str, Any]) -> str:
    guard = action["guardRails"]
    if guard.get("refused"):
        return f"Guard rails: **refused** by {guard['by']}: {quote(guard.get('message') or '')}."
    return f"Guard rails: {guard.get('note')}."


def _approval_line(action: Mapping[str, Any]) -> str | None:
    approval = action["approval"]
    if approval.get("decidedBy"):
        return (f"Decision: {quote(approval['decidedBy'])} via {approval.get('via') or 'unknown'} "
                f"at {approval.get('decidedAt')}.")
    if action["phase"] == "PendingApproval":
        return f"Approval: waiting for a human; expires at {approval.get('expiresAt')}."
    if approval.get("required"):
        return "Approval: required."
    return None


def _change_line(action: Mapping[str, Any]) -> str | None:
    if action.get("before") is None and action.get("after") is None:
        return None
    planned = " (planned: dry-run)" if action["dryRun"] else ""
    return f"Before → after{planned}: {quote(action.get('before'))} → {quote(action.get('after'))}."


def _outcome_line(action: Mapping[str, Any]) -> str:
    parts = [f"Outcome: {action['phase'] or 'not initialised yet'}"]
    if action.get("message"):
        parts.append(quote(action["message"]))
    if action.get("error"):
        parts.append(f"error {action['error'].get('class')} {quote(action['error'].get('code'))}")
    when = action.get("completedAt") or action.get("startedAt")
    return " — ".join(parts) + (f" ({when})" if when else "") + "."


def _policy_line(policy: Mapping[str, Any]) -> str:
    allowed = _condition(policy["conditions"], "ActionAllowed")
    return (f"Policy {quote(policy['name'])} now: phase {policy.get('phase') or 'unknown'}; "
            f"ActionAllowed {_condition_text(allowed)}.")


def detector_lines(detector: Mapping[str, Any], series: int = 5) -> list[str]:
    verdict = ("anomalous" if detector.get("anomalous") else
               "normal" if detector.get("anomalous") is False else "no verdict")
    ready = _condition(detector["conditions"], "Ready")
    lines = [f"Detector {quote(detector['name'])} now: {verdict}, score {_score(detector.get('score'))} "
             f"(threshold {_score(detector.get('threshold'))}), {detector.get('anomalousSeries') or 0} of "
             f"{detector.get('seriesCount') or 0} series anomalous; last evaluated {detector.get('lastEvaluation')}; "
             f"Ready {_condition_text(ready)}."]
    for entry in detector["series"][:series]:
        lines.append(f"- {series_text(entry['labels'])} score {_score(entry.get('score'))}, {entry.get('state')} "
                     f"since {entry.get('since')}")
    return lines


def _events(events: Sequence[Mapping[str, Any]], limit: int = 10) -> list[str]:
    if not events:
        return ["Events: none recorded (Kubernetes keeps Events about an hour by default)."]
    lines = ["Events (oldest first):"]
    for event in events[-limit:]:
        lines.append(f"- {event['time']} {event['object']} {event['type']} {event['reason']}: "
                     f"{quote(event['message'])}")
    return lines


def _by_kind(facts: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [f for f in facts if f.get("kind") == kind]


def not_found_text(fact: Mapping[str, Any]) -> str:
    hint = {"RemediationAction": "`history <namespace>/<policy>` lists a policy's actions",
            "RemediationPolicy": "`status` lists the policies"}.get(str(fact["object"]), "`status` lists what exists")
    return (f"I found no {fact['object']} {quote(fact['name'])} in namespace {quote(fact['namespace'])}. "
            f"Check the name and the namespace ({hint}).")


#: Parts of a ``why`` answer a follow-up can ask for.
PARTS = ("all", "detector", "guards", "change", "events", "approval")


def why(facts: Sequence[Mapping[str, Any]], part: str = "all") -> str:
    """Why an action happened, from :func:`vigil.chatops.facts.why`'s facts; ``part`` narrows it."""
    missing = _by_kind(facts, "notFound")
    actions = _by_kind(facts, "action")
    if not actions:
        return not_found_text(missing[0]) if missing else "I found nothing to explain."
    action = actions[0]
    policies = _by_kind(facts, "policy")
    detectors = _by_kind(facts, "detector")
    events = _by_kind(facts, "event")
    title = (f"**RemediationAction {action['namespace']}/{action['name']}**: {action['phase'] or 'not initialised'} "
             f"(policy {quote(action['policy'])}, incident {quote(action['incident'])})")
    lines = [title]
    if part in ("all", "detector"):
        lines += evidence_lines(action)
    if part == "detector":
        for detector in detectors:
            lines += detector_lines(detector, series=10)
        if not detectors and not action["evidence"].get("detector"):
            lines.append("No detector triggered this action (it came from an alert).")
        lines += _events([e for e in events if str(e["object"]).startswith("AnomalyDetector/")])
        return bound("\n".join(lines))
    if part in ("all", "guards"):
        lines.append(_step_line(action))
        lines.append(_guard_line(action))
        if part == "guards":
            for policy in policies:
                guards = policy["guardRails"]
                lines.append(f"Policy guard rails: paused {guards['paused']}, dry-run {guards['dryRun']}, approval "
                             f"{'required' if guards['approvalRequired'] else 'not required'}, cooldown "
                             f"{guards['cooldown']}, rate limit {quote(guards['rateLimit'])}, blast radius "
                             f"{quote(guards['blastRadius'])}, target tag {quote(guards['targetGuard'])}.")
                lines.append(_policy_line(policy))
            lines += _events([e for e in events if e["reason"] in ("ActionSkipped", "TargetsReduced")])
            return bound("\n".join(lines))
    if part in ("all", "approval"):
        approval = _approval_line(action)
        lines.append(approval or "Approval: not required by the policy.")
        if part == "approval":
            return bound("\n".join(lines))
    if part in ("all", "change"):
        change = _change_line(action)
        lines.append(change or "Before → after: nothing recorded (the action did not reach AWS).")
        lines.append(_outcome_line(action))
        if part == "change":
            return bound("\n".join(lines))
    if part == "events":
        return bound("\n".join([title, *_events(events, limit=20)]))
    for policy in policies:
        lines.append(_policy_line(policy))
    for detector in detectors:
        lines += detector_lines(detector, series=3)
    for fact in missing:
        lines.append(not_found_text(fact))
    lines += _events(events)
    return bound("\n".join(lines))


# --- status and history ----------------------------------------------------------------------------------

def status(facts: Sequence[Mapping[str, Any]]) -> str:
    found = _by_kind(facts, "status")
    if not found:
        return "I could not read the status."
    overview = found[0]
    lines = [f"**Detectors** ({len(overview['detectors'])}):"]
    for detector in overview["detectors"][:25]:
        ready = _condition(detector["conditions"], "Ready")
        if ready is not None and ready.get("status") == "False":
            state = f"not ready ({ready.get('reason')})"
        elif detector.get("anomalous"):
            state = f"**anomalous** since {detector.get('anomalousSince')}"
        elif detector.get("anomalous") is False:
            state = "normal"
        else:
            state = "no verdict yet"
        lines.append(f"- {detector['namespace']}/{detector['name']}: {state}, score {_score(detector.get('score'))} "
                     f"/ threshold {_score(detector.get('threshold'))}, {detector.get('anomalousSeries') or 0} of "
                     f"{detector.get('seriesCount') or 0} series anomalous")
    lines.append(f"**Policies** ({len(overview['policies'])}):")
    for policy in overview["policies"][:25]:
        allowed = _condition(policy["conditions"], "ActionAllowed")
        why_not = (f", actions not allowed ({allowed.get('reason')})"
                   if allowed is not None and allowed.get("status") == "False" else "")
        last = policy.get("lastAction")
        last_text = f", last action {quote(last['name'])} {last.get('phase')}" if last else ""
        phase = policy.get("phase") or "unknown"
        lines.append(f"- {policy['namespace']}/{policy['name']}: {phase}{why_not}{last_text}")
    pending = overview["pendingApprovals"]
    lines.append(f"**Waiting for approval** ({len(pending)}):" if pending else "**Waiting for approval**: none.")
    for action in pending[:25]:
        lines.append(f"- {action['namespace']}/{action['name']}: {quote(action['step']['name'])} on "
                     f"{', '.join(quote(t.get('id')) for t in action['targets']) or 'no targets'} (policy "
                     f"{quote(action['policy'])}), expires {action['approval'].get('expiresAt')}")
    return bound("\n".join(lines))


def policy_detectors(facts: Sequence[Mapping[str, Any]]) -> str:
    """What a policy's detectors see now (a follow-up about detectors after ``history``)."""
    missing = _by_kind(facts, "notFound")
    policies = _by_kind(facts, "policy")
    if not policies:
        return not_found_text(missing[0]) if missing else "I found nothing to show."
    policy = policies[0]
    detectors = _by_kind(facts, "detector")
    lines = [f"**RemediationPolicy {policy['namespace']}/{policy['name']}** watches {len(detectors)} detector(s):"]
    for detector in detectors:
        lines += detector_lines(detector, series=5)
    lines += [not_found_text(f) for f in missing]
    if not detectors and not missing:
        lines.append("None matched (it may be triggered by Alertmanager alerts only).")
    return bound("\n".join(lines))


def history(facts: Sequence[Mapping[str, Any]]) -> str:
    missing = _by_kind(facts, "notFound")
    if missing:
        return not_found_text(missing[0])
    policy = _by_kind(facts, "policy")[0]
    items = _by_kind(facts, "actions")[0]["items"]
    lines = [f"**RemediationPolicy {policy['namespace']}/{policy['name']}**: phase {policy.get('phase') or 'unknown'}; "
             f"{len(items)} action(s) recorded, oldest first:"]
    if not items:
        lines.append("- none yet (or all deleted by the history limits)")
    for action in items:
        extra = f" ({action['skipReason']})" if action.get("skipReason") else ""
        decided = action["approval"].get("decidedBy")
        who = f", decided by {quote(decided)}" if decided and decided != "policy" else ""
        change = _change_line(action)
        lines.append(f"- {action['created']} {action['name']}: step {action['step']['index']} "
                     f"{quote(action['step']['name'])}, **{action['phase'] or 'new'}**{extra}{who}"
                     + (f"; {change}" if change else ""))
    return bound("\n".join(lines))
