"""Parsing questions (pure): commands, names checked as the API server checks them, follow-up focus."""

from __future__ import annotations

import html

import pytest

from vigil.chatops import commands, summary
from vigil.chatops.commands import Command, Verb


@pytest.mark.parametrize(("text", "expected"), [
    ("status", Command(Verb.STATUS, "status")),
    ("  /vigil   STATUS  ", Command(Verb.STATUS, "STATUS")),
    ("status team-a", Command(Verb.STATUS, "status team-a", namespace="team-a")),
    ("vigil why web-1", Command(Verb.WHY, "why web-1", None, "web-1")),
    ("why team-a/web-1", Command(Verb.WHY, "why team-a/web-1", "team-a", "web-1")),
    ("history team-a/web-scale-out", Command(Verb.HISTORY, "history team-a/web-scale-out", "team-a", "web-scale-out")),
    ("why", Command(Verb.WHY, "why", problem="say which one: why <namespace>/<name>")),
    ("why Web_1", Command(Verb.WHY, "why Web_1", problem="'Web_1' is not a valid object name")),
    ("why a/b/c", Command(Verb.WHY, "why a/b/c", problem="'a/b' is not a valid namespace name")),
    ("status ../x", Command(Verb.STATUS, "status ../x", problem="'../x' is not a valid namespace name")),
    ("why did it scale?", Command(Verb.QUESTION, "why did it scale?")),
    ("", Command(Verb.HELP, "")),
    ("help", Command(Verb.HELP, "help")),
])
def test_parse(text: str, expected: Command) -> None:
    assert commands.parse(text) == expected


@pytest.mark.parametrize(("text", "part"), [
    ("and what did the detector see?", "detector"),
    ("which guard rails passed?", "guards"),
    ("who approved it?", "approval"),
    ("what changed in AWS?", "change"),
    ("show me the events", "events"),
    ("tell me more", "all"),
])
def test_focus(text: str, part: str) -> None:
    assert commands.focus(text) == part and part in summary.PARTS


def test_mentioned_names_are_bounded_and_valid() -> None:
    assert commands.mentioned_names("is web-1 or team-a/web-2 or `web-3`, web-4 fine? ../etc") == [
        (None, "web-1"), ("team-a", "web-2"), (None, "web-3")]


def test_quote_neutralises_mentions_and_formatting() -> None:
    assert summary.quote("<!channel> @everyone `x` a@b") == "`\u2039!channel> @\u200beveryone 'x' a@b`"
    assert summary.bound("x" * 5000).endswith("(cut: the answer was longer; ask a narrower question)")
    assert len(summary.bound("x" * 5000)) == summary.MAX_ANSWER_CHARS


@pytest.mark.parametrize(("markdown", "mrkdwn"), [
    ("**Detectors** (1): `a<b & c>d`", "*Detectors* (1): `a&lt;b &amp; c&gt;d`"),
    # an LLM's markdown: italics, strike, headings, __bold__, links
    ("## Why\nThe *detector* scored __high__, ~~not~~ low.", "*Why*\nThe _detector_ scored *high*, ~not~ low."),
    ("See [the runbook](https://example.com/rb?a=1&b=2).", "See the runbook (https://example.com/rb?a=1&amp;b=2)."),
    # code is data: no formatting inside it, but still escaped (Slack would read <!channel> anywhere)
    ("`**x**` and ```\n**y** <!channel>\n```", "`**x**` and ```\n**y** &lt;!channel&gt;\n```"),
    ("<!channel> <@U123> <https://evil.example|click>", "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.example|click&gt;"),
    # lists and lone asterisks stay as they are
    ("- one\n- 2 * 3 = 6\n* item", "- one\n- 2 * 3 = 6\n* item"),
    ("**bold with *italic* inside**", "*bold with _italic_ inside*"),
    ("", ""),
])
def test_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert summary.slack_mrkdwn(markdown) == mrkdwn


def test_slack_mrkdwn_of_every_deterministic_answer_keeps_its_words() -> None:
    """Converting changes markup and escapes only: the words of the help text survive."""
    converted = html.unescape(summary.slack_mrkdwn(summary.HELP))
    assert converted.replace("*", "").replace("_", "") == summary.HELP.replace("*", "").replace("_", "")


def test_malformed_and_hostile_objects_still_give_a_bounded_answer() -> None:
    from vigil.chatops import facts

    bare = facts.action_fact({"metadata": {"name": "x", "namespace": "d"}})
    assert summary.why([bare]).startswith("**RemediationAction d/x**: not initialised (policy ``, incident ``)")
    huge = "A" * 100_000
    hostile = facts.action_fact({
        "metadata": {"name": "y", "namespace": "d"},
        "spec": {"step": {"name": huge, "runCommand": {"commands": [huge] * 100}},
                 "targets": [{"kind": "Instance", "id": huge}] * 500,
                 "reason": {"source": "detector", "detector": huge,
                            "series": [{f"l{i}": huge for i in range(100)}] * 99}},
        "status": {"phase": "Failed", "message": huge, "before": {"k": [huge] * 1000}, "errorCode": huge}})
    assert len(hostile["targets"]) == 20 and len(hostile["evidence"]["series"]) == facts.MAX_SERIES
    assert max(len(v) for v in hostile["evidence"]["series"][0].values()) <= 128
    assert len(hostile["evidence"]["series"][0]) <= 25
    assert len(hostile["message"]) <= facts.MAX_TEXT and len(hostile["step"]["settings"]["commands"]) == 40
    assert len(summary.why([hostile])) <= summary.MAX_ANSWER_CHARS
    assert len(summary.history([facts.policy_fact({"metadata": {"name": "p", "namespace": "d"}}),
                                {"kind": "actions", "items": [hostile] * 30}])) <= summary.MAX_ANSWER_CHARS
