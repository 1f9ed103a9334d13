"""The ``vigil`` command: run the operator, print CRDs, backtest a model, show the version.

Imports are lazy per subcommand so ``vigil --help`` and ``vigil crds`` stay fast
and never load onnxruntime or kopf.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from vigil import __version__
from vigil.chatops import askcli
from vigil.chatops.app import add_chatops
from vigil.dashboard.command import add_dashboard

if TYPE_CHECKING:
    from vigil.adapters.prometheus import Compression


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _flag(name: str) -> bool:
    """A boolean environment variable: true, 1, yes or on (any case) is true; anything else false."""
    return (os.environ.get(name) or "").strip().lower() in ("true", "1", "yes", "on")


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``vigil backtest: argument --step: ...``), exit 2.

    argparse's own error prints the whole usage block first; in a terminal or a CI
    log the one line that says what is wrong is what the user needs, and ``--help``
    is one flag away. Subparsers inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive_duration(text: str) -> float:
    """``--step``: a Prometheus duration above zero (``0s`` would be an infinite grid, so it is refused)."""
    from vigil.domain import durations

    try:
        seconds = durations.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step: it must be more than 0s")
    return seconds


def positive_int(text: str) -> int:
    """A whole number above zero (the limits: 0 would refuse everything)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _add_run(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("run", help="run the operator", description="Run the Vigil operator. Credentials: "
                       "in-cluster service account, else KUBECONFIG (or --kubeconfig).")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable); default: all namespaces "
                            "[env VIGIL_NAMESPACES, comma-separated]")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    p.add_argument("--prometheus-url", default=_env("VIGIL_PROMETHEUS_URL"),
                   help="default Prometheus URL for detectors without spec.prometheus.url "
                        "[env VIGIL_PROMETHEUS_URL]")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file (sets KUBECONFIG); default: in-cluster, else KUBECONFIG, else ~/.kube/config")
    p.add_argument("--startup-timeout", type=float, default=5.0,
                   help="seconds to keep trying the API server at start-up before giving up with exit 1 "
                        "(default 5)")
    p.add_argument("--log-format", choices=["plain", "full", "json"], default=_env("VIGIL_LOG_FORMAT", "full"),
                   help="log format [env VIGIL_LOG_FORMAT, default full]")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   default=_env("VIGIL_LOG_LEVEL", "info"), help="log level [env VIGIL_LOG_LEVEL, default info]")
    p.add_argument("--http-host", default=_env("VIGIL_HTTP_HOST", "0.0.0.0"),
                   help="address for /metrics, /healthz, /readyz [env VIGIL_HTTP_HOST, default 0.0.0.0]")
    p.add_argument("--http-port", type=int, default=int(_env("VIGIL_HTTP_PORT", "8080") or 8080),
                   help="port for /metrics, /healthz, /readyz [env VIGIL_HTTP_PORT, default 8080]")
    p.add_argument("--prometheus-concurrency", type=int, default=8,
                   help="Prometheus queries in flight at most (default 8)")
    p.add_argument("--prometheus-timeout", type=float, default=15.0,
                   help="seconds before a query times out (default 15)")
    p.add_argument("--prometheus-compression", choices=["none", "gzip"],
                   default=_env("VIGIL_PROMETHEUS_COMPRESSION", "none"),
                   help="ask Prometheus for gzip-compressed answers: fewer bytes on the wire, several times "
                        "Prometheus' CPU per query (bench/README.md); for a slow or metered link only "
                        "[env VIGIL_PROMETHEUS_COMPRESSION, default none]")
    p.add_argument("--prometheus-allowed-urls", default=_env("VIGIL_PROMETHEUS_ALLOWED_URLS", ""),
                   help="comma-separated Prometheus base URLs a detector's spec.prometheus.url may name (a URL "
                        "also admits the paths below it; * admits any URL); --prometheus-url is always allowed; "
                        "default: only --prometheus-url [env VIGIL_PROMETHEUS_ALLOWED_URLS]")
    p.add_argument("--max-series", type=positive_int, default=_env("VIGIL_MAX_SERIES", "2000"),
                   help="most series one detector's query may return; more gives Ready=False/TooManySeries "
                        "[env VIGIL_MAX_SERIES] (default 2000)")
    p.add_argument("--max-response-bytes", type=positive_int,
                   default=_env("VIGIL_MAX_RESPONSE_BYTES", str(256 << 20)),
                   help="most bytes read of one Prometheus answer; more gives Ready=False/ResponseTooLarge "
                        "[env VIGIL_MAX_RESPONSE_BYTES] (default 268435456: 256 MiB)")
    p.add_argument("--min-interval", type=float, default=1.0,
                   help="smallest spec.interval accepted, in seconds (default 1)")
    p.add_argument("--heartbeat", type=float, default=1200.0,
                   help="seconds between status writes when only scores changed (default 1200: 3 writes per "
                        "quiet detector per hour; the shard's Lease shows its freshness every few seconds)")
    p.add_argument("--anomalous-heartbeat", type=float, default=300.0,
                   help="seconds between status writes of a detector whose verdict is anomalous (default 300; "
                        "at most --heartbeat): another shard's policy refuses to act on an anomalous status "
                        "older than 3 intervals plus this, so a dead shard's verdict is not acted on for long")
    p.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                   help="once every detector has been evaluated after start, move the surviving objects out of "
                        "the garbage collector's walk (gc.freeze), which shortens full collections (default on)")
    p.add_argument("--model-refresh", type=float, default=60.0,
                   help="seconds between re-reads of model ConfigMaps (default 60)")
    p.add_argument("--max-model-bytes", type=int, default=int(_env("VIGIL_MAX_MODEL_BYTES", "1048576") or 1 << 20),
                   help="largest custom model accepted, in bytes [env VIGIL_MAX_MODEL_BYTES] (default 1 MiB)")
    p.add_argument("--batch-limit", type=int, default=1000,
                   help="most detectors per evaluation batch (default 1000)")
    p.add_argument("--leader-election", action=argparse.BooleanOptionalAction,
                   default=(_env("VIGIL_LEADER_ELECTION", "true") or "true").lower() != "false",
                   help="hold a Lease so only one replica evaluates and acts (default on) [env VIGIL_LEADER_ELECTION]")
    p.add_argument("--leader-election-namespace",
                   default=_env("VIGIL_LEADER_ELECTION_NAMESPACE") or _env("POD_NAMESPACE") or "default",
                   help="namespace of the Lease [env VIGIL_LEADER_ELECTION_NAMESPACE, else POD_NAMESPACE, "
                        "else default]")
    p.add_argument("--leader-election-name", default=_env("VIGIL_LEADER_ELECTION_NAME", "vigil-leader"),
                   help="name of the Lease [env VIGIL_LEADER_ELECTION_NAME, default vigil-leader]")
    p.add_argument("--lease-duration", type=float, default=15.0,
                   help="seconds a standby waits after the leader's last renewal (default 15)")
    p.add_argument("--identity", default=_env("POD_NAME", ""), help="identity in the Lease [env POD_NAME, "
                   "default hostname]")
    p.add_argument("--shards", type=int, default=int(_env("VIGIL_SHARDS", "1") or 1),
                   help="split detectors and policies over this many shards by a consistent hash of namespace/name; "
                        "each shard has its own Lease (default 1: no hash sharding) [env VIGIL_SHARDS]")
    p.add_argument("--shard-index", default=_env("VIGIL_SHARD_INDEX", "auto"),
                   help="the shard this replica serves, 0..shards-1, or auto: the StatefulSet ordinal at the end "
                        "of --identity (POD_NAME) modulo --shards [env VIGIL_SHARD_INDEX, default auto]")
    p.add_argument("--selector", default=_env("VIGIL_SELECTOR", ""),
                   help="only handle AnomalyDetectors and RemediationPolicies whose labels match this label "
                        "selector (kubectl -l syntax); actions follow their policy; default: all "
                        "[env VIGIL_SELECTOR]")
    p.add_argument("--aws-endpoint-url", default=_env("VIGIL_AWS_ENDPOINT_URL"),
                   help="send AWS calls to this endpoint (moto, LocalStack); default: AWS "
                        "[env VIGIL_AWS_ENDPOINT_URL]")
    p.add_argument("--aws-max-attempts", type=int, default=3,
                   help="boto3 standard-retry attempts per AWS call (default 3)")
    p.add_argument("--alertmanager-token-file", default=_env("VIGIL_ALERTMANAGER_TOKEN_FILE"),
                   help="file with the bearer token POST /alertmanager requires (mount it from a Secret); "
                        "default: none, and the receiver is disabled (403) [env VIGIL_ALERTMANAGER_TOKEN_FILE]")
    p.add_argument("--alertmanager-allow-unauthenticated", action="store_true",
                   default=_flag("VIGIL_ALERTMANAGER_ALLOW_UNAUTHENTICATED"),
                   help="without --alertmanager-token-file, accept alerts on POST /alertmanager without "
                        "authentication (default: refuse them) [env VIGIL_ALERTMANAGER_ALLOW_UNAUTHENTICATED]")
    p.add_argument("--alertmanager-max-bytes", type=int,
                   default=int(_env("VIGIL_ALERTMANAGER_MAX_BYTES", str(16 << 20)) or 16 << 20),
                   help="memory budget of the received alerts, in bytes (estimated); beyond it the least "
                        "recently received are evicted [env VIGIL_ALERTMANAGER_MAX_BYTES] (default 16 MiB)")
    _add_remediation_flags(p)
    _add_guard_flags(p)


