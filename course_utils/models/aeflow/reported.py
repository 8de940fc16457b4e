"""Published AE-FLOW numbers on chest X-rays (the paper and two public reproductions) and the fully supervised
MedMNIST ceiling, with their citations: the one place notebook 05 and ``benchmarks/`` read them from.

They are literature numbers, never measured here. Each row keeps the number its source called "AUC" under
``"auc"`` and says in ``"auc_is"`` what it is: a reproduction's "AUC" that equals (SEN + SPE) / 2 is the
balanced accuracy at one threshold (:func:`course_utils.metrics.balanced_accuracy_from_rates`), one point of
the ROC curve, not the area under it.
"""

from __future__ import annotations

__all__ = ["PAPER_CHEST_XRAY", "AEFLOW_REPORTED_CHEST_XRAY", "MEDMNIST_RESNET18_28_AUC", "reported_row"]

# Zhao et al. 2023, Table 1, chest X-ray (Kermany), AE-FLOW; %. SPE is not stated exactly in our notes (about 76).
PAPER_CHEST_XRAY = {"auroc": 92.00, "f1": 88.92, "acc": 85.58, "sen": 91.28, "spe": 76.0}

# The paper and two public reproductions on chest X-ray (Kermany), as each reported it, in %. "auc" is the
# number each calls AUC; "auc_is" says what it is; "model" what was trained. None: not reported.
AEFLOW_REPORTED_CHEST_XRAY = [
    {"source": "paper", "citation": "Zhao, Ding & Zhang, AE-FLOW, ICLR 2023, Table 1",
     "auc": 92.00, "f1": 88.92, "acc": 85.58, "sen": 91.28, "spe": 76.0, "auc_is": "AUROC (SPE: about 76)",
     "model": "256 px, ImageNet Wide-ResNet-50-2 encoder, GPU"},
    {"source": "reproduction A, ResNet-type subnet",
     "citation": "'Study of AE-FLOW: Autoencoders with Normalizing Flows for Anomaly Detection', student "
                 "reproduction (2023), chest X-ray results",
     "auc": 81.97, "f1": 89.65, "acc": 85.90, "sen": 97.69, "spe": 66.24, "auc_is": "(SEN + SPE) / 2",
     "model": "reimplementation of the paper's model",
     # the reproduction printed its rates unrounded (SEN 0.9769230769, SPE 0.6623931624, ACC 0.8589743590,
     # F1 0.8964705882, "AUC" 0.8196581197): on the 390 pneumonia / 234 normal test X-rays these are exactly
     # the counts below (381/390, 155/234, 536/624, 762/850), derived here, not published as counts
     "test_counts": {"tp": 381, "fn": 9, "tn": 155, "fp": 79}},
    {"source": "reproduction A, conv-type subnet",
     "citation": "same reproduction, subnet ablation",
     "auc": 56.2, "f1": 76.4, "acc": 65.22, "sen": 92.31, "spe": 20.09, "auc_is": "(SEN + SPE) / 2",
     "model": "reimplementation, conv-type subnet"},
    {"source": "reproduction B",
     "citation": "Gu & Hu, 'AE-FLOW: Autoencoders with normalizing flows for medical images anomaly detection', "
                 "University of Amsterdam, Deep Learning 2 (2023)",
     "auc": 73.04, "f1": 81.12, "acc": 71.71, "sen": 95.05, "spe": None, "auc_is": "not checkable (no SPE)",
     "model": "reimplementation of the paper's model"},
]

# Yang et al. 2023, MedMNIST v2 (Scientific Data), Table 3: PneumoniaMNIST, ResNet-18 (28), test AUC, trained
# with every label of the train split: the fully supervised ceiling of the few-label comparison.
MEDMNIST_RESNET18_28_AUC = 0.944


def reported_row(source: str) -> dict:
    """The row of :data:`AEFLOW_REPORTED_CHEST_XRAY` whose ``"source"`` is ``source`` (a copy).

    Raises:
        KeyError: no such row (the message lists the sources).
    """
    for row in AEFLOW_REPORTED_CHEST_XRAY:
        if row["source"] == source:
            return dict(row)
    raise KeyError(f"no reported row {source!r}; sources: {[r['source'] for r in AEFLOW_REPORTED_CHEST_XRAY]}")
