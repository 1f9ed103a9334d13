"""Hostile custom models against the real ``vigil run``: operator RSS and ``/healthz`` latency.

Issue 11, items 2 and 5, "done when": the operator's RSS grows by less than 50 MiB under the
4 GiB ConstantOfShape model, and ``/healthz`` answers within 1 s while a CPU-heavy model loads.
Everything is measured on the operator process, never typed in:

- **Peers**: the real Prometheus (one backfilled series), the Kubernetes API emulator
  (``vigil_sandbox.kubeapi``, in this process), and ``python -m vigil run`` as a subprocess
  (``tests/harness.py``), default model limits (1 MiB, trial with 1 GiB of address space, 10 s).
- **Warm-up**: a detector on the built-in model reaches Ready=True first, so onnxruntime and the
  model are already loaded when the figures start.
- **Scenarios**, one after the other on the same operator: each model goes into a ConfigMap
  (``binaryData``) and a new detector points at it (``spec.model.configMapRef``). From the
  detector's creation until its Ready condition gives the verdict (then ``--settle`` seconds
  more) this process samples the operator's ``VmRSS`` from ``/proc/<pid>/status`` every 10 ms,
  reads its ``VmHWM`` (peak, reset through ``/proc/<pid>/clear_refs`` before each scenario), and
  sums the RSS of its child processes (the model trial). A separate process polls ``GET
  /healthz`` back to back on one keep-alive connection and records every latency.
  1. *idle*: no model at all, only the polling: the latency baseline.
  2. *benign*: a custom model of about the same size that computes nothing: the cost of "a new
     model" (trial + session), the RSS baseline.
  3. *4 GiB, constant shape*: ``ConstantOfShape([2^30])`` floats (refused by the static check).
  4. *4 GiB, computed shape*: the same with the shape computed at run time (shape + 0), which the
     static check cannot see (refused by the trial's ``RLIMIT_AS``).
  5. *8000^2 MatMul*: a matrix of ones squared, ~1e12 multiply-adds; onnxruntime folds it while
     building the session (refused by the trial's 10 s timeout).
  6. *4000^2 MatMul*: the same at 1/8 of the work, under the trial's limits: admitted, so it is
     loaded (folded) once in the trial and once more in the operator's process, in a thread.

    python -m bench.models                         # prints the table
    python -m bench.models --output docs/bench/models.md
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import http.client
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/models.py` as well as `python -m bench.models`
    sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402
from tests import hostile_models  # noqa: E402
from tests.harness import OperatorProcess, wait_for  # noqa: E402
from vigil.api import crdgen  # noqa: E402
from vigil_sandbox.kubeapi import KubeAPIServer  # noqa: E402
from vigil_sandbox.prometheus import PrometheusServer, Series  # noqa: E402

METRIC = "bench_models"
STEP = 300.0
POINTS = 120
RSS_GOAL_MIB = 50.0
HEALTHZ_GOAL_S = 1.0
AD = ("vigil.dev/v1alpha1", "anomalydetectors")
CM = ("v1", "configmaps")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    build: Callable[[], bytes] | None
    expect: str  # "True" for Ready=True, else the Ready=False reason


SCENARIOS = [
    Scenario("idle", "idle (no model loading), first", None, ""),
    Scenario("benign", "benign custom model (a new model)", hostile_models.benign, "True"),
    Scenario("static", "4 GiB ConstantOfShape, constant shape", lambda: hostile_models.four_gib(dynamic=False),
             "ModelTooExpensive"),
    Scenario("dynamic", "4 GiB ConstantOfShape, computed shape", lambda: hostile_models.four_gib(dynamic=True),
             "ModelTooExpensive"),
    Scenario("matmul8000", "8000² MatMul (over the trial's 10 s)", lambda: hostile_models.matmul(8000),
             "ModelTooExpensive"),
    Scenario("matmul4000", "4000² MatMul (under the trial's limits)", lambda: hostile_models.matmul(4000),
             "True"),
    Scenario("idle-end", "idle (no model loading), last", None, ""),
]
#: What --baseline runs on a checkout without the guard: not the 4 GiB models (4 GiB or more in the operator).
BASELINE_SCENARIOS = ("idle", "benign", "matmul8000", "idle-end")


@dataclasses.dataclass
class Result:
    scenario: Scenario
    model_bytes: int = 0
    ready: str = ""
    reason: str = ""
    message: str = ""
    verdict_s: float = 0.0
    window_s: float = 0.0
    rss0: float = 0.0  # MiB
    rss_end: float = 0.0
    rss_max: float = 0.0  # largest sampled VmRSS
    hwm: float = 0.0  # VmHWM at the end (peak since the reset)
    peak_reset: bool = False
    child_peak: float = 0.0  # largest summed RSS of the operator's children (the trial)
    samples: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    failures: int = 0  # non-200 answers or connection errors

    @property
    def growth(self) -> float:
        return self.rss_end - self.rss0

    @property
    def peak_growth(self) -> float:
        return max(self.rss_max, self.hwm if self.peak_reset else 0.0) - self.rss0

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies, q)) if self.latencies else float("nan")


# ---- measurement helpers -------------------------------------------------------------------------

def reset_peak(pid: int) -> bool:
    """Reset the process' VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    try:
        pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        pass
    return found


