"""The per-detector gauges, rendered at scrape time from one row per detector.

``prometheus_client`` keeps a child object, a value object and a lock per label set: ten label sets per
detector made 300,000 Python objects at 10,000 detectors, all of which the garbage collector walked at
every full collection (the event loop stands still meanwhile; see ``vigil_gc_pause_seconds``). Here each
detector is one immutable row of plain values, which CPython stops tracking once it has seen it, and the
families are built only when somebody scrapes (the custom-collector pattern of kube-state-metrics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vigil.domain import labels

DetectorId = tuple[str, str]  # (namespace, name)

#: Longest ``series`` label on ``vigil_detector_score``. The engine already bounds each series' labels
#: (:mod:`vigil.domain.labels`: 24 labels of at most 64 + 128 characters); this is the last guard.
MAX_SERIES_LABEL = 8192

SCORE = "vigil_detector_score"
MAX_SCORE = "vigil_detector_max_score"
ANOMALOUS = "vigil_detector_anomalous"
READY = "vigil_detector_ready"
SERIES = "vigil_detector_series"
LAST_EVALUATION = "vigil_detector_last_evaluation_timestamp_seconds"

_HELP = {
    SCORE: "Latest anomaly score (0..1) of a series, for the top-K series of each detector.",
    MAX_SCORE: "Maximum score over a detector's series.",
    ANOMALOUS: "1 if any series of the detector is anomalous (after 'for').",
    READY: "1 if the detector's Ready condition is True.",
    SERIES: "Series the detector's query returned at the last evaluation.",
    LAST_EVALUATION: "When the detector was last evaluated successfully (Unix time).",
}


class Row(NamedTuple):
    """One detector's exported values; None: not exported (never set, or not known yet)."""

    ready: float | None = None
    anomalous: float | None = None
    last_evaluation: float | None = None
    series: float | None = None
    max_score: float | None = None
    scores: tuple[tuple[str, float], ...] = ()


class DetectorGauges(Collector):
    """Every per-detector gauge of the operator, one :class:`Row` per detector."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._rows: dict[DetectorId, tuple[object, ...]] = {}
        if registry is not None:
            registry.register(self)

    def update(self, detector: DetectorId, *, ready: float | None = None, anomalous: float | None = None,
               last_evaluation: float | None = None, series: float | None = None,
               max_score: float | None = None) -> None:
        """Set the given values of one detector; the others keep what they had."""
        row = self.row(detector) or Row()
        self._store(detector, Row(
            ready=row.ready if ready is None else float(ready),
            anomalous=row.anomalous if anomalous is None else float(anomalous),
            last_evaluation=row.last_evaluation if last_evaluation is None else float(last_evaluation),
            series=row.series if series is None else float(series),
            max_score=row.max_score if max_score is None else float(max_score),
            scores=row.scores,
        ))

    def publish_scores(self, detector: DetectorId, scores: list[tuple[str, float]]) -> None:
        """Replace the per-series scores of one detector (the engine passes its top-K)."""
        row = self.row(detector) or Row()
        self._store(detector, row._replace(
            scores=tuple((labels.clip(raw, MAX_SERIES_LABEL), float(score)) for raw, score in scores)))

    def forget(self, detector: DetectorId) -> None:
        """Drop every value of a deleted (or no longer owned) detector."""
        self._rows.pop(detector, None)

    def row(self, detector: DetectorId) -> Row | None:
        stored = self._rows.get(detector)
        return None if stored is None else Row._make(stored)

    def _store(self, detector: DetectorId, row: Row) -> None:
        # A plain tuple, not the NamedTuple: CPython stops tracking only exact tuples of untracked values.
        self._rows[detector] = tuple(row)

    def __len__(self) -> int:
        return len(self._rows)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families' names without their samples: ``restricted_registry`` (``/metrics?name[]=``) picks
        collectors by these, and registering does not render every detector."""
        for name, text in _HELP.items():
            yield GaugeMetricFamily(name, text, labels=_labels(name))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(name, text, labels=_labels(name)) for name, text in _HELP.items()}
        for (namespace, name), stored in list(self._rows.items()):
            row = Row._make(stored)
            for family, value in ((READY, row.ready), (ANOMALOUS, row.anomalous),
                                  (LAST_EVALUATION, row.last_evaluation), (SERIES, row.series),
                                  (MAX_SCORE, row.max_score)):
                if value is not None:
                    families[family].add_metric([namespace, name], value)
            for series, score in row.scores:
                families[SCORE].add_metric([namespace, name, series], score)
        yield from families.values()


def _labels(name: str) -> list[str]:
    return ["namespace", "detector", "series"] if name == SCORE else ["namespace", "detector"]
