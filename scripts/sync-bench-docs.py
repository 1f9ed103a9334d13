#!/usr/bin/env python3
"""Copy the benchmark tables from docs/bench/*.md into the README and docs/security.md, between markers.

The benchmarks write their measured figures to docs/bench/; the README and docs/security.md
quote them between ``<!-- begin docs/bench/NAME.md -->`` and ``<!-- end docs/bench/NAME.md -->``
so no figure there is ever typed in. tests/api/test_readme.py fails when
the two drift apart; run ``make docs`` (or this script with ``--write``) to sync.

    python scripts/sync-bench-docs.py [--write]    exit 1 = a document out of date
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/security.md")
BLOCK = re.compile(r"(<!-- begin (docs/bench/[\w.-]+\.md) -->\n)(.*?)(<!-- end \2 -->)", re.S)


def body(path: pathlib.Path) -> str:
    """The file without its leading '# Title' line (the README section has its own heading)."""
    text = path.read_text()
    if text.startswith("# "):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return text.strip("\n") + "\n"


def synced(readme: str, root: pathlib.Path = ROOT) -> str:
    def replace(match: re.Match[str]) -> str:
        source = root / match.group(2)
        content = body(source) if source.exists() else f"_{match.group(2)} has not been generated yet._\n"
        return match.group(1) + content + match.group(4)

    return BLOCK.sub(replace, readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the documents in place")
    args = parser.parse_args()
    stale = 0
    for name in DOCUMENTS:
        path = ROOT / name
        current = path.read_text()
        wanted = synced(current)
        if args.write:
            if wanted != current:
                path.write_text(wanted)
        elif wanted != current:
            print(f"{name} benchmark blocks differ from docs/bench/; run: make docs", file=sys.stderr)
            stale = 1
    return stale


if __name__ == "__main__":
    raise SystemExit(main())
