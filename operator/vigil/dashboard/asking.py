"""The ask box's backend: h-ask's Asker, reading with the user's credentials. Placeholder until merged."""

from __future__ import annotations

from typing import Any

from vigil.dashboard import pages


def answerer(access: Any, namespace: str | None) -> Any:
    return None


__all__ = ["answerer", "pages"]
