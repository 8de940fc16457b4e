"""AE-FLOW on PneumoniaMNIST: ``python -m benchmarks.aeflow [--seeds 0 1 2]``; GPU throughput: ``--gpu``.

Protocol (docs/design.md, section protocol; the same code as notebook 05):

- train the reduced AE-FLOW (``course_utils.models.aeflow.PNEUMONIA_CONFIG``: small encoder from
  scratch, 32 px, no ImageNet weights) on the NORMAL images of the official train split only;
- score the official val and test splits; every score variant (``score_variants``) is computed, among
  them the paper's raw score with S_flow in both readings (log-density and likelihood form), and
  ``flow_forms_val`` says on the val split how the two differ once combined with 1 - SSIM
  (``compare_flow_forms``: spread ratio, S_flow's share of the spread, Spearman correlation);
- the variant reported is the one with the highest AUROC on the VAL split (per seed), and the
  threshold for F1 / ACC / SEN / SPE is chosen on the val split too (best F1; Youden also stored).
  Test labels are used only to report what these choices achieve. AUROC is computed on the
  continuous scores.

Writes ``benchmarks/results/aeflow__pneumoniamnist.json`` (own fields, ``"protocol":
"normal-vs-pneumonia"``) and prints its markdown section (:func:`render_markdown`).

``--gpu`` measures training images/s and ``torch.cuda.max_memory_allocated`` of the full 256 px
model (ImageNet encoder if available, else random init: same cost) at batch 16 with AMP through
``course_utils.training.train``, and writes ``aeflow_gpu.json``. Without a GPU it says so and
writes nothing: there are no made-up numbers.

``--ablation`` trains the subnet / loss-weight ablation of notebook 05 (``ABLATION_SETTINGS``: ResNet-type and
conv-type subnets at alpha = 0.5, the ResNet-type one at alpha = 0.1 and 0.9) with the benchmark's settings and
epochs, for ``--seeds`` (the notebook reads seed 0), and writes ``aeflow_ablation__pneumoniamnist.json``: the
val and test AUROC of every score variant per setting and seed, the training time and the flow's parameter
count. Nothing is selected there; the notebook reads the val column to compare and loads this file instead of
training four more models.

``--memory`` runs anywhere (CPU): one float32 training step of the full 256 px model at
``--batch-size`` and counts, exactly, the bytes a GPU would have to hold: parameters, their
gradients, Adam's two moments, and every tensor autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``, each storage counted once). Their sum is the
float32 training footprint without allocator / cuDNN workspace overhead; mixed precision
stores most saved activations in 16 bits, so it needs less. Writes ``aeflow_memory.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from course_utils import config
from course_utils.data import one_class_split
from course_utils.metrics import auroc, binary_metrics, threshold_best_f1, threshold_youden
from course_utils.models.aeflow import (ABLATION_SETTINGS, PNEUMONIA_CONFIG, PNEUMONIA_FAST_CONFIG, SELECTABLE_VARIANTS,
                                        AEFlowConfig, AEFlowDetector, compare_flow_forms, score_variants)

from .report import RESULTS_DIR, environment_info, peak_rss_mb, write_json_atomic
from .sections import render_aeflow as render_markdown

__all__ = ["HEADLINE_VARIANTS", "run_seed", "run_ablation", "main", "render_markdown"]

HEADLINE_VARIANTS = ("paper, S_flow log-density form", "paper, S_flow likelihood form", "-L(x) only")
"""Variants reported with F1 / ACC / SEN / SPE whatever val chooses: the paper's raw score in its two readings
(what the paper's numbers measure) and the model-free L(x) alone, beside the val-chosen variant."""


def run_seed(split, seed: int, cfg: AEFlowConfig, progress: bool = False) -> dict:
    """Train one seed, score val and test, select the variant and threshold on val; return the record part."""
    start = time.perf_counter()
    det = AEFlowDetector(cfg, seed=seed, cache=False, progress=progress).fit(split.train_images)
    train_seconds = det.history.seconds if det.history is not None else time.perf_counter() - start
    t0 = time.perf_counter()
    val_parts, test_parts = det.score_parts(split.val_images), det.score_parts(split.test_images)
    score_seconds = time.perf_counter() - t0
    val, test = score_variants(det, val_parts), score_variants(det, test_parts)
    val_auroc = {k: auroc(v, split.val_labels) for k, v in val.items()}
    test_auroc = {k: auroc(v, split.test_labels) for k, v in test.items()}
    chosen = max(SELECTABLE_VARIANTS, key=lambda k: val_auroc[k])
    t_f1 = threshold_best_f1(val[chosen], split.val_labels)
    t_youden = threshold_youden(val[chosen], split.val_labels)
    at = {name: binary_metrics(test[chosen], split.test_labels, t) for name, t in (("best_f1", t_f1), ("youden", t_youden))}
    # like against like: the paper's raw score in both readings, and L(x) alone, each at ITS OWN best-F1
    # threshold on val (the variant is fixed here, not chosen, so val picks only the threshold)
    at_by_variant = {}
    for name in HEADLINE_VARIANTS:
        t = threshold_best_f1(val[name], split.val_labels)
        at_by_variant[name] = {k: (round(v, 6) if isinstance(v, float) else v)
                               for k, v in binary_metrics(test[name], split.test_labels, t).items()}
    return {
        "seed": seed,
        "selected_variant": chosen,
        "test_auroc": round(test_auroc[chosen], 6),
        "val_auroc_by_variant": {k: round(v, 6) for k, v in val_auroc.items()},
        "test_auroc_by_variant": {k: round(v, 6) for k, v in test_auroc.items()},
        # the two readings of the paper's S_flow once combined with 1 - SSIM (val split, no test labels)
        "flow_forms_val": {k: round(v, 6) for k, v in
                           compare_flow_forms(val_parts["flow"], val_parts["ssim"], det.config.beta).items()},
        "threshold_best_f1_val": t_f1,
        "threshold_youden_val": t_youden,
        "test_at_val_threshold": {name: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}
                                  for name, m in at.items()},
        "test_at_val_threshold_by_variant": at_by_variant,
        "train_seconds": round(train_seconds, 2),
        "score_seconds_val_test": round(score_seconds, 2),
        "epochs": det.history.epochs_run if det.history is not None else None,
        "final_losses": {k: round(v[-1], 5) for k, v in det.history.logs.items()} if det.history else None,
    }


