"""The training pipeline, end to end on tests/data/nab (quick mode), and its data handling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model import dataset, train
from vigil import features
from vigil.features import contract

NAB = Path(__file__).parents[1] / "data" / "nab"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> train.Result:
    return train.run(NAB, tmp_path_factory.mktemp("model"), quick=True, log=lambda _: None)


@pytest.fixture(scope="module")
def session(result: train.Result) -> ort.InferenceSession:
    return ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])


def test_outputs_written(result: train.Result) -> None:
    out = result.onnx_path.parent
    assert result.onnx_path.name == "default.onnx"
    assert {p.name for p in out.iterdir()} >= {"default.onnx", "default.card.json", "default.card.md"}
    assert "Grouped cross-validation" in (out / "default.card.md").read_text()


def test_metadata(result: train.Result) -> None:
    meta = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    assert set(contract.REQUIRED_METADATA) <= set(meta)
    assert meta[contract.META_MODEL_NAME] == train.MODEL_NAME
    assert meta[contract.META_FEATURE_VERSION] == features.FEATURE_VERSION
    assert tuple(meta[contract.META_FEATURE_NAMES].split(",")) == tuple(train.PARAMS["features"])
    assert int(meta[contract.META_WINDOW]) == features.WINDOW
    assert int(meta[contract.META_MIN_POINTS]) == features.MIN_POINTS
    assert meta[contract.META_SCORE_OUTPUT] == contract.DEFAULT_SCORE_OUTPUT
    assert meta[contract.META_SCORE_COLUMN] == "1"
    threshold = float(meta[contract.META_RECOMMENDED_THRESHOLD])
    assert 0.0 < threshold <= 1.0
    assert threshold == result.card["recommended_threshold"]


def test_input_and_output_signature(session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    assert inp.name == contract.INPUT_NAME and inp.type == "tensor(float)"
    assert len(inp.shape) == 2 and not isinstance(inp.shape[0], int) and inp.shape[1] == len(names_of(session))
    outputs = {o.name: o for o in session.get_outputs()}
    assert outputs[contract.DEFAULT_SCORE_OUTPUT].type == "tensor(float)"
    assert outputs[contract.DEFAULT_SCORE_OUTPUT].shape[1] == 2


def names_of(session: ort.InferenceSession) -> tuple[str, ...]:
    """The feature names the exported model reads, from its metadata."""
    return tuple(session.get_modelmeta().custom_metadata_map[contract.META_FEATURE_NAMES].split(","))


def test_onnxruntime_matches_sklearn(result: train.Result, session: ort.InferenceSession) -> None:
    feats = result.features
    X = np.concatenate([x[v] for x, v in zip(feats.X, feats.valid, strict=True)])
    shipped = np.ascontiguousarray(X[:, features.columns(names_of(session))])  # the columns the model reads
    (p_onnx,) = session.run([contract.DEFAULT_SCORE_OUTPUT], {contract.INPUT_NAME: shipped})
    p_sklearn = result.classifier.predict_proba(X)
    assert p_onnx.shape == (len(X), 2)
    assert np.abs(p_onnx - p_sklearn).max() < 1e-4
    assert result.card["export"]["sklearn_vs_onnxruntime_max_abs_diff"] < 1e-4


def test_serving_path_scores_like_training(result: train.Result, session: ort.InferenceSession) -> None:
    # The operator builds windows and calls extract_batch; training used extract_series.
    i = next(k for k, s in enumerate(result.series) if "825cc2" in s.name)
    values, X = result.series[i].values, result.features.X[i]
    rows = np.flatnonzero(result.features.valid[i])[::50]
    names = names_of(session)
    served = features.extract_batch(features.windows_of(values)[rows], names)
    trained = np.ascontiguousarray(X[rows][:, features.columns(names)])
    (p_served,) = session.run([contract.DEFAULT_SCORE_OUTPUT], {contract.INPUT_NAME: served})
    (p_trained,) = session.run([contract.DEFAULT_SCORE_OUTPUT], {contract.INPUT_NAME: trained})
    np.testing.assert_array_equal(p_served, p_trained)


def test_card_has_measured_cv_figures(result: train.Result) -> None:
    card = json.loads((result.onnx_path.parent / "default.card.json").read_text())
    cv = card["cv"]
    assert len(cv["groups"]) == len(set(result.groups)) == len(cv["model"]["folds"])
    for who in ("model", "baseline"):
        overall = cv[who]["overall"]
        for key in ("roc_auc", "pr_auc", "window_recall", "false_alarms_per_1000", "median_delay_points"):
            assert isinstance(overall[key], float), (who, key)
        assert overall["windows"] == sum(len(s.windows) for s in result.series)
        for fold in cv[who]["folds"]:
            assert isinstance(fold["false_alarms_per_1000"], float)
            assert fold["window_recall"] is None or 0.0 <= fold["window_recall"] <= 1.0
    assert 0.0 < card["recommended_threshold"] <= 1.0
    assert card["export"]["refit_gives_identical_bytes"] is True
    assert card["export"]["onnx_bytes"] == result.onnx_path.stat().st_size
    listed = {d["series"]: d["sha256"] for d in card["data"]["series"]}
    assert listed == {s.name: hashlib.sha256((NAB / s.name).read_bytes()).hexdigest() for s in result.series}


def test_folds_never_split_a_series(result: train.Result) -> None:
    folds = train.folds(result.groups)
    assert len(folds) == len(set(result.groups))
    tested = []
    for group, train_idx, test_idx in folds:
        assert not set(train_idx) & set(test_idx)
        assert set(train_idx) | set(test_idx) == set(range(len(result.series)))
        assert {result.groups[i] for i in test_idx} == {group}
        assert group not in {result.groups[i] for i in train_idx}
        tested += test_idx
    assert sorted(tested) == list(range(len(result.series)))  # each series tested exactly once


def _series(name: str, start: str, days: int) -> dataset.Series:
    n = days * 288
    return dataset.Series(
        name=name, sha256="", start=np.datetime64(start, "s"), step_seconds=300,
        values=np.zeros(n), labels=np.zeros(n, dtype=np.int8), windows=(),
        regularisation=dataset.Regularisation(n, 0, 0, 0, 0, 300, n, 0),
    )


def test_time_groups_link_overlapping_series_within_a_folder() -> None:
    series = [
        _series("a/1.csv", "2014-01-01", 10),
        _series("a/2.csv", "2014-01-08", 10),  # overlaps a/1
        _series("a/3.csv", "2014-01-17", 5),  # overlaps a/2 only: same component
        _series("a/4.csv", "2014-03-01", 5),  # alone
        _series("b/1.csv", "2014-01-01", 10),  # same days, other folder
    ]
    groups = dataset.time_groups(series)
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_regularise_sorts_dedupes_and_grids() -> None:
    # Rows: a backwards jump, a duplicate timestamp (the later row wins), a 2-step gap, and an
    # off-grid row that snaps onto an occupied slot (the later row wins again).
    t = np.array([0, 300, 600, 300, 900, 900, 1800, 2100, 2105], dtype=np.int64)
    v = np.array([0.0, 1.0, 2.0, 1.5, 3.0, 3.5, 6.0, 7.0, 7.5])
    grid, start, step, report = dataset.regularise(t, v)
    assert (start, step) == (0, 300)
    np.testing.assert_array_equal(grid, [0.0, 1.5, 2.0, 3.5, np.nan, np.nan, 6.0, 7.5])
    assert report.out_of_order_rows == 1 and report.duplicates_dropped == 2
    assert report.off_grid_rows == 1 and report.slot_collisions == 1
    assert report.missing_points == 2 and report.grid_points == 8


def test_labels_split_each_window_at_the_anomaly_point() -> None:
    start = np.datetime64("2014-01-01T00:00:00", "s")
    windows: list[object] = [["2014-01-01 01:00:00.000000", "2014-01-01 02:00:00.000000"]]
    labels, wins = dataset.label_grid(start, 300, 48, windows, [np.datetime64("2014-01-01T01:30:00", "s")])
    assert wins == (dataset.Window(start=12, anomaly=18, end=24),)
    assert (labels[12:18] == dataset.EXCLUDED).all()
    assert (labels[18:25] == dataset.POSITIVE).all()
    assert (np.delete(labels, range(12, 25)) == dataset.NEGATIVE).all()
    s = dataclasses.replace(_series("a/x.csv", "2014-01-01", 1), labels=labels, windows=wins)
    fit_labels = dataset.training_labels(s, horizon=3)
    assert (fit_labels[18:21] == dataset.POSITIVE).all() and (fit_labels[21:25] == dataset.EXCLUDED).all()

