"""Exercises of notebook 05 (AE-FLOW): the AE-FLOW anomaly score, the best-F1 threshold on validation."""

from __future__ import annotations

import math

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register


# --------------------------------------------------------------------------- ex-aeflow-score
def aeflow_score_reference(z_prime, ssim, beta: float):
    """S = beta S_flow + (1 - beta)(1 - SSIM), S_flow = mean over (C, H, W) of z'^2 / 2 + log(2 pi) / 2; (N,)."""
    s_flow = 0.5 * z_prime.flatten(1).square().mean(1) + 0.5 * math.log(2 * math.pi)
    return beta * s_flow + (1 - beta) * (1 - ssim)


def _aeflow_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("z' = 0, perfect SSIM, beta 0.9", (np.zeros((2, 4, 3, 3)), np.ones(2), 0.9), trivial=True),
        Case("random z', beta 0.9", (rng.normal(size=(5, 8, 4, 4)), rng.random(5), 0.9)),
        Case("random z', beta 0.5", (2 * rng.normal(size=(3, 16, 2, 2)), rng.random(3), 0.5)),
        Case("beta 0: reconstruction only", (rng.normal(size=(4, 2, 5, 5)), rng.random(4), 0.0)),
        Case("beta 1: flow only, non-square map", (rng.normal(size=(3, 6, 2, 7)), rng.random(3), 1.0)),
        Case("negative SSIM", (rng.normal(size=(2, 4, 4, 4)), np.array([-0.2, 0.3]), float(rng.uniform(0.2, 0.8)))),
    ]


AEFLOW_SCORE = register(ExerciseSpec(
    grade_id="ex-aeflow-score", answer="aeflow_anomaly_score", draw=_aeflow_cases, reference=aeflow_score_reference,
    torch_args=(0, 1), compare=close_to(atol=1e-5, rtol=1e-5, hint=(
        "S_flow = mean(z'^2) / 2 + log(2 pi) / 2 per image (average over dims 1, 2, 3, not the batch); "
        "S_recon = 1 - SSIM; S = beta S_flow + (1 - beta) S_recon")),
    summary="agrees with the reference"))


# --------------------------------------------------------------------------- ex-val-threshold-best-f1
def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of predicting anomaly (label 1) for ``scores >= threshold``; 0 when undefined."""
    predicted = scores >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0


def best_f1_reference(val_scores: np.ndarray, val_labels: np.ndarray) -> float:
    """A threshold reaching the best validation F1 (``course_utils.metrics.threshold_best_f1``)."""
    from course_utils.metrics import threshold_best_f1

    return float(threshold_best_f1(val_scores, val_labels))


def _best_f1_cases(rng: np.random.Generator) -> list[Case]:
    labels = (rng.random(300) < 0.6).astype(np.int64)
    labels2 = (rng.random(500) < 0.3).astype(np.int64)
    return [
        Case("separable", (np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([0, 0, 0, 1, 1, 1])), trivial=True),
        Case("overlapping, 300 images", (rng.normal(size=300) + 1.5 * labels, labels)),
        Case("ties", (np.round(rng.normal(size=500) + labels2, 1), labels2)),
        Case("reversed score", (-np.arange(10.0), np.array([1] * 5 + [0] * 5))),
    ]


def _compare_f1(case: Case, expected, found) -> str | None:
    scores, labels = case.args
    best = f1_at(scores, labels, float(expected))
    try:
        got = f1_at(scores, labels, float(found)) if np.isfinite(float(found)) else float("nan")
    except (TypeError, ValueError):
        got = float("nan")
    if np.isfinite(got) and got >= best - 1e-12:
        return None
    return (f"{case.name}: expected a threshold with F1 = {best:.4f}, found threshold {found!r} with F1 = {got:.4f}."
            "\nHint: try every distinct validation score as the threshold t (predict anomaly for score >= t) "
            "and keep the one with the highest F1 = 2 TP / (2 TP + FP + FN)")


VAL_THRESHOLD_BEST_F1 = register(ExerciseSpec(
    grade_id="ex-val-threshold-best-f1", answer="val_threshold_best_f1", draw=_best_f1_cases,
    reference=best_f1_reference, compare=_compare_f1, summary="reaches the best validation F1"))
