"""``vigil approve`` / ``vigil reject``: a human's decision on a RemediationAction.

The decision is the same annotation ``kubectl annotate`` would write, plus who
decided (``vigil.dev/decided-by``), so both paths are equal before the
operator and RBAC on ``patch`` of remediationactions governs who may decide.
"""

from __future__ import annotations

import argparse
import getpass
import sys
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


def main(args: argparse.Namespace) -> int:
    import kubernetes

    try:
        kubernetes.config.load_kube_config(config_file=args.kubeconfig)
    except Exception:
        try:
            kubernetes.config.load_incluster_config()
        except Exception as exc:
            print(f"vigil {args.command}: cannot load a kubeconfig: {exc}", file=sys.stderr)
            return 2
    namespace = args.namespace
    if namespace is None:
        try:
            _, active = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
            namespace = active["context"].get("namespace") or "default"
        except Exception:
            namespace = "default"
    api: Any = kubernetes.client.CustomObjectsApi()
    try:
        current: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, action.PLURAL, args.name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            print(f"vigil {args.command}: RemediationAction {namespace}/{args.name} not found", file=sys.stderr)
            return 1
        raise
    phase = (current.get("status") or {}).get("phase")
    if phase != action.ActionPhase.PENDING_APPROVAL.value:
        print(f"vigil {args.command}: {namespace}/{args.name} is {phase or 'not initialised yet'}, "
              "not PendingApproval; nothing to decide", file=sys.stderr)
        return 1
    annotation = action.APPROVE_ANNOTATION if args.command == "approve" else action.REJECT_ANNOTATION
    who = args.by or _whoami(kubernetes.config, args.kubeconfig)
    patch = {"metadata": {"annotations": {
        annotation: "true", action.ACTOR_ANNOTATION: who, "vigil.dev/decided-via": "cli"}}}
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, action.PLURAL, args.name, patch)
    print(f"remediationaction.{GROUP}/{args.name} {args.command}d by {who}")
    return 0
