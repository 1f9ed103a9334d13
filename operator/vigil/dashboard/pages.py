"""The dashboard's pages, from view rows to HTML: pure, and every value goes through :mod:`.markup`.

No page has a script: Approve, Reject and Ask are plain forms that POST with the per-process CSRF
token, so the Content-Security-Policy can forbid scripts altogether. Styles come from one local
stylesheet; sparklines are inline SVG.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vigil.dashboard import sparkline, views
from vigil.dashboard.markup import Child, Markup, el, join, raw_document

#: Seconds between reloads of a page that only shows state (a meta refresh: no script needed).
REFRESH = 30

NAV = (("/", "Detectors & policies"), ("/approvals", "Approvals"), ("/actions", "Actions"), ("/ask", "Ask"))


@dataclasses.dataclass(frozen=True)
class Flash:
    """The outcome of a POST, shown above the page: ``ok`` False is a refusal or a failure."""

    ok: bool
    text: str


@dataclasses.dataclass(frozen=True)
class Context:
    """What every page shows in its header, and the token its forms carry."""

    user: str
    scope: str
    server: str
    csrf: str


def layout(ctx: Context, title: str, active: str, *content: Child, flash: Flash | None = None,
           refresh: bool = False) -> Markup:
    """A page. ``refresh``: reload it every :data:`REFRESH` seconds (only for GET pages: a POST's answer
    must not be reloaded, and the ask box would lose the question)."""
    nav = el("nav", *(el("a", label, href=path, class_="active" if path == active else None,
                         aria_current="page" if path == active else None) for path, label in NAV))
    who = el("div", el("span", "as ", el("strong", ctx.user or "(user unknown)", id="user")),
             el("span", " · ", ctx.scope), el("span", " · ", ctx.server, class_="server"), class_="who")
    notice = None
    if flash is not None:
        notice = el("div", flash.text, class_="flash ok" if flash.ok else "flash refused",
                    role="status" if flash.ok else "alert", id="flash")
    return raw_document(el(
        "html",
        el("head", el("meta", charset="utf-8"), el("title", f"{title} · Vigil"),
           el("meta", http_equiv="refresh", content=str(REFRESH)) if refresh else None,
           el("meta", name="viewport", content="width=device-width, initial-scale=1"),
           el("link", rel="stylesheet", href="/static/dashboard.css")),
        el("body", el("header", el("h1", "Vigil"), who, nav), el("main", notice, el("h2", title), *content)),
        lang="en",
    ))


def problem(text: str | None) -> Markup | None:
    return el("p", text, class_="problem", role="alert") if text else None


def _condition(cond: views.Condition | None) -> Markup:
    if cond is None:
        return el("span", "-", class_="muted")
    return el("span", f"{cond.status} {cond.reason}".strip(), title=cond.message,
              class_=f"cond cond-{cond.status.lower() or 'unknown'}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _labels(pairs: Sequence[tuple[str, str]]) -> Markup:
    return join(*(el("span", f"{k}={v}", class_="label") for k, v in pairs))


def _empty(columns: int, text: str) -> Markup:
    return el("tr", el("td", text, colspan=columns, class_="muted"))


def detectors_table(rows: Sequence[views.DetectorRow]) -> Markup:
    head = el("tr", *(el("th", h) for h in ("Detector", "Verdict", "Score", "Recent scores", "Series", "Ready")))
    body = []
    for row in rows:
        tag = row.verdict.lower()
        series = el("ul", *(el("li", el("code", text), f" {_score(score)} {state}", class_="series")
                             for text, score, state in row.top_series), class_="series-list")
        counts = "" if row.series_count is None else f"{row.anomalous_series or 0} of {row.series_count} anomalous"
        spark = sparkline.render(row.history, row.threshold, row.verdict == "Anomalous",
                                 f"{row.ref.name}: last {len(row.history)} scores, threshold {_score(row.threshold)}")
        body.append(el(
            "tr",
            el("td", el("strong", row.ref.name), el("div", row.ref.namespace, class_="muted"), _labels(row.labels)),
            el("td", el("span", row.verdict, class_=f"verdict verdict-{tag}"),
               el("div", f"since {views.shown_time(row.since)}", class_="muted") if row.since else None),
            el("td", _score(row.score), el("div", f"threshold {_score(row.threshold)}", class_="muted")),
            el("td", spark),
            el("td", counts, series),
            el("td", _condition(row.ready),
               el("div", f"evaluated {views.shown_time(row.last_evaluation)}", class_="muted")
               if row.last_evaluation else None),
            id=f"detector-{row.ref.namespace}-{row.ref.name}", class_="detector",
        ))
    return el("table", el("thead", head), el("tbody", *body or [_empty(6, "No AnomalyDetectors.")]),
              class_="detectors")


def policies_table(rows: Sequence[views.PolicyRow]) -> Markup:
    head = el("tr", *(el("th", h) for h in ("Policy", "Phase", "Action allowed", "Guard rails", "Incident")))
    body = []
    for row in rows:
        rails = el("dl", *(join(el("dt", name), el("dd", said)) for name, said in row.guard_rails), class_="rails")
        body.append(el(
            "tr",
            el("td", el("strong", row.ref.name), el("div", row.ref.namespace, class_="muted"),
               el("a", "timeline", href=f"/timeline/{row.ref.namespace}/{row.ref.name}", class_="timeline-link")),
            el("td", el("span", row.phase, class_=f"phase phase-{row.phase.lower()}")),
            el("td", _condition(row.allowed), el("div", row.allowed.message, class_="muted") if row.allowed else None),
            el("td", rails),
            el("td", row.incident or el("span", "none", class_="muted"),
               el("div", f"last action: {row.last_action}", class_="muted") if row.last_action else None),
            id=f"policy-{row.ref.namespace}-{row.ref.name}", class_="policy",
        ))
    return el("table", el("thead", head), el("tbody", *body or [_empty(5, "No RemediationPolicies.")]),
              class_="policies")


def overview(ctx: Context, detectors: Sequence[views.DetectorRow], detector_problem: str | None,
             policies: Sequence[views.PolicyRow], policy_problem: str | None) -> Markup:
    return layout(ctx, "Detectors & policies", "/",
                  el("h3", "Anomaly detectors"), problem(detector_problem), detectors_table(detectors),
                  el("h3", "Remediation policies"), problem(policy_problem), policies_table(policies),
                  refresh=True)


def _before_after(row: views.ActionRow) -> Markup:
    if not row.before:
        return el("span", "not yet observed", class_="muted")
    lines = [el("tr", el("th", "field"), el("th", "before"), el("th", "after"))]
    for field, before, after in row.before:
        lines.append(el("tr", el("td", el("code", field)), el("td", before),
                        el("td", after, class_="changed" if before != after else None)))
    return el("table", *lines, class_="before-after")


def _decide_form(ctx: Context, row: views.ActionRow, verb: str) -> Markup:
    return el("form",
              el("input", type="hidden", name="csrf", value=ctx.csrf),
              el("button", verb.capitalize(), type="submit", class_=f"button {verb}",
                 id=f"{verb}-{row.ref.namespace}-{row.ref.name}"),
              method="post", action=f"/actions/{row.ref.namespace}/{row.ref.name}/{verb}", class_="decide")


def approvals(ctx: Context, rows: Sequence[views.ActionRow], listing_problem: str | None,
              flash: Flash | None = None) -> Markup:
    pending = [row for row in rows if row.pending]
    cards = []
    for row in pending:
        cards.append(el(
            "article",
            el("h3", row.ref.name, el("span", f" {row.ref.namespace}", class_="muted")),
            el("p", f"Policy {row.policy}, step {row.step} ({row.operation})",
               " · dry run" if row.dry_run else None),
            el("p", f"Trigger: {row.reason}") if row.reason else None,
            el("p", row.message, class_="muted") if row.message else None,
            el("p", f"Expires {views.shown_time(row.expires)}", class_="muted") if row.expires else None,
            _before_after(row),
            el("p", f"{row.requested.capitalize()}: waiting for the operator to act on it.", class_="requested")
            if row.requested else
            el("div", _decide_form(ctx, row, "approve"), _decide_form(ctx, row, "reject"), class_="buttons"),
            class_="approval", id=f"approval-{row.ref.namespace}-{row.ref.name}",
        ))
    if not pending and not listing_problem:
        cards.append(el("p", "Nothing is waiting for approval.", class_="muted", id="no-approvals"))
    return layout(ctx, "Pending approvals", "/approvals", problem(listing_problem),
                  el("p", "Approve and Reject are your own requests to Kubernetes, with your kubeconfig: "
                          "they need the RBAC verb approve on remediationactions in the action's namespace.",
                     class_="muted"),
                  *cards, flash=flash, refresh=flash is None)


def actions(ctx: Context, rows: Sequence[views.ActionRow], listing_problem: str | None) -> Markup:
    head = el("tr", *(el("th", h) for h in ("Action", "Policy / step", "Phase", "Decision", "Before / after",
                                            "Times")))
    body = []
    for row in rows:
        times = el("div", *(el("div", f"{label} {views.shown_time(when)}")
                            for label, when in (("created", row.created), ("started", row.started),
                                                ("completed", row.completed)) if when), class_="muted")
        body.append(el(
            "tr",
            el("td", el("strong", row.ref.name), el("div", row.ref.namespace, class_="muted")),
            el("td", row.policy, el("div", f"{row.step} ({row.operation})", class_="muted"),
               el("span", "dry run", class_="label") if row.dry_run else None),
            el("td", el("span", row.phase, class_=f"phase phase-{row.phase.lower()}"),
               el("div", row.message, class_="muted") if row.message else None),
            el("td", row.decision or el("span", "-", class_="muted")),
            el("td", _before_after(row)),
            el("td", times),
            id=f"action-{row.ref.namespace}-{row.ref.name}", class_="action",
        ))
    return layout(ctx, "Actions", "/actions", problem(listing_problem),
                  el("table", el("thead", head), el("tbody", *body or [_empty(6, "No RemediationActions.")]),
                     class_="actions"), refresh=True)


def timeline(ctx: Context, namespace: str, policy: str, entries: Sequence[views.TimelineEntry],
             problems: Sequence[str]) -> Markup:
    items = [
        el("li",
           el("time", views.shown_time(entry.at)), " ",
           el("span", entry.kind, class_="kind"), el("strong", f" {entry.name} "),
           el("span", entry.what, class_="what warning" if entry.warning else "what"),
           el("div", entry.message, class_="message") if entry.message else None,
           class_="entry warning" if entry.warning else "entry")
        for entry in entries
    ]
    return layout(ctx, f"Timeline of {namespace}/{policy}", "",
                  *(problem(p) for p in problems),
                  el("p", "The policy's actions (proposed, decided, started, ended) and the Events of the policy, "
                          "its actions and the detectors it matched, oldest first.", class_="muted"),
                  el("ol", *items or [el("li", "Nothing recorded yet.", class_="muted")], class_="timeline"),
                  refresh=True)


@dataclasses.dataclass(frozen=True)
class Reply:
    """An answer of the ask box, as shown."""

    text: str
    via: str
    error: str
    facts: Sequence[str] = ()


def ask(ctx: Context, question: str = "", reply: Reply | None = None, flash: Flash | None = None,
        earlier: Sequence[tuple[str, str]] = ()) -> Markup:
    """The ask box; ``earlier``: this browser session's conversation before the latest exchange."""
    form = el("form",
              el("input", type="hidden", name="csrf", value=ctx.csrf),
              el("label", "Ask Vigil about an incident", for_="question"),
              el("textarea", question, name="question", id="question", rows=3, maxlength=2000,
                 placeholder="why did web-scale-out act?  ·  status  ·  history web-scale-out"),
              el("button", "Ask", type="submit", class_="button", id="ask-button"),
              method="post", action="/ask", class_="ask")
    answer = None
    if reply is not None:
        answer = el("section",
                    el("h3", "Answer", el("span", f" ({reply.via})" if reply.via else "", class_="muted")),
                    el("p", reply.error, class_="problem", role="alert") if reply.error else None,
                    el("pre", reply.text, id="answer"),
                    el("details", el("summary", f"{len(reply.facts)} facts used"),
                       el("ul", *(el("li", fact) for fact in reply.facts))) if reply.facts else None,
                    class_="answer")
    history = el("section",
                 el("h3", "Earlier in this conversation"),
                 el("ol", *(el("li", el("pre", text), class_=f"turn {'user' if role == 'user' else 'assistant'}")
                            for role, text in earlier)),
                 id="conversation", class_="conversation") if earlier else None
    return layout(ctx, "Ask", "/ask", history, form, answer, flash=flash)


def error_page(ctx: Context, status: int, text: str) -> Markup:
    return layout(ctx, f"Error {status}", "", el("p", text, class_="problem", role="alert"))
