"""Detection metrics, thresholds that never look at test labels, and per-class tables.

Conventions used everywhere in the course:

- ``labels``: 1 = anomaly (the positive class), 0 = normal.
- ``scores``: higher = more anomalous. A threshold ``t`` predicts "anomaly" for
  ``scores >= t``.
- Inputs may be numpy arrays, lists or torch tensors (any device); they are
  converted to 1-D float numpy arrays and validated first.

The evaluation protocol (DESIGN.md): AUROC / AUPRC are threshold-free and are computed
on the test split. Any threshold used for F1 / ACC / SEN / SPE comes from training or
validation data only (``threshold_from_normal_scores``, ``threshold_best_f1``,
``threshold_youden``), never from the test labels.

Per-class tables (``summarize_per_class``, ``format_table``, ``per_class_table``,
``compare_table``) turn ``{class: [one value per seed]}`` into GitHub markdown, for
notebooks (``IPython.display.Markdown``) and for the benchmark READMEs. No pandas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "auroc",
    "auprc",
    "threshold_from_normal_scores",
    "threshold_best_f1",
    "threshold_youden",
    "confusion_counts",
    "binary_metrics",
    "summarize_per_class",
    "format_table",
    "per_class_table",
    "compare_table",
]

# How many offending indices an error message lists before it abbreviates.
_MAX_INDICES_SHOWN = 10


# --------------------------------------------------------------------------------------
# Input conversion and validation
# --------------------------------------------------------------------------------------


def _as_1d_float(x: Any, name: str) -> np.ndarray:
    """Convert ``x`` (numpy array, list, torch tensor on any device) to a 1-D float array.

    Returns a new float64 array of shape (N,). Raises ValueError for non-numeric
    input or for any number of dimensions other than one. Finiteness is checked by
    the callers, which know what a NaN means for them.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must be numbers (numpy array, list or torch tensor); "
            f"could not convert it to floats: {error}"
        ) from None
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with one value per image; got shape {array.shape}. "
            f"Flatten it (e.g. `{name}.reshape(-1)`) if it holds one value per image."
        )
    return array


def _format_indices(indices: np.ndarray) -> str:
    """``[3, 17, 42]`` or ``[3, 17, ..., 42] (25 in total)`` for long lists."""
    shown = [int(i) for i in indices[:_MAX_INDICES_SHOWN]]
    if len(indices) <= _MAX_INDICES_SHOWN:
        return str(shown)
    return f"{str(shown)[:-1]}, ...] ({len(indices)} in total)"


def _compact_number(value: float) -> int | float:
    """2.0 -> 2 (labels usually are integers), 0.5 stays 0.5."""
    return int(value) if float(value).is_integer() else float(value)


def _check_finite(values: np.ndarray, name: str) -> None:
    """Raise ValueError naming how many values of ``values`` are NaN / inf, and where."""
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ValueError(
            f"{name} contain {len(bad)} NaN / inf values at indices {_format_indices(bad)}: "
            "check the model for diverging training (loss becoming NaN) or a division by zero "
            "in the score"
        )


def finite_scores(values: Any, name: str) -> np.ndarray:
    """One finite float64 value per image, (N,), from a numpy array, list or torch tensor: the
    conversion and checks every metric applies to its scores (ValueError naming ``name`` otherwise)."""
    array = _as_1d_float(values, name)
    _check_finite(array, name)
    return array


def _check_not_empty(values: np.ndarray, name: str) -> None:
    if values.size == 0:
        raise ValueError(f"{name} are empty: pass at least one value (one per test image)")


