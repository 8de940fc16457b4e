"""The one-class evaluation protocol, shared by notebooks and benchmarks.

Protocol (docs/design.md, section protocol): for each normal class, train on the images of that
class from the official train split, score the WHOLE official test split, report AUROC
(threshold-free). Notebooks call ``run_one_class`` and print its table; ``python -m
benchmarks.one_class`` calls the same function and writes the JSON / markdown results, so the
numbers in a notebook and in ``benchmarks/results`` come from one code path.

A method is a factory ``make(context: MethodContext) -> Detector``: the context holds the run's
seed, fast mode, dataset name and data source (a method that needs images of another dataset
loads them from it). A detector has ``fit(train_images) -> self`` and ``score(images) -> Tensor
(N,)`` (higher = more anomalous); the course's detectors subclass
:class:`course_utils.models.base.Detector`. Later notebooks register theirs with
``register_method``.

A detector that computes several image scores from one pass (for example the autoencoder's MSE
and 1 - SSIM from one reconstruction) offers ``scores(images) -> dict[str, Tensor (N,)]``; the
runner keeps all of them in ``ClassResult.scores_by_kind``, so a notebook can compare scores
without training, loading or reconstructing again. The method's own score is ``score(images)``;
a detector whose ``score_kind`` attribute names one of the kinds (as every course detector's
does) gets it from the same pass instead of a second one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
from torch import Tensor

from . import config
from .data import dataset_info, one_class_split
from .metrics import auprc, auroc

__all__ = ["Detector", "MethodContext", "METHODS", "register_method", "make_detector", "method_settings",
           "detector_settings", "ClassResult",
           "OneClassResults", "evaluate_one_class", "run_one_class", "run_one_class_many"]


PROTOCOL = "one-class"  # the protocol name benchmark records carry


class Detector(Protocol):
    def fit(self, train_images: Tensor) -> "Detector": ...

    def score(self, images: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class MethodContext:
    """What a method factory knows about the run it makes a detector for.

    Attributes:
        seed: the run's seed (the factory passes it to the detector).
        fast: fast-mode settings (tests, ``COURSE_FAST=1``) instead of the full ones.
        dataset: the name of the dataset the detector will be trained and tested on.
        source: the data source of the run (see ``course_utils.data``); a method that loads
            images of another dataset loads them from the same kind of source.
    """

    seed: int = 0
    fast: bool = False
    dataset: str = "mnist"
    source: str = "auto"


MethodFactory = Callable[[MethodContext], Detector]


def _pca(context: MethodContext) -> Detector:
    from .models.baselines import PCADetector

    return PCADetector(n_components=0.9)


def _knn(context: MethodContext) -> Detector:
    from .models.baselines import KNNDetector

    return KNNDetector(k=5)


def _autoencoder(loss: str, context: MethodContext) -> Detector:
    """Notebook 01's convolutional autoencoder; each method reports the score matching its
    loss (ae-l2: mean squared error, ae-ssim: 1 - SSIM)."""
    from .models.autoencoder import FAST_SETTINGS, FULL_SETTINGS, AutoencoderDetector

    return AutoencoderDetector(loss, settings=FAST_SETTINGS if context.fast else FULL_SETTINGS, seed=context.seed)


def _ae_l2(context: MethodContext) -> Detector:
    return _autoencoder("l2", context)


def _ae_ssim(context: MethodContext) -> Detector:
    return _autoencoder("ssim", context)


def _glow(score: str, context: MethodContext) -> Detector:
    """Notebook 04's Glow scores (notebook 03 teaches the flow); ``glow-nll`` and ``glow-complexity`` train
    the SAME model (one shared checkpoint: the cache key holds no score) and differ only in the score: NLL
    in bits, or NLL bits minus the PNG length of the image (Serra et al. 2020)."""
    from .models.glow import FAST_CONFIG, FULL_CONFIG, GlowDetector

    return GlowDetector(FAST_CONFIG if context.fast else FULL_CONFIG, score=score, seed=context.seed)


def _glow_nll(context: MethodContext) -> Detector:
    return _glow("nll", context)


def _glow_complexity(context: MethodContext) -> Detector:
    return _glow("complexity", context)


def _glow_final_scale(context: MethodContext) -> Detector:
    """Notebook 04's final-scale score (Schirrmeister et al. 2020): the last level's share of the NLL of a
    5-level Glow on images padded to 32 px (its own model, ``FINAL_SCALE_CONFIG``)."""
    from .models.glow import FAST_FINAL_SCALE_CONFIG, FINAL_SCALE_CONFIG, GlowDetector

    return GlowDetector(FAST_FINAL_SCALE_CONFIG if context.fast else FINAL_SCALE_CONFIG, score="final-scale",
                        seed=context.seed)


def _glow_ratio(context: MethodContext) -> Detector:
    """Notebook 04's likelihood ratio: the ``glow-nll`` model minus a general-domain Glow trained on
    ANOTHER dataset (``GENERAL_DOMAIN``), never on the target dataset's images."""
    from .data import load_dataset
    from .models.glow import FAST_CONFIG, FULL_CONFIG, GENERAL_CONFIG, GENERAL_DOMAIN, GlowRatioDetector

    if context.dataset not in GENERAL_DOMAIN:
        raise ValueError(f"glow-ratio has a general domain for {sorted(GENERAL_DOMAIN)} only, not {context.dataset!r}")
    general = load_dataset(GENERAL_DOMAIN[context.dataset], "train", source="sample" if context.fast else context.source)
    return GlowRatioDetector(general.images, FAST_CONFIG if context.fast else FULL_CONFIG,
                             general_config=FAST_CONFIG if context.fast else GENERAL_CONFIG, seed=context.seed)


