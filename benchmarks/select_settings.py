"""Settings chosen without test data: ``python -m benchmarks.select_settings {fanogan,glow-final-scale,glow-bpd}``.

The validation protocol of the course (``course_utils.selection``, docs/design.md "Who may look at which split")
applied to the three settings that an earlier version chose on test numbers. Each target trains every
candidate on part of the official TRAINING split only and scores a held-out part of the same split:

- ``fanogan``: f-AnoGAN's learning rate and batch size (``models.fanogan.FULL_SETTINGS``). A GAN has no
  held-out likelihood, so the criterion is a detection one: AUROC of the izif score (the ``fanogan`` method's
  own) on held-out normal training images against as many training images of the OTHER classes. This uses
  images of the anomaly classes, from the training split. The held-out izif residual of the normals (a
  label-free number) is recorded beside it, for information only.
- ``glow-final-scale``: the final-scale Glow's levels and steps (``models.glow.FINAL_SCALE_CONFIG``). The
  final-scale score is a detection score, so the criterion is the same detection AUROC (final-scale score,
  held-out normals against other-class training images); the held-out bits/dim is recorded beside it.
- ``glow-bpd``: the bits/dim benchmark's learning rate, batch size and dequantization
  (``models.glow.BPD_CONFIG``). The criterion is label-free: bits/dim of held-out training images (all
  digits; 10 % held out) after a short run of ``--steps`` steps for every candidate (the same number of images
  seen). A short run is a proxy for the 20-minute one; the record says so.

The normal classes (``--classes``, default digits 0 and 8 of MNIST) are fixed in advance and the same for every
target, so that no class is picked because of its test result. Candidates are listed in ``CANDIDATES``; the
one the code uses is marked ``in_code``. The record says whether the protocol chose the setting the code
uses (``matches_code``); when it does not, the code must be changed and the affected benchmarks rerun.

Writes ``benchmarks/results/selection__<target>.json`` (``"protocol": "settings-selection"``) and prints its
markdown section (``benchmarks.sections.render_selection``). Test labels are never loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from course_utils import config
from course_utils.metrics import auroc
from course_utils.models.fanogan import FAST_SETTINGS, FULL_SETTINGS, FAnoGANDetector, GANCollapseError
from course_utils.models.glow import (BPD_CONFIG, FAST_CONFIG, FAST_FINAL_SCALE_CONFIG, FINAL_SCALE_CONFIG,
                                      GlowDetector, GlowFlow, test_bits_per_dim, train_glow)
from course_utils.selection import SelectionSplit, selection_split

from .report import RESULTS_DIR, environment_info, peak_rss_mb, publish
from .sections import render_selection as render_markdown

__all__ = ["TARGETS", "candidates", "select", "main", "render_markdown"]

TARGETS = ("fanogan", "glow-final-scale", "glow-bpd")
DEFAULT_CLASSES = (0, 8)


def candidates(target: str, fast: bool) -> dict[str, object]:
    """The candidate settings of ``target`` by name; the first one is what the code uses (``in_code``).

    Full mode: the settings an earlier version compared on test numbers (see the comments at each
    setting in ``course_utils.models``), now compared under the validation protocol. Fast mode: the same
    changes applied to the tiny fast-mode settings (for the tests)."""
    if target == "fanogan":
        base = FAST_SETTINGS if fast else FULL_SETTINGS
        iters = base.gan_iters
        return {
            "lr 1e-3, batch 16": base,
            "lr 3e-4, batch 16": base.replace(lr=3e-4),
            "lr 1e-4, batch 16 (Gulrajani et al. 2017)": base.replace(lr=1e-4),
            "lr 1e-3, batch 32, half the iterations": base.replace(batch_size=32, gan_iters=max(1, iters // 2)),
        }
    if target == "glow-final-scale":
        base = FAST_FINAL_SCALE_CONFIG if fast else FINAL_SCALE_CONFIG
        long, short = (base.steps, base.steps_per_epoch) if fast else (1000, 400)
        grid = {f"{levels} levels, {steps} steps": base.replace(n_levels=levels, steps=steps)
                for levels in (4, 5) for steps in (long, short)}
        return _code_first(grid, base)
    if target == "glow-bpd":
        base = FAST_CONFIG if fast else BPD_CONFIG
        return {
            "lr 3e-3, batch 64, variational dequantization": base,
            "lr 2e-3, batch 64, variational dequantization": base.replace(lr=2e-3),
            "lr 3e-3, batch 64, uniform dequantization": base.replace(dequantization="uniform"),
            "lr 4.2e-3, batch 128, half the steps, variational dequantization": base.replace(
                lr=4.2e-3, batch_size=2 * base.batch_size),
        }
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def _code_first(grid: dict[str, object], in_code: object) -> dict[str, object]:
    """``grid`` with the candidate equal to ``in_code`` first (the record's ``in_code``)."""
    names = [name for name, value in grid.items() if value == in_code]
    if len(names) != 1:
        raise RuntimeError(f"the setting in the code is not exactly one candidate of the grid: {in_code}")
    return {names[0]: in_code, **{n: v for n, v in grid.items() if n != names[0]}}


def _detection_auroc(score: Callable[[torch.Tensor], torch.Tensor], split: SelectionSplit) -> float:
    images, labels = split.detection_set()
    return float(auroc(score(images).numpy(), labels.numpy()))


def _select_fanogan(split: SelectionSplit, settings, seed: int) -> dict:
    detector = FAnoGANDetector("izif", "mse", settings=settings, seed=seed)
    try:
        detector.fit(split.fit_images)
    except GANCollapseError as err:  # a candidate whose GAN collapses is out, and the record says so
        return {"criterion": None, "failed": f"GANCollapseError: {err}"}
    return {"criterion": _detection_auroc(detector.score, split),
            "held_out_normal_mean_score": float(detector.score(split.held_out_normal).mean())}


def _select_final_scale(split: SelectionSplit, cfg, seed: int) -> dict:
    detector = GlowDetector(cfg, score="final-scale", seed=seed).fit(split.fit_images)
    nll_bits = detector.scores(split.held_out_normal, ("nll",))["nll"]
    return {"criterion": _detection_auroc(detector.score, split),
            "held_out_normal_nll_bits": float(nll_bits.mean())}


def _select_bpd(split: SelectionSplit, cfg, seed: int, steps: int, reference_batch: int) -> dict:
    # the same number of images seen by every candidate (``steps`` batches of the code's batch size): a larger
    # batch gets proportionally fewer steps, rounded down to whole epochs
    images_seen = steps * reference_batch
    cfg = cfg.replace(steps=max(cfg.steps_per_epoch, images_seen // cfg.batch_size // cfg.steps_per_epoch
                                * cfg.steps_per_epoch))
    config.seed_everything(seed)
    flow = GlowFlow(cfg, tuple(split.fit_images.shape[1:]), seed=seed)
    train_glow(flow, split.fit_images, cfg, seed=seed)
    return {"criterion": test_bits_per_dim(flow, split.held_out_normal), "steps": cfg.steps}


def select(target: str, *, classes: tuple[int, ...] = DEFAULT_CLASSES, seed: int = 0, source: str = "full",
           bpd_steps: int = 3000, progress: bool = False) -> dict:
    """Train every candidate of ``target`` and return the selection record (module doc)."""
    fast = config.is_fast()
    cands = candidates(target, fast)
    higher_is_better = target != "glow-bpd"
    if target == "glow-bpd":
        # every digit is normal: only held-out images of the same (all-digit) training set are needed
        groups = {"all": selection_split("mnist", range(10), held_out_fraction=0.1, n_other=0, seed=seed,
                                         source=source)}
    else:
        groups = {str(c): selection_split("mnist", c, held_out_fraction=0.2, seed=seed, source=source)
                  for c in classes}
    rows = []
    for name, settings in cands.items():
        per_group, seconds = {}, {}
        for group, split in groups.items():
            t0 = time.perf_counter()
            if target == "fanogan":
                result = _select_fanogan(split, settings, seed)
            elif target == "glow-final-scale":
                result = _select_final_scale(split, settings, seed)
            else:
                result = _select_bpd(split, settings, seed, bpd_steps, next(iter(cands.values())).batch_size)
            seconds[group] = round(time.perf_counter() - t0, 1)
            per_group[group] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()}
            if progress:
                print(f"{target} | {name} | {group}: {per_group[group]} ({seconds[group]} s)", flush=True)
        values = [r["criterion"] for r in per_group.values()]
        mean = None if any(v is None for v in values) else round(float(np.mean(values)), 6)
        settings_dict = settings.to_dict() if hasattr(settings, "to_dict") else asdict(settings)
        rows.append({"name": name, "in_code": not rows, "settings": settings_dict, "per_group": per_group,
                     "criterion_mean": mean, "seconds": seconds})
    valid = [r for r in rows if r["criterion_mean"] is not None]
    if not valid:
        raise RuntimeError(f"every candidate of {target} failed; see the per-candidate errors: {rows}")
    chosen = (max if higher_is_better else min)(valid, key=lambda r: r["criterion_mean"])
    split0 = next(iter(groups.values()))
    return {
        "method": target, "dataset": "mnist", "protocol": "settings-selection",
        "criterion": ("held-out training bits/dim (label-free), lower is better" if target == "glow-bpd" else
                      "AUROC on held-out normal training images against other classes' training images "
                      "(detection criterion on the training split), higher is better"),
        "groups": {g: {"normal_classes": list(s.normal_classes), "n_fit": len(s.fit_images),
                       "n_held_out_normal": len(s.held_out_normal), "n_held_out_other": len(s.held_out_other)}
                   for g, s in groups.items()},
        "seed": seed, "fast_mode": fast, "data_source": split0.source,
        "bpd_steps": bpd_steps if target == "glow-bpd" else None,
        "candidates": rows, "chosen": chosen["name"], "in_code": rows[0]["name"],
        "matches_code": chosen is rows[0], "test_split_used": False,
        "peak_rss_mb": round(peak_rss_mb(), 1), "torch_threads": torch.get_num_threads(), **environment_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.select_settings", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--classes", type=int, nargs="+", default=list(DEFAULT_CLASSES),
                        help="normal classes of the detection criterion (fixed in advance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bpd-steps", type=int, default=3000, help="glow-bpd: steps at the code's batch size (64); other batch sizes see as many images")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--source", choices=("auto", "full", "sample"), default="full")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = select(args.target, classes=tuple(args.classes), seed=args.seed, source=args.source,
                    bpd_steps=args.bpd_steps, progress=args.progress)
    publish(record, args.out_dir / f"selection__{args.target}.json", render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
