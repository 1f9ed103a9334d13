"""The per-detector gauges: one immutable row per detector, rendered at scrape time."""

from __future__ import annotations

import gc

from prometheus_client.parser import text_string_to_metric_families

from vigil.adapters.detector_gauges import MAX_SERIES_LABEL
from vigil.adapters.metrics import OperatorMetrics


def _samples(metrics: OperatorMetrics, names: tuple[str, ...] = ()) -> dict[str, dict[tuple[str, ...], float]]:
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(metrics.exposition(names).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value  # type: ignore[index]
    return out


def test_values_partial_updates_and_forget() -> None:
    metrics = OperatorMetrics()
    gauges = metrics.detector_gauges
    gauges.update(("team", "cpu"), ready=1, anomalous=0, last_evaluation=1700000000.5, series=5, max_score=0.25)
    metrics.publish_scores(("team", "cpu"), [('{pod="a"}', 0.25), ('{pod="b"}', 0.125)])
    gauges.update(("team", "cpu"), ready=0)  # a source failure: only Ready moves
    got = _samples(metrics)
    key = (("detector", "cpu"), ("namespace", "team"))
    assert got["vigil_detector_ready"][key] == 0
    assert got["vigil_detector_anomalous"][key] == 0
    assert got["vigil_detector_series"][key] == 5
    assert got["vigil_detector_max_score"][key] == 0.25
    assert got["vigil_detector_last_evaluation_timestamp_seconds"][key] == 1700000000.5
    assert sorted(dict(k)["series"] for k in got["vigil_detector_score"]) == ['{pod="a"}', '{pod="b"}']

    metrics.publish_scores(("team", "cpu"), [('{pod="b"}', 0.5)])  # a series that left the top-K is gone
    assert [dict(k)["series"] for k in _samples(metrics)["vigil_detector_score"]] == ['{pod="b"}']

    metrics.forget(("team", "cpu"))
    after = _samples(metrics)
    assert not any(name.startswith("vigil_detector_") and name != "vigil_detectors_unevaluated" and values
                   for name, values in after.items() if name != "vigil_detectors")


def test_a_value_never_set_is_not_exported() -> None:
    metrics = OperatorMetrics()
    metrics.detector_gauges.update(("team", "cpu"), ready=1)
    got = _samples(metrics)
    assert got.get("vigil_detector_ready") and not got.get("vigil_detector_max_score")


def test_name_filter_renders_only_the_named_family() -> None:
    metrics = OperatorMetrics()
    metrics.detector_gauges.update(("team", "cpu"), ready=1, anomalous=1)
    got = _samples(metrics, ("vigil_detector_anomalous",))
    assert set(got) == {"vigil_detector_anomalous"}


def test_a_huge_series_label_is_clipped() -> None:
    metrics = OperatorMetrics()
    metrics.publish_scores(("team", "cpu"), [("x" * (3 * MAX_SERIES_LABEL), 0.5)])
    (labels,) = _samples(metrics)["vigil_detector_score"]
    assert len(dict(labels)["series"]) <= MAX_SERIES_LABEL


def test_rows_leave_the_garbage_collectors_walk() -> None:
    """The point of the module: 10 label sets per detector no longer cost the collector 30 objects."""
    metrics = OperatorMetrics()
    for i in range(200):
        metrics.detector_gauges.update(("team", f"d{i}"), ready=1, anomalous=0, last_evaluation=1.0, series=5,
                                       max_score=0.5)
        metrics.publish_scores(("team", f"d{i}"), [(f'{{pod="{j}"}}', 0.1 * j) for j in range(5)])
    gc.collect()
    gc.collect()  # a tuple is untracked once the collector has seen its items untracked (at most two passes)
    stored = metrics.detector_gauges._rows[("team", "d7")]
    assert not gc.is_tracked(stored), "a row of plain values is not walked by the collector"
