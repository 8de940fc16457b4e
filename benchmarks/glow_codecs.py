"""Which compressor for the complexity-corrected Glow score? ``python -m benchmarks.glow_codecs``.

Serra et al. (ICLR 2020) score S(x) = NLL_bits(x) - L(x), with L(x) the code length of a lossless
compressor, and find that the choice of compressor matters (they compare PNG, JPEG 2000, FLIF). This
benchmark repeats that comparison on the one-class protocol of docs/design.md:

- for every dataset, normal class and seed: the protocol's ``glow-nll`` run
  (``protocol.evaluate_one_class``; its checkpoint is the one ``glow-complexity`` shares, so it comes
  from the cache when those benchmarks ran, otherwise it is trained here, identically) gives
  NLL_bits(x) of the whole test split; then S(x) = NLL_bits(x) - L(x) for every codec of
  ``course_utils.complexity.CODECS`` (L(x) of the test split is computed once per dataset: it does
  not depend on the model) and, as the reference row, the raw NLL (``none``);
- AUROC per class and seed with ``course_utils.metrics.auroc``; mean over classes, ± the spread over
  seeds of the class mean (the same summary as ``benchmarks.one_class``). The ``png`` row therefore
  equals the ``glow-complexity`` benchmark.

Writes ``benchmarks/results/glow_codecs__<dataset>.json`` (``"protocol": "complexity-codecs"``) and
prints its markdown section (:func:`render_markdown`, from ``benchmarks/sections.py``, which ``benchmarks/report.py`` also uses).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from course_utils import config
from course_utils.complexity import CODECS, compressed_bits
from course_utils.data import dataset_info, load_dataset
from course_utils.metrics import auroc
from course_utils.tables import summarize_per_class
from course_utils.protocol import evaluate_one_class

from .report import RESULTS_DIR, environment_info, peak_rss_mb, publish
from .sections import REFERENCE_ROW
from .sections import render_glow_codecs as render_markdown

__all__ = ["run", "render_markdown", "main", "REFERENCE_ROW"]



def run(dataset: str, *, seeds: list[int], classes: list[int] | None = None, codecs: tuple[str, ...] = CODECS,
        source: str = "auto", progress: bool = False) -> dict:
    """The benchmark record for one dataset (see the module docstring)."""
    fast = config.is_fast()
    classes = list(range(dataset_info(dataset).n_classes)) if classes is None else list(classes)
    # L(x) depends on the images only, not on the model: once, for the test split every run scores
    test_images = load_dataset(dataset, "test", source=source).images
    bits: dict[str, np.ndarray] = {}
    ms_per_image: dict[str, float] = {}
    for codec in codecs:
        start = time.perf_counter()
        bits[codec] = compressed_bits(test_images, codec)
        ms_per_image[codec] = 1e3 * (time.perf_counter() - start) / len(test_images)
    rows = (REFERENCE_ROW, *codecs)
    by_row: dict[str, dict[str, list[float]]] = {row: {} for row in rows}
    data_source = None
    for normal_class in classes:
        for seed in seeds:
            # the protocol's glow-nll run: its scores are NLL_bits(x) of the test split, from the checkpoint
            # that glow-complexity shares
            result, data_source = evaluate_one_class("glow-nll", dataset, normal_class, seed=seed, fast=fast,
                                                     source=source)
            for row in rows:
                score = result.scores if row == REFERENCE_ROW else result.scores - bits[row]
                by_row[row].setdefault(str(normal_class), []).append(round(auroc(score, result.labels), 6))
            if progress:
                print(f"class {normal_class} seed {seed}: " + ", ".join(
                    f"{row} {by_row[row][str(normal_class)][-1]:.3f}" for row in rows), flush=True)
    results = {}
    for row in rows:
        summary = summarize_per_class(by_row[row])[-1]
        results[row] = {
            "auroc": by_row[row], "mean_auroc": round(summary["mean"], 6), "std_auroc": round(summary["std"], 6),
            "mean_test_bits": None if row == REFERENCE_ROW else round(float(bits[row].mean()), 1),
            "ms_per_image": None if row == REFERENCE_ROW else round(ms_per_image[row], 3),
        }
    # a diagnostic ceiling, NOT a result: the best codec for each class, chosen with the test labels
    best_per_class = [max(float(np.mean(by_row[row][str(c)])) for row in codecs) for c in classes]
    return {
        "method": "glow-complexity", "dataset": dataset, "protocol": "complexity-codecs", "seeds": list(seeds),
        "classes": classes, "fast_mode": fast, "codecs": results,
        "oracle_best_codec_per_class_mean_auroc": round(float(np.mean(best_per_class)), 6), "data_source": data_source,
        "full_data": data_source == "full", "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(), **environment_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.glow_codecs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist"), action="append",
                        help="repeat for several (default: both)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--classes", type=int, nargs="+", default=None)
    parser.add_argument("--codecs", nargs="+", choices=CODECS, default=list(CODECS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--source", choices=("auto", "full", "sample"), default="auto")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for dataset in args.dataset or ["mnist", "fashion-mnist"]:
        record = run(dataset, seeds=args.seeds, classes=args.classes, codecs=tuple(args.codecs), source=args.source,
                     progress=args.progress)
        publish(record, args.out_dir / f"glow_codecs__{dataset}.json", render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