def _validate_scores_labels(
    scores: Any,
    labels: Any,
    require_both_classes: bool = True,
    *,
    metric: str = "AUROC",
) -> tuple[np.ndarray, np.ndarray]:
    """Convert and check a (scores, labels) pair; the one validation all metrics share.

    Args:
        scores: anomaly scores, shape (N,), finite, higher = more anomalous.
        labels: shape (N,), values in {0, 1} (1 = anomaly); bools are accepted.
        require_both_classes: True for threshold-free metrics (AUROC, AUPRC, curves),
            which are undefined unless normal and anomalous examples are both present.
        metric: the metric's name, used in the single-class error message.

    Returns:
        ``(scores, labels)`` as float64 (N,) and int64 (N,) numpy arrays.
    """
    scores_array = _as_1d_float(scores, "scores")
    labels_array = _as_1d_float(labels, "labels")
    _check_not_empty(scores_array, "scores")
    _check_not_empty(labels_array, "labels")
    if len(scores_array) != len(labels_array):
        raise ValueError(
            f"scores and labels have different lengths: {len(scores_array)} scores and "
            f"{len(labels_array)} labels; pass one score and one label per test image"
        )
    _check_finite(scores_array, "scores")
    bad_labels = np.unique(labels_array[(labels_array != 0) & (labels_array != 1)])
    if len(bad_labels):
        raise ValueError(
            f"labels must be 0 (normal) or 1 (anomaly); found other values "
            f"{[_compact_number(v) for v in bad_labels[:_MAX_INDICES_SHOWN]]}. Convert class ids to "
            "binary labels first, e.g. `labels = (class_ids != normal_class).astype(int)`"
        )
    labels_int = labels_array.astype(np.int64)
    if require_both_classes:
        present = np.unique(labels_int)
        if len(present) == 1:
            raise ValueError(
                f"labels contain only class {present[0]}: {metric} needs both normal (0) "
                "and anomalous (1) examples; evaluate on a split that contains both"
            )
    return scores_array, labels_int


def _validate_threshold(threshold: Any) -> float:
    """A threshold as a Python float; NaN is rejected, +-inf allowed (predict all / none)."""
    if hasattr(threshold, "item"):  # numpy / torch scalar
        threshold = threshold.item()
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number; got {threshold!r}") from None
    if math.isnan(value):
        raise ValueError("threshold is NaN: choose it from finite validation scores")
    return value


