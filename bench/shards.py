"""Sharding benchmark: the same N detectors on one replica, then split over K shards (each with a standby).

Real peers, as in :mod:`bench.scale` (whose Prometheus loader, emulator process and
/proc readers it reuses): a real Prometheus with N x S synthetic series, the API
emulator in its own process, and ``vigil run`` processes.

1. **One replica** (leader election on, one Lease) evaluates all N detectors.
2. **K shards**: K active replicas (``--shards K --shard-index i``) plus one standby per
   shard. Per process: detectors it evaluated (its per-detector gauges), evaluations/s,
   CPU cores (user+system from /proc) and peak RSS. All 2K processes start together and
   the Leases decide which of each pair is active. The harness checks that the shards'
   detector sets are disjoint and cover all N, and that standbys evaluate nothing.
3. **Failover**: the holder of shard 0 is killed (SIGKILL, no Lease release); the time
   until its standby holds the Lease and until the standby's evaluations start is printed.

Figures are measured in this run, and ratios are against phase 1 of the same run. The
machine is shared by both phases, so per-process CPU is what spreads; the total is
bounded by the cores of this one machine.

    python -m bench.shards                      # N=1000, S=5, I=10 s, K=2
    python -m bench.shards -n 2000 --shards 4 --output docs/bench/shards.md
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scale  # noqa: E402
from tests.harness import OperatorProcess, wait_for  # noqa: E402
from vigil_sandbox.prometheus import PrometheusServer  # noqa: E402

LAST_EVALUATION = "vigil_detector_last_evaluation_timestamp_seconds"


@dataclasses.dataclass
class Replica:
    role: str  # "single", "shard i", "standby i"
    process: OperatorProcess
    cpu: float = 0.0
    evaluations: float = 0.0
    detectors: frozenset[str] = frozenset()
    cores: float = 0.0
    evals_per_s: float = 0.0
    rss_mib: float = 0.0


def _pid(replica: Replica) -> int:
    assert replica.process.proc is not None
    return replica.process.proc.pid


def _evaluations(replica: Replica) -> float:
    return scale.total(scale.scrape(f"{replica.process.url}/metrics"), "vigil_evaluations_total")


def _evaluated(replica: Replica) -> frozenset[str]:
    metrics = scale.scrape(f"{replica.process.url}/metrics")
    return frozenset(labels["detector"] for labels, _ in metrics.get(LAST_EVALUATION, []))


def _measure(replicas: Sequence[Replica], window: float) -> None:
    """Evaluations and CPU of every replica over ``window`` seconds (scrapes outside the CPU window)."""
    counts = [_evaluations(r) for r in replicas]
    cpus = [scale.cpu_seconds(_pid(r)) for r in replicas]
    started = time.monotonic()
    time.sleep(window)
    cpu_after = [scale.cpu_seconds(_pid(r)) for r in replicas]
    elapsed = time.monotonic() - started
    for replica, count, cpu, after in zip(replicas, counts, cpus, cpu_after, strict=True):
        replica.cpu = after - cpu
        replica.cores = replica.cpu / elapsed
        replica.evaluations = _evaluations(replica) - count
        replica.evals_per_s = replica.evaluations / elapsed
        replica.detectors = _evaluated(replica)
        replica.rss_mib = scale.peak_rss_mib(_pid(replica))


def _start(emulator: scale.Emulator, workdir: pathlib.Path, prometheus: PrometheusServer, config: scale.Config,
           name: str, *extra: str) -> OperatorProcess:
    args = ["--prometheus-url", prometheus.url, "--heartbeat", f"{config.heartbeat:g}", "--leader-election",
            "--leader-election-namespace", "default", "--identity", name, *config.operator_args, *extra]
    return OperatorProcess(emulator.kubeconfig, workdir, args, name=name).start(ready_timeout=120)


def _all_written(emulator: scale.Emulator, n: int, config: scale.Config) -> None:
    wait_for(lambda: emulator.tally()["all_status"] is not None, timeout=max(180.0, 4 * config.interval + n / 10),
             interval=0.5, what=f"a first status on all {n} detectors")


def single(n: int, config: scale.Config, prometheus: PrometheusServer, workdir: pathlib.Path) -> Replica:
    print(f"\n== one replica, N={n}", flush=True)
    emulator = scale.Emulator(workdir, n, config.interval)
    replica = Replica("single", _start(emulator, workdir, prometheus, config, "single"))
    try:
        _all_written(emulator, n, config)
        time.sleep(config.warmup)
        _measure([replica], config.window)
        return replica
    finally:
        replica.process.stop()
        emulator.stop()


@dataclasses.dataclass
class Sharded:
    replicas: list[Replica]
    takeover_s: float
    resumed_s: float


def sharded(n: int, k: int, config: scale.Config, prometheus: PrometheusServer, workdir: pathlib.Path) -> Sharded:
    print(f"\n== {k} shards + {k} standbys, N={n}", flush=True)
    emulator = scale.Emulator(workdir, n, config.interval)
    processes: list[OperatorProcess] = []
    replicas: list[Replica] = []
    try:
        for i in range(k):  # two replicas per shard, started together: the Lease decides who is active
            for copy in ("a", "b"):
                processes.append(_start(emulator, workdir, prometheus, config, f"shard-{i}{copy}",
                                        "--shards", str(k), "--shard-index", str(i)))
        _all_written(emulator, n, config)
        for i in range(k):
            pair = processes[2 * i: 2 * i + 2]
            leader = wait_for(lambda pair=pair: [p for p in pair if p.value("vigil_leader") == 1], timeout=60,
                              what=f"a holder of shard {i}")[0]
            replicas.insert(i, Replica(f"shard {i}", leader))
            replicas.append(Replica(f"standby {i}", next(p for p in pair if p is not leader)))
        time.sleep(config.warmup)
        _measure(replicas, config.window)
        # Failover: kill shard 0's holder without a Lease release.
        standby = next(r for r in replicas if r.role == "standby 0")
        before = _evaluations(standby)
        killed = time.monotonic()
        replicas[0].process.kill()
        wait_for(lambda: standby.process.value("vigil_leader") == 1, timeout=120, interval=0.2,
                 what="the standby of shard 0 to hold the Lease")
        takeover = time.monotonic() - killed
        wait_for(lambda: _evaluations(standby) > before, timeout=120, interval=0.2,
                 what="the standby of shard 0 to evaluate")
        return Sharded(replicas, takeover, time.monotonic() - killed)
    finally:
        for process in processes:
            process.stop()
        emulator.stop()


def report(n: int, k: int, config: scale.Config, one: Replica, split: Sharded, host: str) -> str:
    everyone = frozenset(scale.detector_name(i) for i in range(n))
    actives = [r for r in split.replicas if r.role.startswith("shard")]
    standbys = [r for r in split.replicas if r.role.startswith("standby")]
    overlap = sum(len(a.detectors & b.detectors) for i, a in enumerate(actives) for b in actives[i + 1:])
    union = frozenset().union(*(r.detectors for r in actives))
    rows = [["one replica", str(len(one.detectors)), f"{one.evals_per_s:.1f}", f"{one.cores:.3f}",
             f"{one.rss_mib:.0f}", "1.00"]]
    for r in split.replicas:
        rows.append([r.role, str(len(r.detectors)), f"{r.evals_per_s:.1f}", f"{r.cores:.3f}", f"{r.rss_mib:.0f}",
                     f"{r.cores / one.cores:.2f}" if one.cores else "n/a"])
    shard_cores = sum(r.cores for r in actives)
    total_ratio = f"{shard_cores / one.cores:.2f}x" if one.cores else "n/a"
    busiest_ratio = f"{max(r.cores for r in actives) / one.cores:.2f}x" if one.cores else "n/a"
    table = scale.markdown_table(
        ["replica", "detectors evaluated", "evaluations/s", "CPU cores", "peak RSS MiB", "CPU vs one replica"], rows)
    checks = [
        f"- Detectors evaluated by two shards during the window: **{overlap}**; shards cover "
        f"{len(union)} of {n}{'' if union == everyone else ' (NOT all)'}.",
        f"- Standbys evaluated {sum(len(r.detectors) for r in standbys)} detectors "
        f"({sum(r.evaluations for r in standbys):.0f} evaluations) and used "
        f"{sum(r.cores for r in standbys):.3f} cores in total (watches only).",
        f"- Sum over the shards: {sum(r.evals_per_s for r in actives):.1f} evaluations/s and "
        f"{sum(r.cores for r in actives):.3f} cores, against {one.evals_per_s:.1f} and {one.cores:.3f} on one "
        f"replica: {total_ratio} the single replica's CPU for the same evaluations; the busiest shard needs "
        f"{busiest_ratio} of it.",
        f"- Failover of shard 0 (holder SIGKILLed, `{' '.join(config.operator_args)}`): the standby held the "
        f"Lease after **{split.takeover_s:.1f} s** and evaluated again after **{split.resumed_s:.1f} s**.",
    ]
    return "\n".join([
        f"# Sharding: N={n} detectors x {config.series} series at I={config.interval:g} s, K={k} shards",
        "",
        f"Measured by `{config.command}` on {host}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; window {config.window:g} s per phase. "
        "The machine was shared with other work; CPU figures are per process (user+system, /proc).",
        "",
        table,
        "",
        *checks,
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.shards", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--detectors", type=int, default=1000, help="N (default 1000)")
    p.add_argument("-s", "--series", type=int, default=5, help="series per detector (default 5)")
    p.add_argument("-i", "--interval", type=float, default=10.0, help="evaluation interval in seconds (default 10)")
    p.add_argument("-k", "--shards", type=int, default=2, help="shards K (default 2)")
    p.add_argument("--window", type=float, default=60.0, help="measured seconds per phase (default 60)")
    p.add_argument("--warmup", type=float, help="seconds after the first statuses before measuring (default: I)")
    p.add_argument("--lease-duration", type=float, default=15.0, help="operator --lease-duration (default 15)")
    p.add_argument("--output", type=pathlib.Path, help="write the Markdown report here")
    args = p.parse_args(argv)
    config = scale.parse(["-n", str(args.detectors), "-s", str(args.series), "-i", f"{args.interval:g}",
                          "--window", f"{args.window:g}", "--no-output",
                          "--operator-arg=--lease-duration", f"--operator-arg={args.lease_duration:g}",
                          *(["--warmup", f"{args.warmup:g}"] if args.warmup is not None else [])])
    config = dataclasses.replace(
        config, live_minutes=config.live_minutes + int(2 * (args.window + 180) / 60),
        command="python -m bench.shards " + " ".join(argv if argv is not None else sys.argv[1:]))
    host = f"{platform.node() or 'host'} ({scale.machine()})"
    with tempfile.TemporaryDirectory(prefix="vigil-shards-") as tmp, scale.peers(config) as prometheus:
        workdir = pathlib.Path(tmp)
        one = single(args.detectors, config, prometheus, workdir)
        split = sharded(args.detectors, args.shards, config, prometheus, workdir)
    text = report(args.detectors, args.shards, config, one, split, host)
    print("\n" + text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
