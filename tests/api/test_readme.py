"""The README stays true: every `vigil run` flag is documented, and its model figures are the card's."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
import re
from typing import Any

import pytest

from vigil import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_run_flag_is_documented() -> None:
    run = next(action for action in cli.parser()._subparsers._group_actions  # type: ignore[union-attr]
               if hasattr(action, "choices")).choices["run"]
    flags = {opt for action in run._actions for opt in action.option_strings if opt.startswith("--")}
    flags.discard("--help")
    missing = sorted(f for f in flags if f not in README)
    assert not missing, f"README does not document: {missing}"


def test_model_figures_come_from_the_card() -> None:
    section = README.split("## The built-in model", 1)[1].split("\n## ", 1)[0]
    card = (ROOT / "operator/vigil/models/default.card.md").read_text()
    figures = re.findall(r"\b\d+\.\d+\b", section)
    assert len(figures) >= 6
    for figure in figures:
        assert figure in card, f"README figure {figure} is not in the model card"


def test_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_benchmark_figures_are_the_generated_ones() -> None:
    """README and docs/security.md quote docs/bench/*.md verbatim between markers (scripts/sync-bench-docs.py)."""
    spec = importlib.util.spec_from_file_location("sync_bench_docs", ROOT / "scripts/sync-bench-docs.py")
    assert spec and spec.loader
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    blocks = sync.BLOCK.findall(README)
    assert blocks, "the README quotes no benchmark"
    assert sync.synced(README) == README, "README benchmark blocks are stale: run `make docs`"
    for name in sync.DOCUMENTS:  # docs/security.md quotes the hostile-model benchmark the same way
        text = (ROOT / name).read_text()
        assert sync.synced(text) == text, f"{name} benchmark blocks are stale: run `make docs`"


def _tested_against() -> Any:
    spec = importlib.util.spec_from_file_location("tested_against", ROOT / "scripts/tested-against.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # runs `prometheus --version`: the binary the slow tests need
def test_the_tested_against_table_is_the_pinned_versions() -> None:
    """README's "Tested against" table is what scripts/tested-against.py generates from kube-bins.sh,
    the Prometheus on PATH and the installed moto and helm-python-sdk: run `make docs` when it fails."""
    script = _tested_against()
    assert script.synced(README) == README, "README's tested-against table is stale: run `make docs`"
    section = script.BLOCK.search(README).group(2)
    for pinned in (script.kube_bins_default("KUBE_VERSION"), script.kube_bins_default("ETCD_VERSION"),
                   importlib.metadata.version("moto"), importlib.metadata.version("helm-python-sdk")):
        assert f" {pinned}" in section


def test_the_tested_against_versions_are_read_from_kube_bins(tmp_path: pathlib.Path) -> None:
    script = _tested_against()
    text = (ROOT / "scripts/kube-bins.sh").read_text()
    bumped = tmp_path / "kube-bins.sh"
    bumped.write_text(re.sub(r'(KUBE_VERSION="\$\{VIGIL_KUBE_VERSION:-)[^}]+', r"\g<1>v1.99.0", text))
    assert script.kube_bins_default("KUBE_VERSION", bumped) == "v1.99.0"
    assert script.kube_bins_default("KUBE_VERSION") != "v1.99.0"
    stale = script.synced(README, "| peer | version | pinned by |\n|---|---|---|\n| Kubernetes | v1.99.0 | x |\n")
    assert stale != README and "v1.99.0" in stale