def run_ablation(split, cfg: AEFlowConfig, seeds: list[int], progress: bool = False) -> list[dict]:
    """Train every (subnet, alpha) of ``ABLATION_SETTINGS`` for each seed; val and test AUROC of every score variant."""
    runs = []
    for subnet, alpha in ABLATION_SETTINGS:
        for seed in seeds:
            det = AEFlowDetector(cfg.replace(subnet=subnet, alpha=alpha), seed=seed, cache=False,
                                 progress=progress).fit(split.train_images)
            val = score_variants(det, det.score_parts(split.val_images))
            test = score_variants(det, det.score_parts(split.test_images))
            runs.append({
                "subnet": subnet, "alpha": alpha, "seed": seed,
                "val_auroc_by_variant": {k: round(auroc(v, split.val_labels), 6) for k, v in val.items()},
                "test_auroc_by_variant": {k: round(auroc(v, split.test_labels), 6) for k, v in test.items()},
                "train_seconds": round(det.history.seconds, 2) if det.history is not None else None,
                "epochs": det.history.epochs_run if det.history is not None else None,
                "flow_parameters": sum(p.numel() for p in det.model.flow.parameters()),
            })
            print(f"{subnet} alpha {alpha} seed {seed}: val AUROC (paper score) "
                  f"{runs[-1]['val_auroc_by_variant']['paper: raw terms']:.4f}, train {runs[-1]['train_seconds']} s",
                  flush=True)
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    auc = [r["test_auroc"] for r in runs]
    mean, std = _mean_std(auc)
    summary = {"test_auroc": [r["test_auroc"] for r in runs], "mean_auroc": round(mean, 6), "std_auroc": round(std, 6)}
    for key in ("f1", "acc", "sen", "spe"):
        m, s = _mean_std([r["test_at_val_threshold"]["best_f1"][key] for r in runs])
        summary[f"mean_{key}"], summary[f"std_{key}"] = round(m, 6), round(s, 6)
    variants = runs[0]["test_auroc_by_variant"]
    summary["mean_test_auroc_by_variant"] = {k: round(float(np.mean([r["test_auroc_by_variant"][k] for r in runs])), 6)
                                             for k in variants}
    summary["mean_val_auroc_by_variant"] = {k: round(float(np.mean([r["val_auroc_by_variant"][k] for r in runs])), 6)
                                            for k in variants}
    summary["mean_flow_forms_val"] = {k: round(float(np.mean([r["flow_forms_val"][k] for r in runs])), 6)
                                      for k in runs[0]["flow_forms_val"]}
    if "test_at_val_threshold_by_variant" in runs[0]:
        summary["mean_test_at_val_threshold_by_variant"] = {
            name: {k: round(float(np.mean([r["test_at_val_threshold_by_variant"][name][k] for r in runs])), 6)
                   for k in ("f1", "acc", "sen", "spe")}
            for name in runs[0]["test_at_val_threshold_by_variant"]}
    summary["mean_train_seconds"] = round(float(np.mean([r["train_seconds"] for r in runs])), 2)
    return summary


