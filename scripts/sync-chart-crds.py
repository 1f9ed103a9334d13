#!/usr/bin/env python3
"""Regenerate the Helm chart's CRDs (charts/vigil/crds/) from the pydantic models.

The chart ships the very same files as the top-level crds/ (which ``vigil crds
-o crds`` writes): both come from ``vigil.api.crdgen.write()``. Only the chart's
folder is written here. ``--check`` writes nothing and fails (exit 1) when the
chart's folder is out of date, for CI; tests/chart/test_crds.py checks the
chart's copies byte for byte against crds/.

Usage: python scripts/sync-chart-crds.py [--check]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART_CRDS = ROOT / "charts" / "vigil" / "crds"


def _differences(generated: pathlib.Path, target: pathlib.Path) -> list[str]:
    wanted = {p.name: p.read_bytes() for p in generated.glob("*.yaml")}
    present = {p.name: p.read_bytes() for p in target.glob("*.yaml")} if target.is_dir() else {}
    problems = [f"{target / name}: missing" for name in sorted(wanted.keys() - present.keys())]
    problems += [f"{target / name}: not generated (stale?)" for name in sorted(present.keys() - wanted.keys())]
    problems += [f"{target / name}: differs" for name in sorted(wanted.keys() & present.keys())
                 if wanted[name] != present[name]]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a chart CRD is out of date; write nothing")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "operator"))
    from vigil.api import crdgen

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generated = pathlib.Path(tmp)
            crdgen.write(generated)
            problems = _differences(generated, CHART_CRDS)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python scripts/sync-chart-crds.py", file=sys.stderr)
        return 1 if problems else 0
    for stale in CHART_CRDS.glob("*.yaml") if CHART_CRDS.is_dir() else ():
        stale.unlink()
    for path in crdgen.write(CHART_CRDS):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
