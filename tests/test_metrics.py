"""Tests for course_utils.metrics (agreement with scikit-learn, validation, thresholds) and course_utils.tables."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from course_utils import metrics
from course_utils.metrics import (
    auprc,
    auroc,
    binary_metrics,
    confusion_counts,
    threshold_best_f1,
    threshold_from_normal_scores,
    threshold_youden,
)
from course_utils.tables import compare_table, format_table, per_class_table, summarize_per_class


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of random size and prevalence; every third case has many ties."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = (rng.random(n) < rng.uniform(0.05, 0.7)).astype(int)
    labels[0], labels[1] = 0, 1  # both classes present
    scores = rng.normal(size=n) + rng.uniform(0, 2) * labels
    if seed % 3 == 0:
        scores = np.round(scores, 1)  # ties
    return scores, labels


# --------------------------------------------------------------------------------------
# AUROC / AUPRC
# --------------------------------------------------------------------------------------


def test_auroc_and_auprc_agree_with_sklearn_on_50_random_cases():
    for seed in range(50):
        scores, labels = _random_case(seed)
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
        assert auprc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfect separation
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # reversed
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all ties
    ],
)
def test_auroc_hand_cases(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auprc_perfect_is_one_and_all_ties_is_prevalence():
    assert auprc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert auprc([0.5] * 8, [0, 0, 0, 0, 0, 0, 1, 1]) == pytest.approx(0.25)


def test_accepts_lists_bools_and_torch_tensors_with_grad():
    scores = torch.tensor([0.1, 0.2, 0.8, 0.9], requires_grad=True)
    labels = torch.tensor([False, False, True, True])
    assert auroc(scores, labels) == 1.0
    assert auprc(scores.double(), [0, 0, 1, 1]) == 1.0


# Each bad input and the words its error message must contain.
BAD_INPUTS = [
    ([0.1, float("nan"), 0.3], [0, 1, 0], r"1 NaN / inf values at indices \[1\].*diverging training"),
    ([0.1, float("inf"), float("-inf")], [0, 1, 0], r"2 NaN / inf values at indices \[1, 2\]"),
    ([0.1, 0.2, 0.3], [1, 1, 1], r"only class 1: .* needs both normal \(0\) and anomalous \(1\)"),
    ([0.1, 0.2, 0.3], [0, 0, 0], r"only class 0"),
    ([0.1, 0.2, 0.3], [0, 1], r"different lengths: 3 scores and 2 labels"),
    ([0.1, 0.2, 0.3], [0, 1, 2], r"0 \(normal\) or 1 \(anomaly\); found other values \[2\]"),
    ([], [], r"scores are empty"),
    ([[0.1, 0.2], [0.3, 0.4]], [0, 1], r"must be 1-D .* got shape \(2, 2\)"),
    (["a", "b"], [0, 1], r"scores must be numbers"),
]


@pytest.mark.parametrize("metric", [auroc, auprc])
@pytest.mark.parametrize(("scores", "labels", "message"), BAD_INPUTS)
def test_bad_inputs_raise_value_error_naming_the_problem(metric, scores, labels, message):
    with pytest.raises(ValueError, match=message):
        metric(scores, labels)


def test_single_class_message_names_the_metric():
    with pytest.raises(ValueError, match="AUPRC needs both"):
        auprc([0.1, 0.2], [0, 0])


def test_nan_message_abbreviates_long_index_lists():
    scores = np.full(30, np.nan)
    with pytest.raises(ValueError, match=r"30 NaN / inf values .*\.\.\.\] \(30 in total\)"):
        auroc(scores, [0, 1] * 15)


# --------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [50.0, 90, 95.0, 99.5, 100])
def test_threshold_from_normal_scores_is_the_percentile(percentile):
    normal_scores = np.random.default_rng(0).normal(size=333)
    expected = np.percentile(normal_scores, percentile)
    assert threshold_from_normal_scores(normal_scores, percentile) == pytest.approx(expected)
    assert threshold_from_normal_scores(torch.tensor(normal_scores), percentile=percentile) == pytest.approx(expected)


def test_threshold_from_normal_scores_never_sees_labels():
    assert list(inspect.signature(threshold_from_normal_scores).parameters) == ["normal_scores", "percentile"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"normal_scores": [1.0, 2.0], "percentile": 0}, r"percentile must be in \(0, 100\]"),
        ({"normal_scores": [1.0, 2.0], "percentile": 101}, r"percentile must be in \(0, 100\]"),
        ({"normal_scores": [1.0, 2.0], "percentile": float("nan")}, r"percentile must be in"),
        ({"normal_scores": [1.0, float("nan")]}, r"NaN / inf values at indices \[1\]"),
        ({"normal_scores": []}, r"normal_scores are empty"),
    ],
)
def test_threshold_from_normal_scores_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        threshold_from_normal_scores(**kwargs)


def _f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return binary_metrics(scores, labels, threshold)["f1"]


def _youden_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    result = binary_metrics(scores, labels, threshold)
    return result["tpr"] - result["fpr"]


@pytest.mark.parametrize("seed", range(12))
def test_best_f1_and_youden_thresholds_are_optimal_by_brute_force(seed):
    scores, labels = _random_case(seed)
    # Every distinct score is a candidate; +inf is the "predict nothing" threshold.
    candidates = np.append(np.unique(scores), np.inf)
    best_f1 = max(_f1_at(scores, labels, t) for t in candidates)
    best_j = max(_youden_at(scores, labels, t) for t in candidates)

    f1_threshold = threshold_best_f1(scores, labels)
    youden_threshold = threshold_youden(scores, labels)

    assert _f1_at(scores, labels, f1_threshold) == pytest.approx(best_f1, abs=1e-12)
    assert _youden_at(scores, labels, youden_threshold) == pytest.approx(best_j, abs=1e-12)
    assert f1_threshold in scores and youden_threshold in scores


def test_youden_threshold_is_finite_even_when_the_scores_are_reversed():
    # Every threshold has TPR - FPR <= 0; sklearn's first ROC threshold is +inf.
    threshold = threshold_youden([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])
    assert math.isfinite(threshold)


def test_validation_thresholds_need_both_classes():
    with pytest.raises(ValueError, match="only class 0"):
        threshold_best_f1([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="only class 1"):
        threshold_youden([0.1, 0.2], [1, 1])


def test_validation_threshold_docstrings_warn_against_test_labels():
    for function in (threshold_best_f1, threshold_youden):
        assert "never pass test labels" in function.__doc__.lower()


# --------------------------------------------------------------------------------------
# Metrics at a threshold
# --------------------------------------------------------------------------------------

HAND_SCORES = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
HAND_LABELS = [0, 0, 1, 1, 0, 1]


def test_binary_metrics_hand_case():
    # Predicted anomalous (score >= 0.35): 0.4 (normal), 0.35, 0.8, 0.9 (anomalies).
    result = binary_metrics(HAND_SCORES, HAND_LABELS, 0.35)
    assert {k: result[k] for k in ("tp", "fp", "tn", "fn")} == {"tp": 3, "fp": 1, "tn": 2, "fn": 0}
    assert all(isinstance(result[k], int) for k in ("tp", "fp", "tn", "fn"))
    expected = {"f1": 6 / 7, "acc": 5 / 6, "sen": 1.0, "spe": 2 / 3, "ppv": 3 / 4, "fpr": 1 / 3, "tpr": 1.0}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
    predictions = np.asarray(HAND_SCORES) >= 0.35
    assert result["f1"] == pytest.approx(f1_score(HAND_LABELS, predictions))


def test_confusion_counts_order_is_tp_fp_tn_fn():
    assert confusion_counts(HAND_SCORES, HAND_LABELS, 0.35) == (3, 1, 2, 0)
    assert confusion_counts(HAND_SCORES, HAND_LABELS, np.float32(0.5)) == (2, 0, 3, 1)


def test_binary_metrics_allows_a_single_class_and_defines_zero_division_as_zero():
    normals_only = binary_metrics([0.1, 0.2, 0.3], [0, 0, 0], threshold=0.25)
    assert normals_only["fp"] == 1 and normals_only["spe"] == pytest.approx(2 / 3)
    assert normals_only["sen"] == 0.0 and normals_only["tpr"] == 0.0  # no anomalies present
    nothing = binary_metrics([0.1, 0.2], [0, 0], threshold=1.0)  # no anomalies, none predicted
    assert nothing["f1"] == 0.0 and nothing["ppv"] == 0.0 and nothing["acc"] == 1.0
    anomalies_only = binary_metrics([0.1, 0.2], [1, 1], threshold=0.15)
    assert anomalies_only["spe"] == 0.0 and anomalies_only["fpr"] == 0.0
    for result in (normals_only, nothing, anomalies_only):
        assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())


def test_binary_metrics_rejects_nan_threshold_and_bad_scores():
    with pytest.raises(ValueError, match="threshold is NaN"):
        binary_metrics(HAND_SCORES, HAND_LABELS, float("nan"))
    with pytest.raises(ValueError, match="NaN / inf"):
        binary_metrics([0.1, float("nan")], [0, 1], 0.5)


# --------------------------------------------------------------------------------------
# Per-class tables
# --------------------------------------------------------------------------------------

RESULTS = {1: [0.8, 0.8, 0.8], 0: [0.90, 0.92, 0.94]}


def test_summarize_per_class_mean_std_and_mean_row():
    rows = summarize_per_class(RESULTS)
    assert [row["class"] for row in rows] == [0, 1, "mean"]
    class0, class1, mean_row = rows
    assert class0["mean"] == pytest.approx(0.92)
    assert class0["std"] == pytest.approx(0.02)  # sample std (ddof=1)
    assert class0["n_seeds"] == 3 and class0["values"] == [0.90, 0.92, 0.94]
    assert class1["std"] == pytest.approx(0.0, abs=1e-12)
    assert mean_row["mean"] == pytest.approx(0.86)
    assert mean_row["values"] == pytest.approx([0.85, 0.86, 0.87])  # per-seed class averages
    assert mean_row["std"] == pytest.approx(0.01)
    assert mean_row["n_seeds"] == 3


def test_summarize_single_seed_has_zero_std_and_numeric_class_order():
    rows = summarize_per_class({"10": [0.5], "2": [0.7], "0": [0.9]})
    assert [row["class"] for row in rows] == ["0", "2", "10", "mean"]
    assert all(row["std"] == 0.0 for row in rows)


def test_summarize_unequal_seed_counts_leaves_mean_row_std_undefined():
    rows = summarize_per_class({0: [0.9, 0.92], 1: [0.8]})
    assert rows[-1]["mean"] == pytest.approx(0.855)
    assert math.isnan(rows[-1]["std"]) and rows[-1]["values"] == []


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({}, "results are empty"),
        ({0: [0.9], 3: []}, "class 3 has no values"),
        ({0: [0.9, float("nan")]}, r"results\[0\] contain 1 NaN / inf values at indices \[1\]"),
        ([0.9, 0.8], "results must be a dict"),
    ],
)
def test_summarize_rejects_bad_results(results, message):
    with pytest.raises(ValueError, match=message):
        summarize_per_class(results)


def test_format_table_markdown():
    text = format_table(summarize_per_class(RESULTS), title="Fashion-MNIST", class_names=["T-shirt/top", "trouser"])
    assert text == (
        "**Fashion-MNIST**\n"
        "\n"
        "| class | AUROC (mean ± std) | seeds |\n"
        "|---|---|---|\n"
        "| 0 (T-shirt/top) | 0.920 ± 0.020 | 3 |\n"
        "| 1 (trouser) | 0.800 ± 0.000 | 3 |\n"
        "| mean | 0.860 ± 0.010 | 3 |\n"
    )


def test_per_class_table_is_format_of_summary_and_handles_unequal_seeds():
    assert per_class_table(RESULTS) == format_table(summarize_per_class(RESULTS))
    text = per_class_table({"0": [0.9, 0.92], "1": [0.8]}, decimals=2, class_names={1: "a|b"}, metric="AUPRC")
    assert "| class | AUPRC (mean ± std) | seeds |" in text
    assert "| 1 (a\\|b) | 0.80 | 1 |" in text  # pipe escaped, int key matches "1"; one seed: no "± 0.00"
    assert text.endswith("| mean | 0.85 | 1–2 |\n")


def test_compare_table_with_one_seed_shows_no_spread():
    text = compare_table({"pca": {0: [0.9], 1: [0.8]}, "knn": {0: [0.95], 1: [0.85]}})
    assert "class (AUROC, one seed)" in text and "±" not in text
    assert "| mean | 0.850 | 0.900 |" in text


def test_format_table_rejects_rows_that_are_not_a_summary():
    with pytest.raises(ValueError, match="rows lack the keys"):
        format_table([{"class": 0, "auroc": 0.9}])
    with pytest.raises(ValueError, match="rows are empty"):
        format_table([])


def test_compare_table_one_column_per_method_with_mean_row():
    text = compare_table(
        {"AE": RESULTS, "Glow": {"0": [0.5, 0.7]}},
        class_names=["T-shirt/top", "trouser"],
    )
    assert text == (
        "| class (AUROC, mean ± std) | AE | Glow |\n"
        "|---|---|---|\n"
        "| 0 (T-shirt/top) | 0.920 ± 0.020 | 0.600 ± 0.141 |\n"
        "| 1 (trouser) | 0.800 ± 0.000 | — |\n"
        "| mean | 0.860 ± 0.010 | 0.600 ± 0.141 (1/2 classes) |\n"
    )


def test_compare_table_names_the_method_with_bad_results():
    with pytest.raises(ValueError, match="method 'Glow': class 0 has no values"):
        compare_table({"AE": RESULTS, "Glow": {0: []}})
    with pytest.raises(ValueError, match="non-empty dict"):
        compare_table({})


def test_module_exports_exist():
    for name in metrics.__all__:
        assert callable(getattr(metrics, name))


def test_balanced_accuracy_is_the_auroc_of_thresholded_predictions():
    from course_utils.metrics import auroc, balanced_accuracy

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    metrics = binary_metrics(scores, labels, 0.5)
    value = balanced_accuracy(scores, labels, 0.5)
    assert value == pytest.approx((metrics["sen"] + metrics["spe"]) / 2)
    assert value == pytest.approx(auroc((scores >= 0.5).astype(float), labels))
    assert value < auroc(scores, labels)  # one point of the ROC curve, below the area on these scores


def test_reproductions_auc_is_balanced_accuracy():
    from benchmarks.sections import AEFLOW_REPORTED_CHEST_XRAY
    from course_utils.metrics import balanced_accuracy_from_rates

    assert balanced_accuracy_from_rates(0.9769, 0.6624) == pytest.approx(0.8197, abs=5e-5)
    assert balanced_accuracy_from_rates(0.9231, 0.2009) == pytest.approx(0.562, abs=5e-4)
    checked = [row for row in AEFLOW_REPORTED_CHEST_XRAY if row["auc_is"] == "(SEN + SPE) / 2"]
    assert len(checked) == 2
    for row in checked:
        assert balanced_accuracy_from_rates(row["sen"], row["spe"]) == pytest.approx(row["auc"], abs=0.05)
    paper = AEFLOW_REPORTED_CHEST_XRAY[0]
    assert abs(balanced_accuracy_from_rates(paper["sen"], paper["spe"]) - paper["auc"]) > 5  # the paper's is AUROC
    with pytest.raises(ValueError, match="sen"):
        balanced_accuracy_from_rates(float("nan"), 0.5)


def test_reproduction_a_counts_give_every_reported_rate():
    from course_utils.metrics import balanced_accuracy
    from course_utils.models.aeflow import reported_row

    row = reported_row("reproduction A, ResNet-type subnet")
    c = row["test_counts"]
    labels = np.r_[np.ones(c["tp"] + c["fn"]), np.zeros(c["tn"] + c["fp"])]
    scores = np.r_[np.ones(c["tp"]), np.zeros(c["fn"]), np.zeros(c["tn"]), np.ones(c["fp"])]
    m = binary_metrics(scores, labels, 0.5)
    for key in ("f1", "acc", "sen", "spe"):
        assert round(100 * m[key], 2) == row[key]
    assert round(100 * balanced_accuracy(scores, labels, 0.5), 2) == row["auc"]


def test_auroc_between_classes_keeps_only_the_two_classes():
    from course_utils.metrics import auroc_between_classes

    scores = np.array([0.1, 0.2, 0.9, 5.0, 0.8])
    classes = np.array([3, 3, 7, 1, 7])          # class 1 (score 5.0) would rank first if it were kept
    assert auroc_between_classes(scores, classes, normal=3, anomaly=7) == 1.0
    assert auroc_between_classes(scores, classes, normal=7, anomaly=3) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        auroc_between_classes(scores[:3], classes, normal=3, anomaly=7)
