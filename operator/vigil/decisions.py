"""``vigil approve`` / ``vigil reject``: a human's decision on a RemediationAction.

The decision is the same annotation ``kubectl annotate`` would write, plus who
decided (``vigil.dev/decided-by``), so both paths are equal before the
operator and RBAC on ``patch`` of remediationactions governs who may decide.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping
from typing import Any

from vigil.api.v1alpha1 import action
from vigil.api.v1alpha1.common import GROUP, VERSION


def _whoami(kubernetes_config: object, kubeconfig: str | None) -> str:
    try:
        _, active = kubernetes_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[attr-defined]
        user = str(active["context"].get("user") or "")
        if user:
            return user
    except Exception:
        pass
    return getpass.getuser()


#: The verbs a human decision can take, and the annotation each writes.
VERBS = {"approve": action.APPROVE_ANNOTATION, "reject": action.REJECT_ANNOTATION}


def refusal(current: Mapping[str, Any]) -> str | None:
    """Why ``current`` (a RemediationAction as read) cannot be decided now, or None when it can."""
    phase = (current.get("status") or {}).get("phase")
    if phase != action.ActionPhase.PENDING_APPROVAL.value:
        return f"it is {phase or 'not initialised yet'}, not PendingApproval; nothing to decide"
    return None


def patch(verb: str, who: str, via: str) -> dict[str, Any]:
    """The merge patch of a decision: the annotation ``kubectl annotate`` would write, who, and through what.

    Every tool (``vigil approve``, ``vigil dashboard``, chat) writes this same patch, so the operator and
    the admission policy treat them alike. ``who`` empty: no ``decided-by`` (the operator records the field
    manager), which is what a client that does not know its user's name must do under the admission policy.
    """
    annotations = {VERBS[verb]: "true", action.VIA_ANNOTATION: via}
    if who:
        annotations[action.ACTOR_ANNOTATION] = who
    return {"metadata": {"annotations": annotations}}


def main(args: argparse.Namespace) -> int:
    """Exit 0 when decided; 1 when the action is missing or not waiting, or the API server fails; 2 for a
    --kubeconfig that does not exist. Every failure is one line on stderr, never a traceback."""
    import kubernetes

    from vigil.adapters import kubeaccess

    prog = f"vigil {args.command}"
    try:
        access = kubeaccess.load(args.kubeconfig, in_cluster_first=False)
    except kubeaccess.AccessError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    namespace = args.namespace or access.namespace
    client = kubernetes.client.ApiClient(access.configuration)
    api: Any = kubernetes.client.CustomObjectsApi(client)
    timeout = 10.0
    try:
        try:
            current: dict[str, Any] = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, action.PLURAL, args.name, _request_timeout=timeout)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                print(f"{prog}: RemediationAction {namespace}/{args.name} not found", file=sys.stderr)
                return 1
            raise
        why = refusal(current)
        if why is not None:
            print(f"{prog}: {namespace}/{args.name}: {why}", file=sys.stderr)
            return 1
        who = args.by or _whoami(kubernetes.config, args.kubeconfig)
        # Our own field manager (not the client's default "OpenAPI-Generator"): it is what status.decision records.
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, action.PLURAL, args.name,
                                           patch(args.command, who, "cli"),
                                           field_manager="vigil-approve", _request_timeout=timeout)
    except Exception as exc:  # ApiException, urllib3 connection errors: one line, not a traceback
        print(f"{prog}: {kubeaccess.describe(exc, access.server)}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"remediationaction.{GROUP}/{args.name} {args.command}d by {who}")
    return 0