def _gpu_benchmark(args) -> int:
    if not torch.cuda.is_available():
        print("No CUDA GPU on this machine: the 256 px AE-FLOW throughput and memory cannot be measured here. "
              "Run `python -m benchmarks.aeflow --gpu` on a GPU machine; no numbers were written.")
        return 2
    from course_utils.models.aeflow import AEFlow, aeflow_loss, resolve_config
    from course_utils.training import train

    cfg, message = resolve_config(AEFlowConfig.full(), fallback=False) if args.imagenet else (
        AEFlowConfig.full(weights=None), "random init (same cost as ImageNet weights)")
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    model = AEFlow(cfg).to(device)
    n = args.batch_size * args.steps
    x = torch.rand(n, 1, cfg.image_size, cfg.image_size)
    loss_fn = lambda m, b: aeflow_loss(m, b[0])  # noqa: E731
    train(model, loss_fn, x[: args.batch_size * 3], epochs=1, batch_size=args.batch_size, device=device,
          amp=True, progress=False)  # warm-up: cuDNN autotuning, allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    history = train(model, loss_fn, x, epochs=1, batch_size=args.batch_size, device=device, amp=True, progress=False)
    torch.cuda.synchronize()
    record = {
        "method": "aeflow-full-256px", "protocol": "gpu-throughput", "batch_size": args.batch_size, "amp": True,
        "steps": args.steps, "train_images_per_second": round(n / history.seconds, 2),
        "max_memory_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "encoder_weights": cfg.weights, "note": message, "gpu": torch.cuda.get_device_name(0),
        **environment_info(),
    }
    out = args.out_dir / "aeflow_gpu.json"
    write_json_atomic(out, record)
    print(f"{record['train_images_per_second']} images/s, peak {record['max_memory_allocated_mb']} MB; wrote {out}")
    return 0


def training_step_bytes(model: torch.nn.Module, loss_fn, batch: torch.Tensor) -> dict:
    """Bytes held by one float32 Adam training step of ``model`` on ``batch`` (see the module doc).

    Returns ``{"parameters", "gradients", "adam_state", "saved_activations", "total"}`` in bytes,
    counted from the tensors themselves (device independent), plus ``"step_seconds"``.
    """
    seen: set[tuple[int, int]] = set()
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen and not isinstance(t, torch.nn.Parameter):
            seen.add(key)
            saved += storage.nbytes()
        return t

    params = [p for p in model.parameters() if p.requires_grad]
    param_ids = {p.untyped_storage().data_ptr() for p in model.parameters()}
    optimizer = torch.optim.Adam(params, lr=1e-4)
    model.train()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, batch)
    activations = saved - sum(n for (ptr, n) in seen if ptr in param_ids)  # weights saved by convs are not extra
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    out = {
        "parameters": nbytes(model.parameters()),
        "gradients": nbytes(p.grad for p in params if p.grad is not None),
        "adam_state": nbytes(v for state in optimizer.state.values() for k, v in state.items()
                             if torch.is_tensor(v) and k != "step"),  # exp_avg, exp_avg_sq
        "saved_activations": activations,
    }
    out["total"] = sum(out.values())
    out["step_seconds"] = round(seconds, 2)
    return out