class Sampler(threading.Thread):
    """VmRSS of the operator and the summed RSS of its children, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop = threading.Event()
        self.rss_max = 0.0
        self.child_peak = 0.0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.rss_max = max(self.rss_max, procstat.status_kib(self.pid)["VmRSS"] / 1024)
            except (OSError, KeyError):
                return
            total = 0
            for child in children(self.pid):
                try:
                    total += procstat.status_kib(child).get("VmRSS", 0)
                except OSError:
                    continue
            self.child_peak = max(self.child_peak, total / 1024)
            self.samples += 1
            self.stop.wait(self.interval)


def _poll(port: int, conn: multiprocessing.connection.Connection) -> None:
    """Child process: on "start", GET /healthz back to back on one keep-alive connection until "stop"
    arrives, then send the latencies back; "quit" ends it. Started once, so no import cost per window."""
    while (command := conn.recv()) == "start":
        latencies: list[float] = []
        failures = 0
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.send("polling")
        while not conn.poll():
            started = time.perf_counter()
            try:
                client.request("GET", "/healthz")
                response = client.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                client.close()
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies.append(time.perf_counter() - started)
            failures += not ok
        client.close()
        assert conn.recv() == "stop"
        conn.send((latencies, failures))
    assert command == "quit", command


class Poller:
    """The /healthz poller in a process of its own (this one also runs the API emulator)."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_poll, args=(port, child), daemon=True)
        self._proc.start()
        child.close()

    def start(self) -> None:
        self._conn.send("start")
        assert self._conn.recv() == "polling"

    def finish(self) -> tuple[list[float], int]:
        self._conn.send("stop")
        latencies, failures = self._conn.recv()
        return list(latencies), int(failures)

    def close(self) -> None:
        self._conn.send("quit")
        self._proc.join(10)


# ---- the run -------------------------------------------------------------------------------------

def detector(name: str, configmap: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"query": METRIC, "interval": "5s", "step": "5m"}
    if configmap is not None:
        spec["model"] = {"configMapRef": {"name": configmap, "key": "model.onnx"}}
    return {"apiVersion": "vigil.dev/v1alpha1", "kind": "AnomalyDetector",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def ready(kubeapi: KubeAPIServer, name: str) -> dict[str, str]:
    obj = kubeapi.get(*AD, "default", name) or {}
    condition: dict[str, str] = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}["Ready"]
    return condition


