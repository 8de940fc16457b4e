"""Exercises of notebook 05 (AE-FLOW): the AE-FLOW anomaly score, the best-F1 threshold on validation, the
balanced accuracy that reproductions reported as "AUC", and FlowGMM's posterior of the pneumonia component."""

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


# --------------------------------------------------------------------------- ex-balanced-accuracy
def balanced_accuracy_reference(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """(SEN + SPE) / 2 of predicting anomaly for ``scores >= threshold`` (``course_utils.metrics.balanced_accuracy``)."""
    from course_utils.metrics import balanced_accuracy

    return float(balanced_accuracy(scores, labels, threshold))


def _balanced_accuracy_cases(rng: np.random.Generator) -> list[Case]:
    labels = (rng.random(300) < 0.8).astype(np.int64)            # 80 % anomalies: accuracy != balanced accuracy
    scores = rng.normal(size=300) + labels
    labels2 = (rng.random(400) < 0.3).astype(np.int64)
    tied = np.round(rng.normal(size=400) + labels2, 1)
    # reproduction A's operating point on the 624 test X-rays: 381 of 390 pneumonia and 155 of 234 normal found
    rep_labels = np.r_[np.zeros(234), np.ones(390)].astype(np.int64)
    rep_scores = np.r_[np.zeros(155), np.ones(79), np.ones(381), np.zeros(9)].astype(np.float64)
    return [
        Case("separable", (np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([0, 0, 0, 1, 1, 1]), 0.5), trivial=True),
        Case("80 % anomalies, threshold at the median", (scores, labels, float(np.median(scores)))),
        Case("ties: threshold equal to a score value", (tied, labels2, float(tied[int(rng.integers(400))]))),
        Case("threshold above every score", (scores, labels, float(scores.max() + 1.0))),
        Case("reproduction A: SEN 381/390, SPE 155/234", (rep_scores, rep_labels, 0.5)),
    ]


BALANCED_ACCURACY = register(ExerciseSpec(
    grade_id="ex-balanced-accuracy", answer="balanced_accuracy_at", draw=_balanced_accuracy_cases,
    reference=balanced_accuracy_reference, compare=close_to(atol=1e-9, hint=(
        "predict anomaly for score >= threshold; SEN = TP / (TP + FN) over the anomalies, SPE = TN / (TN + FP) over "
        "the normal images; return (SEN + SPE) / 2 (not the accuracy (TP + TN) / N)")),
    summary="agrees with the reference"))


# --------------------------------------------------------------------------- ex-flowgmm-posterior
def pneumonia_posterior_reference(log_density_normal: np.ndarray, log_density_pneumonia: np.ndarray,
                                  prior: float) -> np.ndarray:
    """p(y = 1 | z') from log N(z'; mu_0, I), log N(z'; mu_1, I) and pi_1 = prior, (N,)
    (``course_utils.models.aeflow.anomaly_posterior``)."""
    from course_utils.models.aeflow import anomaly_posterior

    return anomaly_posterior(log_density_normal, log_density_pneumonia, prior)


def _posterior_cases(rng: np.random.Generator) -> list[Case]:
    base = rng.uniform(-30, -10, size=6)
    big = rng.uniform(-6000, -4000, size=5)
    return [
        Case("equal densities, prior 1/2", (base, base.copy(), 0.5), trivial=True),
        Case("a few nats apart, prior 1/2", (base, base + rng.normal(scale=3.0, size=6), 0.5)),
        Case("a few nats apart, prior 0.2", (base, base + rng.normal(scale=3.0, size=6), 0.2)),
        Case("equal densities, prior 0.7: the posterior is the prior", (base, base.copy(), 0.7)),
        Case("D in the thousands: log-densities near -5000, hundreds of nats apart",
             (big, big + rng.choice([-1.0, 1.0], size=5) * rng.uniform(100, 800, size=5), 0.5)),
    ]


def _posterior_hint(case: Case, expected, found) -> str:
    text = ("p(pneumonia | z') = pi_1 N_1 / (pi_0 N_0 + pi_1 N_1) = sigmoid(log N_1 - log N_0 + log(pi_1 / pi_0)), "
            "with pi_0 = 1 - prior")
    try:
        if not np.all(np.isfinite(np.asarray(found, dtype=np.float64))):
            text += ("; you got NaN or inf: exp() of a log-density near -5000 underflows to 0 (0 / 0). Work with the "
                     "difference of the log-densities")
    except (TypeError, ValueError):
        pass
    return text


FLOWGMM_POSTERIOR = register(ExerciseSpec(
    grade_id="ex-flowgmm-posterior", answer="pneumonia_posterior", draw=_posterior_cases,
    reference=pneumonia_posterior_reference, compare=close_to(atol=1e-9, rtol=1e-7, hint=_posterior_hint),
    summary="agrees with the reference"))
