"""Exercises of notebook 00 (anomaly detection basics): AUROC from ranks, a threshold from normal scores."""

from __future__ import annotations

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register


# --------------------------------------------------------------------------- ex-auroc-from-ranks
def auroc_reference(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of ``scores`` (N,) for binary ``labels`` (N,) in {0, 1}, ties counted 1/2 (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _auroc_cases(rng: np.random.Generator) -> list[Case]:
    n = int(rng.integers(150, 400))
    many = int(rng.integers(300, 800))
    return [
        Case("perfect separation", (np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))),
        Case("reversed scores", (np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1]))),
        Case("one tie across classes", (np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1]))),
        Case(f"random scores, {n} images", (rng.normal(size=n), (np.arange(n) % 3 == 0).astype(np.int64))),
        Case("all scores equal", (np.full(10, float(rng.integers(-5, 5))), np.array([0] * 6 + [1] * 4)),
             trivial=True),
        Case(f"many ties, {many} images", (np.round(rng.normal(size=many), 1),
                                           (rng.random(many) < 0.5).astype(np.int64) | np.eye(many, dtype=np.int64)[0])),
        Case("one anomaly among 50", (rng.normal(size=50), np.eye(50, dtype=np.int64)[int(rng.integers(50))])),
    ]


def _auroc_hint(case: Case, expected, found) -> str:
    if "tie" in case.name or "equal" in case.name:
        return "average the ranks of tied scores (scipy.stats.rankdata does this), so a tie counts 1/2"
    return "AUROC = (sum of anomaly ranks - n1 (n1 + 1) / 2) / (n1 n0), ranks starting at 1"


AUROC_FROM_RANKS = register(ExerciseSpec(
    grade_id="ex-auroc-from-ranks", answer="auroc_from_ranks", draw=_auroc_cases, reference=auroc_reference,
    compare=close_to(atol=1e-9, hint=_auroc_hint), summary="agrees with scikit-learn"))


# --------------------------------------------------------------------------- ex-threshold-for-fpr
def threshold_reference(normal_val_scores: np.ndarray, target_fpr: float) -> float:
    """The (1 - target_fpr) quantile of the normal validation scores (numpy's linear interpolation)."""
    return float(np.quantile(normal_val_scores, 1.0 - target_fpr))


def _threshold_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("1000 normal validation scores, FPR 5 %", (rng.normal(size=1000), 0.05)),
        Case("200 scores, FPR 10 %", (rng.exponential(size=200), 0.10)),
        Case("5000 scores, FPR 1 %", (rng.normal(loc=5, size=5000), 0.01)),
        Case("shifted and scaled, FPR 20 %", (100 + 20 * rng.normal(size=300), 0.2)),
    ]


def _threshold_hint(case: Case, expected, found) -> str:
    scores, fpr = case.args
    try:
        flagged = f"{float(np.mean(scores >= float(found))):.1%}"
    except (TypeError, ValueError):
        flagged = "an unknown share"
    return (f"your threshold flags {flagged} of the normal images, the target is {fpr:.0%}: "
            "use the (1 - target_fpr) quantile of the normal scores")


THRESHOLD_FOR_FPR = register(ExerciseSpec(
    grade_id="ex-threshold-for-fpr", answer="threshold_for_fpr", draw=_threshold_cases,
    reference=threshold_reference, compare=close_to(atol=1e-6, rtol=1e-6, hint=_threshold_hint),
    summary="flags the target fraction of normal images"))
