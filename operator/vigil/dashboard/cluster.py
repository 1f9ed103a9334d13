"""The dashboard's only Kubernetes I/O, as the user: reads, the decision patch, and who the user is.

Every call uses the credentials of the user's kubeconfig (loaded by :mod:`vigil.adapters.kubeaccess`,
as ``vigil approve`` does), so a page shows what the user may read and a decision is the user's own
request: RBAC, the chart's admission policy (the ``approve`` verb) and the audit log apply. The
kubernetes client is synchronous; calls run in a worker thread so one slow answer does not hold the
server. Each call is bounded by :data:`TIMEOUT` and each list by :data:`LIST_LIMIT` objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from vigil import decisions
from vigil.adapters import kubeaccess
from vigil.api.v1alpha1 import action as action_api
from vigil.api.v1alpha1.common import GROUP, VERSION

#: Seconds one API call may take.
TIMEOUT = 10.0
#: Most objects of one kind read per page (``limit``); the page says when there were more.
LIST_LIMIT = 500
#: The field manager of a decision, so ``managedFields`` and ``status.decision.fieldManager`` say where it came from.
FIELD_MANAGER = "vigil-dashboard"
#: What ``status.decision.via`` records for a decision taken here.
VIA = "dashboard"

PLURALS = {"detectors": "anomalydetectors", "policies": "remediationpolicies", "actions": action_api.PLURAL}


class ClusterError(Exception):
    """A call that failed: ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def forbidden(self) -> bool:
        return self.status == 403


@dataclasses.dataclass(frozen=True)
class Listing:
    items: list[dict[str, Any]]
    truncated: bool  # more than LIST_LIMIT existed
    error: ClusterError | None = None


def _untyped(value: object) -> Any:
    return value


class Cluster:
    """The user's view of the cluster, in one namespace or all (``namespace=None``)."""

    def __init__(self, access: kubeaccess.Access, namespace: str | None) -> None:
        import kubernetes

        self.access = access
        self.namespace = namespace
        self._client: Any = kubernetes.client.ApiClient(access.configuration)
        self._custom: Any = kubernetes.client.CustomObjectsApi(self._client)
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._authn: Any = kubernetes.client.AuthenticationV1Api(self._client)

    @property
    def scope(self) -> str:
        return f"namespace {self.namespace}" if self.namespace else "all namespaces"

    def close(self) -> None:
        self._client.close()

    def _error(self, exc: BaseException) -> ClusterError:
        import kubernetes

        if isinstance(exc, kubernetes.client.ApiException):
            return ClusterError(int(exc.status or 0), kubeaccess.describe(exc, self.access.server))
        return ClusterError(0, kubeaccess.describe(exc, self.access.server))

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=TIMEOUT, **kwargs)
        except Exception as exc:  # ApiException, urllib3 errors: one sentence for the page
            raise self._error(exc) from exc

    async def whoami(self) -> str:
        """The authenticated user name (SelfSubjectReview), or '' when the API server does not say."""
        import kubernetes

        body = kubernetes.client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1",
                                                      kind="SelfSubjectReview")
        try:
            answer = await self._call(self._authn.create_self_subject_review, body, _preload_content=False)
        except ClusterError:
            return ""
        user = json.loads(_untyped(answer).data or b"{}").get("status", {}).get("userInfo", {})
        return str(user.get("username") or "")[:253]

    async def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> Listing:
        """``kind``: detectors, policies or actions. Never raises: a failure is in ``Listing.error``."""
        plural = PLURALS[kind]
        namespace = namespace or self.namespace
        options: dict[str, Any] = {"limit": LIST_LIMIT}
        if label_selector:
            options["label_selector"] = label_selector
        try:
            if namespace:
                answer = await self._call(self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                          plural, **options)
            else:
                answer = await self._call(self._custom.list_cluster_custom_object, GROUP, VERSION, plural,
                                          **options)
        except ClusterError as exc:
            return Listing([], False, exc)
        return _listing(answer)

    async def events(self, namespace: str) -> Listing:
        try:
            answer = await self._call(self._core.list_namespaced_event, namespace, limit=LIST_LIMIT,
                                      _preload_content=False)
        except ClusterError as exc:
            return Listing([], False, exc)
        return _listing(json.loads(_untyped(answer).data or b"{}"))

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(self._custom.get_namespaced_custom_object, GROUP, VERSION,
                                                  namespace, PLURALS[kind], name)
        return answer

    async def decide(self, verb: str, namespace: str, name: str, who: str) -> str:
        """Approve or reject a RemediationAction as the user: the patch ``vigil approve`` writes, via
        ``dashboard``. Returns what was done; raises :class:`ClusterError` when Kubernetes refuses, or with
        status 409 when the action is not waiting for a decision."""
        current = await self.get("actions", namespace, name)
        why = decisions.refusal(current)
        if why is not None:
            raise ClusterError(409, f"{namespace}/{name}: {why}")
        await self._call(self._custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, action_api.PLURAL,
                         name, decisions.patch(verb, who, VIA), field_manager=FIELD_MANAGER)
        return f"{namespace}/{name} {verb}d" + (f" by {who}" if who else "")


def _listing(answer: Mapping[str, Any]) -> Listing:
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)][:LIST_LIMIT]
    more = bool((answer.get("metadata") or {}).get("continue"))
    return Listing(items, more)