# --------------------------------------------------------------------------------------
# Threshold-free metrics
# --------------------------------------------------------------------------------------


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve, in [0, 1] (0.5 = chance, 1 = perfect separation).

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; both classes must be present.

    Ties count one half, as in ``sklearn.metrics.roc_auc_score`` (which this wraps).
    """
    scores_array, labels_array = _validate_scores_labels(scores, labels, metric="AUROC")
    return float(roc_auc_score(labels_array, scores_array))


def auprc(scores: Any, labels: Any) -> float:
    """Area under the precision-recall curve (average precision), in [0, 1].

    The anomaly (label 1) is the positive class; chance level equals the anomaly
    prevalence ``labels.mean()``, not 0.5. Wraps
    ``sklearn.metrics.average_precision_score``.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; both classes must be present.
    """
    scores_array, labels_array = _validate_scores_labels(scores, labels, metric="AUPRC")
    return float(average_precision_score(labels_array, scores_array))


# --------------------------------------------------------------------------------------
# Thresholds (never from test labels)
# --------------------------------------------------------------------------------------


def threshold_from_normal_scores(normal_scores: Any, percentile: float = 95.0) -> float:
    """Threshold = the given percentile of scores of held-out NORMAL images.

    Needs no labels at all: score normal images the model did not train on (for
    example a held-out part of the training split) and flag anything above the
    ``percentile``-th of them. With ``scores >= threshold`` predicted anomalous, about
    ``100 - percentile`` % of normal images become false alarms.

    Args:
        normal_scores: shape (M,), finite scores of normal images only.
        percentile: in (0, 100]; 95 means about 5 % false alarms on normal data.

    Returns:
        ``np.percentile(normal_scores, percentile)`` (linear interpolation) as float.
    """
    scores_array = _as_1d_float(normal_scores, "normal_scores")
    _check_not_empty(scores_array, "normal_scores")
    _check_finite(scores_array, "normal_scores")
    try:
        percentile_value = float(percentile)
    except (TypeError, ValueError):
        raise ValueError(f"percentile must be a number in (0, 100]; got {percentile!r}") from None
    if not 0.0 < percentile_value <= 100.0:
        raise ValueError(
            f"percentile must be in (0, 100]; got {percentile!r} "
            "(95 means the 95th percentile)"
        )
    return float(np.percentile(scores_array, percentile_value))


def threshold_best_f1(val_scores: Any, val_labels: Any) -> float:
    """Threshold that maximises F1 on a labelled VALIDATION split.

    Never pass test labels here: a threshold tuned on the test set makes every
    metric computed with it on that test set optimistic. Use a validation split
    (for example the PneumoniaMNIST ``val`` split) and then apply the returned
    threshold to the test scores.

    Args:
        val_scores: shape (N,), finite validation scores; higher = more anomalous.
        val_labels: shape (N,), 1 = anomaly, 0 = normal; both classes present.

    Returns:
        A score value ``t`` such that predicting ``val_scores >= t`` as anomalous gives
        the highest F1 on the validation split (the lowest such ``t`` when several
        thresholds tie).
    """
    scores_array, labels_array = _validate_scores_labels(
        val_scores, val_labels, metric="the best-F1 threshold"
    )
    precision, recall, thresholds = precision_recall_curve(labels_array, scores_array)
    # precision / recall have one more entry than thresholds (the "predict nothing"
    # end point, precision 1 and recall 0); it corresponds to no threshold, drop it.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall,
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    return float(thresholds[int(np.argmax(f1))])


def threshold_youden(val_scores: Any, val_labels: Any) -> float:
    """Threshold that maximises Youden's J = TPR - FPR on a labelled VALIDATION split.

    Never pass test labels here (see ``threshold_best_f1``). J is the ROC point
    farthest above the chance diagonal; it weights sensitivity and specificity
    equally, whatever the anomaly prevalence.

    Args:
        val_scores: shape (N,), finite validation scores; higher = more anomalous.
        val_labels: shape (N,), 1 = anomaly, 0 = normal; both classes present.

    Returns:
        A finite score value ``t``: predicting ``val_scores >= t`` as anomalous gives
        the highest TPR - FPR on the validation split (the highest such ``t`` when
        several tie, i.e. the fewest alarms).
    """
    scores_array, labels_array = _validate_scores_labels(
        val_scores, val_labels, metric="the Youden threshold"
    )
    fpr, tpr, thresholds = roc_curve(labels_array, scores_array, drop_intermediate=False)
    # roc_curve's first point is the "predict nothing" corner with threshold +inf;
    # skip it so the threshold returned is always an actual (finite) score value.
    youden_j = tpr[1:] - fpr[1:]
    return float(thresholds[1:][int(np.argmax(youden_j))])


# --------------------------------------------------------------------------------------
# Metrics at a threshold
# --------------------------------------------------------------------------------------


def confusion_counts(scores: Any, labels: Any, threshold: float) -> tuple[int, int, int, int]:
    """Confusion counts ``(tp, fp, tn, fn)`` for the prediction ``scores >= threshold``.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; a single class is allowed.
        threshold: a number (not NaN); +inf predicts nothing, -inf everything.

    Returns:
        ``(tp, fp, tn, fn)`` as Python ints, summing to N. Note the order: it is the
        order of ``binary_metrics``' keys, not scikit-learn's ``confusion_matrix().ravel()``
        order ``(tn, fp, fn, tp)``.
    """
    scores_array, labels_array = _validate_scores_labels(
        scores, labels, require_both_classes=False
    )
    return _counts(scores_array, labels_array, _validate_threshold(threshold))


def _counts(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` of validated arrays; shared by the public wrappers."""
    predicted_anomaly = scores >= threshold
    is_anomaly = labels == 1
    tp = int(np.sum(predicted_anomaly & is_anomaly))
    fp = int(np.sum(predicted_anomaly & ~is_anomaly))
    tn = int(np.sum(~predicted_anomaly & ~is_anomaly))
    fn = int(np.sum(~predicted_anomaly & is_anomaly))
    return tp, fp, tn, fn


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, with 0/0 defined as 0.0 (scikit-learn's zero_division=0)."""
    return numerator / denominator if denominator > 0 else 0.0


def binary_metrics(scores: Any, labels: Any, threshold: float) -> dict[str, float | int]:
    """Detection metrics for the prediction ``scores >= threshold`` (anomaly = positive).

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal. A single class is allowed (for
            example the false-alarm rate on normal images only).
        threshold: a number chosen WITHOUT test labels (see the ``threshold_*``
            functions).

    Returns:
        A dict with the counts ``tp, fp, tn, fn`` (ints) and the rates, floats in [0, 1]:
        ``f1``, ``acc`` (accuracy), ``sen`` (sensitivity = recall = TPR), ``spe``
        (specificity = TNR), ``ppv`` (precision), ``fpr`` (= 1 - spe), ``tpr`` (= sen).

        Undefined ratios (0/0) are reported as 0.0, never NaN, like scikit-learn with
        ``zero_division=0``: ``sen = tpr = 0.0`` when no anomalies are present,
        ``spe = fpr = 0.0`` when no normals are present (so ``fpr = 1 - spe`` holds only
        when normals are present), ``ppv = 0.0`` when nothing is predicted anomalous,
        and ``f1 = 0.0`` when there are neither anomalies nor anomaly predictions.
    """
    scores_array, labels_array = _validate_scores_labels(
        scores, labels, require_both_classes=False
    )
    tp, fp, tn, fn = _counts(scores_array, labels_array, _validate_threshold(threshold))
    sensitivity = _ratio(tp, tp + fn)
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        # 2 tp / (2 tp + fp + fn) equals 2 P R / (P + R) and avoids 0/0 in P or R.
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "acc": _ratio(tp + tn, tp + fp + tn + fn),
        "sen": sensitivity,
        "spe": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "fpr": _ratio(fp, fp + tn),
        "tpr": sensitivity,
    }