def _add_remediation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remediation-resync", type=float,
                   default=float(_env("VIGIL_REMEDIATION_RESYNC", "1") or 1),
                   help="most seconds between two passes of the remediation engine; passes also run on events "
                        "and when a decision is due (default 1) [env VIGIL_REMEDIATION_RESYNC]")
    p.add_argument("--command-poll-interval", type=float,
                   default=float(_env("VIGIL_COMMAND_POLL_INTERVAL", "5") or 5),
                   help="seconds between two polls of a runCommand's SSM invocations (GetCommandInvocation per "
                        "instance) while it runs (default 5) [env VIGIL_COMMAND_POLL_INTERVAL]")


def _add_guard_flags(p: argparse.ArgumentParser) -> None:
    """The cluster admin's limits on what a RemediationPolicy may ask for (docs/security.md, "Tenancy")."""
    g = p.add_argument_group("tenancy (what policies may ask for; set by the cluster admin)")
    g.add_argument("--guard-tag", default=_env("VIGIL_GUARD_TAG", "vigil.dev/managed=true"),
                   help="KEY=VALUE tag every AWS target must carry; a policy's targetGuard can only add one "
                        "(default vigil.dev/managed=true) [env VIGIL_GUARD_TAG]")
    g.add_argument("--namespace-tag-key", default=_env("VIGIL_NAMESPACE_TAG_KEY", "vigil.dev/namespace"),
                   help="every AWS target must carry this tag with the policy's namespace as value, so one "
                        "namespace's policy never acts on another's resources; empty: not required "
                        "(default vigil.dev/namespace) [env VIGIL_NAMESPACE_TAG_KEY]")
    g.add_argument("--allowed-role-arns", action="append", default=None, metavar="NAMESPACE=ARN[,ARN]",
                   help="role ARNs (fnmatch patterns) policies of NAMESPACE may assume; '*=' for all "
                        "namespaces; repeatable; default: none, no policy may set aws.roleArn "
                        "[env VIGIL_ALLOWED_ROLE_ARNS, ';'-separated]")
    g.add_argument("--ssm-documents", default=_env("VIGIL_SSM_DOCUMENTS", "AWS-RunShellScript"),
                   help="comma-separated SSM documents runCommand steps may use (default AWS-RunShellScript) "
                        "[env VIGIL_SSM_DOCUMENTS]")
    g.add_argument("--ssm-command-pattern", action="append", default=None, metavar="REGEX",
                   help="each runCommand command must fully match one of these; repeatable; default: any "
                        "[env VIGIL_SSM_COMMAND_PATTERNS, newline-separated]")
    g.add_argument("--ssm-max-timeout", type=int, default=int(_env("VIGIL_SSM_MAX_TIMEOUT", "3600") or 3600),
                   help="longest runCommand timeoutSeconds allowed (default 3600) [env VIGIL_SSM_MAX_TIMEOUT]")
    g.add_argument("--provenance-key-file", default=_env("VIGIL_PROVENANCE_KEY_FILE"),
                   help="file with the key that signs the actions the operator proposes (the chart generates "
                        "it); default: unsigned, see docs/security.md [env VIGIL_PROVENANCE_KEY_FILE]")