def run_scenario(kubeapi: KubeAPIServer, operator: OperatorProcess, poller: Poller, scenario: Scenario,
                 idle: float, settle: float, timeout: float, any_verdict: bool = False) -> Result:
    """One scenario; ``any_verdict`` (code without the guard) takes Ready=True or any Model* reason."""
    assert operator.proc is not None
    pid = operator.proc.pid
    result = Result(scenario)
    data = scenario.build() if scenario.build is not None else None
    name = f"m-{scenario.name}"
    if data is not None:
        result.model_bytes = len(data)
        kubeapi.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
                        "binaryData": {"model.onnx": base64.b64encode(data).decode()}})
    time.sleep(1.0)  # let the write's echo pass before the baseline reading
    result.peak_reset = reset_peak(pid)
    result.rss0, _ = procstat.memory_mib(pid)
    sampler = Sampler(pid)
    sampler.start()
    poller.start()
    time.sleep(0.2)
    started = time.monotonic()
    if data is None:
        time.sleep(idle)
    else:
        kubeapi.create(detector(name, name))

        def verdict() -> dict[str, str]:
            condition = ready(kubeapi, name)
            if scenario.expect == "True" or any_verdict:
                assert condition["status"] == "True" or condition["reason"].startswith("Model"), condition
            else:
                assert condition["status"] == "False" and condition["reason"].startswith("Model"), condition
            return condition

        try:
            condition = wait_for(verdict, timeout=timeout, interval=0.05, what=f"{name}'s Ready verdict")
        except AssertionError as exc:
            condition = {"status": "?", "reason": "no verdict", "message": str(exc)[:300]}
        result.verdict_s = time.monotonic() - started
        result.ready, result.reason, result.message = condition["status"], condition["reason"], condition["message"]
        time.sleep(settle)
    result.window_s = time.monotonic() - started
    result.latencies, result.failures = poller.finish()
    sampler.stop.set()
    sampler.join()
    result.rss_end, result.hwm = procstat.memory_mib(pid)
    result.rss_max, result.child_peak, result.samples = sampler.rss_max, sampler.child_peak, sampler.samples
    if data is not None:
        kubeapi.delete(*AD, "default", name)
        kubeapi.delete(*CM, "default", name)
    return result


def verdict_met(result: Result) -> bool:
    if result.scenario.expect == "True":
        return result.ready == "True"
    return result.ready == "False" and result.reason == result.scenario.expect