# --------------------------------------------------------------------------------------
# Per-class tables over seeds
# --------------------------------------------------------------------------------------

ClassKey = str | int


def _validated_results(results: Any) -> dict[ClassKey, np.ndarray]:
    """Check ``{class: [one value per seed]}`` and return it with float arrays."""
    if not isinstance(results, Mapping):
        raise ValueError(
            f"results must be a dict {{class: [one value per seed]}}; got {type(results).__name__}"
        )
    if len(results) == 0:
        raise ValueError("results are empty: pass {class: [one value per seed]} for at least one class")
    checked: dict[ClassKey, np.ndarray] = {}
    for class_key, values in results.items():
        if isinstance(values, (int, float, np.number)):
            values = [values]  # a single run stored as a bare number
        array = _as_1d_float(values, f"results[{class_key!r}]")
        if array.size == 0:
            raise ValueError(
                f"class {class_key!r} has no values: run at least one seed for it or "
                "remove it from the results"
            )
        _check_finite(array, f"results[{class_key!r}]")
        checked[class_key] = array
    return checked


def _ordered_keys(keys: Sequence[ClassKey]) -> list[ClassKey]:
    """Integer-like class keys (``3`` or ``"3"``) sorted numerically; others as given.

    Numeric order keeps tables stable when a partial benchmark run merged classes
    into a JSON file out of order.
    """
    if all(_is_int_like(key) for key in keys):
        return sorted(keys, key=lambda key: int(key))
    return list(keys)


def _is_int_like(key: Any) -> bool:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return True
    return isinstance(key, str) and key.strip().lstrip("-").isdigit()


def _seed_std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) over seeds; 0.0 for a single seed."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0


def summarize_per_class(results: Mapping[ClassKey, Sequence[float]]) -> list[dict[str, Any]]:
    """Mean and std over seeds for each class, plus a final ``"mean"`` row.

    Args:
        results: ``{class: [value for seed 0, value for seed 1, ...]}``, for example the
            ``"auroc"`` field of a benchmark JSON. Keys may be ints or strings; values
            finite. The i-th value of every class is assumed to come from the i-th seed.

    Returns:
        One dict per class, integer-like classes in numeric order, with keys
        ``class`` (the key as given), ``mean``, ``std``, ``n_seeds``, ``values`` (list of
        floats). ``std`` is the sample std (ddof=1, the seed-to-seed spread) when there
        are >= 2 seeds, else 0.0.

        The last row has ``class="mean"``: ``mean`` is the mean over classes of the
        per-class means; ``values`` are the per-seed averages over classes and ``std``
        is their sample std (how much the class-averaged result moves between seeds).
        When classes have different numbers of seeds the per-seed averages are
        undefined: then that row's ``values`` is empty, its ``std`` is NaN and its
        ``n_seeds`` is the smallest seed count.
    """
    checked = _validated_results(results)
    rows = [
        {
            "class": key,
            "mean": float(np.mean(checked[key])),
            "std": _seed_std(checked[key]),
            "n_seeds": int(len(checked[key])),
            "values": [float(v) for v in checked[key]],
        }
        for key in _ordered_keys(list(checked))
    ]
    rows.append(_mean_row(rows))
    return rows


