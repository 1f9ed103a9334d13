"""A real Kubernetes API server for the tests: etcd and kube-apiserver as plain processes on loopback.

The binaries come from ``scripts/kube-bins.sh`` (built from Go modules, cached outside the clone by
version); this module only runs them. What a test gets:

- ``url``, ``ca_path``: the HTTPS endpoint and the CA that signed its serving certificate;
- ``admin_token`` (user ``vigil-admin`` in ``system:masters``) and ``user_token`` (``vigil-user``, in
  no group but ``system:authenticated``: RBAC grants it nothing until a test binds a role);
- ``kubeconfig``: an admin kubeconfig file, and ``write_kubeconfig(path, token)`` for any other token
  (a ServiceAccount's from ``kubectl create token``, the unprivileged user's);
- ``kubectl(...)``: the kubectl of the same release, against this server;
- ``audit_events()``: every request, at Metadata level (or as the ``audit_policy`` given says), from the
  audit log (JSON lines); ``pids()`` and ``etcd_status()`` (its database size) for the scale benchmark;
- ``compact()``: compact etcd at its current revision (etcd also compacts on its own, keeping 1000
  revisions, and kube-apiserver every 5 minutes). Watches are served from kube-apiserver's watch cache,
  as in any cluster, so compacting etcd does not by itself make a watch ``410 Gone``: a resourceVersion
  older than the watch cache's window does (e.g. one from before a CRD was established);
- ``watch(path)``: the events of one watch until the server closes it;
- ``kill_apiserver()`` / ``start_apiserver()``: crash kube-apiserver and start it again on the same port
  and etcd (the data survives; the new watch cache starts at etcd's current revision), and
  ``etcd_put(key, obj)``: write an object as another API server would while this one is down.

Authorization is ``Node,RBAC`` as in a real cluster, with ServiceAccount tokens (TokenRequest) signed
by a key generated here. There is no controller-manager and no kubelet: no namespace finalization,
no garbage collection, no pods running. Readiness is polled on ``/readyz``; processes are stopped by
their own PIDs.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import pathlib
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from vigil_sandbox.kubeapi_store import ApiError
from vigil_sandbox.ports import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
KUBE_BINS = ROOT / "scripts" / "kube-bins.sh"

ADMIN_USER = "vigil-admin"
TEST_USER = "vigil-user"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


def binaries(build_timeout: float = 3600) -> tuple[pathlib.Path, pathlib.Path]:
    """The directories holding kube-apiserver + kubectl, and etcd: built by scripts/kube-bins.sh if missing.

    The script is the one place the versions are pinned; when the binaries are cached it only prints
    where they are. Its progress (a cold build takes many minutes) goes to this process's stderr.
    """
    result = subprocess.run(["bash", str(KUBE_BINS)], stdout=subprocess.PIPE, text=True, timeout=build_timeout,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/kube-bins.sh failed (exit {result.returncode}); see its output above")
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    kube, etcd = pathlib.Path(found["KUBE_BIN_DIR"]), pathlib.Path(found["ETCD_BIN_DIR"])
    for path in (kube / "kube-apiserver", kube / "kubectl", etcd / "etcd"):
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"scripts/kube-bins.sh reported {path}, which is not an executable")
    return kube, etcd


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def write_certs(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A CA, a serving certificate for 127.0.0.1/localhost/kubernetes.default.svc, and a SA signing key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vigil-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = _key()
    names = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")]
    ips = [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.0.0.1")]
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([*names, *ips]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = {name: directory / name for name in ("ca.crt", "server.crt", "server.key", "sa.key", "sa.pub")}
    paths["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["server.crt"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["server.key"].write_bytes(_pem_key(server_key))
    sa_key = _key()
    paths["sa.key"].write_bytes(_pem_key(sa_key))
    paths["sa.pub"].write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths


class RealKube:
    """etcd + kube-apiserver in ``workdir``; ``start()`` returns once ``/readyz`` answers ok."""

    def __init__(self, workdir: pathlib.Path, kube_bin: pathlib.Path, etcd_bin: pathlib.Path,
                 audit_log: pathlib.Path | None = None, audit_policy: Mapping[str, Any] | None = None,
                 etcd_auto_compaction: bool = True) -> None:
        """``audit_log``: where kube-apiserver writes its audit log (default ``workdir/audit.log``; `make test`
        collects every worker's in one directory). ``audit_policy``: the audit policy (default
        :data:`AUDIT_POLICY`, Metadata for everything); the scale benchmark logs Event creations at
        ``Request`` level to read their ``involvedObject``. ``etcd_auto_compaction=False``: etcd keeps every
        revision until kube-apiserver compacts it (every 5 minutes, as in a cluster), so its size over time
        is a cluster's; the tests keep 1000 revisions."""
        self.workdir = workdir
        self.kube_bin = kube_bin
        self.etcd_bin = etcd_bin
        self.admin_token = base64.b32encode(os.urandom(20)).decode().lower()
        self.user_token = base64.b32encode(os.urandom(20)).decode().lower()
        self.audit_log = audit_log or workdir / "audit.log"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.ca_path = workdir / "ca.crt"
        self.url = ""
        self.etcd_url = ""
        self.audit_policy: Mapping[str, Any] = audit_policy or AUDIT_POLICY
        self.etcd_auto_compaction = etcd_auto_compaction
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._apiserver_argv: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> RealKube:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        certs = write_certs(self.workdir)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
                          f"{self.user_token},{TEST_USER},uid-user\n")
        tokens.chmod(0o600)
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(dict(self.audit_policy)))

        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            str(self.etcd_bin / "etcd"), "--name=vigil-test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=vigil-test=http://127.0.0.1:{peer}",
            # Keep only the last 1000 revisions (checked every few minutes); compact() forces it now.
            *(["--auto-compaction-mode=revision", "--auto-compaction-retention=1000"]
              if self.etcd_auto_compaction else []),
            "--quota-backend-bytes=1073741824", "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._poll("etcd", f"{self.etcd_url}/health", lambda body: json.loads(body).get("health") == "true",
                   timeout, tls=False)

        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        self._apiserver_argv = [
            str(self.kube_bin / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={port}", f"--tls-cert-file={certs['server.crt']}",
            f"--tls-private-key-file={certs['server.key']}", f"--client-ca-file={certs['ca.crt']}",
            f"--token-auth-file={tokens}", "--anonymous-auth=false", "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={self.url}", f"--service-account-key-file={certs['sa.pub']}",
            f"--service-account-signing-key-file={certs['sa.key']}", "--service-cluster-ip-range=10.0.0.0/24",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            "--audit-log-mode=blocking", "--profiling=false", "--v=1",
            # loopback cannot be advertised as the `kubernetes` Service endpoint; no pod needs it here
            "--endpoint-reconciler-type=none",
        ]
        self.start_apiserver(timeout)
        self.write_kubeconfig(self.kubeconfig, self.admin_token, user=ADMIN_USER)

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (a crash: no graceful shutdown of its watches); etcd keeps running."""
        process = self._processes.pop("kube-apiserver", None)
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start kube-apiserver (again) on the same port, certificates, tokens and etcd: clients keep
        their kubeconfigs and ServiceAccount tokens, and every object in etcd is still there. Its watch
        cache starts empty, from etcd's current revision. Returns once ``/readyz`` answers ok."""
        self._spawn("kube-apiserver", self._apiserver_argv)
        self._poll("kube-apiserver", f"{self.url}/readyz", lambda body: body.strip() == "ok", timeout, tls=True)

    def stop(self) -> None:
        for name in ("kube-apiserver", "etcd"):
            process = self._processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def pids(self) -> dict[str, int]:
        """The running processes' PIDs by name (``etcd``, ``kube-apiserver``): what the server side costs."""
        return {name: process.pid for name, process in self._processes.items() if process.poll() is None}

    def __enter__(self) -> RealKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")  # appended: a restart keeps the earlier run's log
        self._processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()

    def log(self, name: str, tail: int = 6000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def _poll(self, name: str, url: str, ok: Any, timeout: float, *, tls: bool) -> None:
        context = ssl.create_default_context(cafile=str(self.workdir / "ca.crt")) if tls else None
        headers = {"Authorization": f"Bearer {self.admin_token}"} if tls else {}
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            process = self._processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5,
                                            context=context) as answer:
                    last = answer.read().decode()
                    if ok(last):
                        return
            except urllib.error.HTTPError as error:  # 500 with the failing checks while starting
                with error:
                    last = f"{error.code}: {error.read().decode(errors='replace')[-500:]}"
            except (OSError, ValueError) as error:
                last = repr(error)
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready at {url} after {timeout}s: last {last}\n{self.log(name)}")

    # --- clients ---------------------------------------------------------------------------------
    def write_kubeconfig(self, path: pathlib.Path, token: str, user: str = "test",
                         namespace: str = "default") -> pathlib.Path:
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "real", "cluster": {"server": self.url,
                                                       "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": user, "namespace": namespace}}],
            "current-context": "real",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, kubeconfig: pathlib.Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the release's kubectl against this server (admin unless another kubeconfig is given)."""
        argv = [str(self.kube_bin / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False,
                                env={**os.environ, "KUBECTL_INTERACTIVE_DELETE": "false"})
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *, token: str | None = None,
                content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        """One HTTP request as ``token`` (admin by default): (status, decoded JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": content_type,
            "Accept": "application/json"})
        context = ssl.create_default_context(cafile=str(self.ca_path))
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"{}")

    def watch(self, path: str, timeout: int = 5, token: str | None = None) -> list[dict[str, Any]]:
        """The events of a watch on ``path`` (with its query), read until the server ends it."""
        separator = "&" if "?" in path else "?"
        request = urllib.request.Request(f"{self.url}{path}{separator}watch=1&timeoutSeconds={timeout}", headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Accept": "application/json"})
        context = ssl.create_default_context(cafile=str(self.ca_path))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=timeout + 30, context=context) as answer:
                    return [json.loads(line) for line in answer.read().splitlines() if line.strip()]
            except urllib.error.HTTPError as error:
                # 429 while the resource's watch cache is (re)initializing, e.g. just after its CRD was
                # established: clients retry after Retry-After, so do we
                if error.code != 429 or time.monotonic() > deadline:
                    raise
                error.close()
                time.sleep(min(float(error.headers.get("Retry-After") or 1), 1.0))

    def audit_mark(self) -> int:
        """Where the audit log's complete lines end now: ``audit_events(since=mark)`` reads only later ones.

        Tests mark instead of counting events: parsing the whole log at every test's start grew with the
        suite (tens of MB by its end)."""
        if not self.audit_log.exists():
            return 0
        with self.audit_log.open("rb") as log:
            end = log.seek(0, 2)
            start = max(0, end - (1 << 20))
            log.seek(start)
            cut = log.read().rfind(b"\n")
        return start + cut + 1 if cut >= 0 else start

    def audit_events(self, since: int = 0) -> list[dict[str, Any]]:
        """Every audit event (JSON lines) after byte offset ``since`` (an ``audit_mark()``), in order; a line
        the server is still writing is left for the next read."""
        if not self.audit_log.exists():
            return []
        with self.audit_log.open("rb") as log:
            log.seek(since)
            lines = log.read().split(b"\n")
        return [json.loads(line) for line in lines[:-1] if line.strip()]

    # --- etcd ------------------------------------------------------------------------------------
    def _etcd(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.etcd_url}/v3/{method}", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def etcd_range(self, key: bytes = b"/registry/", revision: int = 0) -> dict[str, Any]:
        """A range read of etcd at ``revision`` (0: now); an HTTPError once that revision is compacted."""
        return self._etcd("kv/range", {"key": base64.b64encode(key).decode(), "revision": str(revision)})

    def etcd_status(self) -> dict[str, Any]:
        """etcd's maintenance status: ``dbSize`` (the backend file, bytes) and ``dbSizeInUse`` among others."""
        return self._etcd("maintenance/status", {})

    def etcd_revision(self) -> int:
        return int(self.etcd_range()["header"]["revision"])

    def etcd_put(self, key: str, value: Mapping[str, Any]) -> int:
        """Write one object straight into etcd as JSON (how kube-apiserver stores custom resources), as
        another API server of the control plane would while this one is down. Returns the new revision."""
        answer = self._etcd("kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                       "value": base64.b64encode(json.dumps(value).encode()).decode()})
        return int(answer["header"]["revision"])

    def compact(self) -> int:
        """Compact etcd at its current revision (physically): older revisions are gone. Returns it."""
        revision = self.etcd_revision()
        self._etcd("kv/compaction", {"revision": str(revision), "physical": True})
        return revision


def ensure_crds(kube: RealKube) -> None:
    """:func:`install_crds` once per server (a session's tests share it)."""
    if not getattr(kube, "crds_installed", False):
        install_crds(kube)
        kube.crds_installed = True  # type: ignore[attr-defined]


def install_crds(kube: RealKube) -> None:
    """Apply the project's CRDs (crds/) and wait until each is Established."""
    paths = sorted((ROOT / "crds").glob("*.yaml"))
    for path in paths:
        kube.kubectl("apply", "-f", str(path))
    crds = [yaml.safe_load(p.read_text()) for p in paths]
    wait_crds_served(kube, crds)


def wait_crds_served(kube: RealKube, crds: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Wait until each of the project's CRDs (or ``crds``) is Established and its resource served."""
    if crds is None:
        crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{crd['metadata']['name']}" for crd in crds])
    # Established is not served yet: until a new resource's watch cache is initialized, its requests get
    # 429 "storage is (re)initializing". Tests start when each answers a list from that cache
    # (resourceVersion=0).
    for crd in crds:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        version = crd["spec"]["versions"][0]["name"]
        deadline = time.monotonic() + 60
        while (status := kube.request("GET", f"/apis/{group}/{version}/{plural}?resourceVersion=0")[0]) != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{plural}.{group} still answers {status} 60s after it was Established")
            time.sleep(0.1)


def ensure_namespace(kube: RealKube, name: str) -> None:
    if kube.kubectl("get", "namespace", name, check=False).returncode != 0:
        kube.kubectl("create", "namespace", name)


def remediation_action(name: str, namespace: str, policy: str = "web-scale-out") -> dict[str, Any]:
    """A RemediationAction as the operator writes one (labels, spec), for tests that create one by hand."""
    return {
        "apiVersion": "vigil.dev/v1alpha1", "kind": "RemediationAction",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"vigil.dev/policy": policy, "vigil.dev/incident": "i-1"}},
        "spec": {
            "policyRef": {"name": policy, "uid": "00000000-0000-0000-0000-000000000001"},
            "incident": "i-1", "stepIndex": 0,
            "step": {"name": "scale-out", "scaleAutoScalingGroup": {"name": "web", "by": 2, "min": 3, "max": 12}},
            "reason": {"source": "detector", "detector": "web-cpu", "score": 0.93, "time": "2026-01-01T00:00:00Z"},
            "approvalRequired": True, "region": "eu-west-1",
        },
    }


class RealKubeAPI:
    """The emulator's synchronous accessors (``KubeAPIServer.get/create/patch/...``) on the real server,
    so tests written against the ``kubeapi`` fixture run on either (``VIGIL_TEST_KUBE=real``).

    One view per test on the session's server: ``close()`` deletes what the tests create (the
    project's resources everywhere, with their finalizers removed since the operator is gone by then,
    and Events, ConfigMaps, Secrets and Leases in the namespaces used), because the real server has no
    per-test reset. ``count_requests`` reads the audit log from the view's start. Emulator-only
    controls (``set_unavailable``, kmock fault injection on ``handler``) are not available.
    """

    CLEANED = (("vigil.dev/v1alpha1", "remediationactions"), ("vigil.dev/v1alpha1", "remediationpolicies"),
               ("vigil.dev/v1alpha1", "anomalydetectors"))
    NAMESPACED_LEFTOVERS = (("v1", "events"), ("v1", "configmaps"),
                            ("v1", "secrets"), ("coordination.k8s.io/v1", "leases"))

    def __init__(self, kube: RealKube) -> None:
        self.kube = kube
        self.url = kube.url
        self.token = kube.admin_token
        self.port = int(kube.url.rsplit(":", 1)[1])
        self._plurals: dict[tuple[str, str], tuple[str, bool]] = {}
        self._audit_start = kube.audit_mark()
        self._namespaces: set[str] = {"default"}

    # --- paths and errors ------------------------------------------------------------------------
    def _discover(self, api_version: str) -> None:
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        status, body = self.kube.request("GET", path)
        if status != 200:
            raise self._error(status, body)
        for resource in body.get("resources", []):
            if "/" not in resource["name"]:
                self._plurals[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])

    def _plural(self, api_version: str, kind: str) -> tuple[str, bool]:
        if (api_version, kind) not in self._plurals:
            self._discover(api_version)
        return self._plurals[(api_version, kind)]

    @staticmethod
    def _path(api_version: str, plural: str, namespace: str | None, name: str | None = None,
              subresource: str | None = None) -> str:
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    @staticmethod
    def _error(status: int, body: Mapping[str, Any]) -> Exception:
        return ApiError(status, str(body.get("reason", "")), str(body.get("message", "")), body.get("details"))

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        status, answer = self.kube.request(method, path, body, content_type=content_type)
        if status >= 400:
            raise self._error(status, answer)
        return answer

    # --- the emulator's accessors ----------------------------------------------------------------
    def write_kubeconfig(self, path: str | pathlib.Path, *, namespace: str = "default") -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return self.kube.write_kubeconfig(path, self.kube.admin_token, user=ADMIN_USER, namespace=namespace)

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        status, body = self.kube.request("GET", self._path(api_version, plural, namespace, name))
        if status == 404:
            return None
        if status >= 400:
            raise self._error(status, body)
        return body

    def list(self, api_version: str, plural: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        query = f"?labelSelector={urllib.parse.quote(label_selector)}" if label_selector else ""
        items: list[dict[str, Any]] = self._call("GET", self._path(api_version, plural, namespace) + query)["items"]
        return items

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        plural, namespaced = self._plural(api_version, kind)
        namespace = (obj.get("metadata") or {}).get("namespace") or "default" if namespaced else None
        if namespace:
            self._ensure_namespace(namespace)
        body = {**obj, "metadata": {**(obj.get("metadata") or {}), **({"namespace": namespace} if namespace else {})}}
        created: dict[str, Any] = self._call("POST", self._path(api_version, plural, namespace), body)
        return created

    def patch(self, api_version: str, plural: str, namespace: str | None, name: str, patch: Any, *,
              subresource: str | None = None, content_type: str | None = None) -> dict[str, Any]:
        content_type = content_type or ("application/json-patch+json" if isinstance(patch, list)
                                        else "application/merge-patch+json")
        patched: dict[str, Any] = self._call("PATCH", self._path(api_version, plural, namespace, name, subresource),
                                             patch, content_type)
        return patched

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str, *,
               propagation_policy: str | None = None) -> dict[str, Any]:
        options = {"propagationPolicy": propagation_policy} if propagation_policy else None
        deleted: dict[str, Any] = self._call("DELETE", self._path(api_version, plural, namespace, name), options)
        return deleted

    def events_for(self, kind: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        # core/v1 and events.k8s.io/v1 Events are one resource in two versions here (the emulator keeps
        # two), so core/v1 lists them all, whichever API wrote them.
        found = [event for event in self.list("v1", "events", namespace)
                 if (event.get("involvedObject") or {}).get("kind") == kind
                 and (event.get("involvedObject") or {}).get("name") == name]
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))

    SERVER_USER = "system:apiserver"
    _VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

    def count_requests(self, *, method: str | None = None, verb: str | None = None, plural: str | None = None,
                       name: str | None = None, namespace: str | None = None, subresource: str | None = None,
                       status: int | None = None) -> int:
        """From the audit log (so only what it records: verb, resource, name, namespace, code).

        Only clients' requests count: kube-apiserver's own loopback requests (``system:apiserver``, e.g.
        its identity Lease renewed in kube-system about every 10 s) would make a count of "no writes
        during this call" race with the server's clock."""
        wanted_verb = verb or (self._VERBS.get(method.upper()) if method else None)
        count = 0
        for event in self.kube.audit_events(since=self._audit_start):
            ref = event.get("objectRef") or {}
            if (event.get("user") or {}).get("username") == self.SERVER_USER:
                continue
            if ((wanted_verb is None or event["verb"] == wanted_verb)
                    and (method is None or method.upper() != "GET" or event["verb"] in ("get", "list", "watch"))
                    and (plural is None or ref.get("resource") == plural) and (name is None or ref.get("name") == name)
                    and (namespace is None or ref.get("namespace") == namespace)
                    and (subresource is None or ref.get("subresource") == subresource)
                    and (status is None or (event.get("responseStatus") or {}).get("code") == status)):
                count += 1
        return count

    def set_unavailable(self, unavailable: bool = True) -> None:
        raise NotImplementedError("an outage of the real kube-apiserver is not simulated (emulator only)")

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError("the real kube-apiserver is shared by the session: not stopped by a test")

    # --- isolation -------------------------------------------------------------------------------
    def _ensure_namespace(self, namespace: str) -> None:
        if namespace in self._namespaces:
            return
        status, body = self.kube.request("POST", "/api/v1/namespaces",
                                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        if status not in (201, 409):
            raise self._error(status, body)
        self._namespaces.add(namespace)

    def close(self) -> None:
        """Delete what a test left, finalizers first (the operator that set them is stopped)."""
        for api_version, plural in self.CLEANED:
            for item in self.list(api_version, plural):
                meta = item["metadata"]
                self._namespaces.add(meta["namespace"])
                if meta.get("finalizers"):
                    self.kube.request("PATCH", self._path(api_version, plural, meta["namespace"], meta["name"]),
                                      {"metadata": {"finalizers": None}}, content_type="application/merge-patch+json")
                self.kube.request("DELETE", self._path(api_version, plural, meta["namespace"], meta["name"]))
        for namespace in sorted(self._namespaces):
            for api_version, plural in self.NAMESPACED_LEFTOVERS:
                self.kube.request("DELETE", self._path(api_version, plural, namespace))  # deletecollection
