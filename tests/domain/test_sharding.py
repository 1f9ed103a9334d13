"""Shard assignment: balanced, stable, minimal movement when the shard count changes; selectors as kubectl."""

from __future__ import annotations

import collections

import pytest

from vigil.cli import shard_index
from vigil.domain import selectors
from vigil.domain.sharding import Layout, ordinal, parse_selector, selector_digest, shard_of

NAMES = [("team-" + str(i % 7), f"detector-{i}") for i in range(6000)]


def test_every_object_has_exactly_one_shard_and_the_shards_are_balanced() -> None:
    counts = collections.Counter(shard_of(ns, name, 4) for ns, name in NAMES)
    assert set(counts) == {0, 1, 2, 3}
    # 1500 expected per shard; a binomial standard deviation is ~34, so 10% is far outside chance.
    assert all(abs(n - 1500) < 150 for n in counts.values()), counts
    for ns, name in NAMES[:200]:
        owners = [i for i in range(4) if Layout(i, 4).owns(ns, name, {})]
        assert owners == [shard_of(ns, name, 4)]


def test_assignment_is_a_pure_function_of_the_key() -> None:
    assert [shard_of(ns, n, 5) for ns, n in NAMES[:100]] == [shard_of(ns, n, 5) for ns, n in NAMES[:100]]
    assert shard_of("a", "b-c", 8) == shard_of("a", "b-c", 8)
    assert shard_of("ns", "anything", 1) == 0


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_adding_a_shard_moves_only_what_the_new_shard_takes(k: int) -> None:
    before = {key: shard_of(*key, k) for key in NAMES}
    after = {key: shard_of(*key, k + 1) for key in NAMES}
    moved = [key for key in NAMES if before[key] != after[key]]
    assert all(after[key] == k for key in moved), "objects moved between old shards"
    share = len(moved) / len(NAMES)
    assert abs(share - 1 / (k + 1)) < 0.05, share  # about 1/(k+1), the minimum possible


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("team=a", {"team": "a"}, True),
    ("team==a", {"team": "b"}, False),
    ("team!=a", {}, True),
    ("team!=a", {"team": "a"}, False),
    ("env in (prod, staging),tier", {"env": "prod", "tier": "x"}, True),
    ("env in (prod, staging),tier", {"env": "prod"}, False),
    ("env notin (dev)", {"env": "prod"}, True),
    ("!canary", {"canary": "true"}, False),
    ("!canary", {}, True),
    ("", {"any": "thing"}, True),
])
def test_selector_syntax_is_kubectls(text: str, labels: dict[str, str], expected: bool) -> None:
    assert selectors.matches(parse_selector(text), labels) is expected
    assert Layout(0, 1, text).owns("ns", "name", labels) is expected


@pytest.mark.parametrize("text", ["team=a=b", "env in ()", "!env in (a)", "team=a,team=b", "a b"])
def test_unreadable_selectors_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(text)


def test_selector_and_hash_combine() -> None:
    layout = Layout(1, 2, "team=a")
    assert not layout.owns("ns", "x", {"team": "b"})
    owned = [n for _, n in NAMES[:100] if layout.owns("ns", n, {"team": "a"})]
    assert owned == [n for _, n in NAMES[:100] if shard_of("ns", n, 2) == 1]


def test_lease_names() -> None:
    assert Layout().lease_name("vigil-leader") == "vigil-leader"  # unsharded: the single HA Lease, as before
    assert Layout(1, 3).lease_name("vigil-leader") == "vigil-leader-shard-1-of-3"
    digest = selector_digest("team=a")
    assert len(digest) == 8 and Layout(0, 1, "team=a").lease_name("l") == f"l-sel-{digest}"
    assert Layout(2, 4, "team=a").lease_name("l") == f"l-sel-{digest}-shard-2-of-4"


def test_bad_layouts_are_refused() -> None:
    for index, count in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError):
            Layout(index, count)


def test_auto_index_is_the_pod_ordinal_modulo_the_shards() -> None:
    assert ordinal("vigil-12") == 12
    assert shard_index("auto", 3, "vigil-4") == 1
    assert shard_index("auto", 1, "not-a-statefulset-pod") == 0
    assert shard_index("2", 3, "whatever") == 2
    with pytest.raises(ValueError, match="StatefulSet"):
        shard_index("auto", 3, "vigil-7d9f8c-abcde")