def _fanogan(score: str, context: MethodContext) -> Detector:
    """Notebook 02's f-AnoGAN (WGAN-GP, izif encoder, kappa = 1). ``fanogan`` scores with the
    image MSE + feature residual of Schlegl et al. 2019, ``fanogan-ssim`` with 1 - SSIM +
    feature residual; both load the SAME cached GAN and encoder (the score kind is not part
    of any checkpoint key), so the second method costs no training."""
    from .models.fanogan import FAST_SETTINGS, FULL_SETTINGS, FAnoGANDetector

    return FAnoGANDetector("izif", score, settings=FAST_SETTINGS if context.fast else FULL_SETTINGS,
                           seed=context.seed)


def _fanogan_mse(context: MethodContext) -> Detector:
    return _fanogan("mse", context)


def _fanogan_ssim(context: MethodContext) -> Detector:
    return _fanogan("ssim", context)


METHODS: dict[str, MethodFactory] = {
    "pca": _pca,
    "knn": _knn,
    "ae-l2": _ae_l2,
    "ae-ssim": _ae_ssim,
    "glow-nll": _glow_nll,
    "glow-complexity": _glow_complexity,
    "glow-ratio": _glow_ratio,
    "glow-final-scale": _glow_final_scale,
    "fanogan": _fanogan_mse,
    "fanogan-ssim": _fanogan_ssim,
}


_BUILT_IN_METHODS: dict[str, MethodFactory] = dict(METHODS)  # what a fresh worker process knows


def register_method(name: str, factory: MethodFactory) -> None:
    """Add a method under ``name`` (lowercase letters, digits and '-'); ``factory(context)`` makes its detector."""
    if not name or not all(c.isalnum() or c == "-" for c in name) or name != name.lower():
        raise ValueError(f"method name {name!r} must be lowercase letters, digits and '-'")
    if not callable(factory):
        raise ValueError(f"the factory of {name!r} must be a function factory(context: MethodContext) -> Detector")
    METHODS[name] = factory


def make_detector(method: str, seed: int, fast: bool, *, dataset: str, source: str = "auto") -> Detector:
    """The detector of ``method`` for one run: its factory called with the run's :class:`MethodContext`."""
    return _get_factory(method)(MethodContext(seed=seed, fast=fast, dataset=dataset, source=source))


# Detector attributes that do not change what a run measures (runtime state, where it runs, callbacks).
_RUNTIME_ATTRIBUTES = {"seed", "device", "cache", "progress", "cache_hits", "history", "gan_history",
                       "encoder_history", "on_gan_epoch_end", "model", "gan", "encoder", "chunk_size",
                       "batch_size_eval"}


def detector_settings(detector: Any) -> dict[str, Any]:
    """The settings of an (unfitted) detector as plain JSON data: its class, score kind, every public
    number / string / flag and every settings dataclass (``AutoencoderSettings``, ``GlowConfig``, ...),
    nested detectors (``glow-ratio``'s two Glows) described the same way. Runtime state (seed, device,
    cache, training histories, networks, data) is left out: it does not change what the protocol measures."""
    described: dict[str, Any] = {"class": type(detector).__name__}
    for name, value in sorted(vars(detector).items()):
        if name.startswith("_") or name in _RUNTIME_ATTRIBUTES:
            continue
        if value is None:  # unset until fit (PCA's components, k-NN's training images)
            continue
        if isinstance(value, (bool, int, float, str)):
            described[name] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            described[name] = json.loads(json.dumps(dataclasses.asdict(value), default=str))
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            described[name] = list(value)
        elif callable(getattr(value, "fit", None)) and callable(getattr(value, "score", None)):
            described[name] = detector_settings(value)
    return described