def measure(args: argparse.Namespace, scenarios: list[Scenario],
            operator_dir: pathlib.Path | None = None) -> tuple[list[Result], dict[str, Any]]:
    """One operator (this checkout's, or ``operator_dir``'s code first on PYTHONPATH) through ``scenarios``."""
    now = float(int(time.time() // STEP) * STEP)
    rng = np.random.default_rng(11)
    history = [Series(METRIC, {"pod": "web-0"}, now - STEP * np.arange(POINTS - 1, -1, -1),
                      rng.normal(50, 10, POINTS))]
    results = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-models-") as tmp, \
            PrometheusServer(history=history) as prometheus, \
            KubeAPIServer(crds=crdgen.all_crds(), bookmark_interval=0.5) as kubeapi:
        workdir = pathlib.Path(tmp)
        operator = OperatorProcess(kubeapi.write_kubeconfig(workdir / "kubeconfig"), workdir,
                                   ["--prometheus-url", prometheus.url, "--no-leader-election"], name="operator",
                                   env={"PYTHONPATH": str(operator_dir)} if operator_dir else None)
        operator.start()
        try:
            kubeapi.create(detector("warmup", None))
            wait_for(lambda: ready(kubeapi, "warmup")["status"] == "True", timeout=120, what="warm-up Ready")
            time.sleep(2)
            assert operator.proc is not None
            rss_warm, _ = procstat.memory_mib(operator.proc.pid)
            print(f"operator pid {operator.proc.pid} warmed up: RSS {rss_warm:.0f} MiB", flush=True)
            poller = Poller(operator.port)
            for scenario in scenarios:
                result = run_scenario(kubeapi, operator, poller, scenario, args.idle, args.settle, args.timeout,
                                      any_verdict=operator_dir is not None)
                results.append(result)
                print(f"  {scenario.name}: Ready={result.ready}/{result.reason or '-'} after "
                      f"{result.verdict_s:.2f} s; RSS +{result.growth:.1f} MiB, peak +{result.peak_growth:.1f}; "
                      f"/healthz {len(result.latencies)} requests, p99 {result.quantile(0.99) * 1000:.1f} ms, "
                      f"max {max(result.latencies, default=float('nan')) * 1000:.1f} ms", flush=True)
            poller.close()
            errors = operator.errors()
        finally:
            operator.stop()
    context = {"rss_warm": rss_warm, "errors": errors, "scenarios": [s.name for s in scenarios]}
    return results, context


# ---- report --------------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def table(results: list[Result], idle_p99: float, idle_max: float) -> list[str]:
    lines = [
        "| scenario | model | verdict (after) | operator RSS growth | peak RSS growth | trial child peak RSS "
        "| /healthz requests | p50 ms | p99 ms | max ms | p99, max vs idle |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        verdict = "-" if r.scenario.build is None else f"Ready={r.ready} {r.reason} ({r.verdict_s:.1f} s)"
        size = "-" if not r.model_bytes else f"{r.model_bytes:,} B"
        worst = max(r.latencies, default=float("nan"))
        ratio = ("-" if r.scenario.build is None or idle_max != idle_max
                 else f"{r.quantile(0.99) / idle_p99:.1f}x, {worst / idle_max:.1f}x")
        child = f"{r.child_peak:,.0f} MiB" if r.child_peak else "no child"
        lines.append(
            f"| {r.scenario.label} | {size} | {verdict} | {r.growth:+.1f} MiB | {r.peak_growth:+.1f} MiB | {child} "
            f"| {len(r.latencies):,} | {_ms(r.quantile(0.5))} | {_ms(r.quantile(0.99))} | {_ms(worst)} | {ratio} |")
    return lines


def idle_baseline(results: list[Result]) -> tuple[float, float]:
    """(p99, max) of the idle windows' /healthz latencies together."""
    idle = [x for r in results if r.scenario.build is None for x in r.latencies]
    if not idle:
        return float("nan"), float("nan")
    return float(np.quantile(idle, 0.99)), max(idle)


def report(results: list[Result], context: dict[str, Any], command: str, load: tuple[float, float, float],
           baseline: list[Result] | None = None, baseline_label: str = "baseline") -> str:
    by = {r.scenario.name: r for r in results}
    idle_p99, idle_max = idle_baseline(results)
    idle = idle_max == idle_max  # not NaN: there were idle windows
    cpu = "unknown CPU"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    lines = [
        "# Hostile custom models (issue 11, items 2 and 5)",
        "",
        f"Written by `make bench-models` (`bench/models.py`); measured, not typed in. "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs ({cpu}, shared with "
        f"other jobs; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start), "
        f"Python {platform.python_version()}, commit {(procstat.commit(ROOT) or 'unknown')}. Command: `{command}`.",
        "",
        "One `vigil run` (default model limits: 1 MiB, trial with 1 GiB of address space and 10 s) against the "
        "API emulator and the real Prometheus, warmed up with a detector on the built-in model "
        f"(RSS {context['rss_warm']:.0f} MiB). Each row: the model in a ConfigMap, a new detector pointing at it, "
        "measured from the detector's creation until its Ready condition gives the verdict, plus a few seconds. "
        "RSS is the operator's own (`VmRSS`, sampled every 10 ms; peak from `VmHWM`, reset before each row); "
        "the trial's child process is counted apart. `/healthz` is polled back to back on one keep-alive "
        "connection by a separate process.",
        "",
        *table(results, idle_p99, idle_max),
    ]
    lines += ["", "Goals (issue 11 \"done when\"):", ""]
    memory = [by[n] for n in ("static", "dynamic") if n in by]
    if memory:
        worst_growth = max(max(r.growth, r.peak_growth) for r in memory)
        met = worst_growth < RSS_GOAL_MIB and all(verdict_met(r) for r in memory)
        benign = by.get("benign")
        extra = (f"; a benign new model of similar size: {benign.growth:+.1f} MiB, peak {benign.peak_growth:+.1f} MiB"
                 if benign else "")
        lines.append(
            f"- Operator RSS growth under the 4 GiB model < {RSS_GOAL_MIB:g} MiB: **{'met' if met else 'MISSED'}** "
            f"(largest of RSS and peak growth over both variants: {worst_growth:+.1f} MiB"
            f"{extra}; verdicts " + ", ".join(f"{r.reason or r.ready}" for r in memory) + ").")
    if "matmul8000" in by:
        heavy = by["matmul8000"]
        worst = max(heavy.latencies, default=float("inf"))
        met = worst < HEALTHZ_GOAL_S and heavy.failures == 0 and verdict_met(heavy)
        base = (f"; both idle windows together: p99 {_ms(idle_p99)} ms, max {_ms(idle_max)} ms, so "
                f"{heavy.quantile(0.99) / idle_p99:.1f}x (p99) and {worst / idle_max:.1f}x (max)" if idle else "")
        lines.append(
            f"- `/healthz` while the 8000² MatMul model is checked < {HEALTHZ_GOAL_S * 1000:g} ms: "
            f"**{'met' if met else 'MISSED'}** (max {_ms(worst)} ms, p99 {_ms(heavy.quantile(0.99))} ms over "
            f"{len(heavy.latencies):,} requests in {heavy.window_s:.1f} s, {heavy.failures} not 200{base}).")
    if "matmul4000" in by:
        admitted = by["matmul4000"]
        lines.append(
            f"- Not a goal, for contrast: the admitted 4000² MatMul passes the trial and is then built (folded) "
            f"once more in the operator's own process, in a thread: `/healthz` max "
            f"{_ms(max(admitted.latencies, default=float('nan')))} ms, p99 {_ms(admitted.quantile(0.99))} ms; "
            f"the folding's matrices show as {admitted.peak_growth:+.1f} MiB of peak RSS, released afterwards "
            f"({admitted.growth:+.1f} MiB at the end). A model under the trial's limits is admitted by design; "
            "`--max-model-bytes` does not bound the memory it computes.")
    failed = [r for r in results if r.scenario.build is not None and not verdict_met(r)]
    for r in failed:
        lines.append(f"- **Unexpected verdict** for {r.scenario.label}: Ready={r.ready}/{r.reason}: {r.message}")
    if context["errors"]:
        first = context["errors"][0][:200]
        lines.append(f"- The operator logged {len(context['errors'])} error lines, e.g. `{first}`.")
    if baseline:
        b_p99, b_max = idle_baseline(baseline)
        lines += [
            "", f"**The same, before the guard ({baseline_label}).**", "",
            "Same peers and scenarios, run first in the same invocation, with that checkout's `operator/` first on "
            "the operator's PYTHONPATH. The 4 GiB models are left out there: without the guard they are "
            "allocated in the operator itself (the issue measured 161 to 8,740 MiB RSS), more than a machine "
            "shared with other jobs should be given.", "",
            *table(baseline, b_p99, b_max),
        ]
        old = {r.scenario.name: r for r in baseline}
        if "matmul8000" in old and "matmul8000" in by and old["matmul8000"].latencies:
            before, after = old["matmul8000"], by["matmul8000"]
            worst_before, worst_after = max(before.latencies), max(after.latencies, default=float("nan"))
            lines += ["", f"Ratio, same run: `/healthz` max while the 8000² MatMul model is checked or loaded is "
                      f"{_ms(worst_before)} ms before the guard and {_ms(worst_after)} ms with it "
                      f"({worst_before / worst_after:,.0f}x); p99 {_ms(before.quantile(0.99))} ms -> "
                      f"{_ms(after.quantile(0.99))} ms; the operator's peak RSS growth "
                      f"{before.peak_growth:+.1f} MiB -> {after.peak_growth:+.1f} MiB."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of /healthz polling with no model (10)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds measured after each verdict (3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a verdict (120)")
    parser.add_argument("--only", action="append", choices=[s.name for s in SCENARIOS],
                        help="run only these scenarios (repeatable)")
    parser.add_argument("--baseline", type=pathlib.Path,
                        help="another checkout's operator folder to run first (e.g. the commit before the guard); "
                        f"only the scenarios {', '.join(BASELINE_SCENARIOS)}")
    parser.add_argument("--baseline-label", default="baseline", help="its section's title (default baseline)")
    parser.add_argument("--output", type=pathlib.Path, help="also write the report to this Markdown file")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    baseline = None
    if args.baseline:
        print(f"baseline: {args.baseline}", flush=True)
        baseline, _ = measure(args, [s for s in scenarios if s.name in BASELINE_SCENARIOS], args.baseline.resolve())
        print("this checkout:", flush=True)
    results, context = measure(args, scenarios)
    command = "python -m bench.models" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = report(results, context, command, load, baseline, args.baseline_label)
    print("\n" + text)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    failed = [r for r in results if r.scenario.build is not None and r.reason == "no verdict"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
