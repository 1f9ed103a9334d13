"""kopf registration. Handlers are thin: a guard plus one call into the engine.

Everything is registered on an explicit :class:`kopf.OperatorRegistry` built by
:func:`build_registry`, never on kopf's global one, so tests can run several
operators in one process.
"""

from __future__ import annotations

import kopf

from vigil.handlers import detectors, lifecycle, remediation
from vigil.settings import OperatorConfig


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    lifecycle.register(registry, config)
    detectors.register(registry)
    remediation.register(registry)
    return registry
