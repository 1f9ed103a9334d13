"""Counting the operator's Kubernetes API requests, the same way whichever server served them.

``bench/scale.py`` measures against the API emulator (which reports each request to a listener)
or the real kube-apiserver (whose audit log records each request). Both are turned into
:class:`Request` at their edge and summed by one :class:`Tally`, so the two reports count the
same things: status writes per plural, Events, other writes by ``plural:verb``, [status writes,
Events] per AnomalyDetector, when the first and the last detector got their first status, how
many requests, and their summed service time (watches left out: they last as long as the watch),
also per kind of write.
"""

from __future__ import annotations

import dataclasses
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclasses.dataclass(frozen=True)
class Request:
    """One served request of the operator, as either server reports it."""

    verb: str
    plural: str | None
    subresource: str | None
    name: str | None
    code: int | None
    #: time.time() when the server received it.
    received: float
    #: Seconds until the response was ready (0 for a watch: not counted).
    duration: float
    #: (kind, name) of an Event's involvedObject, when the request creates one.
    involved: tuple[str, str] | None = None


def write_kind(request: Request) -> str | None:
    """``status:<plural>``, ``events`` or ``other:<plural>:<verb>`` for a successful write; None otherwise."""
    if request.verb not in WRITE_VERBS or (request.code or 500) >= 400:
        return None
    if request.subresource == "status":
        return f"status:{request.plural}"
    if request.plural == "events":
        return "events"
    return f"other:{request.plural}:{request.verb}"


def detector_written(request: Request) -> tuple[str, int] | None:
    """(detector name, 0 for a status write or 1 for an Event) when ``request`` writes about one."""
    if request.subresource == "status" and request.plural == "anomalydetectors" and request.name:
        return request.name, 0
    if request.plural == "events" and request.involved is not None and request.involved[0] == "AnomalyDetector":
        return request.involved[1], 1
    return None


class Tally:
    """Running totals over the requests seen; :meth:`as_dict` is what ``bench.scale.measure`` reads."""

    def __init__(self, detectors: int) -> None:
        self.detectors = detectors
        self.writes: dict[str, int] = {}
        self.write_service_s: dict[str, float] = {}  # summed service time per write kind
        self.requests = 0
        self.service_s = 0.0
        self.first_status: float | None = None
        self.all_status: float | None = None
        self.per_detector: dict[str, list[int]] = {}
        self._first: dict[str, float] = {}  # each detector's first status write

    def add(self, request: Request) -> None:
        self.requests += 1
        if request.verb != "watch":
            self.service_s += request.duration
        kind = write_kind(request)
        if kind is None:
            return
        self.writes[kind] = self.writes.get(kind, 0) + 1
        self.write_service_s[kind] = self.write_service_s.get(kind, 0.0) + request.duration
        about = detector_written(request)
        if about is None:
            return
        counts = self.per_detector.setdefault(about[0], [0, 0])  # quiet detectors are told apart by these
        counts[about[1]] += 1
        if about[1] == 0:
            # min/max rather than arrival order: an audit log is written in completion order
            self._first[about[0]] = min(request.received, self._first.get(about[0], request.received))
            if self.first_status is None or request.received < self.first_status:
                self.first_status = request.received
            if self.all_status is None and len(self._first) >= self.detectors:
                self.all_status = max(self._first.values())

    def as_dict(self) -> dict[str, Any]:
        return {"writes": dict(self.writes), "write_service_s": dict(self.write_service_s),
                "requests": self.requests, "service_s": self.service_s,
                "first_status": self.first_status, "all_status": self.all_status,
                "per_detector": {name: list(counts) for name, counts in self.per_detector.items()}}