def _mean_row(class_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``class="mean"`` row computed from the per-class rows."""
    seed_counts = {row["n_seeds"] for row in class_rows}
    mean_of_means = float(np.mean([row["mean"] for row in class_rows]))
    if len(seed_counts) == 1:
        per_seed_average = np.mean([row["values"] for row in class_rows], axis=0)
        return {
            "class": "mean",
            "mean": mean_of_means,
            "std": _seed_std(per_seed_average),
            "n_seeds": seed_counts.pop(),
            "values": [float(v) for v in per_seed_average],
        }
    return {
        "class": "mean",
        "mean": mean_of_means,
        "std": float("nan"),
        "n_seeds": min(seed_counts),
        "values": [],
    }


def _class_label(class_key: ClassKey, class_names: Any) -> str:
    """``"3"`` or, with names, ``"3 (dress)"``; names are a sequence or a mapping."""
    if class_key == "mean" or class_names is None:
        return str(class_key)
    name = None
    if isinstance(class_names, Mapping):
        name = class_names.get(class_key, class_names.get(str(class_key)))
        if name is None and _is_int_like(class_key):
            name = class_names.get(int(class_key))
    elif _is_int_like(class_key) and 0 <= int(class_key) < len(class_names):
        name = class_names[int(class_key)]
    # MNIST's class names are the digits themselves: "3 (3)" would only add noise
    return f"{class_key} ({name})" if name is not None and str(name) != str(class_key) else str(class_key)


def _markdown_cell(text: str) -> str:
    """Escape the pipe so a class or method name cannot break the table."""
    return str(text).replace("|", "\\|")


def _mean_std_text(row: Mapping[str, Any], decimals: int) -> str:
    """``"0.953 ± 0.004"``; only the mean when the std is undefined (NaN)."""
    if math.isnan(row["std"]):
        return f"{row['mean']:.{decimals}f}"
    return f"{row['mean']:.{decimals}f} ± {row['std']:.{decimals}f}"


def _seeds_text(row: Mapping[str, Any], class_rows: list[Mapping[str, Any]]) -> str:
    """Seed count; for a mean row over classes with unequal counts, ``"1–3"``."""
    if row["class"] == "mean" and math.isnan(row["std"]) and class_rows:
        counts = [r["n_seeds"] for r in class_rows]
        return f"{min(counts)}–{max(counts)}"
    return str(row["n_seeds"])


def _check_decimals(decimals: int) -> None:
    if not isinstance(decimals, (int, np.integer)) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer; got {decimals!r}")


def format_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    metric: str = "AUROC",
    decimals: int = 3,
) -> str:
    """Render ``summarize_per_class`` rows as a GitHub markdown table.

    Example::

        | class | AUROC (mean ± std) | seeds |
        |---|---|---|
        | 0 (T-shirt/top) | 0.953 ± 0.004 | 3 |
        | mean | 0.901 ± 0.002 | 3 |

    Args:
        rows: output of ``summarize_per_class`` (dicts with class, mean, std, n_seeds).
        title: optional bold line above the table.
        class_names: names shown next to integer-like class keys: a sequence indexed
            by class id, or a mapping {class: name}.
        metric: the metric's name in the header.
        decimals: digits after the decimal point.

    Returns:
        The markdown text (newline-terminated), for ``IPython.display.Markdown`` or a README.
    """
    _check_decimals(decimals)
    if len(rows) == 0:
        raise ValueError("rows are empty: pass the output of summarize_per_class(results)")
    missing = [key for key in ("class", "mean", "std", "n_seeds") if key not in rows[0]]
    if missing:
        raise ValueError(
            f"rows lack the keys {missing}: pass the output of summarize_per_class(results)"
        )
    class_rows = [row for row in rows if row["class"] != "mean"]
    lines = [] if title is None else [f"**{title}**", ""]
    lines += [f"| class | {_markdown_cell(metric)} (mean ± std) | seeds |", "|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {_markdown_cell(_class_label(row['class'], class_names))} "
            f"| {_mean_std_text(row, decimals)} | {_seeds_text(row, class_rows)} |"
        )
    return "\n".join(lines) + "\n"


def per_class_table(
    results: Mapping[ClassKey, Sequence[float]],
    *,
    decimals: int = 3,
    title: str | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    metric: str = "AUROC",
) -> str:
    """``{class: [value per seed]}`` -> markdown table; ``format_table(summarize_per_class(...))``.

    The pandas-free way to show per-class results: the returned string renders in a
    notebook with ``IPython.display.Markdown`` and pastes into a README as is.
    """
    return format_table(
        summarize_per_class(results),
        title=title,
        class_names=class_names,
        metric=metric,
        decimals=decimals,
    )


def compare_table(
    results_by_method: Mapping[str, Mapping[ClassKey, Sequence[float]]],
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    *,
    metric: str = "AUROC",
    decimals: int = 3,
    title: str | None = None,
) -> str:
    """Markdown table with one column per method (mean ± std over seeds) and a mean row.

    Args:
        results_by_method: ``{method: {class: [value per seed]}}``.
        class_names: as in ``format_table``.
        metric, decimals, title: as in ``format_table``.

    Returns:
        Markdown text. Rows are the union of all methods' classes; a class a method
        was not run on shows "—". A method's mean row averages only the classes it
        has; when that is not all of them the cell says so ("(7/10 classes)"),
        because means over different class sets are not comparable.
    """
    _check_decimals(decimals)
    if not isinstance(results_by_method, Mapping) or len(results_by_method) == 0:
        raise ValueError(
            "results_by_method must be a non-empty dict {method: {class: [value per seed]}}"
        )
    summaries: dict[str, dict[ClassKey, dict[str, Any]]] = {}
    for method, results in results_by_method.items():
        try:
            rows = summarize_per_class(results)
        except ValueError as error:
            raise ValueError(f"method {method!r}: {error}") from None
        summaries[method] = {_key_id(row["class"]): row for row in rows}
    all_classes = _ordered_union(results_by_method)
    n_classes = len(all_classes)

    header = [f"class ({metric}, mean ± std)"] + [str(method) for method in summaries]
    lines = [] if title is None else [f"**{title}**", ""]
    lines.append("| " + " | ".join(_markdown_cell(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    for class_key in all_classes:
        cells = [_class_label(class_key, class_names)]
        for summary in summaries.values():
            row = summary.get(_key_id(class_key))
            cells.append("—" if row is None else _mean_std_text(row, decimals))
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    mean_cells = ["mean"]
    for summary in summaries.values():
        text = _mean_std_text(summary[_key_id("mean")], decimals)
        n_present = len(summary) - 1  # minus the mean row itself
        if n_present < n_classes:
            text += f" ({n_present}/{n_classes} classes)"
        mean_cells.append(text)
    lines.append("| " + " | ".join(_markdown_cell(c) for c in mean_cells) + " |")
    return "\n".join(lines) + "\n"


def _key_id(class_key: ClassKey) -> str:
    """Compare class keys across methods as strings, so ``3`` and ``"3"`` match (JSON)."""
    return str(class_key).strip()


def _ordered_union(results_by_method: Mapping[str, Mapping[ClassKey, Any]]) -> list[ClassKey]:
    """All class keys of all methods, each once (first spelling seen), ordered."""
    seen: dict[str, ClassKey] = {}
    for results in results_by_method.values():
        for class_key in results:
            seen.setdefault(_key_id(class_key), class_key)
    return _ordered_keys(list(seen.values()))
