"""Detection metrics and thresholds that never look at test labels.

Conventions used everywhere in the course:

- ``labels``: 1 = anomaly (the positive class), 0 = normal.
- ``scores``: higher = more anomalous. A threshold ``t`` predicts "anomaly" for
  ``scores >= t``.
- Inputs may be numpy arrays, lists or torch tensors (any device); they are
  converted to 1-D float numpy arrays and validated first.

The evaluation protocol (docs/design.md, section protocol): AUROC / AUPRC are threshold-free and are computed
on the test split. Any threshold used for F1 / ACC / SEN / SPE comes from training or
validation data only (``threshold_from_normal_scores``, ``threshold_best_f1``,
``threshold_youden``), never from the test labels.

The markdown tables of results per class live in :mod:`course_utils.tables`. ``plots`` and
``widgets`` validate their inputs with the same public checks (``validate_scores_labels``,
``validate_threshold``, ``finite_scores``).
"""

from __future__ import annotations

import math
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
    "auroc_between_classes",
    "auprc",
    "pixel_auroc",
    "pro_curve",
    "aupro",
    "threshold_from_normal_scores",
    "threshold_best_f1",
    "threshold_youden",
    "confusion_counts",
    "binary_metrics",
    "balanced_accuracy",
    "balanced_accuracy_from_rates",
    "finite_scores",
    "validate_scores_labels",
    "validate_threshold",
    "counts_at_threshold",
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


def finite_scores(values: Any, name: str, *, allow_empty: bool = True) -> np.ndarray:
    """One finite float64 value per image, (N,), from a numpy array, list or torch tensor: the
    conversion and checks every metric applies to its scores (ValueError naming ``name`` otherwise;
    also for no values at all unless ``allow_empty``)."""
    array = _as_1d_float(values, name)
    if not allow_empty:
        _check_not_empty(array, name)
    _check_finite(array, name)
    return array


def _check_not_empty(values: np.ndarray, name: str) -> None:
    if values.size == 0:
        raise ValueError(f"{name} are empty: pass at least one value (one per test image)")


