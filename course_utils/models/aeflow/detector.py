"""The AE-FLOW detector of the one-class protocol, the ImageNet fallback, and the settings and score
variants shared by notebook 05 and ``benchmarks/aeflow.py``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...checkpoints import data_fingerprint
from ...complexity import png_bits
from ...images import check_images
from ..backbones import PretrainedWeightsUnavailable, load_imagenet_wide_resnet
from ..base import Detector
from .model import AEFlow, AEFlowConfig, AEFlowOutput
from .scores import (aeflow_loss, anomaly_maps, combine_scores, complexity_corrected, flow_score, paper_score,
                     recon_score)

__all__ = ["resolve_config", "resize_square", "AEFlowDetector", "PNEUMONIA_CONFIG", "PNEUMONIA_FAST_CONFIG",
           "SELECTABLE_VARIANTS", "score_variants", "VARIANT_ROLES", "ABLATION_SETTINGS", "MODEL_VERSION"]

# the checkpoint-cache model version: bump it when a change the cache config does not capture changes the
# trained weights (old checkpoints then stop loading, and bundles skip them; see course_utils.bundles)
MODEL_VERSION = "AEFlow-v1"


# --------------------------------------------------------------------------------------
# Weights: try ImageNet, else fall back
# --------------------------------------------------------------------------------------


def resolve_config(config: AEFlowConfig, *, fallback: bool = True,
                   fallback_config: AEFlowConfig | None = None) -> tuple[AEFlowConfig, str]:
    """Check that the config can be built here; return ``(config to use, message)``.

    For ``weights="imagenet"`` the weights are loaded once (downloaded if needed). If that fails
    and ``fallback`` is True, a loud message is printed, a warning issued, and the reduced preset
    (or ``fallback_config``) is returned with the message; else the error is raised.

    Raises:
        PretrainedWeightsUnavailable: the weights cannot be loaded and ``fallback=False``.
    """
    config.validate()
    if config.weights != "imagenet":
        return config, ""
    try:
        load_imagenet_wide_resnet()
        return config, ""
    except PretrainedWeightsUnavailable as error:
        if not fallback:
            raise
        replacement = (fallback_config or AEFlowConfig.reduced()).validate()
        message = (f"{error}\nFALLING BACK to the reduced AE-FLOW ({replacement.encoder} encoder from scratch, "
                   f"{replacement.image_size} px, {replacement.feature_channels} x {replacement.image_size // replacement.downsampling}"
                   f" x {replacement.image_size // replacement.downsampling} features).")
        print("!" * 78 + "\n" + message + "\n" + "!" * 78)
        warnings.warn("ImageNet weights unavailable: using the reduced AE-FLOW", RuntimeWarning, stacklevel=2)
        return replacement, message


# --------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------


def resize_square(images: Tensor, size: int) -> Tensor:
    """Images (N, C, H, W) in [0, 1] bilinearly resized to (N, C, size, size) (unchanged if already that size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)


