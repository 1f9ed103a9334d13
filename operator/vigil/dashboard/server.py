"""The dashboard's HTTP server (aiohttp): routes, the checks on every request, security headers.

Threats it is built against, since it runs on a laptop holding the user's credentials:

* another web page in the user's browser posting a decision (CSRF): every POST must carry the
  per-process token that only our own pages contain, and an ``Origin`` equal to the dashboard's own;
* DNS rebinding (a hostile name resolving to 127.0.0.1): the ``Host`` header must name the address
  the server is bound to (or ``localhost``), so a page served under another name gets nothing;
* hostile object contents (labels, messages): escaped by construction (:mod:`.markup`), and the
  Content-Security-Policy forbids every script, so even a missed escape could not run one;
* size: request bodies are capped (:data:`MAX_BODY`), questions too (:data:`MAX_QUESTION`);
* a reload re-sending a POST (a second decision, the same question to a paid LLM again): every POST
  that passes the checks is answered 303 to a GET page showing its outcome (:mod:`.sessions`).
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from vigil.dashboard import pages, sessions, views
from vigil.dashboard.cluster import LIST_LIMIT, Cluster, ClusterError
from vigil.dashboard.markup import Markup

#: Largest request body accepted (a form with a token and a question).
MAX_BODY = 16 * 1024
#: Longest question the ask box forwards.
MAX_QUESTION = 2000

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it browsers send "Origin: null" on a form POST, and the Origin check needs the origin.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

#: A namespace or object name as Kubernetes allows it (DNS subdomain); anything else is refused (400).
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

#: The ask box's backend: (question, user, conversation) -> reply (:class:`vigil.dashboard.asking.Asking`).
Answerer = Callable[[str, str, str], Awaitable[pages.Reply]]
#: The turns of a conversation so far, as (role, text), oldest first.
History = Callable[[str], Awaitable[Sequence[tuple[str, str]]]]


@dataclasses.dataclass(frozen=True)
class Decided:
    """The outcome of an approve or reject, shown on /approvals after the redirect."""

    flash: pages.Flash


@dataclasses.dataclass(frozen=True)
class Asked:
    """The outcome of a question, shown on /ask after the redirect: the answer, or why there is none."""

    question: str
    reply: pages.Reply | None = None
    flash: pages.Flash | None = None


async def _no_history(conversation: str) -> Sequence[tuple[str, str]]:
    return ()

STATIC = {"dashboard.css": "text/css"}


class Dashboard:
    """The app's state: the cluster as the user, who the user is, the CSRF token, the allowed hosts."""

    def __init__(self, cluster: Cluster, user: str, answerer: Answerer, check_host: bool = True,
                 history: History = _no_history) -> None:
        self.cluster = cluster
        self.user = user
        #: ``host:port`` values the Host header may take; set once the port is bound (:meth:`allow`).
        self.hosts: frozenset[str] = frozenset()
        self.check_host = check_host
        self.answerer = answerer
        self.history = history
        self.csrf = secrets.token_urlsafe(32)
        self.outcomes: sessions.Outcomes[Decided | Asked] = sessions.Outcomes()

    def allow(self, hosts: Iterable[str]) -> None:
        self.hosts = frozenset(h.lower() for h in hosts)

    def context(self) -> pages.Context:
        return pages.Context(self.user, self.cluster.scope, self.cluster.access.server, self.csrf)

    # --- the checks -------------------------------------------------------------------------------
    def host_allowed(self, request: web.Request) -> bool:
        return not self.check_host or (request.host or "").lower() in self.hosts

    def post_allowed(self, request: web.Request, form: Any) -> str | None:
        """Why this POST is refused (a CSRF or cross-origin attempt), or None."""
        origin = request.headers.get("Origin", "")
        if origin != f"http://{request.host}":
            return "the request did not come from this dashboard's page (Origin mismatch)"
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return "the request did not come from this dashboard's page (Sec-Fetch-Site)"
        token = form.get("csrf")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.csrf.encode()):
            return "the page's form token is missing or stale: reload the page and try again"
        return None


def _html(page: Markup, status: int = 200) -> web.Response:
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def _session(request: web.Request) -> str:
    return str(request["session"])


def _conversation(request: web.Request) -> str:
    """The ask box's thread of this browser session."""
    return f"dashboard:{_session(request)}"


def _see_other(dashboard: Dashboard, request: web.Request, path: str, outcome: Decided | Asked) -> web.Response:
    """303 to the GET page that shows ``outcome`` (Post/Redirect/Get): a reload re-sends nothing."""
    key = dashboard.outcomes.put(_session(request), outcome)
    return web.Response(status=303, headers={"Location": f"{path}?outcome={key}"})


def _outcome(dashboard: Dashboard, request: web.Request) -> Decided | Asked | None:
    return dashboard.outcomes.get(_session(request), request.query.get("outcome"))


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    dashboard: Dashboard = request.app["dashboard"]
    known = sessions.valid_session(request.cookies.get(sessions.COOKIE))
    request["session"] = known or sessions.new_session()
    if not dashboard.host_allowed(request):
        response: web.StreamResponse = web.Response(
            status=421, text="vigil dashboard: unknown Host; open it at the address it printed\n")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 400, 404, 405, 413: plain text, with our headers too
            response = web.Response(status=exc.status, text=exc.text or f"{exc.status} {exc.reason}\n")
    for name, value in HEADERS.items():
        response.headers[name] = value
    if known is None and not response.prepared:
        response.set_cookie(sessions.COOKIE, request["session"], httponly=True, samesite="Strict", path="/")
    return response


