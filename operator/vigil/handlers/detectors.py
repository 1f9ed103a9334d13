"""AnomalyDetector watch events feed the engine's registry; the engine does the rest.

``on.event`` rather than create/update/delete handlers: it needs no finalizer
and writes no progress annotations, so kopf never touches the objects, and it
sees every object on start (resume) as well as every change.
"""

from __future__ import annotations

from typing import Any

import kopf

from vigil.api.v1alpha1.common import GROUP, VERSION
from vigil.api.v1alpha1.detector import PLURAL
from vigil.handlers.runtime import Runtime


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="detectors")
    async def detector_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is None:
            return  # startup handlers run before watching starts; this cannot happen in practice
        if type == "DELETED":
            runtime.engine.remove(body.metadata.namespace or "default", body.metadata.name or "")
        else:
            runtime.engine.upsert(plain(body))


def plain(body: kopf.Body) -> dict[str, Any]:
    """A plain-dict copy, so the engine never holds kopf's live views."""
    return {
        "metadata": dict(body.metadata),
        "spec": _copy(dict(body.spec)),
        "status": _copy(dict(body.status)),
    }


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
