#!/usr/bin/env python3
"""Write the README's "Tested against" table from the versions the tests actually run.

Each version is read where it is pinned or installed, never typed in: Kubernetes (kube-apiserver,
kubectl) and etcd from the defaults in scripts/kube-bins.sh, Prometheus from ``prometheus --version``
(the binary on PATH that the tests start), moto and helm-python-sdk from the installed distributions
(requirements/dev.lock), and the Helm release helm-python-sdk embeds from the library itself. The
table sits in the README between ``<!-- begin tested-against -->`` and ``<!-- end tested-against -->``;
tests/api/test_readme.py fails when it is stale. Run ``make docs`` (or this script with ``--write``).

    python scripts/tested-against.py [--write]    exit 1 = the README's table is out of date
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KUBE_BINS = ROOT / "scripts" / "kube-bins.sh"
BLOCK = re.compile(r"(<!-- begin tested-against -->\n)(.*?)(<!-- end tested-against -->)", re.S)


def kube_bins_default(variable: str, script: pathlib.Path = KUBE_BINS) -> str:
    """The default of ``NAME="${VIGIL_...:-vX.Y.Z}"`` in scripts/kube-bins.sh."""
    match = re.search(rf'^{variable}="\$\{{\w+:-([^}}]+)\}}"', script.read_text(), re.M)
    if match is None:
        raise SystemExit(f"{variable} has no default in {script}")
    return match.group(1)


def prometheus_version() -> str:
    out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=True, timeout=30)
    match = re.search(r"prometheus, version (\S+)", out.stdout + out.stderr)
    if match is None:
        raise SystemExit(f"cannot read the version from `prometheus --version`: {out.stdout!r}")
    return match.group(1)


def helm_version() -> str:
    import helm_python

    return str(helm_python.helm_sdk_version())


def table() -> str:
    sdk = importlib.metadata.version("helm-python-sdk")
    rows = [
        ("Kubernetes (kube-apiserver, kubectl)", kube_bins_default("KUBE_VERSION"),
         "`scripts/kube-bins.sh`; `tests/realkube.py` runs it"),
        ("etcd", kube_bins_default("ETCD_VERSION"), "`scripts/kube-bins.sh`"),
        ("Prometheus", prometheus_version(), "Debian package `prometheus` (`make bootstrap`)"),
        ("moto (AWS)", importlib.metadata.version("moto"), "`requirements/dev.lock`"),
        ("Helm", f"{helm_version()} (helm-python-sdk {sdk})", "`requirements/dev.lock`"),
    ]
    lines = ["| peer | version | pinned by |", "|---|---|---|"]
    lines += [f"| {name} | {version} | {source} |" for name, version, source in rows]
    return "\n".join(lines) + "\n"


def synced(readme: str, generated: str | None = None) -> str:
    if not BLOCK.search(readme):
        raise SystemExit("README.md has no <!-- begin tested-against --> ... <!-- end tested-against --> block")
    content = generated if generated is not None else table()
    return BLOCK.sub(lambda match: match.group(1) + content + match.group(3), readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md in place")
    args = parser.parse_args()
    current = README.read_text()
    wanted = synced(current)
    if wanted == current:
        return 0
    if args.write:
        README.write_text(wanted)
        return 0
    print("README.md's tested-against table differs from the pinned versions; run: make docs", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
