"""FlowGMM-AE-FLOW with k labelled pneumonia images: ``python -m benchmarks.aeflow_flowgmm --k 0 10 50 200 all
--seeds 0 1 2``.

Protocol (the one of ``benchmarks.aeflow``, plus k labels):

- the training data: the NORMAL images of the official train split, plus k pneumonia images of the same
  train split, drawn without replacement by ``numpy.random.default_rng(seed)`` (``draw_labelled``; the
  draw seed is the run seed and is part of the cache key); ``all`` = every pneumonia training image.
  No unlabelled images are used (``FlowGMMDetector`` supports them through the marginal likelihood;
  this benchmark measures the labelled case only);
- the model: ``FlowGMMDetector`` on ``PNEUMONIA_CONFIG`` (fast mode: ``PNEUMONIA_FAST_CONFIG``), mixture
  means ``--means`` (several: each is trained and the VAL split picks one per k and seed);
- the score: chosen per k and seed by val AUROC among the one-class AE-FLOW variants
  (``SELECTABLE_VARIANTS``) and, for k > 0, the FlowGMM scores (``FLOWGMM_VARIANTS``); thresholds for
  F1 / SEN / SPE are chosen on val (best F1). Test labels are used only to report;
- baselines on the same data: a supervised classifier on the same k labels (logistic regression on the
  pixels, normal images vs the k pneumonia images, balanced class weights, C chosen on val; k >= 1),
  and L(x) alone (minus the PNG length, no model); the ceiling: MedMNIST v2's fully supervised
  ResNet-18 at 28 px (``MEDMNIST_RESNET18_28_AUC``, all labels, a published number, not rerun here).

Writes ``aeflow_flowgmm__pneumoniamnist.json`` (``"protocol": "normal-vs-pneumonia-few-labels"``) in
``--out-dir`` and prints its markdown section (``benchmarks.sections.render_aeflow_flowgmm``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from course_utils import config
from course_utils.data import load_dataset, one_class_split
from course_utils.metrics import auroc, binary_metrics, threshold_best_f1
from course_utils.models.aeflow import (FLOWGMM_VARIANTS, PNEUMONIA_CONFIG, PNEUMONIA_FAST_CONFIG, SELECTABLE_VARIANTS,
                                        AEFlowConfig, FlowGMMDetector, FlowGMMSettings, draw_labelled,
                                        flowgmm_variants, score_variants)
from course_utils.models.aeflow.reported import MEDMNIST_RESNET18_28_AUC

from .report import RESULTS_DIR, environment_info, peak_rss_mb, publish
from .sections import render_aeflow_flowgmm as render_markdown

# FLOWGMM_VARIANTS, draw_labelled and flowgmm_variants live in course_utils.models.aeflow (notebook 05 uses them)
__all__ = ["FLOWGMM_VARIANTS", "draw_labelled", "flowgmm_variants", "supervised_baseline", "run_one", "main",
           "render_markdown"]

SUPERVISED_C = (0.001, 0.01, 0.1, 1.0)  # logistic regression's inverse regularisation, chosen on val


def supervised_baseline(normal: Tensor, anomalies: Tensor, val_images: Tensor, val_labels: Tensor,
                        test_images: Tensor, seed: int) -> dict | None:
    """Logistic regression on the pixels of the normal images (0) and the labelled anomalies (1), with
    balanced class weights; C in ``SUPERVISED_C`` chosen by val AUROC. Returns ``{"C", "val_auroc",
    "test_scores"}`` (test scores (N,) float64, P(anomaly)) or None without anomalies (k = 0)."""
    from sklearn.linear_model import LogisticRegression

    if len(anomalies) == 0:
        return None
    x = torch.cat([normal, anomalies]).flatten(1).numpy()
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    best = None
    for c in SUPERVISED_C:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed).fit(x, y)
        val_auroc = auroc(model.predict_proba(val_images.flatten(1).numpy())[:, 1], val_labels)
        if best is None or val_auroc > best[1]:
            best = (c, val_auroc, model)
    c, val_auroc, model = best
    return {"C": c, "val_auroc": val_auroc, "test_scores": model.predict_proba(test_images.flatten(1).numpy())[:, 1]}


def _rounded(values: dict) -> dict:
    return {k: round(float(v), 6) for k, v in values.items()}


def run_one(split, anomalies: Tensor, k: int | None, seed: int, cfg: AEFlowConfig, means: list[str],
            progress: bool = False) -> dict:
    """Train the FlowGMM model(s) for one k and seed, choose means and score on val, report test."""
    labelled = draw_labelled(anomalies, k, seed)
    n_labelled = len(labelled)
    candidates = SELECTABLE_VARIANTS + (FLOWGMM_VARIANTS if n_labelled else ())
    per_means = {}
    for mean_kind in means:
        start = time.perf_counter()
        det = FlowGMMDetector(cfg, labelled_anomalies=labelled, label_seed=seed, seed=seed,
                              gmm=FlowGMMSettings(means=mean_kind), progress=progress).fit(split.train_images)
        seconds = time.perf_counter() - start
        val_parts, test_parts = det.score_parts(split.val_images), det.score_parts(split.test_images)
        val = {**score_variants(det, val_parts), **flowgmm_variants(det, val_parts)}
        test = {**score_variants(det, test_parts), **flowgmm_variants(det, test_parts)}
        val_auroc = {name: auroc(v, split.val_labels) for name, v in val.items()}
        chosen = max(candidates, key=lambda name: val_auroc[name])
        per_means[mean_kind] = {"det": det, "val": val, "test": test, "val_auroc": val_auroc, "chosen": chosen,
                                "seconds": seconds, "cache_hit": det.loaded_from_cache}
    best_means = max(means, key=lambda m: per_means[m]["val_auroc"][per_means[m]["chosen"]])
    best = per_means[best_means]
    chosen = best["chosen"]
    threshold = threshold_best_f1(best["val"][chosen], split.val_labels)
    test_auroc = {name: auroc(v, split.test_labels) for name, v in best["test"].items()}
    supervised = supervised_baseline(split.train_images, labelled, split.val_images, split.val_labels,
                                     split.test_images, seed)
    metrics = binary_metrics(best["test"][chosen], split.test_labels, threshold)
    return {
        "k": "all" if k is None else k, "n_labelled": n_labelled, "seed": seed, "label_seed": seed,
        "means": best_means, "selected_variant": chosen,
        "val_auroc": round(best["val_auroc"][chosen], 6), "test_auroc": round(test_auroc[chosen], 6),
        "val_auroc_of_chosen_by_means": {m: round(p["val_auroc"][p["chosen"]], 6) for m, p in per_means.items()},
        "val_auroc_by_variant": _rounded(best["val_auroc"]), "test_auroc_by_variant": _rounded(test_auroc),
        "test_at_val_threshold": {key: (round(v, 6) if isinstance(v, float) else v) for key, v in metrics.items()},
        "baseline_l_only_test_auroc": round(test_auroc["-L(x) only"], 6),
        "baseline_supervised": None if supervised is None else {
            "model": "logistic regression on pixels, balanced class weights", "C": supervised["C"],
            "val_auroc": round(supervised["val_auroc"], 6),
            "test_auroc": round(auroc(supervised["test_scores"], split.test_labels), 6)},
        "train_seconds": {m: round(p["seconds"], 2) for m, p in per_means.items()},
        "loaded_from_cache": {m: p["cache_hit"] for m, p in per_means.items()},
        "n_train_rows": int(len(best["det"].training_data(split.train_images)[1])),
    }


def summarise(runs: list[dict]) -> dict:
    """Mean and std (ddof 1) over seeds of the test AUROCs, per k."""
    by_k: dict[str, dict] = {}
    for key in dict.fromkeys(str(r["k"]) for r in runs):
        group = [r for r in runs if str(r["k"]) == key]

        def mean_std(values: list[float]) -> list[float]:
            return [round(float(np.mean(values)), 6), round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 6)]

        supervised = [r["baseline_supervised"]["test_auroc"] for r in group if r["baseline_supervised"]]
        by_k[key] = {"n_labelled": group[0]["n_labelled"], "seeds": [r["seed"] for r in group],
                     "test_auroc": mean_std([r["test_auroc"] for r in group]),
                     "supervised_test_auroc": mean_std(supervised) if supervised else None,
                     "l_only_test_auroc": mean_std([r["baseline_l_only_test_auroc"] for r in group]),
                     "selected": [r["selected_variant"] for r in group]}
    return by_k


def _parse_k(values: list[str]) -> list[int | None]:
    out: list[int | None] = []
    for value in values:
        if value == "all":
            out.append(None)
        elif value.isdigit():
            out.append(int(value))
        else:
            raise SystemExit(f"--k takes non-negative integers or 'all', got {value!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aeflow_flowgmm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", nargs="+", default=["0", "10", "50", "200", "all"],
                        help="numbers of labelled pneumonia training images ('all': every one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--means", nargs="+", choices=("fixed", "learned"), default=["fixed"],
                        help="mixture means to train; with several, the val split picks one per k and seed")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--source", choices=("auto", "full", "sample"), default="full")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    ks = _parse_k(args.k)
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = config.is_fast()
    cfg = PNEUMONIA_FAST_CONFIG if fast else PNEUMONIA_CONFIG
    if args.epochs:
        cfg = cfg.replace(epochs=args.epochs)
    split = one_class_split("pneumoniamnist", 0, source=args.source)
    anomalies = load_dataset("pneumoniamnist", "train", source=args.source, classes=1).images
    runs = []
    for k in ks:
        for seed in args.seeds:
            run = run_one(split, anomalies, k, seed, cfg, args.means, progress=args.progress)
            runs.append(run)
            print(f"k {run['k']} seed {seed}: test AUROC {run['test_auroc']:.4f} ({run['selected_variant']}, "
                  f"means {run['means']}), supervised {run['baseline_supervised'] and run['baseline_supervised']['test_auroc']}, "
                  f"L(x) alone {run['baseline_l_only_test_auroc']:.4f}, train {sum(run['train_seconds'].values()):.0f} s",
                  flush=True)
    record = {
        "method": "aeflow-flowgmm", "dataset": "pneumoniamnist", "protocol": "normal-vs-pneumonia-few-labels",
        "selection": "means, score variant and threshold chosen on the official val split; test labels only for "
                     "reporting", "unlabelled_images": "none (labelled images only)",
        "ks": [str(r) for r in args.k], "seeds": list(args.seeds), "means_tried": list(args.means),
        "config": cfg.to_dict(), "fast_mode": fast, "data_source": split.source, "full_data": split.source == "full",
        "n_train_normal": len(split.train_images), "n_train_pneumonia_available": len(anomalies),
        "n_val": len(split.val_images), "n_test": len(split.test_images),
        "ceiling_medmnist_resnet18_28_auc": MEDMNIST_RESNET18_28_AUC,
        "by_k": summarise(runs), "runs": runs, "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(), **environment_info(),
    }
    publish(record, args.out_dir / "aeflow_flowgmm__pneumoniamnist.json", render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