def _memory_benchmark(args) -> int:
    from course_utils.models.aeflow import AEFlow, aeflow_loss

    cfg = AEFlowConfig.full(weights=None)
    torch.manual_seed(0)
    model = AEFlow(cfg)
    x = torch.rand(args.batch_size, 1, cfg.image_size, cfg.image_size)
    counted = training_step_bytes(model, lambda m, b: aeflow_loss(m, b)["loss"], x)
    gib = {k: round(v / 2**30, 3) for k, v in counted.items() if k != "step_seconds"}
    record = {
        "method": "aeflow-full-256px", "protocol": "float32-training-step-bytes", "batch_size": args.batch_size,
        "image_size": cfg.image_size, "trainable_encoder": cfg.trainable_encoder, "gib": gib,
        "cpu_step_seconds": counted["step_seconds"], "peak_rss_mb": round(peak_rss_mb(), 1),
        "note": "exact tensor bytes of one float32 Adam step (parameters, gradients, Adam moments, tensors saved "
                "for backward); a GPU adds allocator and cuDNN workspace overhead; AMP stores most activations "
                "in 16 bits, so it needs less",
        **environment_info(),
    }
    out = args.out_dir / "aeflow_memory.json"
    write_json_atomic(out, record)
    print(f"float32 training step at batch {args.batch_size}, 256 px: {gib} GiB "
          f"({counted['step_seconds']} s on this CPU); wrote {out}")
    return 0


def _ablation(args, split, cfg: AEFlowConfig, fast: bool) -> int:
    runs = run_ablation(split, cfg, list(args.seeds), progress=args.progress)
    record = {
        "method": "aeflow-ablation", "dataset": "pneumoniamnist", "protocol": "normal-vs-pneumonia-ablation",
        "selection": "none: every setting is reported; compare settings on the val columns",
        "settings": [list(s) for s in ABLATION_SETTINGS], "seeds": list(args.seeds), "config": cfg.to_dict(),
        "fast_mode": fast, "data_source": split.source, "full_data": split.source == "full",
        "n_train": len(split.train_images), "n_val": len(split.val_images), "n_test": len(split.test_images),
        "runs": runs, "peak_rss_mb": round(peak_rss_mb(), 1), "torch_threads": torch.get_num_threads(),
        **environment_info(),
    }
    out = args.out_dir / "aeflow_ablation__pneumoniamnist.json"
    write_json_atomic(out, record)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aeflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subnet", choices=("resnet", "conv"), default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--source", choices=("auto", "full", "sample"), default="full")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--gpu", action="store_true", help="measure the 256 px model's images/s and memory on CUDA")
    parser.add_argument("--imagenet", action="store_true", help="--gpu: require the ImageNet weights")
    parser.add_argument("--memory", action="store_true",
                        help="count the bytes of one float32 training step of the 256 px model (runs on CPU)")
    parser.add_argument("--ablation", action="store_true",
                        help="train notebook 05's subnet / alpha ablation and write aeflow_ablation__pneumoniamnist.json")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        return _gpu_benchmark(args)
    if args.memory:
        return _memory_benchmark(args)

    fast = config.is_fast()
    cfg = PNEUMONIA_FAST_CONFIG if fast else PNEUMONIA_CONFIG
    if args.subnet:
        cfg = cfg.replace(subnet=args.subnet)
    if args.epochs:
        cfg = cfg.replace(epochs=args.epochs)
    split = one_class_split("pneumoniamnist", 0, source=args.source)
    if args.ablation:
        return _ablation(args, split, cfg, fast)
    runs = []
    for seed in args.seeds:
        run = run_seed(split, seed, cfg, progress=args.progress)
        runs.append(run)
        print(f"seed {seed}: test AUROC {run['test_auroc']:.4f} ({run['selected_variant']}), "
              f"train {run['train_seconds']:.0f} s", flush=True)
    record = {
        "method": "aeflow", "dataset": "pneumoniamnist", "protocol": "normal-vs-pneumonia",
        "selection": "score variant and thresholds chosen on the official val split; test labels only for reporting",
        "seeds": list(args.seeds), "config": cfg.to_dict(), "fast_mode": fast,
        "data_source": split.source, "full_data": split.source == "full", "image_size_data": int(split.train_images.shape[-1]),
        "n_train": len(split.train_images), "n_val": len(split.val_images), "n_test": len(split.test_images),
        **summarise(runs), "runs": runs, "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(), **environment_info(),
    }
    name = f"aeflow{'-' + args.subnet if args.subnet else ''}__pneumoniamnist.json"
    out = args.out_dir / name
    write_json_atomic(out, record)
    print(render_markdown(record))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
