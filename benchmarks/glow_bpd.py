"""Glow bits per dimension on all MNIST digits: ``python -m benchmarks.glow_bpd [--budget-s 1200]``.

Protocol (notebook 03; docs/design.md, section protocol):

- train ``course_utils.models.glow.BPD_CONFIG`` (fast mode: ``FAST_CONFIG``) on the WHOLE official
  MNIST train split (all ten digits), through ``course_utils.models.glow.train_glow`` (the course's
  training loop, gradient clipping, NaN guard), for at most ``--budget-s`` seconds of wall-clock
  TRAINING time (evaluations of the curve are not counted) or ``--max-steps`` steps;
- the curve: training bpd of every epoch (an epoch is ``steps_per_epoch`` batches) and, every
  ``--eval-every`` epochs, the test bpd of the first ``--n-eval`` test images;
- the result: the test bpd of the whole official test split, one draw of the model's dequantization
  noise per image (uniform, or the learned q of ``dequantization="variational"``: then the number is
  the variational bound of Flow++, still an upper bound on -log2 P(x) / D) from a generator seeded
  with 0, so the number is reproducible for a given model; beside the mean, the
  median and the ten worst test images (a flow can give a few images absurd likelihoods, which then
  dominate the mean). With ``--iw-draws K`` also the importance-weighted bpd of the first ``--iw-n``
  test images: K draws of the dequantization per image, log-mean-exp of the weights, a tighter upper
  bound (``importance_weighted_bits_per_image``), beside the one-draw bpd of the same images. The trained flow is saved with ``checkpoints.save_checkpoint`` to
  ``COURSE_CACHE_DIR/glow_bpd-seed<S>-<mode>-<config key>.pt`` (``record["model_path"]``; read it back with
  ``checkpoints.load_checkpoint``), so those images can be studied without training again.

Target: test bpd <= 1.25 within 20 minutes of training on 2 CPU cores (``--threads 2 --budget-s 1200``): both
halves are recorded and rendered (``meets_target``); a slower CPU may give the run a longer ``--budget-s`` to reach
the bits/dim and then meets only the first half, which the rendered table says.
Writes ``benchmarks/results/glow_bpd__mnist.json`` (``"protocol": "bits-per-dim"``) and prints its
markdown section (:func:`render_markdown`, from ``benchmarks/sections.py``, which ``benchmarks/report.py`` also uses).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from course_utils import config
from course_utils.data import load_dataset
from course_utils.models.glow import (BPD_CONFIG, FAST_CONFIG, GlowFlow, importance_weighted_bits_per_image,
                                      test_bits_per_dim, test_bits_per_image, train_glow)
from course_utils.checkpoints import checkpoint_path, save_checkpoint

from .report import RESULTS_DIR, environment_info, peak_rss_mb, publish
from .sections import GLOW_BPD_TARGET_BPD, GLOW_BPD_TARGET_TRAIN_SECONDS, glow_bpd_target_halves
from .sections import render_glow_bpd as render_markdown

__all__ = ["main", "render_markdown", "TARGET_BPD", "TARGET_TRAIN_SECONDS"]

TARGET_BPD = GLOW_BPD_TARGET_BPD
TARGET_TRAIN_SECONDS = GLOW_BPD_TARGET_TRAIN_SECONDS


def importance_weighted_record(flow: GlowFlow, images: torch.Tensor, one_draw_per_image: torch.Tensor, draws: int,
                               n_images: int) -> dict:
    """The importance-weighted test bpd with ``draws`` draws per image on the first ``n_images`` test images,
    beside the one-draw bpd of the same images (``one_draw_per_image``, from :func:`test_bits_per_image`)."""
    subset = images[:n_images]
    t0 = time.perf_counter()
    iw = importance_weighted_bits_per_image(flow, subset, draws, seed=0)
    return {"draws": draws, "n_images": len(subset), "test_bpd_iw": round(float(iw.mean()), 5),
            "test_bpd_one_draw_same_images": round(float(one_draw_per_image[:len(subset)].mean()), 5),
            "seconds": round(time.perf_counter() - t0, 1)}


def run(*, budget_s: float | None, max_steps: int | None, eval_every: int, n_eval: int, seed: int,
        source: str, progress: bool, iw_draws: int | None = None, iw_n: int = 2000) -> dict:
    fast = config.is_fast()
    cfg = FAST_CONFIG if fast else BPD_CONFIG
    if max_steps:
        cfg = cfg.replace(steps=max_steps)
    train = load_dataset("mnist", "train", source=source)
    test = load_dataset("mnist", "test", source=source)
    config.seed_everything(seed)
    flow = GlowFlow(cfg, tuple(train.images.shape[1:]), seed=seed)
    curve: list[dict] = []
    eval_images = test.images[:n_eval]
    wall_start = time.perf_counter()
    eval_seconds = [0.0]  # time spent in the curve's evaluations so far (not training)

    def on_epoch_end(epoch: int, history) -> None:
        # history.seconds: wall time since training started, including earlier evaluations
        point = {"epoch": epoch, "steps": epoch * cfg.steps_per_epoch,
                 "train_seconds": round(history.seconds - eval_seconds[0], 1),
                 "train_bpd": round(history.losses[-1], 5)}
        if epoch % eval_every == 0:
            t0 = time.perf_counter()
            point["test_bpd_subset"] = round(test_bits_per_dim(flow, eval_images), 5)
            flow.train()
            eval_seconds[0] += time.perf_counter() - t0
        curve.append(point)
        if progress:
            print(point, flush=True)

    history = train_glow(flow, train.images, cfg, seed=seed, time_budget_s=budget_s, on_epoch_end=on_epoch_end)
    t0 = time.perf_counter()
    # the mean is the result; the median and the worst images say whether a few images dominate it
    per_image = test_bits_per_image(flow, test.images, seed=0)
    final = float(per_image.mean())
    worst = torch.argsort(per_image, descending=True)[:10]
    iw = importance_weighted_record(flow, test.images, per_image, iw_draws, iw_n) if iw_draws else None
    # the course's checkpoint format, so checkpoints.load_checkpoint reads it back (with a config check)
    model_path = checkpoint_path(f"glow_bpd-seed{seed}-{'fast' if fast else 'full'}", cfg.to_dict())
    save_checkpoint(model_path, flow, history, cfg.to_dict())
    record = {
        "method": "glow", "dataset": "mnist", "protocol": "bits-per-dim",
        "config": cfg.to_dict(), "fast_mode": fast, "seed": seed,
        "budget_s": budget_s, "max_steps": cfg.steps,
        "steps_run": history.epochs_run * cfg.steps_per_epoch, "epochs_run": history.epochs_run,
        "train_seconds": round(history.seconds, 1),
        "images_seen": history.epochs_run * cfg.steps_per_epoch * cfg.batch_size,
        "test_bpd": round(final, 5), "target_bpd": TARGET_BPD, "target_train_seconds": TARGET_TRAIN_SECONDS,
        "test_bpd_median": round(float(per_image.median()), 5),
        "test_images_above_8_bpd": int((per_image > 8).sum()),
        "worst_test_images": [{"index": int(i), "bpd": round(float(per_image[i]), 2)} for i in worst],
        "model_path": str(model_path),
        "final_train_bpd": round(history.losses[-1], 5),
        "test_bpd_importance_weighted": iw,
        "test_eval_seconds": round(time.perf_counter() - t0, 1),
        "total_wall_seconds": round(time.perf_counter() - wall_start, 1),
        "n_train": len(train.images), "n_test": len(test.images), "n_eval_subset": len(eval_images),
        "data_source": train.source, "full_data": train.source == "full" and len(train.images) == 60_000,
        "curve": curve, "torch_threads": torch.get_num_threads(), "peak_rss_mb": round(peak_rss_mb(), 1),
        **environment_info(),
    }
    # both halves of the target: the bits/dim, and the training time (a slower CPU can meet one only)
    record["meets_target"] = all(glow_bpd_target_halves(record))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.glow_bpd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=TARGET_TRAIN_SECONDS, help="wall-clock training budget in seconds")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train this many steps (default: the config's); with a cosine lr it is also the "
                        "schedule's horizon, so a shorter run is not a prefix of the full one")
    parser.add_argument("--eval-every", type=int, default=5, help="test bpd of the subset every N epochs")
    parser.add_argument("--n-eval", type=int, default=1000, help="test images in the curve's subset")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", choices=("auto", "full", "sample"), default="full")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--iw-draws", type=int, default=None,
                        help="also report the importance-weighted test bpd with this many dequantization draws per "
                        "image (e.g. 8), beside the one-draw bpd of the same images")
    parser.add_argument("--iw-n", type=int, default=2000, help="--iw-draws: on the first N test images")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.iw_draws is not None and args.iw_draws < 1:
        parser.error("--iw-draws must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    record = run(budget_s=args.budget_s, max_steps=args.max_steps, eval_every=max(1, args.eval_every),
                 n_eval=args.n_eval, seed=args.seed, source=args.source, progress=args.progress,
                 iw_draws=args.iw_draws, iw_n=args.iw_n)
    publish(record, args.out_dir / "glow_bpd__mnist.json", render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