def validate_scores_labels(
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


def validate_threshold(threshold: Any) -> float:
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
    scores_array, labels_array = validate_scores_labels(scores, labels, metric="AUROC")
    return float(roc_auc_score(labels_array, scores_array))


def auroc_between_classes(scores: Any, classes: Any, normal: int, anomaly: int) -> float:
    """AUROC of class ``anomaly`` against class ``normal`` alone (the images of every other class left out).

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        classes: shape (N,), the class of each image; both ``normal`` and ``anomaly`` present.
        normal, anomaly: the two classes compared (``anomaly`` is the positive class).
    """
    classes_array = np.asarray(classes.numpy() if hasattr(classes, "numpy") else classes).reshape(-1)
    scores_array = np.asarray(scores.numpy() if hasattr(scores, "numpy") else scores, dtype=np.float64).reshape(-1)
    if len(classes_array) != len(scores_array):
        raise ValueError(f"scores ({len(scores_array)}) and classes ({len(classes_array)}) differ in length")
    keep = (classes_array == normal) | (classes_array == anomaly)
    return auroc(scores_array[keep], (classes_array[keep] == anomaly).astype(int))


def auprc(scores: Any, labels: Any) -> float:
    """Area under the precision-recall curve (average precision), in [0, 1].

    The anomaly (label 1) is the positive class; chance level equals the anomaly
    prevalence ``labels.mean()``, not 0.5. Wraps
    ``sklearn.metrics.average_precision_score``.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; both classes must be present.
    """
    scores_array, labels_array = validate_scores_labels(scores, labels, metric="AUPRC")
    return float(average_precision_score(labels_array, scores_array))


# --------------------------------------------------------------------------------------
# Pixel-level metrics (localisation), for datasets with ground-truth masks
# --------------------------------------------------------------------------------------


def _validate_maps_masks(anomaly_maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Convert and check anomaly maps and masks; the one validation the pixel metrics share.

    Args:
        anomaly_maps: (N, H, W) or (N, 1, H, W), finite; higher = more anomalous.
        masks: the same shape, values in {0, 1} or bool (1 = anomalous pixel).

    Returns:
        ``(maps, masks)``: float64 (N, H, W) and bool (N, H, W) numpy arrays.
    """
    arrays = []
    for value, name in ((anomaly_maps, "anomaly_maps"), (masks, "masks")):
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
            value = value.detach().cpu().numpy()
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be numbers (numpy array or torch tensor): {error}") from None
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3:
            raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W); got {array.shape}")
        arrays.append(array)
    maps, mask_values = arrays
    if maps.shape != mask_values.shape:
        raise ValueError(f"anomaly_maps {maps.shape} and masks {mask_values.shape} must have the same shape: "
                         "one score per pixel of every test image (upsample the maps to the mask size first)")
    _check_not_empty(maps.reshape(-1), "anomaly_maps")
    if not np.isfinite(maps).all():
        raise ValueError(f"anomaly_maps contain {int((~np.isfinite(maps)).sum())} NaN / inf values")
    if not np.isin(mask_values, (0.0, 1.0)).all():
        raise ValueError("masks must be 0 (normal pixel) or 1 (anomalous pixel); binarise them first")
    binary = mask_values.astype(bool)
    if not binary.any() or binary.all():
        raise ValueError("masks must contain both normal (0) and anomalous (1) pixels: evaluate on a test split "
                         "with defective and defect-free regions")
    return maps, binary


def pixel_auroc(anomaly_maps: Any, masks: Any) -> float:
    """Pixel-level AUROC: every pixel of every test image is one example, in [0, 1].

    Args:
        anomaly_maps: (N, H, W) or (N, 1, H, W), finite; higher = more anomalous.
        masks: the same shape, {0, 1} or bool, 1 = anomalous pixel; both values must occur.

    Large defects dominate it (a defect of 10,000 pixels counts 100 times one of 100);
    ``aupro`` weighs every defect equally. Ties count one half.
    """
    maps, binary = _validate_maps_masks(anomaly_maps, masks)
    return float(roc_auc_score(binary.reshape(-1), maps.reshape(-1)))


def _regions(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected ground-truth regions, image by image, 8-connected (as the MVTec AD evaluation code).

    Returns:
        ``(region_of_pixel, region_sizes)``: int64 (N, H, W), 0 for normal pixels and
        1..R for the R regions of all images; int64 (R + 1,) pixel counts (index 0 unused).
    """
    from scipy.ndimage import label  # scipy comes with scikit-learn

    region_of_pixel = np.zeros(binary.shape, dtype=np.int64)
    n_regions = 0
    for index, mask in enumerate(binary):
        labelled, count = label(mask, structure=np.ones((3, 3), dtype=int))
        region_of_pixel[index] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    return region_of_pixel, np.bincount(region_of_pixel.reshape(-1), minlength=n_regions + 1)


def pro_curve(anomaly_maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve of Bergmann et al. (2021), exactly, at every distinct score.

    For a threshold t, FPR(t) is the fraction of NORMAL pixels (mask 0, in all images)
    scoring >= t, and PRO(t) the mean over all connected ground-truth regions (8-connected,
    per image) of the fraction of the region's pixels scoring >= t.

    Args:
        anomaly_maps, masks: as in ``pixel_auroc``.

    Returns:
        ``(fpr, pro)``: float64 arrays (K + 1,) starting at (0, 0), one point per distinct
        score from the highest down; both non-decreasing, ending at (1, 1).
    """
    maps, binary = _validate_maps_masks(anomaly_maps, masks)
    region_of_pixel, region_sizes = _regions(binary)
    n_regions = len(region_sizes) - 1
    scores = maps.reshape(-1)
    regions = region_of_pixel.reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_regions = scores[order], regions[order]
    normal = sorted_regions == 0
    fpr = np.cumsum(normal) / normal.sum()
    # each anomalous pixel adds 1 / (number of regions * size of its region) to the mean overlap
    weights = np.where(normal, 0.0, 1.0 / (n_regions * region_sizes[sorted_regions]))
    pro = np.cumsum(weights)
    # one point per distinct score: pixels with equal scores pass a threshold together
    last_of_tie = np.append(np.flatnonzero(np.diff(sorted_scores) != 0), len(sorted_scores) - 1)
    return np.concatenate([[0.0], fpr[last_of_tie]]), np.concatenate([[0.0], pro[last_of_tie]])


def aupro(anomaly_maps: Any, masks: Any, max_fpr: float = 0.3) -> float:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr``: in [0, 1], 1 = perfect.

    Bergmann et al. (2021, "The MVTec Anomaly Detection Dataset", IJCV): every connected
    defect region counts equally however large it is, and only the low false-positive range
    (normal pixels flagged, FPR <= 0.3) matters. The curve (``pro_curve``) is integrated with
    the trapezoidal rule and interpolated linearly at ``max_fpr``; a map that ranks every
    anomalous pixel above every normal one gets 1, the reverse 0.

    Args:
        anomaly_maps: (N, H, W) or (N, 1, H, W), finite; higher = more anomalous.
        masks: the same shape, {0, 1} or bool; both values must occur.
        max_fpr: integration limit, in (0, 1].
    """
    if not 0.0 < float(max_fpr) <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    fpr, pro = pro_curve(anomaly_maps, masks)
    end = int(np.searchsorted(fpr, max_fpr, side="left"))  # first point with fpr >= max_fpr
    if fpr[end] == max_fpr:
        pro_at_end = pro[end]
    else:  # interpolate on the segment that crosses max_fpr
        slope = (pro[end] - pro[end - 1]) / (fpr[end] - fpr[end - 1])
        pro_at_end = pro[end - 1] + slope * (max_fpr - fpr[end - 1])
    x = np.append(fpr[:end], max_fpr)
    y = np.append(pro[:end], pro_at_end)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / max_fpr)


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
    scores_array, labels_array = validate_scores_labels(
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
    scores_array, labels_array = validate_scores_labels(
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
    scores_array, labels_array = validate_scores_labels(
        scores, labels, require_both_classes=False
    )
    return counts_at_threshold(scores_array, labels_array, validate_threshold(threshold))


def counts_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` of arrays already validated by :func:`validate_scores_labels` (no checks here)."""
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
    scores_array, labels_array = validate_scores_labels(
        scores, labels, require_both_classes=False
    )
    tp, fp, tn, fn = counts_at_threshold(scores_array, labels_array, validate_threshold(threshold))
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


def balanced_accuracy_from_rates(sen: float, spe: float) -> float:
    """(SEN + SPE) / 2 for a sensitivity and a specificity in [0, 1] (or both in %: the result is too).

    This is what two public AE-FLOW reproductions reported as "AUC": e.g. (0.9769 + 0.6624) / 2 =
    0.8197. It is the AUROC of the thresholded 0/1 predictions, a single point of the ROC curve,
    not the area under the curve of the continuous scores (:func:`auroc`)."""
    for name, value in (("sen", sen), ("spe", spe)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite rate >= 0, got {value!r}")
    return (float(sen) + float(spe)) / 2.0


def balanced_accuracy(scores: Any, labels: Any, threshold: float) -> float:
    """Balanced accuracy (SEN + SPE) / 2 of the prediction ``scores >= threshold``, in [0, 1].

    Args: as :func:`binary_metrics` (``threshold`` chosen without test labels). Equal to
    ``auroc(scores >= threshold, labels)`` when both classes are present: the "AUC" of
    thresholded predictions."""
    metrics = binary_metrics(scores, labels, threshold)
    return balanced_accuracy_from_rates(metrics["sen"], metrics["spe"])
