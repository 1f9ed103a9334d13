"""Model card: the card JSON written by ``model/train.py``, rendered as Markdown.

Pure formatting: every number comes from the JSON, which the training run computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EVENT_COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("positive_points", "pos. points"),
    ("window_recall", "window recall"),
    ("detected", "detected"),
    ("windows", "windows"),
    ("false_alarms_per_1000", "false alarms / 1k"),
    ("median_delay_points", "median delay (points)"),
)


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines


def headline(card: dict[str, Any]) -> str:
    """One line per detector: the overall grouped-CV figures."""
    lines = []
    for who in ("model", "baseline"):
        o = card["cv"][who]["overall"]
        lines.append(
            f"{who:8s} threshold={fmt(card['cv'][who]['threshold'])} ROC-AUC={fmt(o['roc_auc'])} "
            f"PR-AUC={fmt(o['pr_auc'])} window recall={fmt(o['window_recall'])} "
            f"false alarms/1k={fmt(o['false_alarms_per_1000'])} median delay={fmt(o['median_delay_points'])}"
        )
    return "\n".join(lines)


def limitations(card: dict[str, Any]) -> list[str]:
    """Weak spots, from the figures of this run plus what the design cannot see."""
    folds = card["cv"]["model"]["folds"]
    missed = [f["group"] for f in folds if f["windows"] and not f["detected"]]
    below = [f"{f['group']} ({f['roc_auc']:.2f})" for f in folds if f["roc_auc"] is not None and f["roc_auc"] < 0.5]
    flat = [s for s in card["series_scores"] if not s["windows"]]
    lines = [
        f"- Folds where the model detects no window at the recommended threshold: {', '.join(missed) or 'none'}.",
        f"- Folds where its point ROC-AUC is below 0.5: {', '.join(below) or 'none'}.",
        "- Point ROC-AUC is a poor guide for this model: it flags the onset of a new extreme, and most points "
        "of a NAB window (which runs 50-500 points past the anomaly point) are not new extremes any more; "
        "the event figures of the benchmark section are the ones that matter.",
        f"- The novelty features flag values beyond the range of the last {card['window']} points (a week at "
        "5-minute steps); the context features (feature-v3) add the same time on previous days, a CUSUM of "
        "the seasonal residuals and a volatility shift. Their period is a fixed number of points (a day at "
        "5-minute steps): at other steps the 'day' is a different length of time. "
        "99th percentile of out-of-fold scores on the series without anomalies: "
        + ", ".join(f"{s['series'].split('/')[1]} {fmt(s['oof_p99_outside_windows'])}" for s in flat) + ".",
        ("- Scores are calibrated (Platt scaling on the unweighted training rows): they estimate the share of "
         "points with these features that lie in a labelled anomaly's span after its anomaly point, not the "
         "chance of an incident; use the recommended threshold or spec.sensitivity, not 0.5."
         if card["model"]["params"].get("calibrate") else
         "- Scores are P(anomaly) of a class-balanced model, not calibrated probabilities: use the "
         "recommended threshold, not 0.5."),
        "- The features, the model's inputs, the window width and the 1% flagged-share cap were chosen "
        "while looking at grouped-CV event figures on these same series, so the figures are somewhat "
        "optimistic; the series the project holds back are the real test.",
    ]
    return lines


BENCH_KEYS = (("f1", "event F1"), ("precision", "precision"), ("recall", "recall"), ("tp_windows", "TPw"),
              ("fn_windows", "FNw"), ("fp_events", "FPe"),
              ("false_alerts_per_series_week", "false alerts / series-week"),
              ("median_delay_points", "median delay (points)"),
              ("median_offset_from_anomaly_points", "first detection - anomaly point (median, points)"))


def benchmark(bench: dict[str, Any]) -> list[str]:
    """The section ``bench/detection.py`` adds: issue 5's event metrics, three detectors, grouped CV."""
    out = [
        "## Benchmark: event metrics, grouped CV (`bench/detection.py`)",
        "",
        "Written by the benchmark run that follows training (`make model`); the full tables, per folder, are "
        "in `docs/bench/detection.md`. Each fold's model is this card's recipe fitted without the held-out "
        "group, run through `vigil backtest`'s code path at a threshold chosen inside the training groups."
        + (" **Quick run: not the shipped figures.**" if bench.get("quick") else ""),
        "",
    ]
    for title, key in ((f"Anchor folders ({', '.join(bench['anchor_folders'])}), pooled", "anchor"),
                       ("All folders, pooled", "all")):
        rows = [[bench["detectors"][d], *(bench[key][d][k] for k, _ in BENCH_KEYS)] for d in bench["detectors"]]
        out += [f"### {title}", "", *table(["detector", *(h for _, h in BENCH_KEYS)], rows), ""]
    out += [
        "Issue 5's targets on the anchor folders: event F1 >= 0.70, <= 0.3 false alerts per series-week, median "
        "first detection no later than the labelled anomaly point. Published anchors under the same definitions: "
        "contextOSE 0.64 F1 / 0.33 false alerts, Numenta HTM 0.57 / 0.52.",
        "",
    ]
    cost = bench["cost"]
    out += [
        f"Features + inference: {cost['batch_5_us_per_point']:.1f} µs/point with one detector's 5 series batched, "
        f"{cost['batch_10000_us_per_point']:.1f} µs/point at batch 10,000 (single thread, {cost['machine']}).",
    ]
    return out


