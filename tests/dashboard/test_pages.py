"""The dashboard's pure parts: escaping, sparklines, reading hostile or malformed objects, the pages."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from vigil.dashboard import command, pages, sessions, sparkline, views
from vigil.dashboard.markup import Markup, el, escape, join

HOSTILE = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'
CTX = pages.Context(user=HOSTILE, scope="namespace shop", server="https://k8s.example:6443", csrf="t0k\"en")


def test_every_text_and_attribute_is_escaped() -> None:
    made = el("td", HOSTILE, title=HOSTILE, class_="x")
    assert "<script" not in made and "<img" not in made
    assert made.count("&lt;script&gt;") == 2 and "&quot;" in made and "&#x27;" in made
    assert el("p", el("b", "bold")) == "<p><b>bold</b></p>"  # Markup children stay markup
    assert join("<", Markup("<br>")) == "&lt;<br>"
    assert escape(Markup("<i>")) == "<i>"
    assert el("input", type="checkbox", checked=True, disabled=False, value=None) == '<input type="checkbox" checked>'


@pytest.mark.parametrize("tag", ["scr ipt", "a onclick", "<b>", ""])
def test_tag_and_attribute_names_are_never_data(tag: str) -> None:
    with pytest.raises(ValueError):
        el(tag)
    with pytest.raises(ValueError):
        el("p", **{tag or "0": "x"})


def test_sparkline_breaks_on_missing_scores_and_draws_the_threshold() -> None:
    runs = sparkline.segments([0.1, 0.2, None, 0.9, None])
    assert [len(r) for r in runs] == [2, 1]
    assert runs[0][0] == (sparkline.PAD, sparkline._y(0.1)) and runs[1][0][0] == sparkline._x(3, 5)
    assert sparkline._y(1.0) == sparkline.PAD and sparkline._y(0.0) == sparkline.HEIGHT - sparkline.PAD
    assert sparkline._y(7.0) == sparkline._y(1.0)  # out of range is clamped, not drawn off the box
    svg = sparkline.render([0.1, 0.2, None, 0.9], 0.5, True, HOSTILE)
    assert 'class="sparkline anomalous"' in svg and "<polyline" in svg and "<circle" in svg
    assert svg.count("/>") == 3  # line, polyline, circle: self-closed, so no shape nests in another
    assert f'y1="{sparkline._y(0.5)}"' in svg and "<script" not in svg
    assert "no scores yet" in sparkline.render([None, None], None, False, "x")


MALFORMED: list[dict[str, Any]] = [
    {},
    {"metadata": "x", "spec": [], "status": "broken"},
    {"metadata": {"name": 5, "labels": ["a"]}, "status": {"conditions": "Ready", "scoreHistory": {"a": 1},
                                                          "series": [1, None, {"labels": "x"}], "score": "high"}},
    {"metadata": {"name": "a"}, "status": {"conditions": [{"type": {"x": 1}}, 7], "before": [1], "after": "z",
                                           "decision": "me", "lastAction": [], "phase": {"p": 1}}},
]


@pytest.mark.parametrize("obj", MALFORMED)
def test_malformed_objects_render_without_raising(obj: dict[str, Any]) -> None:
    detector, policy, action = views.detector(obj), views.policy(obj), views.action(obj)
    assert detector.verdict in ("Unknown", "NotReady") and policy.phase in ("Unknown", "")
    page = pages.overview(CTX, [detector], None, [policy], None) + pages.actions(CTX, [action], None)
    assert "<script" not in page
    status = obj.get("status")
    assert views.timeline("p", status if isinstance(status, dict) else {}, [obj], [obj]) is not None


def test_long_values_are_bounded() -> None:
    row = views.detector({"metadata": {"name": "d"}, "status": {"series": [
        {"labels": {"k" * 500: "v" * 5000}, "score": 0.5, "state": "Normal", "anomalous": False}]}})
    text = row.top_series[0][0]
    assert len(text) < 250 and text.count("…") == 2


def _event(kind: str, name: str, reason: str, minute: int, type: str = "Normal") -> dict[str, Any]:
    return {"involvedObject": {"kind": kind, "name": name}, "reason": reason, "type": type,
            "message": HOSTILE, "lastTimestamp": f"2026-01-01T00:{minute:02d}:00Z", "count": 3}


def test_the_timeline_keeps_the_policy_its_actions_and_its_detectors_in_time_order() -> None:
    act = {"metadata": {"name": "p-1"}, "spec": {"step": {"name": "scale", "scaleAutoScalingGroup": {}},
                                                 "approvalRequired": True},
           "status": {"phase": "Succeeded", "createdAt": "2026-01-01T00:05:00Z",
                      "decision": {"by": "alice", "via": "dashboard", "at": "2026-01-01T00:06:00Z"},
                      "startedAt": "2026-01-01T00:07:00Z", "completedAt": "2026-01-01T00:08:00Z"}}
    events = [_event("RemediationPolicy", "p", "Triggered", 4), _event("AnomalyDetector", "d", "AnomalyDetected", 1,
                                                                        "Warning"),
              _event("AnomalyDetector", "other", "AnomalyDetected", 2), _event("RemediationAction", "p-1", "X", 9),
              _event("RemediationPolicy", "q", "Triggered", 3), {"involvedObject": {"kind": "x"}},
              _event("RemediationPolicy", "p", "Triggered", 4)]  # the same Event listed twice: shown once
    entries = views.timeline("p", {"matchedDetectors": ["d"]}, [act], events)
    assert [(e.kind, e.name, e.what) for e in entries] == [
        ("AnomalyDetector", "d", "AnomalyDetected"), ("RemediationPolicy", "p", "Triggered"),
        ("RemediationAction", "p-1", "Proposed"), ("RemediationAction", "p-1", "Decided"),
        ("RemediationAction", "p-1", "Started"), ("RemediationAction", "p-1", "Succeeded"),
        ("RemediationAction", "p-1", "X")]
    assert entries[0].warning and entries[0].message.endswith("(x3)")
    assert entries[3].message == "dashboard: alice"
    page = pages.timeline(CTX, "ns", "p", entries, [])
    assert "<script" not in page and "&lt;script&gt;" in page


def test_a_written_decision_replaces_the_buttons() -> None:
    obj = {"metadata": {"name": "a-1", "namespace": "shop", "annotations": {
        "vigil.dev/approve": "true", "vigil.dev/reject": "yes", "vigil.dev/decided-by": HOSTILE}},
        "status": {"phase": "PendingApproval"}}
    row = views.action(obj)
    assert row.requested == f"rejected by {HOSTILE}"  # reject wins, as for the operator
    page = pages.approvals(CTX, [row], None)
    assert "form" not in page and "waiting for the operator" in page and "<script" not in page


def test_pages_carry_the_token_in_forms_and_no_script() -> None:
    act = views.action({"metadata": {"name": "a-1", "namespace": "shop"},
                        "spec": {"step": {"name": "s", "runCommand": {}}},
                        "status": {"phase": "PendingApproval", "before": {"desiredCapacity": 2},
                                   "after": {"desiredCapacity": 4},
                                   "createdAt": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).isoformat()}})
    assert '<meta http-equiv="refresh" content="30">' in pages.approvals(CTX, [act], None)
    page = pages.approvals(CTX, [act], None, pages.Flash(False, HOSTILE))
    assert "refresh" not in page  # the answer to a POST is never reloaded
    assert page.count('name="csrf" value="t0k&quot;en"') == 2
    assert 'action="/actions/shop/a-1/approve"' in page and 'action="/actions/shop/a-1/reject"' in page
    assert "<script" not in page and 'class="flash refused"' in page and page.startswith("<!DOCTYPE html>")
    asked = pages.ask(CTX, HOSTILE, pages.Reply(HOSTILE, "deterministic", "", [HOSTILE]),
                      earlier=[("user", HOSTILE), ("assistant", HOSTILE), (HOSTILE, "x")])
    assert "<script" not in asked and asked.count("&lt;script&gt;") >= 5
    assert asked.count('class="turn user"') == 1 and asked.count('class="turn assistant"') == 2  # role is no data


def test_outcomes_belong_to_their_session_and_are_bounded() -> None:
    mine, theirs = sessions.new_session(), sessions.new_session()
    assert sessions.valid_session(mine) == mine and mine != theirs
    for bad in (None, "", "x" * 43 + "!", "../" * 15, mine + "a"):
        assert sessions.valid_session(bad) is None
    outcomes: sessions.Outcomes[str] = sessions.Outcomes(limit=3)
    first = outcomes.put(mine, "approved")
    assert outcomes.get(mine, first) == "approved" and outcomes.get(mine, first) == "approved"  # a reload
    assert outcomes.get(theirs, first) is None and outcomes.get(mine, None) is None
    assert outcomes.get(mine, first + "x") is None and outcomes.get(mine, "../etc") is None
    for n in range(3):
        outcomes.put(theirs, f"other {n}")
    assert len(outcomes) == 3 and outcomes.get(mine, first) is None  # the oldest forgotten first


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("127.8.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("192.168.1.4", False), ("::", False), ("example.com", False),
])
def test_only_loopback_addresses_are_local(address: str, loopback: bool) -> None:
    assert command.is_loopback(address) is loopback


def test_allowed_hosts_are_the_bound_address_and_localhost() -> None:
    assert command.allowed_hosts("127.0.0.1", 3100) == ["127.0.0.1:3100", "localhost:3100"]
    assert command.allowed_hosts("localhost", 3100) == ["localhost:3100", "127.0.0.1:3100"]
    assert command.allowed_hosts("::1", 80) == ["[::1]:80", "localhost:80"]
