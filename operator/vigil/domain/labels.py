"""Bound the series labels the operator shows: in status, in Events and on /metrics.

Labels come from whatever the query returns, and Prometheus sets no limit on them: one series
with a 1 MB label value would otherwise be copied into the detector's status (and every watcher's
cache) and into a /metrics label (issue 11, item 6). The bounded form keeps every short label as
it is; a long value (or name) is cut and ends with a marker holding a digest of the whole, and
labels past :data:`MAX_LABELS` are folded into one marker label, so two series that differ only
past the cut still show as two series.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

#: Longest label value shown (Kubernetes object names are at most 253; most values are far shorter).
MAX_VALUE = 128
#: Longest label name shown (Prometheus names are identifiers; real ones are short).
MAX_NAME = 64
#: Most labels shown per series; the rest become one ``…`` label.
MAX_LABELS = 24
#: The name of the label that stands for the ones left out.
MORE = "…"
_DIGEST = 10  # hex digits of SHA-256 in a marker: collisions between real series are negligible


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST]


def clip(text: str, limit: int) -> str:
    """``text`` if it fits, else its head, ``…`` and a digest of the whole, exactly ``limit`` long."""
    if len(text) <= limit:
        return text
    marker = "…" + _digest(text)
    return text[: max(0, limit - len(marker))] + marker


def bounded(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels as shown: names and values clipped, at most :data:`MAX_LABELS` of them."""
    names = sorted(labels)
    if len(names) <= MAX_LABELS and all(len(n) <= MAX_NAME and len(labels[n]) <= MAX_VALUE for n in names):
        return {name: labels[name] for name in names}  # the common case, with no call per label (issue 16)
    kept = names if len(names) <= MAX_LABELS else names[: MAX_LABELS - 1]
    out = {clip(name, MAX_NAME): clip(labels[name], MAX_VALUE) for name in kept}
    dropped = names[len(kept):]
    if dropped:
        rest = "\n".join(f"{name}={labels[name]}" for name in dropped)
        out[MORE] = f"+{len(dropped)} labels #{_digest(rest)}"
    return out
