"""RemediationPolicy and RemediationAction watch events feed the remediation engine.

Like detectors, these use ``on.event``: no finalizers, no progress annotations.
Actions are owned by their policy, so deleting a policy garbage-collects them.
"""

from __future__ import annotations

from typing import Any

import kopf

from vigil.api.v1alpha1 import action, policy
from vigil.api.v1alpha1.common import GROUP, VERSION
from vigil.handlers.detectors import plain
from vigil.handlers.runtime import Runtime


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.event(GROUP, VERSION, policy.PLURAL, registry=registry, id="policies")
    async def policy_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is None:
            return
        if type == "DELETED":
            runtime.remediation.remove_policy(body.metadata.namespace or "default", body.metadata.name or "")
        else:
            runtime.remediation.upsert_policy(plain(body))

    @kopf.on.event(GROUP, VERSION, action.PLURAL, registry=registry, id="actions")
    async def action_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is None:
            return
        if type == "DELETED":
            runtime.remediation.remove_action(body.metadata.namespace or "default", body.metadata.name or "")
        else:
            runtime.remediation.upsert_action(plain(body))
