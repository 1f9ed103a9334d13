"""The scale benchmark's Kubernetes API as a real kube-apiserver + etcd (``bench.scale --kube real``).

The emulator tells the harness about every request it serves; the real server does not, but it
writes an audit log (JSON lines, ``--audit-log-mode=blocking``), which is what a cluster admin
would read too. :class:`AuditReader` follows that file by byte offset (only the new bytes each
time, across a rotation too), keeps the operator's requests (user agent ``vigil/`` or ``kopf/``)
and feeds them to the same :class:`bench.apitally.Tally` as the emulator's listener.

An Event created with ``generateName`` has no name in the audit ``objectRef`` (checked against
kube-apiserver 1.37: the name is generated after the audit event is filled), so the server logs
Event creations at ``Request`` level (:data:`AUDIT_POLICY`) and the Event's ``involvedObject``
is read from the logged request body; everything else stays at ``Metadata``.

The server side's cost is two processes (kube-apiserver and etcd, :meth:`RealAPI.pids`); etcd's
database size (its maintenance status) is sampled with every tally, so the report can give its
growth per hour. Unlike the test fixture's, this etcd does not compact on its own: kube-apiserver
compacts it every 5 minutes (its default ``--etcd-compaction-interval``), as in a cluster.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import http.client
import json
import os
import pathlib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from bench.apitally import Request, Tally
from tests.realkube import RealKube, binaries, install_crds

OPERATOR_AGENTS = ("vigil/", "kopf/")  # vigil's KubeClient, and kopf's own client (watches, patches)

#: Metadata for every request, as the test fixture's policy; Event creations at Request level, so the
#: Event's involvedObject (the detector it is about) is in the log.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Request", "verbs": ["create"],
         "resources": [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]},
        {"level": "Metadata"},
    ],
}

#: Bound on one audit line (an Event's request body is capped at a few KiB by the operator; a
#: longer line is not the operator's and is skipped whole).
MAX_LINE_BYTES = 1 << 20
CHUNK_BYTES = 8 << 20  # read and parsed at a time: memory stays bounded however long the window
CREATE_WORKERS = 8


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def request_from_audit(event: Mapping[str, Any]) -> Request | None:
    """The operator's request in one audit event (its final stage), or None when it is someone else's."""
    if event.get("stage") != "ResponseComplete" or not str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
        return None
    ref = event.get("objectRef") or {}
    received = _epoch(event["requestReceivedTimestamp"])
    verb = str(event.get("verb", ""))
    involved = None
    body = event.get("requestObject")
    if ref.get("resource") == "events" and isinstance(body, dict):
        about = body.get("involvedObject") or body.get("regarding") or {}  # core/v1 or events.k8s.io/v1
        if about.get("kind") and about.get("name"):
            involved = (str(about["kind"]), str(about["name"]))
    return Request(
        verb=verb, plural=ref.get("resource"), subresource=ref.get("subresource"), name=ref.get("name"),
        code=(event.get("responseStatus") or {}).get("code"), received=received,
        duration=0.0 if verb == "watch" else max(0.0, _epoch(event["stageTimestamp"]) - received),
        involved=involved,
    )


class AuditReader:
    """Follows an audit log by byte offset: each :meth:`read` parses only what was appended since.

    The file is kept open, so when kube-apiserver rotates it (renames it, starts a new one) the
    rest of the old file is still read before the new one is opened from its start.
    """

    def __init__(self, path: pathlib.Path, *, from_end: bool = True) -> None:
        self.path = path
        self.offset = 0
        self.skipped = 0  # lines that were not JSON or over MAX_LINE_BYTES
        self._file: IO[bytes] | None = None
        self._partial = b""
        if path.exists():
            self._open()
            if from_end:
                assert self._file is not None
                self.offset = self._file.seek(0, os.SEEK_END)

    def _open(self) -> None:
        self._file = self.path.open("rb")
        self.offset = 0
        self._partial = b""

    def read(self) -> Iterator[dict[str, Any]]:
        """The events appended since the last read, parsed a chunk (:data:`CHUNK_BYTES`) at a time."""
        yield from self._drain()
        if self._file is not None and self._rotated():
            yield from self._drain()  # the old file's last lines, then the new file
            self._file.close()
            self._open()
            yield from self._drain()
        elif self._file is None and self.path.exists():
            self._open()
            yield from self._drain()

    def _rotated(self) -> bool:
        assert self._file is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False  # between the rename and the new file: read it next time

    def _drain(self) -> Iterator[dict[str, Any]]:
        if self._file is None:
            return
        self._file.seek(self.offset)
        while data := self._file.read(CHUNK_BYTES):
            self.offset += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()  # an unfinished last line waits for its end
            if len(self._partial) > MAX_LINE_BYTES:
                self._partial, self.skipped = b"", self.skipped + 1
            for line in lines:
                if not line.strip():
                    continue
                if len(line) > MAX_LINE_BYTES:
                    self.skipped += 1
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    self.skipped += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RealAPI:
    """kube-apiserver + etcd with the project's CRDs and ``manifests`` created: one run's API server."""

    name = "real"
    label = "kube-apiserver + etcd"

    def __init__(self, workdir: pathlib.Path, manifests: Sequence[Mapping[str, Any]], detectors: int) -> None:
        kube_bin, etcd_bin = binaries()
        # etcd compacted by kube-apiserver alone (every 5 minutes), as in a cluster: its size is a cluster's
        self.kube = RealKube(workdir, kube_bin, etcd_bin, audit_policy=AUDIT_POLICY, etcd_auto_compaction=False)
        self.kube.start()
        self._tally = Tally(detectors)
        self._reader: AuditReader | None = None
        try:
            install_crds(self.kube)
            started = time.perf_counter()
            create_all(self.kube, manifests)
            self.create_seconds = time.perf_counter() - started
            self.kubeconfig = self.kube.kubeconfig  # admin (system:masters): the bench measures load, not RBAC
            self._reader = AuditReader(self.kube.audit_log, from_end=True)  # the operator's requests only follow
        except BaseException:
            self.kube.stop()
            raise

    def pids(self) -> dict[str, int]:
        pids = self.kube.pids()
        if set(pids) != {"kube-apiserver", "etcd"}:
            raise RuntimeError(f"the real API server is not running (alive: {sorted(pids)}):\n"
                               f"{self.kube.log('kube-apiserver')[-2000:]}")
        return pids

    def tally(self) -> dict[str, Any]:
        assert self._reader is not None
        for event in self._reader.read():
            request = request_from_audit(event)
            if request is not None:
                self._tally.add(request)
        return self._tally.as_dict()

    def extra(self) -> dict[str, float]:
        """etcd's database: the backend file's size and the part of it in use, bytes."""
        status = self.kube.etcd_status()
        return {"etcd_db_bytes": float(status.get("dbSize", 0)),
                "etcd_db_in_use_bytes": float(status.get("dbSizeInUse", 0))}

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.kube.stop()


def create_all(kube: RealKube, manifests: Sequence[Mapping[str, Any]]) -> None:
    """POST every manifest (namespaced custom resources), a few keep-alive connections in parallel."""
    url = urllib.parse.urlsplit(kube.url)
    host = url.hostname or "127.0.0.1"
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    local = threading.local()
    opened: list[http.client.HTTPSConnection] = []
    headers = {"Authorization": f"Bearer {kube.admin_token}", "Content-Type": "application/json",
               "Accept": "application/json", "User-Agent": "vigil-bench/create"}

    def post(manifest: Mapping[str, Any]) -> None:
        group_version = str(manifest["apiVersion"])
        namespace = manifest["metadata"].get("namespace", "default")
        plural = str(manifest["kind"]).lower() + "s"  # AnomalyDetector -> anomalydetectors (the CRD's plural)
        path = f"/apis/{group_version}/namespaces/{namespace}/{plural}"
        body = json.dumps(manifest).encode()
        for attempt in range(3):
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPSConnection(host, url.port, context=context,
                                                                            timeout=60)
                opened.append(connection)
            try:
                connection.request("POST", path, body, headers)
                answer = connection.getresponse()
                text = answer.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                local.connection = None
                if attempt == 2:
                    raise
                continue
            if answer.status == 429 and attempt < 2:
                time.sleep(min(float(answer.getheader("Retry-After") or 1), 5.0))
                continue
            if answer.status != 201:
                raise RuntimeError(f"creating {manifest['metadata'].get('name')}: {answer.status} {text[:500]!r}")
            return

    try:
        with concurrent.futures.ThreadPoolExecutor(CREATE_WORKERS, thread_name_prefix="create") as pool:
            for future in [pool.submit(post, manifest) for manifest in manifests]:
                future.result()
    finally:
        for connection in opened:
            connection.close()