class AEFlowDetector(Detector):
    """Train AE-FLOW on normal images and score images (a :class:`~course_utils.models.base.Detector`).

    ``fit`` trains through ``course_utils.training.train`` (AMP on CUDA, pinned memory) inside the
    checkpoint cache (keyed by config, seed and a fingerprint of the data), then scores the training
    images once: the reference statistics of ``normalise="zscore"``. :meth:`scores` returns the
    combined score (``"aeflow"``) and its terms; ``score_parts`` returns every term as arrays, so a
    notebook can sweep beta or try score variants without another pass.

    Args:
        config: the model and training settings (default: the reduced CPU preset).
        seed: seeds initialisation, permutations and shuffling.
        normalise: ``"zscore"`` (each term standardised on the training images' scores) or
            ``"none"`` (raw paper combination), used by the ``"aeflow"`` score.
        flow_kind, recon_kind: see :func:`flow_score`, :func:`recon_score`.
        fallback: when ImageNet weights cannot be loaded, use the reduced preset (loudly).
        device, cache, progress, batch_size_eval: as usual; ``cudnn_benchmark`` turns on
            ``torch.backends.cudnn.benchmark`` on CUDA (fixed input sizes: faster, not bit-repeatable).
    """

    score_kinds = ("aeflow", "flow", "flow_full", "ssim", "mse", "paper_log_density", "paper_likelihood")
    # the paper's raw score with S_flow in each form of scores.S_FLOW_FORMS, combined with 1 - SSIM at beta
    paper_kinds = {"paper_log_density": "log-density", "paper_likelihood": "likelihood"}
    checkpoint_parts = ("model",)

    def __init__(self, config: AEFlowConfig | None = None, *, seed: int = 0, normalise: str = "zscore",
                 flow_kind: str = "z", recon_kind: str = "ssim", fallback: bool = True,
                 device: torch.device | str | None = None, cache: bool = True, progress: bool = False,
                 batch_size_eval: int = 64, cudnn_benchmark: bool = True) -> None:
        if normalise not in ("zscore", "none"):
            raise ValueError(f"normalise must be 'zscore' or 'none', got {normalise!r}")
        super().__init__("aeflow", seed=seed, device=device, cache=cache, progress=progress)
        self.requested_config = (config or AEFlowConfig.reduced()).validate()
        self.config = self.requested_config
        self.normalise = normalise
        self.flow_kind, self.recon_kind = flow_kind, recon_kind
        self.fallback = fallback
        self.batch_size_eval = batch_size_eval
        self.cudnn_benchmark = cudnn_benchmark
        self.model: AEFlow | None = None
        self.history = None
        self.fallback_message = ""
        self.train_parts: dict[str, np.ndarray] | None = None

    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict[str, Any]:
        """Everything that determines the trained weights (the config actually used, after any fallback)."""
        self._part(part)
        return {"model": MODEL_VERSION, **self.config.to_dict(), "seed": self.seed,
                "data": data_fingerprint(train_images)}

    def validate(self, train_images: Tensor) -> None:
        """Images (N, C, H, W) in [0, 1]; also settles the config (ImageNet weights or the fallback)."""
        super().validate(train_images)
        self.config, self.fallback_message = resolve_config(self.requested_config, fallback=self.fallback)

    def build(self, train_images: Tensor) -> None:
        if self.device.type == "cuda" and self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self.model = self.new_model(int(train_images.shape[1])).to(self.device)

    def new_model(self, in_channels: int) -> AEFlow:
        """Hook: the untrained network for ``in_channels``-channel images (here :class:`AEFlow`)."""
        return AEFlow(self.config, in_channels=in_channels)

    checkpoint_prefix = "aeflow"

    def training_data(self, train_images: Tensor) -> tuple[Tensor, ...]:
        """Hook: the tensors ``course_utils.training.train`` batches (rows aligned); here the normal images
        resized to the model input, (N, C, S, S)."""
        return (resize_square(train_images, self.config.image_size),)

    def batch_loss(self, model: AEFlow, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Hook: the loss of one batch of :meth:`training_data` (here :func:`aeflow_loss`)."""
        return aeflow_loss(model, batch[0])

    def train(self, train_images: Tensor) -> None:
        from ...training import train

        cfg, model = self.config, self.model
        data = self.training_data(train_images)
        name = f"{self.checkpoint_prefix}-{cfg.encoder}-{cfg.subnet}-{cfg.image_size}px"
        params = [p for p in model.parameters() if p.requires_grad]

        def run():
            optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            return train(model, self.batch_loss, data, epochs=cfg.epochs,
                         optimizer=optimizer, batch_size=cfg.batch_size, seed=self.seed, device=self.device,
                         progress=self.progress, desc=name, max_grad_norm=10.0)

        self.history = self.load_or_train("model", model, name, self.cache_config(train_images), run,
                                          verbose=self.progress)

    def finish(self, train_images: Tensor) -> None:
        """The training images' score terms: the reference of ``normalise="zscore"`` and of L(x)."""
        self.train_parts = self.score_parts(train_images)

    def score_parts(self, images: Tensor) -> dict[str, np.ndarray]:
        """Every per-image term, (N,) float64 arrays: ``flow`` (S_flow, z), ``flow_full``, ``ssim``
        (1 - SSIM), ``mse`` and ``bits`` (PNG length of the input, for complexity correction)."""
        self.check_fitted()
        model = self.model
        check_images(images, "images")
        parts: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size_eval):
                x = resize_square(images[start:start + self.batch_size_eval], self.config.image_size).to(self.device)
                for key, value in self.batch_parts(x, model(x)).items():
                    parts.setdefault(key, []).append(value.cpu())
        result = {k: torch.cat(v).double().numpy() for k, v in parts.items()}
        result["bits"] = png_bits(images)
        return result

    def batch_parts(self, x: Tensor, out: AEFlowOutput) -> dict[str, Tensor]:
        """The per-image terms (N,) of one batch ``x`` (model input size) and the model's output ``out``;
        a subclass adds its own terms here (one pass over the images for all of them)."""
        return {"flow": flow_score(out, "z"), "flow_full": flow_score(out, "full"),
                "ssim": recon_score(x, out.x_hat, "ssim"), "mse": recon_score(x, out.x_hat, "mse")}

    def combine(self, parts: dict[str, np.ndarray], beta: float | None = None, *, normalise: str | None = None,
                complexity_weight: float = 0.0) -> np.ndarray:
        """The combined score from :meth:`score_parts` output (no model call: cheap beta sweeps).

        ``complexity_weight > 0`` subtracts that multiple of the standardised PNG length
        (:func:`complexity_corrected`); standardisation statistics come from the training images.
        """
        self.check_fitted()
        beta = self.config.beta if beta is None else beta
        normalise = self.normalise if normalise is None else normalise
        flow_key = "flow" if self.flow_kind == "z" else "flow_full"
        ref = self.train_parts
        if normalise == "zscore":
            s = combine_scores(parts[flow_key], parts[self.recon_kind], beta, ref_flow=ref[flow_key],
                               ref_recon=ref[self.recon_kind])
            s_ref = combine_scores(ref[flow_key], ref[self.recon_kind], beta, ref_flow=ref[flow_key],
                                   ref_recon=ref[self.recon_kind])
        else:
            s = combine_scores(parts[flow_key], parts[self.recon_kind], beta)
            s_ref = combine_scores(ref[flow_key], ref[self.recon_kind], beta)
        if complexity_weight:
            s = complexity_corrected(s, parts["bits"], ref_scores=s_ref, ref_bits=ref["bits"],
                                     weight=complexity_weight)
        return s

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Per-image scores (N,) float64 from one pass, higher = more anomalous: ``"aeflow"`` (the combined
        score of :meth:`combine` with the detector's settings) and the terms ``"flow"``, ``"flow_full"``,
        ``"ssim"`` (1 - SSIM) and ``"mse"`` of :meth:`score_parts`, and the paper's raw score with S_flow in
        its log-density form (``"paper_log_density"``) or its likelihood form (``"paper_likelihood"``),
        see :func:`paper_score`."""
        kinds = self.requested_kinds(kinds)
        parts = self.score_parts(images)
        out = {k: torch.from_numpy(parts[k]) for k in kinds if k in parts}
        for kind, form in self.paper_kinds.items():
            if kind in kinds:
                out[kind] = torch.from_numpy(paper_score(parts["flow"], parts["ssim"], form, self.config.beta))
        if "aeflow" in kinds:
            out["aeflow"] = torch.from_numpy(self.combine(parts))
        return {k: out[k] for k in kinds}

    def maps(self, images: Tensor) -> dict[str, Tensor]:
        """:func:`anomaly_maps` of images (resized to the model's input size), on the CPU."""
        self.check_fitted()
        x = resize_square(images, self.config.image_size).to(self.device)
        return {k: v.cpu() for k, v in anomaly_maps(self.model, x).items()}


# --------------------------------------------------------------------------------------
# Settings and score variants shared by notebook 05 and benchmarks/aeflow.py
# --------------------------------------------------------------------------------------

PNEUMONIA_CONFIG = AEFlowConfig.reduced(epochs=30)
"""The reduced model on PneumoniaMNIST (28 px data resized to 32 px), full mode."""

PNEUMONIA_FAST_CONFIG = AEFlowConfig.reduced(feature_channels=16, encoder_widths=(8, 16, 16), decoder_widths=(16, 8),
                                             n_flow_blocks=4, epochs=2)
"""A tiny model for fast mode (tests): checks that everything runs, not that it detects."""

ABLATION_SETTINGS = (("resnet", 0.5), ("conv", 0.5), ("resnet", 0.1), ("resnet", 0.9))
"""The (subnet, alpha) pairs of the ablation (notebook 05, ``python -m benchmarks.aeflow --ablation``): the two
subnets of the paper at its alpha = 0.5, then the ResNet-type subnet at a small and a large loss weight."""

SELECTABLE_VARIANTS = ("paper: raw terms", "paper - 1 L(x)", "paper - 2 L(x)", "z-scored terms",
                       "z-scored terms - 1 L(x)")
"""The AE-FLOW score variants a benchmark may choose between, on the VALIDATION split only."""


def score_variants(detector: "AEFlowDetector", parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every score variant from :meth:`AEFlowDetector.score_parts` output, by name (higher = more anomalous).

    ``SELECTABLE_VARIANTS`` are the AE-FLOW scores: the paper's raw beta-combination, the same with
    each term z-scored on the training images, and these minus 1 or 2 x the standardised PNG
    length L(x) (:func:`complexity_corrected`). The paper's raw score is also given under the names of the
    two readings of S_flow (:data:`~course_utils.models.aeflow.scores.S_FLOW_FORMS`): ``"paper, S_flow
    log-density form"`` (the same numbers as ``"paper: raw terms"``) and ``"paper, S_flow likelihood
    form"``. The single terms
    (``"S_flow"``, ``"S_flow (with log det)"``, ``"S_recon = 1 - SSIM"``, ``"MSE"``) and
    ``"-L(x) only"`` (minus the PNG length: a model-free reference) are included for comparison.
    """
    beta = detector.config.beta
    return {
        "paper: raw terms": detector.combine(parts, beta, normalise="none"),
        "paper - 1 L(x)": detector.combine(parts, beta, normalise="none", complexity_weight=1.0),
        "paper - 2 L(x)": detector.combine(parts, beta, normalise="none", complexity_weight=2.0),
        "paper, S_flow log-density form": paper_score(parts["flow"], parts["ssim"], "log-density", beta),
        "paper, S_flow likelihood form": paper_score(parts["flow"], parts["ssim"], "likelihood", beta),
        "z-scored terms": detector.combine(parts, beta, normalise="zscore"),
        "z-scored terms - 1 L(x)": detector.combine(parts, beta, normalise="zscore", complexity_weight=1.0),
        "S_flow": parts["flow"],
        "S_flow (with log det)": parts["flow_full"],
        "S_recon = 1 - SSIM": parts["ssim"],
        "MSE": parts["mse"],
        "-L(x) only": -parts["bits"],
    }


VARIANT_ROLES = {
    "paper, S_flow log-density form": "paper's score (S_flow = -mean log p(z'))",
    "paper, S_flow likelihood form": "paper's score (S_flow = -exp(mean log p(z')))",
    "paper: raw terms": "paper's score, log-density form (the name the selection uses)",
    "z-scored terms": "course: terms z-scored on the training images",
    "-L(x) only": "reference: L(x) alone, no model",
    "paper - 1 L(x)": "course: complexity correction",
    "paper - 2 L(x)": "course: complexity correction",
    "z-scored terms - 1 L(x)": "course: complexity correction",
    "S_flow": "single term",
    "S_flow (with log det)": "single term",
    "S_recon = 1 - SSIM": "single term",
    "MSE": "single term",
}
"""What each name of :func:`score_variants` is, in the order a results table shows them: the paper's score in
its two readings first, then the course's own additions, the "- L(x)" complexity corrections directly below
L(x) alone (which they may owe most of their AUROC to), then the single terms."""