def method_settings(method: str, *, dataset: str, fast: bool = False, source: str = "auto") -> dict[str, Any]:
    """What a run of ``method`` on ``dataset`` measures with the current code: ``{"protocol": "one-class",
    "method", "dataset", "fast", "detector": detector_settings(...)}``. ``python -m benchmarks.one_class``
    stores it in its JSON record, and ``course_utils.results.BenchmarkTable.check_protocol`` compares a
    committed record with it (a notebook passes ``fast=False``: the committed tables are full-mode runs).
    It builds an unfitted detector (seed 0); ``glow-ratio``'s factory loads its general-domain images."""
    detector = make_detector(method, 0, fast, dataset=dataset, source=source)
    return {"protocol": PROTOCOL, "method": method, "dataset": dataset, "fast": bool(fast),
            "detector": detector_settings(detector)}


def _get_factory(method: str) -> MethodFactory:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[method]


@dataclass
class ClassResult:
    """One (normal class, seed) run: metrics, timings and the raw test scores."""

    normal_class: int
    seed: int
    auroc: float
    auprc: float
    train_seconds: float
    score_seconds: float
    n_train: int
    scores: np.ndarray  # (N_test,) float64
    labels: np.ndarray  # (N_test,) 1 = anomaly
    # every score the detector's optional ``scores()`` returns, {kind: (N_test,) float64}
    scores_by_kind: dict[str, np.ndarray] = field(default_factory=dict)

    def auroc_of(self, kind: str) -> float:
        """AUROC of another score kind of the same fitted model (see ``scores_by_kind``)."""
        if kind not in self.scores_by_kind:
            known = ", ".join(sorted(self.scores_by_kind)) or "none (the detector has no scores() method)"
            raise KeyError(f"no score {kind!r} for class {self.normal_class}; known: {known}")
        return auroc(self.scores_by_kind[kind], self.labels)


@dataclass
class OneClassResults:
    """All runs of one method on one dataset."""

    method: str
    dataset: str
    source: str
    runs: list[ClassResult] = field(default_factory=list)

    def auroc_by_class(self) -> dict[int, list[float]]:
        """{normal class: [AUROC per seed, in seed order]}."""
        table: dict[int, list[float]] = {}
        for run in sorted(self.runs, key=lambda r: (r.normal_class, r.seed)):
            table.setdefault(run.normal_class, []).append(run.auroc)
        return table

    def mean_auroc(self) -> float:
        return float(np.mean([np.mean(v) for v in self.auroc_by_class().values()]))

    def run(self, normal_class: int, seed: int | None = None) -> ClassResult:
        """The run of ``normal_class`` (the first seed unless ``seed`` is given)."""
        for r in self.runs:
            if r.normal_class == normal_class and (seed is None or r.seed == seed):
                return r
        raise KeyError(f"no run for class {normal_class} seed {seed}")


def evaluate_one_class(
    method: str,
    dataset: str,
    normal_class: int,
    *,
    seed: int = 0,
    fast: bool | None = None,
    n_train: int | None = None,
    source: str = "auto",
) -> tuple[ClassResult, str]:
    """Train ``method`` on one normal class, score the whole test split.

    Returns:
        (ClassResult, data source).
    """
    fast = config.is_fast() if fast is None else fast
    _get_factory(method)
    split = one_class_split(dataset, normal_class, seed=seed, n_train=n_train, source=source)
    config.seed_everything(seed)
    detector = make_detector(method, seed, fast, dataset=dataset, source=source)
    start = time.perf_counter()
    detector.fit(split.train_images)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    by_kind: dict[str, np.ndarray] = {}
    if callable(getattr(detector, "scores", None)):
        by_kind = {k: v.detach().cpu().double().numpy() for k, v in detector.scores(split.test_images).items()}
    own_kind = getattr(detector, "score_kind", None)
    if own_kind in by_kind:  # the method's own score came out of the same pass: no second one
        scores = by_kind[own_kind]
    else:
        scores = detector.score(split.test_images).detach().cpu().double().numpy()
    score_seconds = time.perf_counter() - start
    labels = split.test_labels.numpy()
    result = ClassResult(
        normal_class=int(normal_class),
        seed=seed,
        auroc=auroc(scores, labels),
        auprc=auprc(scores, labels),
        train_seconds=train_seconds,
        score_seconds=score_seconds,
        n_train=len(split.train_images),
        scores=scores,
        labels=labels,
        scores_by_kind=by_kind,
    )
    return result, split.source


