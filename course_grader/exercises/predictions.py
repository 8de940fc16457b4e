"""Prediction and interpretation exercises decided by the committed benchmarks (notebook 03's, which follows
from Jensen's inequality, is declared in ``glow``).

Each is a ``kind="value"`` exercise: the student answers with a function without arguments
that returns a choice (a class, a codec, a dataset, a set of scores) *before* the notebook
computes the result, and the notebook then shows the answer. The right answer is never a
constant typed in here: the reference reads it from the benchmark results committed in
``benchmarks/results/*.json`` (full data, every class, three seeds), so it is the same on every
machine, cheap for the grader to repeat, and follows the benchmark when it is re-run. A
notebook in fast mode (a small sample, two classes) may see a different winner; the notebook
says which answer is graded.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..contract import Case, ExerciseSpec, register

__all__ = ["benchmark_record", "BENCHMARK_CHOICES"]


def benchmark_record(stem: str) -> dict:
    """The committed benchmark result ``benchmarks/results/<stem>.json`` as a dict.

    Raises:
        FileNotFoundError: the file is missing (names it and says how to get it back).
    """
    from course_utils.config import REPO_ROOT

    path = REPO_ROOT / "benchmarks" / "results" / f"{stem}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: this committed benchmark result decides a prediction exercise and is missing; restore it "
            f"with `git checkout -- benchmarks/results/{stem}.json` or re-run the benchmark "
            "(benchmarks/results/README.md)")
    return json.loads(path.read_text())


def _one_case(rng: np.random.Generator) -> list[Case]:
    return [Case("your prediction", ())]


def _text(value: Any) -> str:
    """A choice as compared: a string, case and surrounding blanks ignored (numbers as ints)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    if not isinstance(value, str):
        raise TypeError(f"a choice is a string, found a {type(value).__name__}")
    return value.strip().lower()


def _choice_from(options: tuple[str, ...]):
    """``normalise`` for one choice among ``options``: the option as spelled there (anything else raises)."""
    canonical = {_text(o): o for o in options}

    def normalise(value: Any) -> str:
        try:
            return canonical[_text(value)]
        except KeyError:
            raise ValueError(f"not one of {options}") from None

    return normalise


def same_choice(normalise, hint: str):
    """A comparison like ``contract.equal_to`` that shows both answers in their normalised form
    (the class 6, not the 6.0 that the plain-data transport makes of it)."""
    def compare(case: Case, expected: Any, found: Any) -> str | None:
        right = normalise(expected)
        try:
            shown = normalise(found)
        except Exception:  # not a valid answer at all: show it as it came
            return f"{case.name}: expected {right!r}, found {found!r}, which is not one of the options.\nHint: {hint}"
        if shown == right:
            return None
        if isinstance(right, frozenset):
            right, shown = sorted(right), sorted(shown)
        return f"{case.name}: expected {right!r}, found {shown!r}.\nHint: {hint}"

    return compare


# --------------------------------------------------------------------------- 00: the hardest class
def hardest_fashion_class() -> int:
    """The Fashion-MNIST class (0-9) with the lowest one-class AUROC, averaged over the two
    baselines of notebook 00 (PCA and 5-NN) and the seeds of their benchmarks."""
    per_method = []
    for method in ("pca", "knn"):
        auroc = benchmark_record(f"{method}__fashion-mnist")["auroc"]
        per_method.append([float(np.mean(auroc[str(c)])) for c in range(10)])
    return int(np.argmin(np.mean(per_method, axis=0)))


HARDEST_CLASS = register(ExerciseSpec(
    grade_id="ex-predict-hardest-class", answer="predicted_hardest_class", draw=_one_case,
    reference=hardest_fashion_class, kind="value",
    compare=same_choice(_choice_from(tuple(str(c) for c in range(10))), (
        "a class is hard when images of other classes look like its own normal images in pixel space: which "
        "class's images contain the shapes of several other classes? The table of section 6 verifies it")),
    summary="the benchmarks agree"))