def _listing_problem(what: str, error: ClusterError | None, truncated: bool) -> str | None:
    if error is not None:
        prefix = "Kubernetes refused to list" if error.forbidden else "Could not list"
        return f"{prefix} {what}: {error.message}"
    if truncated:
        return f"Only the first {LIST_LIMIT} {what} are shown."
    return None


async def overview(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    detectors = await dashboard.cluster.list("detectors")
    policies = await dashboard.cluster.list("policies")
    return _html(pages.overview(
        dashboard.context(),
        [views.detector(d) for d in detectors.items],
        _listing_problem("AnomalyDetectors", detectors.error, detectors.truncated),
        [views.policy(p) for p in policies.items],
        _listing_problem("RemediationPolicies", policies.error, policies.truncated),
    ))


async def _action_rows(dashboard: Dashboard) -> tuple[list[views.ActionRow], str | None]:
    listing = await dashboard.cluster.list("actions")
    rows = views.newest_first(views.action(a) for a in listing.items)
    return rows, _listing_problem("RemediationActions", listing.error, listing.truncated)


async def approvals(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    rows, problem = await _action_rows(dashboard)
    outcome = _outcome(dashboard, request)
    flash = outcome.flash if isinstance(outcome, Decided) else None
    return _html(pages.approvals(dashboard.context(), rows, problem, flash))


async def actions(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    rows, problem = await _action_rows(dashboard)
    return _html(pages.actions(dashboard.context(), rows, problem))


def _names(request: web.Request, *keys: str) -> list[str]:
    values = [request.match_info[k] for k in keys]
    if not all(NAME.match(v) for v in values):
        raise web.HTTPBadRequest(text="not a Kubernetes name\n")
    return values


async def timeline(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    namespace, policy = _names(request, "namespace", "policy")
    problems: list[str] = []
    try:
        policy_obj = await dashboard.cluster.get("policies", namespace, policy)
    except ClusterError as exc:
        if exc.status == 404:
            return _html(pages.error_page(dashboard.context(), 404,
                                          f"RemediationPolicy {namespace}/{policy} not found"), 404)
        policy_obj = {}
        problems.append(f"Could not read the policy: {exc.message}")
    acts = await dashboard.cluster.list("actions", namespace, f"vigil.dev/policy={policy}")
    events = await dashboard.cluster.events(namespace)
    for what, listing in (("RemediationActions", acts), ("Events", events)):
        said = _listing_problem(what, listing.error, listing.truncated)
        if said:
            problems.append(said)
    status = policy_obj.get("status") if isinstance(policy_obj.get("status"), dict) else {}
    entries = views.timeline(policy, status or {}, acts.items, events.items)
    return _html(pages.timeline(dashboard.context(), namespace, policy, entries, problems))


async def _form(request: web.Request) -> Any:
    try:
        return await request.post()
    except ValueError:
        raise web.HTTPBadRequest(text="unreadable form\n") from None


async def decide(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    namespace, name = _names(request, "namespace", "name")
    verb = request.match_info["verb"]
    form = await _form(request)
    refused = dashboard.post_allowed(request, form)
    if refused is not None:
        return _html(pages.error_page(dashboard.context(), 403, f"Refused: {refused}."), 403)
    try:
        done = await dashboard.cluster.decide(verb, namespace, name, dashboard.user)
        flash = pages.Flash(True, f"Done: {done}. The operator acts on it on its next pass.")
    except ClusterError as exc:
        if exc.forbidden:
            text = (f"Kubernetes refused to {verb} {namespace}/{name} for {dashboard.user or 'you'} "
                    f"(403 Forbidden); nothing was changed. {exc.message}")
        elif exc.status == 404:
            text = f"RemediationAction {namespace}/{name} not found."
        else:
            text = f"Could not {verb} {namespace}/{name}: {exc.message}"
        flash = pages.Flash(False, text)
    return _see_other(dashboard, request, "/approvals", Decided(flash))


async def ask_page(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    outcome = _outcome(dashboard, request)
    asked = outcome if isinstance(outcome, Asked) else Asked("")
    try:
        turns = list(await dashboard.history(_conversation(request)))
    except Exception:  # the history is a convenience: the page still shows the latest answer
        turns = []
    if asked.reply is not None and len(turns) >= 2:
        turns = turns[:-2]  # the latest exchange is shown as the answer below
    return _html(pages.ask(dashboard.context(), asked.question, asked.reply, asked.flash, earlier=turns))


async def ask(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app["dashboard"]
    form = await _form(request)
    refused = dashboard.post_allowed(request, form)
    if refused is not None:
        return _html(pages.error_page(dashboard.context(), 403, f"Refused: {refused}."), 403)
    question = str(form.get("question") or "").strip()
    if not question:
        return _see_other(dashboard, request, "/ask", Asked("", flash=pages.Flash(False, "Ask a question first.")))
    if len(question) > MAX_QUESTION:
        return _see_other(dashboard, request, "/ask", Asked(question[:MAX_QUESTION], flash=pages.Flash(
            False, f"The question is longer than {MAX_QUESTION} characters.")))
    reply = await dashboard.answerer(question, dashboard.user, _conversation(request))
    return _see_other(dashboard, request, "/ask", Asked(question, reply))


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = resources.files("vigil.dashboard").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name])


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build(dashboard: Dashboard) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app["dashboard"] = dashboard
    app.router.add_get("/", overview)
    app.router.add_get("/approvals", approvals)
    app.router.add_get("/actions", actions)
    app.router.add_get("/timeline/{namespace}/{policy}", timeline)
    app.router.add_post("/actions/{namespace}/{name}/{verb:approve|reject}", decide)
    app.router.add_get("/ask", ask_page)
    app.router.add_post("/ask", ask)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)
    return app