def run_one_class(
    method: str,
    dataset: str,
    classes: Iterable[int] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    fast: bool | None = None,
    n_train: int | None = None,
    source: str = "auto",
    progress: bool = True,
    jobs: int = 1,
) -> OneClassResults:
    """Run the one-class protocol for every (class, seed); see the module docstring.

    Args:
        method: a key of ``METHODS``.
        dataset: dataset name.
        classes: normal classes to run (default: all).
        seeds: one run per seed and class.
        fast: fast-mode settings of the method (default: ``COURSE_FAST``).
        n_train: cap on normal training images per class.
        source: data source (see ``course_utils.data``).
        progress: show a progress bar.
        jobs: worker processes; 1 runs every (class, seed) in this process. With more, the
            (class, seed) runs are spread over ``jobs`` spawned worker processes with one PyTorch
            thread each; every run seeds itself, so it gives the same numbers as ``jobs=1`` in a
            process with one thread (``OMP_NUM_THREADS=1``), and the runs come back in the same
            (class, seed) order. Runs that need the same checkpoint (glow-ratio's general-domain
            model; f-AnoGAN's GAN when ``fanogan`` and ``fanogan-ssim`` run at once) take turns
            through the checkpoint cache's lock: one trains it, the others load it. Workers import
            the course afresh, so only the methods built into ``METHODS`` work there (a method a
            notebook registers needs ``jobs=1``).
    """
    return run_one_class_many({(method, dataset): classes}, seeds, fast=fast, n_train=n_train, source=source,
                              progress=progress, jobs=jobs)[method, dataset]


def run_one_class_many(
    runs: Mapping[tuple[str, str], Iterable[int] | None],
    seeds: Sequence[int] = (0,),
    *,
    fast: bool | None = None,
    n_train: int | None = None,
    source: str = "auto",
    progress: bool = True,
    jobs: int = 1,
) -> dict[tuple[str, str], OneClassResults]:
    """``run_one_class`` for several (method, dataset) pairs that share one pool of ``jobs`` workers.

    A notebook that trains a few models of different methods or datasets keeps both cores busy
    this way: with separate ``run_one_class`` calls, a call with one class would run alone.

    Args:
        runs: ``{(method, dataset): classes}`` (``None``: every class). The (class, seed) runs are
            handed to the workers in this order, so the longest first balances the workers best.
        seeds, fast, n_train, source, progress, jobs: as in :func:`run_one_class`.

    Returns:
        ``{(method, dataset): OneClassResults}``, in the order of ``runs``; each holds its
        (class, seed) runs in the order given.
    """
    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (worker processes), got {jobs!r}")
    if not runs:
        raise ValueError("give at least one (method, dataset) pair")
    if not seeds:
        raise ValueError("give at least one seed")
    fast = config.is_fast() if fast is None else fast
    tasks: list[tuple[str, str, int, int]] = []   # (method, dataset, normal class, seed)
    for (method, dataset), classes in runs.items():
        _get_factory(method)
        classes = list(range(dataset_info(dataset).n_classes)) if classes is None else [int(c) for c in classes]
        tasks += [(method, dataset, c, s) for c in classes for s in seeds]
    bar = tqdm(total=len(tasks), desc=", ".join(f"{method} on {dataset}" for method, dataset in runs),
               disable=not progress, leave=False)
    options = dict(fast=fast, n_train=n_train, source=source)
    if jobs == 1:
        outcomes = []
        for method, dataset, normal_class, seed in tasks:
            outcomes.append(evaluate_one_class(method, dataset, normal_class, seed=seed, **options))
            bar.update()
    else:
        outcomes = _run_in_workers(tasks, jobs, bar, **options)
    bar.close()
    results = {key: OneClassResults(method=key[0], dataset=key[1], source="") for key in runs}
    for (method, dataset, _, _), (run, source_used) in zip(tasks, outcomes):
        results[method, dataset].runs.append(run)
        results[method, dataset].source = source_used
    return results


def _one_thread_worker() -> None:
    """Initializer of a worker process: one PyTorch thread, so its seeded training repeats exactly."""
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _run_in_workers(tasks: list[tuple[str, str, int, int]], jobs: int, bar,
                    **options) -> list[tuple[ClassResult, str]]:
    """``evaluate_one_class`` for every (method, dataset, class, seed) of ``tasks`` in ``jobs`` worker
    processes, returned in the order of ``tasks``."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    for method in dict.fromkeys(method for method, *_ in tasks):
        if _BUILT_IN_METHODS.get(method) is not METHODS[method]:
            raise ValueError(f"method {method!r} was registered in this process, and worker processes only know "
                             "the built-in methods: run it with jobs=1")
    # "spawn": a fresh interpreter per worker (forking a process that already runs PyTorch threads can hang)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                             initializer=_one_thread_worker) as pool:
        futures = [pool.submit(evaluate_one_class, method, dataset, c, seed=s, **options)
                   for method, dataset, c, s in tasks]
        for future in futures:
            future.add_done_callback(lambda _: bar.update())
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()
        return [future.result() for future in futures]