# --------------------------------------------------------------------------- 01: which loss wins where
LOSSES = ("l2", "ssim")


def better_loss_per_dataset() -> dict[str, str]:
    """Per dataset, the autoencoder loss ("l2" or "ssim", each scored with its own distance)
    with the higher mean one-class AUROC in the benchmarks ``ae-l2`` and ``ae-ssim``."""
    winners = {}
    for dataset in ("mnist", "fashion-mnist"):
        means = {loss: benchmark_record(f"ae-{loss}__{dataset}")["mean_auroc"] for loss in LOSSES}
        winners[dataset] = max(means, key=means.get)
    return winners


def _per_dataset(options: tuple[str, ...]):
    choice = _choice_from(options)

    def normalise(value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or set(value) != {"mnist", "fashion-mnist"}:
            raise TypeError('expected a dict with the keys "mnist" and "fashion-mnist"')
        return {k: choice(v) for k, v in value.items()}

    return normalise


BETTER_LOSS = register(ExerciseSpec(
    grade_id="ex-predict-better-loss", answer="predicted_better_loss", draw=_one_case,
    reference=better_loss_per_dataset, kind="value",
    compare=same_choice(_per_dataset(LOSSES), (
        'return {"mnist": "l2" or "ssim", "fashion-mnist": "l2" or "ssim"}. Think about what each distance '
        "sees: SSIM compares local structure in 11 px windows, the squared error compares intensities everywhere "
        "(silhouettes and large uniform areas)")),
    summary="the benchmarks agree"))


# --------------------------------------------------------------------------- 02: where the SSIM score helps
GAIN_OPTIONS = ("mnist", "fashion-mnist", "both", "neither")


def ssim_score_gain() -> str:
    """Where the f-AnoGAN score with a 1 - SSIM image term (``fanogan-ssim``) has a higher mean
    AUROC than the MSE one (``fanogan``): one of ``GAIN_OPTIONS``."""
    gains = [dataset for dataset in ("mnist", "fashion-mnist")
             if benchmark_record(f"fanogan-ssim__{dataset}")["mean_auroc"]
             > benchmark_record(f"fanogan__{dataset}")["mean_auroc"]]
    if len(gains) == 2:
        return "both"
    return gains[0] if gains else "neither"


SSIM_SCORE_GAIN = register(ExerciseSpec(
    grade_id="ex-predict-ssim-score-gain", answer="predicted_ssim_score_gain", draw=_one_case,
    reference=ssim_score_gain, kind="value",
    compare=same_choice(_choice_from(GAIN_OPTIONS), (
        'one of "mnist", "fashion-mnist", "both", "neither". Notebook 01 compared the same two distances for '
        "autoencoders; the f-AnoGAN models are different, the images are the same")),
    summary="the benchmarks agree"))


# --------------------------------------------------------------------------- 04: the best compressor
def best_codec() -> str:
    """The lossless codec whose complexity-corrected Glow score (eq. 5b of notebook 04) has the
    highest mean AUROC, averaged over MNIST and Fashion-MNIST (``benchmarks/glow_codecs``)."""
    from course_utils.complexity import CODECS

    means = {codec: np.mean([benchmark_record(f"glow_codecs__{dataset}")["codecs"][codec]["mean_auroc"]
                             for dataset in ("mnist", "fashion-mnist")]) for codec in CODECS}
    return max(means, key=means.get)


def _codec_choice(value: Any) -> str:
    from course_utils.complexity import CODECS

    return _choice_from(tuple(CODECS))(value)


BEST_CODEC = register(ExerciseSpec(
    grade_id="ex-predict-best-codec", answer="predicted_best_codec", draw=_one_case,
    reference=best_codec, kind="value",
    compare=same_choice(_codec_choice, (
        'one of "png", "webp", "jpeg2000", "zlib", "bz2", "lzma". L(x) should estimate what any model of small '
        "grayscale images pays: a codec that sees the 2-D neighbourhood of a pixel predicts it better than one "
        "that reads a 1-D string of bytes")),
    summary="the benchmark agrees"))


# --------------------------------------------------------------------------- 04: PNG or a learned compressor
CORRECTIONS = ("png", "ratio")


def better_correction_per_dataset() -> dict[str, str]:
    """Per dataset, the complexity estimate whose corrected Glow score has the higher mean one-class AUROC in
    the benchmarks: "png" (``glow-complexity``, NLL bits - PNG bits) or "ratio" (``glow-ratio``, NLL bits - the
    bits of a Glow trained on the other dataset)."""
    winners = {}
    for dataset in ("mnist", "fashion-mnist"):
        means = {"png": benchmark_record(f"glow-complexity__{dataset}")["mean_auroc"],
                 "ratio": benchmark_record(f"glow-ratio__{dataset}")["mean_auroc"]}
        winners[dataset] = max(means, key=means.get)
    return winners


BETTER_CORRECTION = register(ExerciseSpec(
    grade_id="ex-predict-better-correction", answer="predicted_better_correction", draw=_one_case,
    reference=better_correction_per_dataset, kind="value",
    compare=same_choice(_per_dataset(CORRECTIONS), (
        'return {"mnist": "png" or "ratio", "fashion-mnist": "png" or "ratio"}. The ratio subtracts the bits of a '
        "Glow trained on the OTHER dataset: how well does a Fashion-MNIST Glow compress digits (section 2.4), and "
        "how well can a digit Glow compress the textures of clothes?")),
    summary="the benchmarks agree"))


# --------------------------------------------------------------------------- 05: below chance
# The single scores of notebook 05, section 9, as the student names them -> (variant of the
# aeflow benchmark, sign): L(x) itself is the benchmark's "-L(x) only" turned around.
BELOW_CHANCE_OPTIONS = {
    "L(x)": ("-L(x) only", -1),
    "MSE": ("MSE", 1),
    "1 - SSIM": ("S_recon = 1 - SSIM", 1),
    "S_flow": ("S_flow", 1),
    "paper score": ("paper: raw terms", 1),
}


def scores_below_chance() -> list[str]:
    """The options of ``BELOW_CHANCE_OPTIONS`` whose mean test AUROC in the AE-FLOW benchmark is
    below 0.5 (pneumonia ranked as *more* normal than normal X-rays), sorted."""
    by_variant = benchmark_record("aeflow__pneumoniamnist")["mean_test_auroc_by_variant"]
    below = []
    for option, (variant, sign) in BELOW_CHANCE_OPTIONS.items():
        auroc = by_variant[variant] if sign > 0 else 1.0 - by_variant[variant]   # AUROC(-s) = 1 - AUROC(s)
        if auroc < 0.5:
            below.append(option)
    return sorted(below)


def _option_set(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError("expected a list of option names")
    choice = _choice_from(tuple(BELOW_CHANCE_OPTIONS))
    return frozenset(choice(v) for v in value)


BELOW_CHANCE = register(ExerciseSpec(
    grade_id="ex-predict-below-chance", answer="predicted_below_chance", draw=_one_case,
    reference=scores_below_chance, kind="value",
    compare=same_choice(_option_set, (
        f"a list of some of {list(BELOW_CHANCE_OPTIONS)}. A score is below chance when pneumonia images get "
        "*lower* scores than normal ones; at 28 px pneumonia X-rays are the smoother, simpler images. L(x) "
        "counts the bits an image costs; which score adds up raw pixel errors, which grow with texture and "
        "contrast whatever the image shows?")),
    summary="the benchmark agrees"))

BENCHMARK_CHOICES = (HARDEST_CLASS, BETTER_LOSS, SSIM_SCORE_GAIN, BEST_CODEC, BETTER_CORRECTION, BELOW_CHANCE)
