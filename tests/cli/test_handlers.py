"""What the operator registers with kopf, and the kopf settings that rely on it."""

from __future__ import annotations

import inspect

import kopf

from vigil.handlers import build_registry
from vigil.handlers.lifecycle import NoDiffBase
from vigil.settings import OperatorConfig


def test_only_watch_event_handlers_so_kopf_needs_no_diff_base() -> None:
    """NoDiffBase (issue 16) is only right while no handler needs kopf's diff of an object's essence:
    a create/update/delete/resume/field handler, a daemon or a timer. Adding one needs a real diff base
    (kopf.AnnotationsDiffBaseStorage) and a finalizer policy: this test is the reminder."""
    registry = build_registry(OperatorConfig())
    assert not registry._changing.get_all_handlers(), "a change-detecting handler needs a real diff base"
    assert not registry._spawning.get_all_handlers(), "a daemon or timer needs a real diff base"
    watching = registry._watching.get_all_handlers()
    assert sorted(h.id for h in watching) == ["actions", "detectors", "policies"]
    # Async: run on the event loop, never in kopf's thread pool (the registries are not thread-safe).
    assert all(inspect.iscoroutinefunction(h.fn) for h in watching)


def test_no_diff_base_builds_nothing_from_a_body() -> None:
    body = kopf.Body({"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
                      "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"query": "up"},
                      "status": {"score": 0.5}})
    storage = NoDiffBase()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