def render(card: dict[str, Any]) -> str:
    cv, export, training = card["cv"], card["export"], card["training"]
    out = [
        f"# Model card: {card['model_name']}",
        "",
        "Generated by `python -m model.train`; every figure below was computed by that run "
        "(the same figures are in `default.card.json`).",
        "",
        "## Summary",
        "",
        f"- Features `{card['feature_version']}`: window {card['window']} points, "
        f"scores from {card['min_points']} non-missing points, last {card['recent']} points = 'recent'.",
        f"- Recommended threshold: **{card['recommended_threshold']}** ({card['threshold_rule']}).",
        f"- Model: `{card['model']['type']}` (coefficients "
        f"{', '.join(f'{k} {v:.3g}' for k, v in card['model']['coefficients'].items())}; intercept "
        f"{card['model']['intercept']:.3g}; its ONNX input is these features only, so the operator computes "
        "no other), "
        f"ONNX {export['onnx_bytes']:,} bytes, ~{export['onnxruntime_us_per_row_batch_10000']:.2f} µs/row "
        "in onnxruntime at batch 10,000 (single measurement; see `bench/inference.py`).",
        f"- Grouped CV, overall: model ROC-AUC {fmt(cv['model']['overall']['roc_auc'])} vs baseline "
        f"{fmt(cv['baseline']['overall']['roc_auc'])}; window recall {fmt(cv['model']['overall']['window_recall'])}"
        f" vs {fmt(cv['baseline']['overall']['window_recall'])} at "
        f"{fmt(cv['model']['overall']['false_alarms_per_1000'])} vs "
        f"{fmt(cv['baseline']['overall']['false_alarms_per_1000'])} false alarms per 1,000 points; "
        f"chance (uniform noise, same rule): recall {fmt(cv['chance']['overall']['window_recall'])}.",
        f"- {card['held_out_note']}",
    ]
    if "benchmark" in card:
        out += ["", *benchmark(card["benchmark"])]
    if card["model"]["quick"]:
        out += ["", "**Quick smoke run (`--quick`): small ensemble, no window study. Not the shipped model.**"]

    if card.get("sensitivity_table"):
        out += ["", "## Sensitivity (calibration table)", "",
                "`spec.sensitivity` (low = 0.25, medium = 0.5, high = 0.75, or a number in [0, 1]) maps to a "
                "threshold through this table, shipped in the ONNX metadata (`vigil.sensitivity_table`); between "
                f"rows the threshold is interpolated linearly. Rule: {card['sensitivity_rule']}. The figures are "
                "in-sample (every series, the shipped model): they show the relative alert volume of each level, "
                "not held-out quality (see the benchmark for that).", ""]
        out += table(["sensitivity", "threshold", "false alerts / series-week", "event recall", "event F1"],
                     [[r["sensitivity"], r["threshold"], r["false_alerts_per_series_week"], r["recall"], r["f1"]]
                      for r in card["sensitivity_table"]])
        out += ["", "## Explanations", "",
                "The ONNX metadata also carries the logit coefficients (`vigil.logit_coefficients`) and the mean "
                "feature values of the training negatives (`vigil.typical_features`). For a series at or above "
                "its threshold the operator ranks coefficient x (value - typical), which is exactly each "
                "feature's share of the logit above a typical point's, and writes the top 3 in words to "
                "`status.series[].why` (see docs/detection.md).", ""]
        out += table(["feature", "logit coefficient", "typical value"],
                     [[n, card["model"]["coefficients"].get(n, 0.0), v] for n, v in card["typical_features"].items()])
    out += ["", "## Grouped cross-validation", "", f"Scheme: {cv['scheme']}.", ""]
    for who in ("model", "baseline"):
        block = cv[who]
        out += [f"### {who.capitalize()} (threshold {fmt(block['threshold'])})", ""]
        if "description" in block:
            out += [block["description"], ""]
        rows = [[f["group"], *(f[k] for k, _ in EVENT_COLUMNS)] for f in block["folds"]]
        rows.append(["**overall**", *(block["overall"][k] for k, _ in EVENT_COLUMNS)])
        out += table(["fold (held-out group)", *(h for _, h in EVENT_COLUMNS)], rows)
        o = block["overall"]
        out += [
            "",
            f"Mean of per-fold ROC-AUC: {fmt(o['mean_fold_roc_auc'])}. With each fold's threshold chosen "
            f"by the same rule from the *other* folds' out-of-fold scores: window recall "
            f"{fmt(o['window_recall_threshold_from_other_folds'])}, false alarms per 1,000 points "
            f"{fmt(o['false_alarms_per_1000_threshold_from_other_folds'])}.",
            "",
        ]
    ratio_rows = []
    for key, header in EVENT_COLUMNS:
        m, b = cv["model"]["overall"][key], cv["baseline"]["overall"][key]
        if isinstance(m, float | int) and isinstance(b, float | int):
            ratio_rows.append([header, m, b, m / b if b else None])
    out += ["### Model vs baseline, overall", ""]
    out += table(["figure", "model", "baseline", "model / baseline"], ratio_rows)
    chance = cv["chance"]["overall"]
    out += [
        "",
        f"Chance reference ({cv['chance']['description']}): window recall {fmt(chance['window_recall'])}, "
        f"false alarms per 1,000 points {fmt(chance['false_alarms_per_1000'])}, median delay "
        f"{fmt(chance['median_delay_points'])} points. A NAB window leaves 50-500 points after the anomaly "
        "point, so even noise detects some windows at this false-alarm rate.",
        "",
        "### Metric definitions",
        "",
        card["metric_definitions"].strip(),
        "",
        "### CV groups",
        "",
    ]
    out += table(["group", "from", "to", "series"], [
        [g["group"], g["start"][:10], g["end"][:10], ", ".join(s.split("/")[1] for s in g["series"])]
        for g in cv["groups"]
    ])

    if card["window_study"]:
        keys = ("roc_auc", "pr_auc", "window_recall", "window_recall_se", "false_alarms_per_1000",
                "median_delay_points")
        out += ["", "## Window study", "",
                "The same grouped CV, labels (training horizon = width / 2) and threshold rule at other "
                "window widths (min points = width / 2); `window_recall_se` is the binomial standard error.", ""]
        out += table(
            ["width", *(f"model {k}" for k in keys), *(f"baseline {k}" for k in keys)],
            [[r["width"], *(r[f"model_{k}"] for k in keys), *(r[f"baseline_{k}"] for k in keys)]
             for r in card["window_study"]],
        )
        out += [
            "",
            f"The shipped width is {card['window']}. Read the table with the standard errors in mind: with about "
            "100 windows, recalls a few windows apart are not different. Point ROC-AUC is best at the short "
            "widths and falls as the window grows, while window recall tends to rise with width; "
            f"{card['window']} points ({card['window'] * 5 / 60:g} h at 5-minute steps) keeps the ranking "
            "quality of the short window, "
            "and keeps the history the operator fetches per series at start-up and the warm-up before the "
            "first score (min points) short. A window of a day or more, which could tell a daily ramp from "
            "an incident, is left to a later model.",
        ]

    out += ["", "## Limitations", "", *limitations(card)]
    out += ["", "## Features", "", "Computed by `vigil.features` (the serving code), in input column order:", ""]
    out += table(["#", "name", "meaning"], [[i, f["name"], f["description"]] for i, f in enumerate(card["features"])])

    out += [
        "",
        "## Labels",
        "",
        card["label_scheme"],
        "",
        f"Training horizon: {card['training_horizon_points']} points. {card['training_labels']}",
        "",
        "## Model",
        "",
        f"`{card['model']['type']}` (scikit-learn {card['model']['sklearn_version']}), "
        f"{card['model']['class_weighting']}.",
        "",
    ]
    out += table(["parameter", "value"], [[k, v] for k, v in card["model"]["params"].items()])
    out += [
        "",
        "## Export",
        "",
        f"- ONNX: {export['onnx_bytes']:,} bytes, sha256 `{export['onnx_sha256']}`, opsets {export['target_opset']}.",
        f"- Max |P(anomaly) sklearn - onnxruntime| over {export['rows_compared']:,} scored rows: "
        f"{export['sklearn_vs_onnxruntime_max_abs_diff']:.2e}.",
        f"- Refitting with the same data and seed gives identical ONNX bytes: "
        f"{fmt(export['refit_gives_identical_bytes'])}.",
        f"- Training: final fit {training['final_fit_seconds']:.1f} s on {training['rows']:,} rows "
        f"({training['positive_rows']:,} positive); whole run {training['total_seconds']:.1f} s.",
        "",
        "Metadata:",
        "",
    ]
    out += table(["key", "value"], sorted(export["metadata"].items()))

    out += ["", "## Scores per series", "",
            "Max P(anomaly) from each anomaly point to its window's end, and the 99th percentile outside "
            "windows; out-of-fold (oof) and from the shipped model (which saw these series).", ""]
    rows = []
    for s in card["series_scores"]:
        peaks_oof = ", ".join(fmt(w["oof_max_after_anomaly"]) for w in s["windows"]) or "-"
        peaks_ship = ", ".join(fmt(w["shipped_max_after_anomaly"]) for w in s["windows"]) or "-"
        rows.append([s["series"], peaks_oof, s["oof_p99_outside_windows"], peaks_ship,
                     s["shipped_p99_outside_windows"]])
    out += table(["series", "oof max after anomaly", "oof p99 outside", "shipped max after anomaly",
                  "shipped p99 outside"], rows)

    out += ["", "## Data", "", card["regularisation"], "",
            f"NAB root `{card['data']['root_name']}`:", ""]
    cols = ("raw_rows", "out_of_order_rows", "duplicates_dropped", "off_grid_rows", "slot_collisions",
            "step_seconds", "grid_points", "missing_points", "scored_points", "positive_points",
            "excluded_points", "windows")
    out += table(["series", "sha256", *cols],
                 [[d["series"], f"`{d['sha256']}`", *(d[c] for c in cols)] for d in card["data"]["series"]])
    return "\n".join(out) + "\n"