def admin_limits(args: argparse.Namespace) -> Any:
    """The :class:`~vigil.domain.remediation.tenancy.Tenancy` from the flags. Raises ValueError."""
    import re

    from vigil.domain.remediation import tenancy

    roles = args.allowed_role_arns
    if roles is None:
        roles = [r for r in (_env("VIGIL_ALLOWED_ROLE_ARNS") or "").split(";") if r.strip()]
    patterns = args.ssm_command_pattern
    if patterns is None:
        patterns = [p for p in (_env("VIGIL_SSM_COMMAND_PATTERNS") or "").split("\n") if p.strip()]
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"--ssm-command-pattern {pattern!r}: {exc}") from None
    if args.ssm_max_timeout < 1:
        raise ValueError("--ssm-max-timeout must be at least 1")
    return tenancy.Tenancy(
        guard_tag=tenancy.parse_tag(args.guard_tag),
        namespace_tag_key=args.namespace_tag_key.strip(),
        role_arns=tenancy.parse_role_arns(roles),
        ssm_documents=tuple(d.strip() for d in args.ssm_documents.split(",") if d.strip()),
        ssm_command_patterns=tuple(patterns),
        ssm_max_timeout=args.ssm_max_timeout,
    )


def _add_crds(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("crds", help="print or write the CustomResourceDefinitions")
    p.add_argument("-o", "--output", type=pathlib.Path,
                   help="write one file per CRD into this folder (default: print them to stdout)")


def _add_backtest(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("backtest", help="score CSV series offline, exactly as the operator would live",
                       description="Score timestamp,value CSV files causally with the operator's own feature "
                                   "and decision code.")
    p.add_argument("inputs", nargs="+", type=pathlib.Path, help="CSV files or folders of CSV files")
    p.add_argument("--model", type=pathlib.Path, help="ONNX model (default: the built-in model)")
    p.add_argument("--threshold", type=float, help="score threshold (default: the model's recommended one)")
    p.add_argument("--for", dest="for_points", type=int, default=0,
                   help="points a series must stay above the threshold before it is anomalous (default 0)")
    p.add_argument("--missing-data", choices=["ignore", "alert"], default="ignore",
                   help="missing data (gaps) as in the CRD: ignore keeps the verdict, alert makes the series "
                        "anomalous (default: ignore)")
    p.add_argument("--step", type=positive_duration,
                   help="grid step, more than 0s (e.g. 5m); default: the median spacing of each file")
    p.add_argument("--duplicates", choices=["error", "last", "first", "mean"], default="error",
                   help="what to do with repeated timestamps (default: error)")
    p.add_argument("--unordered", choices=["error", "sort"], default="error",
                   help="what to do when timestamps go backwards (default: error)")
    p.add_argument("-o", "--output", type=pathlib.Path, required=True,
                   help="output CSV (one input) or folder (several inputs); never an input file, nor a folder "
                        "holding one")
    p.add_argument("--plot", type=pathlib.Path,
                   help="PNG of series, scores and detections (needs [plot] extra); default: none")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true",
                          help="draw the progress bar even when stderr is not a terminal (default: only on a terminal)")
    progress.add_argument("--no-progress", action="store_true",
                          help="no progress bar (default: a bar on stderr when it is a terminal)")


def _add_decisions(sub: argparse._SubParsersAction[Parser]) -> None:
    for verb, text in (("approve", "approve a RemediationAction waiting for approval"),
                       ("reject", "reject a RemediationAction waiting for approval")):
        p = sub.add_parser(verb, help=text, description=f"{text.capitalize()}. Records who (--by, else the "
                           "kubeconfig user) in the vigil.dev/decided-by annotation.")
        p.add_argument("name", help="RemediationAction name (kubectl get ra)")
        p.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig's)")
        p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG)")
        p.add_argument("--by", default=None, help="who decides (default: the kubeconfig user)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="vigil", description="Vigil: AIOps auto-remediation operator.")
    p.add_argument("--version", action="version", version=f"vigil {__version__}",
                   help="print the version and exit (vigil version also describes the built-in model)")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_crds(sub)
    _add_backtest(sub)
    _add_decisions(sub)
    add_dashboard(sub)
    askcli.add_ask(sub)
    add_chatops(sub)
    sub.add_parser("version", help="print the version and the built-in model")
    return p


def shard_index(value: str, shards: int, identity: str) -> int:
    """``--shard-index``: a number, or ``auto`` (the pod ordinal modulo the shard count; 0 unsharded)."""
    if value.strip().lower() != "auto":
        if not value.strip().isdigit():
            raise ValueError(f"--shard-index must be a number or auto, not {value!r}")
        return int(value)
    if shards <= 1:
        return 0
    from vigil.domain import sharding

    return sharding.ordinal(identity) % shards


def _compression(value: str) -> Compression:
    """``--prometheus-compression`` (its env default is not checked by argparse's ``choices``)."""
    from vigil.adapters.prometheus import Compression

    try:
        return Compression(value.strip().lower())
    except ValueError:
        raise ValueError(f"--prometheus-compression must be none or gzip, not {value!r}") from None


def _run(args: argparse.Namespace) -> int:
    # Before importing kopf: it imports the kubernetes client, which reads KUBECONFIG at import time.
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(args.kubeconfig)

    import asyncio
    import logging
    import socket

    from vigil.adapters import kubeaccess
    from vigil.domain import sharding
    from vigil.domain.allowlist import AllowList

    identity = args.identity or socket.gethostname()
    try:
        allowed = AllowList.parse(args.prometheus_allowed_urls, args.prometheus_url)  # refuse a malformed entry
        admin = admin_limits(args)
        if not 0 < args.remediation_resync <= 3600:
            raise ValueError("--remediation-resync must be more than 0 and at most 3600 seconds")
        if not 0 < args.command_poll_interval <= 3600:
            raise ValueError("--command-poll-interval must be more than 0 and at most 3600 seconds")
        if not 0 < args.anomalous_heartbeat <= 86400 or not 0 < args.heartbeat <= 86400:
            raise ValueError("--heartbeat and --anomalous-heartbeat must be more than 0 and at most 86400 seconds")
        if args.provenance_key_file:
            try:
                key = pathlib.Path(args.provenance_key_file).read_bytes().strip()
            except OSError as exc:
                raise ValueError(f"--provenance-key-file: {exc.strerror}: {args.provenance_key_file}") from None
            if len(key) < 16:
                raise ValueError("--provenance-key-file: the key must be at least 16 bytes")
        index = shard_index(args.shard_index, args.shards, identity)
        sharding.Layout(index, args.shards, args.selector)  # refuse a bad layout before starting anything
        compression = _compression(args.prometheus_compression)
    except ValueError as exc:
        print(f"vigil run: {exc}", file=sys.stderr)
        return 2
    # Before kopf: it would retry a missing or unreachable API server forever, logging each attempt.
    try:
        access = kubeaccess.load(args.kubeconfig)
        kubeaccess.check_operator_api(access, args.startup_timeout)
    except kubeaccess.AccessError as exc:
        print(f"vigil run: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1

    import kopf

    from vigil.adapters import outagelog, redaction
    from vigil.handlers import build_registry
    from vigil.settings import OperatorConfig
    namespaces = tuple(args.namespace) or tuple(
        n.strip() for n in (_env("VIGIL_NAMESPACES") or "").split(",") if n.strip()
    )
    config = OperatorConfig(
        namespaces=namespaces,
        all_namespaces=not namespaces,
        prometheus_url=args.prometheus_url,
        prometheus_concurrency=args.prometheus_concurrency,
        prometheus_timeout=args.prometheus_timeout,
        prometheus_compression=compression,
        prometheus_allowed_urls=allowed.entries,
        max_series=args.max_series,
        max_response_bytes=args.max_response_bytes,
        min_interval=args.min_interval,
        heartbeat=args.heartbeat,
        anomalous_heartbeat=args.anomalous_heartbeat,
        gc_freeze=args.gc_freeze,
        model_refresh=args.model_refresh,
        max_model_bytes=args.max_model_bytes,
        batch_limit=args.batch_limit,
        http_host=args.http_host,
        http_port=args.http_port,
        log_format=args.log_format,
        log_level=args.log_level,
        leader_election=args.leader_election,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_name=args.leader_election_name,
        lease_duration=args.lease_duration,
        identity=identity,
        shards=args.shards,
        shard_index=index,
        shard_selector=args.selector,
        aws_endpoint_url=args.aws_endpoint_url,
        aws_max_attempts=args.aws_max_attempts,
        alertmanager_token_file=args.alertmanager_token_file,
        admin=admin,
        remediation_resync=args.remediation_resync,
        command_poll_interval=args.command_poll_interval,
        provenance_key_file=args.provenance_key_file,
        alertmanager_allow_unauthenticated=args.alertmanager_allow_unauthenticated,
        alertmanager_max_bytes=args.alertmanager_max_bytes,
    )
    kopf.configure(
        debug=args.log_level == "debug",
        quiet=args.log_level in ("warning", "error"),
        log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}[
            args.log_format
        ],
    )
    if args.log_level == "error":
        logging.getLogger().setLevel(logging.ERROR)
    if args.log_level != "debug":
        # kopf logs "Handler ... succeeded" for every watch event, i.e. for every status write: at
        # thousands of detectors that drowns everything else. Failures still log at WARNING.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Credentials never reach the log, whatever the level: botocore, urllib3 and the kubernetes client
    # log bodies and signed headers at DEBUG, so they stay at WARNING; every handler redacts on top.
    redaction.install()
    # An API outage later on: one line when it starts, one when it ends, not one per retry.
    outagelog.install(access.server, lambda: kubeaccess.answers(access))
    registry = build_registry(config)
    asyncio.run(kopf.operator(
        registry=registry,
        clusterwide=config.all_namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        memo=kopf.Memo(),
    ))
    return 0


def _crds(args: argparse.Namespace) -> int:
    from vigil.api import crdgen

    if args.output:
        for path in crdgen.write(args.output):
            print(path)
    else:
        sys.stdout.write(crdgen.render_all())
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"vigil {__version__}")
    try:
        from vigil.adapters import inference

        data = inference.builtin_bytes()
        scorer = inference.Scorer(data)
        print(f"built-in model: {scorer.info.name} sha256:{scorer.info.sha256} "
              f"input {scorer.info.input_signature} features {scorer.info.feature_version}")
    except Exception as exc:
        print(f"built-in model: unavailable ({exc})")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:  # subcommands that name their own entry point
        return int(args.handler(args))
    if args.command == "run":
        return _run(args)
    if args.command == "crds":
        return _crds(args)
    if args.command in ("approve", "reject"):
        from vigil import decisions

        return decisions.main(args)
    if args.command == "dashboard":
        from vigil.dashboard import command

        return command.main(args)
    if args.command == "ask":
        return askcli.main(args)
    if args.command == "backtest":
        from vigil import backtest

        return backtest.main(args)
    return _version(args)


if __name__ == "__main__":
    sys.exit(main())
