"""``vigil dashboard`` in Chromium, against a real kube-apiserver with the chart's admission policy.

One browser session and one dashboard per user for the module (tests/dashboard/scene.py builds the
objects as the operator would). alice may approve; bob lacks the RBAC verb ``approve``, so Kubernetes
refuses his decision and the page says so.
"""

from __future__ import annotations

import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.dashboard import scene as scenes
from tests.dashboard.browser import chromium
from tests.dashboard.process import DashboardProcess
from tests.harness import wait_for
from tests.realkube import RealKube
from vigil.api.v1alpha1.action import ACTOR_ANNOTATION, APPROVE_ANNOTATION, REJECT_ANNOTATION, VIA_ANNOTATION
from vigil.domain.remediation import approvals

NS = scenes.NAMESPACE


@pytest.fixture(scope="module")
def scene(real_kube: RealKube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[scenes.Scene]:
    built = scenes.build(real_kube, tmp_path_factory.mktemp("dashboard"))
    yield built
    built.teardown()


@pytest.fixture(scope="module")
def alice(scene: scenes.Scene) -> Iterator[DashboardProcess]:
    process = DashboardProcess(scene.alice, scene.alice.with_suffix(".log"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def bob(scene: scenes.Scene) -> Iterator[DashboardProcess]:
    process = DashboardProcess(scene.bob, scene.bob.with_suffix(".log"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def nobody(scene: scenes.Scene) -> Iterator[DashboardProcess]:
    """A user with no RBAC at all (realkube's vigil-user): the dashboard shows what Kubernetes refuses."""
    kubeconfig = scene.kube.write_kubeconfig(scene.alice.with_name("nobody.kubeconfig"), scene.kube.user_token,
                                             user="nobody", namespace=NS)
    process = DashboardProcess(kubeconfig, kubeconfig.with_suffix(".log"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    yield driver
    driver.quit()


def _text(browser: WebDriver, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def test_overview_shows_detectors_with_sparklines_and_policies_with_guard_rails(
        browser: WebDriver, alice: DashboardProcess, scene: scenes.Scene) -> None:
    browser.get(alice.url + "/")
    assert scene.alice_user in _text(browser, "header .who")
    web = browser.find_element(By.ID, f"detector-{NS}-web-latency")
    assert "Anomalous" in web.text and "0.930" in web.text and "1 of 1 anomalous" in web.text
    line = web.find_element(By.CSS_SELECTOR, "svg.sparkline.anomalous polyline.score-line")
    assert len(str(line.get_attribute("points")).split()) == 40  # the 40 evaluations compose() recorded
    assert web.find_elements(By.CSS_SELECTOR, "svg.sparkline line.threshold")
    assert web.find_element(By.CSS_SELECTOR, "svg.sparkline").size["width"] == 160
    assert line.size["width"] > 100 and line.size["height"] > 10  # rendered as a shape of its own, rising
    api = browser.find_element(By.ID, f"detector-{NS}-api-errors")
    assert "Normal" in api.text and "0.410" in api.text
    policy = browser.find_element(By.ID, f"policy-{NS}-{scenes.POLICY}")
    for said in ("AwaitingApproval", "False AwaitingApproval", "required, expires after 30m",
                 "1 of 3 actions per 1h", "at most 4 instances", "vigil.dev/managed=true", "7f3k2"):
        assert said in policy.text, said


def test_a_hostile_label_is_shown_as_text_and_never_runs(browser: WebDriver, alice: DashboardProcess) -> None:
    browser.get(alice.url + "/")
    assert browser.title == "Detectors & policies · Vigil"  # the <script> did not set it
    assert scenes.HOSTILE in _text(browser, f"#detector-{NS}-web-latency .series-list")
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []  # the <img onerror> is text, not an element
    assert browser.find_elements(By.CSS_SELECTOR, "script") == []
    browser.get(f"{alice.url}/timeline/{NS}/{scenes.POLICY}")
    assert scenes.HOSTILE in _text(browser, "ol.timeline")
    assert browser.find_elements(By.CSS_SELECTOR, "img") == [] and browser.title.startswith("Timeline")


def test_actions_show_before_and_after(browser: WebDriver, alice: DashboardProcess) -> None:
    browser.get(alice.url + "/actions")
    done = browser.find_element(By.ID, f"action-{NS}-{scenes.DONE}")
    rows = [r.text for r in done.find_elements(By.CSS_SELECTOR, "table.before-after tr")]
    assert "desiredCapacity 2 4" in rows and "minSize 3 3" in rows, rows
    assert "Succeeded" in done.text and "cli: system:serviceaccount:vigil-dash:alice" in done.text
    changed = done.find_elements(By.CSS_SELECTOR, "td.changed")
    assert [c.text for c in changed] == ["4", "4"]  # desiredCapacity and inService moved


def test_the_timeline_puts_actions_and_events_in_time_order(browser: WebDriver, alice: DashboardProcess) -> None:
    browser.get(f"{alice.url}/timeline/{NS}/{scenes.POLICY}")
    entries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "ol.timeline li.entry")]
    order = [
        ("AnomalyDetector", "AnomalyDetected"), ("RemediationAction", "Proposed"),
        ("RemediationAction", "ApprovalRequired"), ("RemediationAction", "Decided"),
        ("RemediationAction", "Started"), ("RemediationAction", "Succeeded"),
        ("AnomalyDetector", "AnomalyResolved"), ("AnomalyDetector", "AnomalyDetected"),
        ("RemediationPolicy", "Triggered"),
    ]
    at = -1
    for kind, what in order:  # each found after the one before it
        at = next((i for i, e in enumerate(entries) if i > at and f" {kind} " in f" {e} " and f" {what}" in e), -2)
        assert at >= 0, (kind, what, entries)
    times = [e.split(" UTC")[0] for e in entries]
    assert times == sorted(times)


def test_what_the_user_may_not_read_is_refused_on_the_page(browser: WebDriver, nobody: DashboardProcess) -> None:
    browser.get(nobody.url + "/")
    problems = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.problem")]
    assert len(problems) == 2 and all("Kubernetes refused to list" in p and "403" in p for p in problems), problems
    assert "vigil-user" in problems[0]  # the API server's own words name the user
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.detector, tr.policy")
    browser.get(nobody.url + "/approvals")
    assert "Kubernetes refused to list RemediationActions" in _text(browser, "p.problem")
    assert not browser.find_elements(By.CSS_SELECTOR, "form.decide")


def _annotations(scene: scenes.Scene, name: str) -> dict[str, str]:
    return dict(scene.action(name)["metadata"].get("annotations") or {})


def test_approve_in_chromium_is_the_users_own_decision(browser: WebDriver, alice: DashboardProcess,
                                                       scene: scenes.Scene) -> None:
    browser.get(alice.url + "/approvals")
    card = browser.find_element(By.ID, f"approval-{NS}-{scenes.PENDING}")
    assert "desiredCapacity" in card.text and "web-latency (score 0.930)" in card.text
    browser.find_element(By.ID, f"approve-{NS}-{scenes.PENDING}").click()
    flash = wait_for(lambda: browser.find_elements(By.ID, "flash"), what="the outcome")[0]
    assert "flash ok" in str(flash.get_attribute("class")) and f"{scenes.PENDING} approved by" in flash.text
    # the POST was answered 303: the page is a GET of its outcome, and reloading it decides nothing again
    assert "/approvals?outcome=" in browser.current_url
    browser.refresh()
    assert f"{scenes.PENDING} approved by" in _text(browser, "#flash")
    card = browser.find_element(By.ID, f"approval-{NS}-{scenes.PENDING}")  # still pending: no operator runs here
    assert f"Approved by {scene.alice_user} via dashboard: waiting for the operator" in card.text
    assert not card.find_elements(By.CSS_SELECTOR, "form.decide")
    stored = scene.action(scenes.PENDING)
    annotations = stored["metadata"]["annotations"]
    assert annotations[APPROVE_ANNOTATION] == "true"
    assert annotations[ACTOR_ANNOTATION] == scene.alice_user  # the admission policy checked it is her
    assert annotations[VIA_ANNOTATION] == "dashboard"
    managers = [m["manager"] for m in stored["metadata"]["managedFields"]]
    assert "vigil-dashboard" in managers
    # what the operator will record from it
    decision = approvals.decide(annotations, stored["metadata"]["managedFields"], 0, 1800, True, 1)
    assert (decision.outcome, decision.by, decision.via, decision.field_manager) == (
        approvals.Outcome.APPROVED, scene.alice_user, "dashboard", "vigil-dashboard")
    audited = [e for e in scene.kube.audit_events() if e.get("verb") == "patch" and e.get("stage") == "ResponseComplete"
               and e.get("objectRef", {}).get("name") == scenes.PENDING and not e["objectRef"].get("subresource")]
    assert [e["user"]["username"] for e in audited] == [scene.alice_user]


def test_a_user_without_the_approve_verb_sees_the_refusal_and_nothing_changes(
        browser: WebDriver, bob: DashboardProcess, scene: scenes.Scene) -> None:
    before = _annotations(scene, scenes.PENDING_OTHER)
    browser.get(bob.url + "/approvals")
    assert scene.bob_user in _text(browser, "header .who")
    browser.find_element(By.ID, f"approve-{NS}-{scenes.PENDING_OTHER}").click()
    flash = wait_for(lambda: browser.find_elements(By.ID, "flash"), what="the outcome")[0]
    assert "flash refused" in str(flash.get_attribute("class"))
    assert f"Kubernetes refused to approve {NS}/{scenes.PENDING_OTHER} for {scene.bob_user} (403 Forbidden)" \
        in flash.text
    assert "needs the RBAC verb approve" in flash.text  # the admission policy's own words
    after = _annotations(scene, scenes.PENDING_OTHER)
    assert after == before and APPROVE_ANNOTATION not in after and REJECT_ANNOTATION not in after
    assert scene.action(scenes.PENDING_OTHER)["status"]["phase"] == "PendingApproval"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Show the 303 itself instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", **headers})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(), dict(error.headers)


def test_posts_from_elsewhere_are_refused(alice: DashboardProcess, scene: scenes.Scene, browser: WebDriver) -> None:
    """A page on another origin cannot decide through the dashboard, and a rebound host name gets nothing."""
    browser.get(alice.url + "/approvals")
    token = browser.find_element(By.CSS_SELECTOR, "form.decide input[name=csrf]").get_attribute("value")
    target = f"{alice.url}/actions/{NS}/{scenes.PENDING_OTHER}/reject"
    before = _annotations(scene, scenes.PENDING_OTHER)
    for data, origin in ((b"csrf=" + str(token).encode(), "http://evil.example"),  # right token, foreign page
                         (b"csrf=wrong", alice.url),  # same origin, no token
                         (b"", alice.url)):
        status, body, headers = _post(target, data, {"Origin": origin})
        assert status == 403 and "Refused" in body, (status, body)
        assert "script-src" not in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, _, _ = _post(target, b"csrf=" + str(token).encode(), {"Origin": "http://rebound.example",
                                                                  "Host": "rebound.example"})
    assert status == 421
    assert _annotations(scene, scenes.PENDING_OTHER) == before

    # A POST that passes the checks is answered 303 to its outcome (here: no such action), shown only to the
    # browser session that made it (the cookie the answer set), on a GET that can be reloaded.
    status, body, headers = _post(f"{alice.url}/actions/{NS}/no-such-action/reject", b"csrf=" + str(token).encode(),
                                  {"Origin": alice.url})
    assert status == 303 and headers["Location"].startswith("/approvals?outcome="), (status, body)
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";", 1)[0]
    for _ in range(2):
        shown = _get(alice.url + headers["Location"], {"Cookie": session})
        assert f"RemediationAction {NS}/no-such-action not found." in shown
    assert "no-such-action" not in _get(alice.url + headers["Location"], {})  # another session: nothing


def _get(url: str, headers: dict[str, str]) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return str(answer.read().decode())


def _ask(browser: WebDriver, question: str, earlier: int) -> tuple[str, list[str]]:
    """Send ``question`` from the Ask box; the answer's text and the conversation's turns above it, once
    the page showing them has replaced this one (``earlier`` turns: 2 per exchange before this one).

    Read inside the wait, all at once: the POST is answered by a redirect, and an element found while the
    browser swaps documents goes stale under us ("Node with given id does not belong to the document")."""
    box = browser.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    browser.find_element(By.ID, "ask-button").click()

    def settled() -> tuple[str, list[str]] | None:
        try:
            if "/ask?outcome=" not in browser.current_url:
                return None
            answers = browser.find_elements(By.ID, "answer")
            turns = browser.find_elements(By.CSS_SELECTOR, "#conversation li")
            if not answers or len(turns) != earlier:
                return None
            return str(answers[0].text), [f"{t.get_attribute('class')}|{t.text}" for t in turns]
        except StaleElementReferenceException:
            return None
    return wait_for(settled, what=f"the answer to {question!r} below {earlier} earlier turns")


def test_the_ask_box_answers_from_the_facts(browser: WebDriver, alice: DashboardProcess) -> None:
    """No LLM configured: the deterministic answer of Ask Vigil, read with alice's credentials."""
    browser.get(alice.url + "/ask")
    answer, _ = _ask(browser, f"why {scenes.DONE}", earlier=0)
    assert scenes.DONE in answer and "web-latency" in answer, answer
    assert "(deterministic)" in _text(browser, "section.answer h3")
    assert browser.find_element(By.ID, "question").get_attribute("value") == f"why {scenes.DONE}"
    status, earlier = _ask(browser, "status", earlier=2)
    assert "web-latency" in status and "api-errors" in status and "AwaitingApproval" in status, status
    assert browser.find_elements(By.CSS_SELECTOR, "img") == [] and browser.title == "Ask · Vigil"
    # the conversation of this browser session: the first exchange above the latest answer
    assert [turn.split("|", 1)[0] for turn in earlier] == ["turn user", "turn assistant"]
    assert earlier[0].split("|", 1)[1] == f"why {scenes.DONE}" and scenes.DONE in earlier[1], earlier
    # the answer is a GET of the POST's outcome: reloading it asks nothing again (still one earlier exchange)
    browser.refresh()
    assert _text(browser, "#answer") == status
    assert len(browser.find_elements(By.CSS_SELECTOR, "#conversation li")) == 2
    # a follow-up keeps the subject of the session's conversation
    _ask(browser, f"why {scenes.DONE}", earlier=4)
    follow, _ = _ask(browser, "what did the detector see?", earlier=6)
    assert "Detector `web-latency`" in follow, follow


def test_loopback_only_unless_allowed(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    answer = subprocess.run([sys.executable, "-m", "vigil", "dashboard", "--address", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert answer.returncode == 2 and "not a loopback address" in answer.stderr
