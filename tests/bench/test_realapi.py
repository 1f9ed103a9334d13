"""The scale benchmark's audit-log tally against a real kube-apiserver (bench/realapi.py).

The operator's Events are created with ``generateName``, so their audit ``objectRef`` holds no
name: the benchmark's audit policy logs Event creations at Request level and reads the Event's
``involvedObject``. These tests send requests as the operator's client does (user agent
``vigil/...``) and as someone else, and check what the tally counts, and that the reader only
reads what was appended.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from bench.apitally import Tally
from bench.realapi import AUDIT_POLICY, AuditReader, request_from_audit
from tests.harness import wait_for
from tests.realkube import RealKube, binaries


@pytest.fixture
def audited_kube(tmp_path: pathlib.Path) -> Iterator[RealKube]:
    kube_bin, etcd_bin = binaries()
    with RealKube(tmp_path, kube_bin, etcd_bin, audit_policy=AUDIT_POLICY) as server:
        yield server


def _post(kube: RealKube, path: str, body: Mapping[str, Any], agent: str) -> dict[str, Any]:
    url = urllib.parse.urlsplit(kube.url)
    connection = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port,
                                             context=ssl.create_default_context(cafile=str(kube.ca_path)))
    try:
        connection.request("POST", path, json.dumps(body), {
            "Authorization": f"Bearer {kube.admin_token}", "Content-Type": "application/json", "User-Agent": agent})
        answer = connection.getresponse()
        created: dict[str, Any] = json.loads(answer.read())
        assert answer.status == 201, created
        return created
    finally:
        connection.close()


def _event(about: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{about}.", "namespace": "default"},
            "involvedObject": {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector", "name": about,
                               "namespace": "default"},
            "type": "Normal", "reason": "VerdictChanged", "message": "m", "count": 1}


@pytest.mark.slow
def test_events_are_counted_per_detector_from_the_audit_log(audited_kube: RealKube) -> None:
    with AuditReader(audited_kube.audit_log, from_end=True) as reader:  # earlier lines are not the operator's
        _count_events(audited_kube, reader)


def _count_events(audited_kube: RealKube, reader: AuditReader) -> None:
    path = "/api/v1/namespaces/default/events"
    created = _post(audited_kube, path, _event("d00001"), "vigil/0.1.0")
    _post(audited_kube, path, _event("d00001"), "vigil/0.1.0")
    _post(audited_kube, path, _event("d00002"), "kopf/1.37")
    _post(audited_kube, path, _event("d00002"), "kubectl/v1.37")  # not the operator: not counted
    assert created["metadata"]["name"].startswith("d00001.")
    seen: list[dict[str, Any]] = []

    def all_four() -> bool:  # the audit line may land just after the response
        seen.extend(reader.read())
        return sum(1 for e in seen if e.get("stage") == "ResponseComplete" and e.get("verb") == "create"
                   and (e.get("objectRef") or {}).get("resource") == "events") >= 4

    wait_for(all_four, timeout=20, what="four Event creations in the audit log")
    tally = Tally(detectors=2)
    for event in seen:
        request = request_from_audit(event)
        if request is not None:
            tally.add(request)
    assert tally.writes == {"events": 3}
    assert tally.per_detector == {"d00001": [0, 2], "d00002": [0, 1]}
    assert tally.requests == 3 and tally.service_s > 0
    assert tally.first_status is None  # Events are not status writes
    assert reader.offset == audited_kube.audit_log.stat().st_size
    assert not list(reader.read())  # nothing appended since: nothing parsed again


def test_the_reader_waits_for_a_line_to_end_and_follows_a_rotation(tmp_path: pathlib.Path) -> None:
    """A half-written line is read once it ends; a rotated log's tail is read, then the new file."""
    log = tmp_path / "audit.log"
    log.write_text('{"a": 1}\n{"b"')
    with AuditReader(log, from_end=False) as reader:
        _follow(log, reader)


def _follow(log: pathlib.Path, reader: AuditReader) -> None:
    assert list(reader.read()) == [{"a": 1}]
    with log.open("a") as out:
        out.write(': 2}\nnot json\n')
    assert list(reader.read()) == [{"b": 2}] and reader.skipped == 1
    with log.open("a") as out:
        out.write('{"c": 3}\n')
    log.rename(log.with_name("audit-old.log"))  # as kube-apiserver's rotation does
    log.write_text('{"d": 4}\n')
    assert list(reader.read()) == [{"c": 3}, {"d": 4}]
    assert not list(reader.read())
