"""Refresh requirements/dev.lock and requirements/runtime.lock from pyproject.toml (`make lock`).

Why: pyproject.toml gives lower bounds only, so two machines installing on different days got
different sets (moto 5.2.6 broke a test that way). The locks pin the set that was tested:
scripts/bootstrap.sh installs the dev lock, the Dockerfile the runtime lock.

- dev.lock: every extra (`[dev]` pulls in sandbox, train, plot), for CPython 3.11 on x86_64 Linux.
- runtime.lock: `project.dependencies` only, compiled with dev.lock as a constraint, so the image
  runs exactly the versions the tests ran.

uv keeps the versions already in an existing output file, so a plain `make lock` after adding a
dependency changes only what it must; `make lock UPGRADE=1` (``--upgrade``) moves everything to the
newest allowed. Extra arguments go to uv's dev compile (e.g. ``--upgrade-package moto``).

Each lock starts with a digest of pyproject.toml's dependency tables; tests/deps/test_lock.py
recomputes it, so an edit of those tables without `make lock` fails the tests.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import tomllib
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
#: The build backends pip fetches into its isolated build environments (pyproject.toml's and
#: sandbox/pyproject.toml's `build-system.requires`): without a pin they are whatever is newest that day.
BUILD_LOCK = ROOT / "requirements" / "build.lock"
SANDBOX_PYPROJECT = ROOT / "sandbox" / "pyproject.toml"
#: The target the locks are resolved for: CI's and the image's interpreter and platform.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-unknown-linux-gnu"
DIGEST_PREFIX = "# pyproject.toml dependency tables sha256: "


def dependency_tables(pyproject: dict[str, Any]) -> dict[str, Any]:
    """What the locks are resolved from; other edits of pyproject.toml do not need `make lock`."""
    project = pyproject["project"]
    return {
        "build-system.requires": pyproject.get("build-system", {}).get("requires", []),
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }


def digest(pyproject_text: str) -> str:
    """sha256 of the dependency tables, canonical JSON: comments and formatting do not count."""
    tables = dependency_tables(tomllib.loads(pyproject_text))
    canonical = json.dumps(tables, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_digest(lock_text: str) -> str | None:
    for line in lock_text.splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX):].split()[0]
    return None


def _uv() -> str:
    """uv from the venv (it is a dev dependency, so the lock pins it too), else from PATH."""
    beside = pathlib.Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        raise SystemExit("uv not found: run `make bootstrap` (uv is in the [dev] extra), or `pip install uv`")
    return found


def build_requirements() -> list[str]:
    """Every `build-system.requires` of the repository's two distributions."""
    found: list[str] = []
    for path in (PYPROJECT, SANDBOX_PYPROJECT):
        for requirement in tomllib.loads(path.read_text()).get("build-system", {}).get("requires", []):
            if requirement not in found:
                found.append(requirement)
    return found


def compile_lock(output: pathlib.Path, *args: str, source: str = "pyproject.toml") -> None:
    command = [
        _uv(), "pip", "compile", source, "--quiet",
        "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM,
        # Debian's CA store: where PyPI is reached through a TLS-intercepting proxy, its CA is there.
        "--native-tls",
        "--custom-compile-command", "make lock",
        "--output-file", str(output.relative_to(ROOT)), *args,
    ]
    subprocess.run(command, cwd=ROOT, check=True)
    stamp = f"{DIGEST_PREFIX}{digest(PYPROJECT.read_text())}  (tests/deps/test_lock.py checks it)\n"
    text = output.read_text()
    output.write_text(stamp + "".join(line for line in text.splitlines(keepends=True)
                                      if not line.startswith(DIGEST_PREFIX)))


def main(argv: list[str]) -> int:
    DEV_LOCK.parent.mkdir(exist_ok=True)
    compile_lock(DEV_LOCK, "--extra", "dev", *argv)
    # --upgrade would let the runtime set drift from dev.lock's; the constraint keeps them equal.
    runtime_args = [a for a in argv if a == "--quiet"]
    compile_lock(RUNTIME_LOCK, "--constraint", str(DEV_LOCK.relative_to(ROOT)), *runtime_args)
    # The build backends, for pip's --build-constraint (scripts/bootstrap.sh); uv keeps the pinned versions.
    source = BUILD_LOCK.with_suffix(".in")
    source.write_text("".join(f"{r}\n" for r in build_requirements()))
    try:
        compile_lock(BUILD_LOCK, *argv, source=str(source.relative_to(ROOT)))
    finally:
        source.unlink()
    print(f"wrote {DEV_LOCK.relative_to(ROOT)}, {RUNTIME_LOCK.relative_to(ROOT)} and {BUILD_LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
