"""Every metric the dashboard and the alerts query is one a running operator really exports.

A renamed metric would leave a dashboard panel silently empty and an alert
that can never fire. So this starts ``vigil run`` for real (a subprocess, as in
the container) against the emulated Kubernetes API, scrapes its ``/metrics``,
and compares the names with every PromQL expression of the Grafana dashboard
and of the PrometheusRule the chart renders.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import helm_python as helm
import pytest

from vigil.api import crdgen
from vigil_sandbox.ports import free_port

from .conftest import CHART_DIR, ROOT, only, parse, render_text

#: Names in PromQL that are not Vigil's own (Prometheus' synthetic scrape metrics).
NOT_OURS = {"up"}
_METRIC = re.compile(r"\b(vigil_[a-zA-Z0-9_:]+)\b")
STARTUP_TIMEOUT = 90.0


def dashboard_queries() -> list[str]:
    """PromQL of every panel target and of every query variable of the dashboard."""
    dashboard = json.loads((CHART_DIR / "dashboards" / "vigil.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    assert len(queries) > 20, "the dashboard should have queries"
    return queries


def rule_expressions(chart: helm.Chart) -> list[str]:
    rule = only(parse(render_text(chart, {"prometheusRule": {"enabled": True}})), "PrometheusRule")
    expressions = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(expressions) >= 7
    return expressions


def referenced(queries: list[str]) -> dict[str, list[str]]:
    """vigil_* metric name -> the queries using it."""
    names: dict[str, list[str]] = collections.defaultdict(list)
    for query in queries:
        for name in set(_METRIC.findall(query)):
            names[name].append(query)
    return dict(names)


def exposed_names(exposition: str) -> set[str]:
    """Every series name a query may use, from the text exposition (HELP/TYPE lines included).

    Metric families are listed even before they have a sample, so a counter that
    has not been incremented yet still counts as exported.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            base = name.removesuffix("_total")
            if kind == "counter":
                names.update({f"{base}_total", f"{base}_created"})
            elif kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count", "created"))
            elif kind == "summary":
                names.update(f"{name}_{suffix}" for suffix in ("sum", "count", "created"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def live_exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real ``vigil run`` talking to the emulated Kubernetes API."""
    from vigil_sandbox.kubeapi import KubeAPIServer

    tmp = tmp_path_factory.mktemp("operator")
    port = free_port()
    log_path = tmp / "operator.log"
    with KubeAPIServer(crds=crdgen.all_crds()) as server, log_path.open("wb") as log:
        kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
            "POD_NAME": "vigil-metrics-test",
            "POD_NAMESPACE": "default",
            "VIGIL_LEADER_ELECTION_NAMESPACE": "default",
            "VIGIL_LEADER_ELECTION_NAME": "vigil-leader",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "vigil", "run", "--http-port", str(port), "--prometheus-url", "http://127.0.0.1:9",
             "-n", "default", "--kubeconfig", str(kubeconfig), "--log-format", "plain"],
            stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=tmp,
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"vigil run exited with {process.returncode}:\n{_tail(log_path)}")
                try:
                    base = f"http://127.0.0.1:{port}"
                    if _get(f"{base}/metrics")[0] == 200 and _get(f"{base}/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            else:
                pytest.fail(f"/metrics of vigil run did not answer in {STARTUP_TIMEOUT:.0f}s:\n{_tail(log_path)}")
            # Until the leader election and the remediation engine have turned once (their families appear).
            while time.monotonic() < deadline and not all(
                re.search(rf"^{name}\b.* [1-9]", _get(f"http://127.0.0.1:{port}/metrics")[1], re.M)
                for name in ("vigil_leader", "vigil_remediation_ticks_total")
            ):
                if process.poll() is not None:
                    pytest.fail(f"vigil run exited with {process.returncode}:\n{_tail(log_path)}")
                time.sleep(0.2)
            exposition = _get(f"http://127.0.0.1:{port}/metrics")[1]
            assert re.search(r"^vigil_remediation_ticks_total [1-9]", exposition, re.M), _tail(log_path)
            yield exposition
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_exposed_names_understand_the_exposition_format() -> None:
    text = (
        "# HELP a_total x\n# TYPE a_total counter\na_total 1.0\n"
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n"
        "# HELP g x\n# TYPE g gauge\n"
    )
    assert {"a_total", "a_created", "h_bucket", "h_sum", "h_count", "g"} <= exposed_names(text)


@pytest.mark.slow
def test_live_operator_serves_health_endpoints(live_exposition: str) -> None:
    assert "vigil_build_info" in live_exposition


@pytest.mark.slow
@pytest.mark.parametrize("source", ["dashboard", "prometheusrule"])
def test_queried_metrics_are_exported_by_a_running_operator(
    live_exposition: str, chart: helm.Chart, source: str
) -> None:
    queries = dashboard_queries() if source == "dashboard" else rule_expressions(chart)
    names = referenced(queries)
    assert names, f"no vigil_* metric found in the {source} queries"
    exported = exposed_names(live_exposition)
    missing = {name: uses[0] for name, uses in sorted(names.items()) if name not in exported}
    assert not missing, (
        f"the {source} queries metrics the operator does not export: "
        + "; ".join(f"{name} (in: {query})" for name, query in missing.items())
    )


@pytest.mark.slow
def test_every_exported_metric_is_used_somewhere(live_exposition: str, chart: helm.Chart) -> None:
    """Not strictly needed, but an unused metric usually means a panel was forgotten."""
    used = set(referenced(dashboard_queries() + rule_expressions(chart)))
    families = {
        line.split()[2] for line in live_exposition.splitlines() if line.startswith("# TYPE ")
    }
    unused = {
        family for family in families
        if family.startswith("vigil_") and not family.endswith("_created")  # prometheus_client's timestamps
        and not any(name == family or name.startswith(family + "_") or family.startswith(name) for name in used)
    }
    assert not unused, f"exported but neither on the dashboard nor in an alert: {sorted(unused)}"


def test_no_other_query_language_names_are_unknown(chart: helm.Chart) -> None:
    """Non-Vigil metrics in the queries are limited to Prometheus' own scrape metrics."""
    tokens: set[str] = set()
    for query in dashboard_queries() + rule_expressions(chart):
        stripped = re.sub(r'"[^"]*"', "", query)  # label values
        stripped = re.sub(r"\{[^}]*\}", "", stripped)  # label matchers
        stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range selectors
        tokens.update(re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*(?:\{|\[|\)|$|\s)", stripped))
    functions = {
        "sum", "max", "min", "count", "rate", "increase", "histogram_quantile", "topk", "absent", "time", "vector",
        "by", "on", "and", "or", "unless", "without", "label_values", "le",
    }
    labels = {"namespace", "detector", "policy", "result", "kind", "reason", "phase", "operation", "error_class",
              "channel", "version", "instance", "series", "lease", "code"}
    unknown = {t for t in tokens if not t.startswith("vigil_")} - functions - labels - NOT_OURS
    assert not unknown, f"unexpected names in queries: {sorted(unknown)}"
