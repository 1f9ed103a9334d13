"""Which replica owns which object: consistent-hash shards and label-selector groups.

One replica's scheduler carries thousands of detectors; past that, objects are
split over *shards*. Each shard has its own Lease, so several replicas can
serve one shard (HA) while exactly one of them, the holder, evaluates and acts.

Assignment is a pure function of the object and the layout, never of what
other replicas are doing, so every replica computes the same owner for every
object without talking to the others:

* **consistent hash** of ``namespace/name`` (rendezvous, "highest random
  weight"): going from K to K+1 shards moves only the objects the new shard
  wins, about 1/(K+1) of them, and none between the old shards;
* **label selector**: a replica group only handles objects whose labels match
  (``kubectl -l`` syntax), for splitting by team, tenant or criticality.

Both can be combined (a selector group, hashed over K shards). A
RemediationAction follows its policy's shard, so the replica that decided an
action is the one that drives it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping

from vigil.api.v1alpha1.policy import LabelSelector, LabelSelectorOperator, LabelSelectorRequirement
from vigil.domain import selectors


def _weight(shard: int, key: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard in [0, shards) that owns ``namespace/name`` (rendezvous hashing)."""
    if shards <= 1:
        return 0
    key = f"{namespace}/{name}"
    return max(range(shards), key=lambda shard: _weight(shard, key))


_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQUALITY = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


def _split(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_selector(text: str) -> LabelSelector:
    """A ``kubectl -l`` label selector (``a=b,c!=d,e in (f,g),h,!i``) as a LabelSelector.

    Raises ValueError on anything else: a typo must stop the replica, not widen its share.
    """
    labels: dict[str, str] = {}
    expressions: list[LabelSelectorRequirement] = []
    for part in _split(text):
        equality = _EQUALITY.match(part)
        if equality:
            key, op, value = equality.groups()
            if op == "!=":
                expressions.append(LabelSelectorRequirement(
                    key=key, operator=LabelSelectorOperator.NOT_IN, values=[value]))
            elif key in labels and labels[key] != value:
                raise ValueError(f"selector {text!r}: {key} must equal two different values")
            else:
                labels[key] = value
            continue
        found = _SET.match(part)
        if not found:
            raise ValueError(f"selector {text!r}: cannot read {part.strip()!r}")
        negated, key, op, values = found.groups()
        if op is not None:
            if negated:
                raise ValueError(f"selector {text!r}: '!' only goes before a bare key")
            listed = [v.strip() for v in values.split(",") if v.strip()]
            if not listed:
                raise ValueError(f"selector {text!r}: {key} {op} () needs values")
            operator = LabelSelectorOperator.IN if op == "in" else LabelSelectorOperator.NOT_IN
            expressions.append(LabelSelectorRequirement(key=key, operator=operator, values=listed))
        else:
            operator = LabelSelectorOperator.DOES_NOT_EXIST if negated else LabelSelectorOperator.EXISTS
            expressions.append(LabelSelectorRequirement(key=key, operator=operator))
    return LabelSelector(match_labels=labels, match_expressions=expressions)


def ordinal(pod_name: str) -> int:
    """The StatefulSet ordinal at the end of a pod name (``vigil-3`` -> 3)."""
    found = re.search(r"-(\d+)$", pod_name)
    if not found:
        raise ValueError(f"cannot take a shard index from {pod_name!r}: not a StatefulSet pod name (<name>-<n>)")
    return int(found.group(1))


@dataclasses.dataclass(frozen=True)
class Layout:
    """This replica's share: shard ``index`` of ``count``, within the objects ``selector`` matches."""

    index: int = 0
    count: int = 1
    selector: str = ""
    _parsed: LabelSelector | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shards must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in [0, {self.count})")
        object.__setattr__(self, "_parsed", parse_selector(self.selector) if self.selector.strip() else None)

    @property
    def sharded(self) -> bool:
        return self.count > 1 or bool(self.selector.strip())

    def owns(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        """Whether this replica's shard owns the object (a detector or a policy)."""
        if self._parsed is not None and not selectors.matches(self._parsed, labels):
            return False
        return shard_of(namespace, name, self.count) == self.index

    def lease_group(self, base: str) -> str:
        """The name shared by every Lease of this replica group (a selector group gets its own)."""
        return base + ("-sel-" + selector_digest(self.selector) if self.selector.strip() else "")

    def lease_name(self, base: str) -> str:
        """The Lease this shard's replicas compete for.

        Unsharded it is ``base`` itself (the single active/passive Lease). The shard count is part of
        the name, so replicas of two different layouts never take each other's Lease; a selector group
        gets a suffix from a digest of its selector, so groups never share one either.
        """
        group = self.lease_group(base)
        return f"{group}-shard-{self.index}-of-{self.count}" if self.count > 1 else group

    def describe(self) -> str:
        parts = [f"shard {self.index} of {self.count}"] if self.count > 1 else []
        if self.selector.strip():
            parts.append(f"objects matching {self.selector!r}")
        return ", ".join(parts) or "all objects"


def layout_of(lease: str, group: str) -> int | None:
    """The shard count of the layout a Lease of ``group`` belongs to (1: unsharded), or None if not of it."""
    if lease == group:
        return 1
    found = re.fullmatch(re.escape(group) + r"-shard-(\d+)-of-(\d+)", lease)
    return int(found.group(2)) if found else None


def selector_digest(selector: str) -> str:
    """8 hex digits naming a selector group (the chart computes the same with ``sha256sum | trunc 8``)."""
    return hashlib.sha256(selector.encode()).hexdigest()[:8]
