"""Kubernetes credentials and one cheap call to the API server, for commands that must fail in one line.

``vigil run`` hands the cluster to kopf, which retries forever and logs each failure;
a missing kubeconfig or an API server that is not there would look like a running
operator with a noisy log. ``vigil approve``/``reject`` make one or two calls and
would end in urllib3 retry warnings and a traceback. Both load the credentials here
first (the same loaders kopf's ``login_via_client`` uses, so what is checked is what
will be used) and turn every failure into one sentence that says what is missing.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

from vigil.api.v1alpha1.common import GROUP, VERSION

#: The resources the operator watches: all three CRDs must be installed.
PLURALS = ("anomalydetectors", "remediationpolicies", "remediationactions")


def _untyped(module: object) -> Any:
    """The kubernetes package is partly unannotated; mypy strict would flag each call."""
    return module


class AccessError(Exception):
    """Why the API server cannot be used; ``usage`` when the command line itself is wrong (exit 2)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclasses.dataclass
class Access:
    configuration: Any  # kubernetes.client.Configuration
    source: str  # "in-cluster service account" or "kubeconfig PATH"
    namespace: str  # the kubeconfig context's namespace, else "default"

    @property
    def server(self) -> str:
        return str(self.configuration.host)


def load(kubeconfig: str | os.PathLike[str] | None, in_cluster_first: bool = True) -> Access:
    """Credentials: ``kubeconfig`` if given (and nothing else), else in-cluster, else KUBECONFIG or ~/.kube/config.

    ``in_cluster_first=False`` tries the kubeconfig before the service account, as
    kubectl does (``vigil approve`` is run by a human, usually outside the cluster).
    """
    import kubernetes

    configuration = kubernetes.client.Configuration()
    configuration.retries = 0  # one attempt per call: the caller decides whether and how to retry
    if kubeconfig is not None:
        path = pathlib.Path(kubeconfig).expanduser()
        if not path.is_file():
            raise AccessError(f"kubeconfig {kubeconfig}: no such file", usage=True)
        return _from_kubeconfig(configuration, str(path))
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    files = [p for p in (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep) if p]
    present = [p for p in files if pathlib.Path(p).expanduser().is_file()]
    order = ["cluster", "file"] if in_cluster_first else ["file", "cluster"]
    for way in order:
        if way == "cluster" and in_cluster:
            try:
                _untyped(kubernetes.config).load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException as exc:
                raise AccessError(f"in-cluster credentials unusable: {exc}") from exc
            return Access(configuration, "in-cluster service account", _pod_namespace())
        if way == "file" and present:
            return _from_kubeconfig(configuration, os.pathsep.join(str(pathlib.Path(p).expanduser())
                                                                   for p in present))
    where = "KUBECONFIG=" + os.environ["KUBECONFIG"] if os.environ.get("KUBECONFIG") else "~/.kube/config"
    raise AccessError(f"no Kubernetes credentials: not in a cluster (KUBERNETES_SERVICE_HOST is unset) and no "
                      f"kubeconfig ({where} does not exist); pass --kubeconfig")


def _from_kubeconfig(configuration: Any, path: str) -> Access:
    import kubernetes

    try:
        _untyped(kubernetes.config).load_kube_config(config_file=path, client_configuration=configuration)
        _, active = _untyped(kubernetes.config).list_kube_config_contexts(config_file=path)
    except Exception as exc:  # ConfigException, yaml errors, missing keys: all mean the file is unusable
        raise AccessError(f"kubeconfig {path} is unusable: {_first_line(exc)}") from exc
    namespace = str((active or {}).get("context", {}).get("namespace") or "default")
    return Access(configuration, f"kubeconfig {path}", namespace)


def _pod_namespace() -> str:
    try:
        return pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def describe(exc: BaseException, server: str) -> str:
    """One sentence for a failed call: connection refused, name not resolved, TLS, timeout, HTTP status."""
    import kubernetes
    import urllib3

    if isinstance(exc, kubernetes.client.ApiException):
        reason = f"HTTP {exc.status} {exc.reason}"
        if exc.status == 401:
            return f"{server} refused the credentials ({reason}); log in again or fix the kubeconfig"
        if exc.status == 403:
            return f"{server}: not allowed ({reason}): {_api_message(exc)}"
        return f"{server}: {reason}: {_api_message(exc)}"
    cause: BaseException | None = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        cause = exc.reason
    text = str(cause)
    chain: list[BaseException] = []
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for item in chain:
        if isinstance(item, ConnectionRefusedError) or "Connection refused" in str(item):
            return f"cannot reach {server}: connection refused"
        if isinstance(item, urllib3.exceptions.NameResolutionError) or "Name or service not known" in str(item):
            return f"cannot reach {server}: host name not resolved"
        if isinstance(item, urllib3.exceptions.SSLError):
            return f"cannot talk TLS to {server}: {_first_line(item)}"
        if isinstance(item, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return f"cannot reach {server}: timed out"
    return f"cannot reach {server}: {text.splitlines()[0] if text else type(exc).__name__}"


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def check_operator_api(access: Access, timeout: float) -> None:
    """GET /apis/vigil.dev/v1alpha1 until it answers or ``timeout`` seconds pass; AccessError with the last reason.

    Discovery is readable by every authenticated user (system:discovery), so this
    checks reachability, the credentials and that the CRDs are installed with no
    extra RBAC. Failures are retried with a short back-off until the deadline: an
    API server that is still starting (a kind cluster, a control-plane upgrade) is
    given that long.
    """
    import kubernetes

    client = kubernetes.client.ApiClient(access.configuration)
    deadline = time.monotonic() + max(timeout, 0.0)
    pause = 0.25
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                listed = kubernetes.client.CustomObjectsApi(client).get_api_resources(
                    GROUP, VERSION, _request_timeout=max(min(left, 5.0), 0.5))
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    problem = (f"CRDs not installed: {access.server} does not serve {GROUP}/{VERSION}; "
                               "run `kubectl apply -f crds/` (or install the Helm chart)")
                else:
                    problem = describe(exc, access.server)
            except Exception as exc:  # urllib3: refused, DNS, TLS, timeout
                problem = describe(exc, access.server)
            else:
                served = {str(resource.name) for resource in listed.resources or []}
                missing = [f"{plural}.{GROUP}" for plural in PLURALS if plural not in served]
                if not missing:
                    return
                problem = (f"CRDs not installed: {access.server} does not serve {', '.join(missing)}; "
                           "run `kubectl apply -f crds/` (or install the Helm chart)")
            if time.monotonic() + pause > deadline:
                raise AccessError(f"{problem} (gave up after {timeout:g}s; --startup-timeout)")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    finally:
        _untyped(client).close()


def answers(access: Access, timeout: float = 2.0) -> bool:
    """Whether the API server answers at all (GET /version; any HTTP status counts): the outage probe."""
    import kubernetes

    client = kubernetes.client.ApiClient(access.configuration)
    try:
        kubernetes.client.VersionApi(client).get_code(_request_timeout=timeout)
    except kubernetes.client.ApiException:
        return True
    except Exception:
        return False
    finally:
        _untyped(client).close()
    return True
