"""Glow detectors of the one-class protocol: NLL, complexity-corrected and final-scale scores
(:class:`GlowDetector`) and the likelihood ratio against a general-domain Glow (:class:`GlowRatioDetector`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...checkpoints import data_fingerprint
from ...complexity import CODECS, compressed_bits
from ...images import check_images
from ..base import Detector
from .config import FULL_CONFIG, GENERAL_CONFIG, GlowConfig
from .dequantization import LOG2, N_BINS, complexity_score, crop_center, dequantize, nll_bits_from_log_prob, pad_images
from .flow import GlowFlow
from .training import images_log_prob, log_prob_in_chunks, test_bits_per_image, train_glow

__all__ = ["GlowDetector", "GlowRatioDetector", "SCORES", "MODEL_VERSION"]

# the checkpoint-cache model version: bump it when a change the cache config does not capture changes the
# trained weights (old checkpoints then stop loading, and bundles skip them; see course_utils.bundles)
MODEL_VERSION = "GlowFlow-v1"
SCORES = ("nll", "complexity", "final-scale")




class GlowDetector(Detector):
    """Train a :class:`GlowFlow` on normal images and score images (a :class:`~course_utils.models.base.Detector`).

    ``fit`` trains through :func:`train_glow` inside the checkpoint cache; the checkpoint is keyed by
    the config, seed and a fingerprint of the training data, NOT by the score, so ``score="nll"``,
    ``"complexity"`` and ``"final-scale"`` detectors of one config share one trained model. With
    ``config.pad_to`` set, every image is padded with a black border before it reaches the flow;
    L(x) is still the code length of the image as given.

    :meth:`scores` returns ``"nll"`` and ``"complexity"`` from one pass of the flow at the bin centres;
    ``"final-scale"`` needs a second pass (per-level log-likelihoods), so only a final-scale detector
    (``score="final-scale"``) computes it there; :meth:`level_bits` gives it for any multi-scale model.

    Args:
        config: model and training settings (default :data:`FULL_CONFIG`).
        score: higher = more anomalous. ``"nll"``: NLL_bits; ``"complexity"``: NLL_bits - L(x) (equation 3);
            ``"final-scale"``: the last level's share of the NLL in bits (equation 7, Schirrmeister et al.
            2020), which needs ``n_levels >= 2``.
        seed: seeds initialisation, mixing layers, batches and dequantization noise.
        codec: the lossless codec of L(x), one of :data:`course_utils.complexity.CODECS` (default
            ``"png"``, the ``glow-complexity`` benchmark). Not part of the checkpoint key either.
        device, cache, progress: as usual; ``batch_size_eval`` images per scoring batch.
    """

    score_kinds = SCORES
    checkpoint_parts = ("flow",)

    def __init__(self, config: GlowConfig | None = None, *, score: str = "nll", seed: int = 0,
                 codec: str = "png", device: torch.device | str | None = None, cache: bool = True,
                 progress: bool = False, batch_size_eval: int = 500) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        super().__init__(score, seed=seed, device=device, cache=cache, progress=progress)
        self.codec = codec
        self.config = (config or FULL_CONFIG).validate()
        if score == "final-scale" and self.config.n_levels < 2:
            raise ValueError("score='final-scale' needs a multi-scale flow: n_levels >= 2")
        # final-scale costs a second pass of the flow: computed by scores() only for a final-scale detector
        self.score_kinds = SCORES if score == "final-scale" else ("nll", "complexity")
        self.batch_size_eval = batch_size_eval
        self.model: GlowFlow | None = None
        self._image_side: int | None = None  # side of the images given to fit (before any padding)
        self._time_budget_s: float | None = None
        self.history = None

    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict[str, Any]:
        """Everything that determines the trained weights (not the score)."""
        self._part(part)
        cfg = {"model": MODEL_VERSION, **self.config.to_dict(), "image_shape": list(train_images.shape[1:]),
               "seed": self.seed, "data": data_fingerprint(train_images)}
        if self._time_budget_s is not None:
            cfg["time_budget_s"] = float(self._time_budget_s)
        return cfg

    def fit(self, train_images: Tensor, *, time_budget_s: float | None = None) -> "GlowDetector":
        """Train on NORMAL images (N, C, S, S) in [0, 1], S = 28 or 32 (or load the cached model);
        ``time_budget_s`` stops training after the first epoch past that many seconds (see :func:`train_glow`)."""
        self._time_budget_s = time_budget_s
        return super().fit(train_images)

    def validate(self, train_images: Tensor) -> None:
        super().validate(train_images)
        self.config.validate(int(train_images.shape[-1]))

    def build(self, train_images: Tensor) -> None:
        self._image_side = None
        flow_shape = tuple(self._pad(train_images[:1]).shape[1:])
        self.model = GlowFlow(self.config, flow_shape, seed=self.seed).to(self.device)
        self._image_side = int(train_images.shape[-1])

    def train(self, train_images: Tensor) -> None:
        flow_images = self._pad(train_images)
        name = f"glow-L{self.config.n_levels}-K{self.config.steps_per_level}-h{self.config.hidden}"

        def run():
            return train_glow(self.model, flow_images, self.config, seed=self.seed, device=self.device,
                              time_budget_s=self._time_budget_s, progress=self.progress)

        self.history = self.load_or_train("flow", self.model, name, self.cache_config(train_images), run,
                                          verbose=self.progress)

    def fitted_flow(self) -> GlowFlow:
        """The trained flow (raises :class:`~course_utils.models.base.NotFittedError` before ``fit``)."""
        self.check_fitted()
        return self.model

    def _pad(self, images: Tensor) -> Tensor:
        """The images the flow sees: ``images`` (N, C, S, S) with a black border up to ``config.pad_to`` px
        (if set). S must be the side of the images given to :meth:`fit`."""
        if self._image_side is not None and images.ndim == 4 and int(images.shape[-1]) != self._image_side:
            raise ValueError(f"this detector was fitted on {self._image_side} px images, got {images.shape[-1]} px: "
                             f"give images of the training size (it pads them itself)")
        return pad_images(images, self.config.pad_to) if self.config.pad_to is not None else images

    def log_prob(self, images: Tensor, mode: str = "center", *, generator: torch.Generator | None = None) -> Tensor:
        """log p_Y(y) in nats of the dequantised (and padded) images, (N,) float64 on the CPU."""
        return images_log_prob(self.fitted_flow(), self._pad(images), mode, generator=generator,
                               batch_size=self.batch_size_eval)

    def nll_bits(self, images: Tensor) -> Tensor:
        """NLL_bits(x) of each image at the bin centres, (N,) float64 (equation 2; of the padded image)."""
        return nll_bits_from_log_prob(self.log_prob(images, "center"), self.fitted_flow().n_dims)

    def level_bits(self, images: Tensor) -> Tensor:
        """Each level's share of NLL_bits(x) at the bin centres for images (N, C, S, S) in [0, 1] of the
        training size, (N, L) float64 (equation 7): column l is
        -log p_l / ln 2 from :meth:`GlowFlow.log_prob_by_level`; the constant 8 D of equation (2) goes to the
        finest level 0, so the row sums are :meth:`nll_bits`."""
        flow = self.fitted_flow()
        device = next(flow.parameters()).device
        log_p = log_prob_in_chunks(flow, self._pad(images), self.batch_size_eval,
                           lambda chunk: flow.log_prob_by_level(dequantize(chunk, "center").to(device)))
        bits = -log_p / LOG2
        bits[:, 0] += flow.n_dims * math.log2(N_BINS)
        return bits

    def bits_per_dim(self, images: Tensor, *, seed: int = 0) -> Tensor:
        """Test bpd per image, (N,) float64: :func:`test_bits_per_image` of the fitted flow (its dequantization
        noise, uniform or learned, from a generator seeded with ``seed``; per dimension of the padded image)."""
        return test_bits_per_image(self.fitted_flow(), self._pad(images), seed=seed, batch_size=self.batch_size_eval)

    def score_parts(self, images: Tensor) -> dict[str, np.ndarray]:
        """``{"nll_bits", "complexity_bits", "complexity"}``, (N,) float64 arrays; ``complexity_bits`` is
        L(x) with this detector's codec."""
        nll = self.nll_bits(images).numpy()
        bits = compressed_bits(images, self.codec)
        return {"nll_bits": nll, "complexity_bits": bits, "complexity": complexity_score(nll, bits)}

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Anomaly scores (N,) float64, higher = more anomalous: ``"nll"`` (NLL_bits), ``"complexity"``
        (NLL_bits - L(x)) and, for a final-scale detector, ``"final-scale"`` (the last level's bits)."""
        kinds = self.requested_kinds(kinds)
        out: dict[str, Tensor] = {}
        if "complexity" in kinds:
            parts = self.score_parts(images)
            out["complexity"] = torch.from_numpy(parts["complexity"])
            if "nll" in kinds:
                out["nll"] = torch.from_numpy(parts["nll_bits"])
        elif "nll" in kinds:
            out["nll"] = self.nll_bits(images)
        if "final-scale" in kinds:
            out["final-scale"] = self.level_bits(images)[:, -1].contiguous()
        return {kind: out[kind] for kind in kinds}

    def sample(self, n: int, temperature: float = 1.0, *, seed: int = 0) -> Tensor:
        """n samples (n, C, S, S) in [0, 1] at temperature T, on the CPU (the padding border cut off)."""
        gen = torch.Generator().manual_seed(int(seed))
        samples = self.fitted_flow().sample(n, temperature, generator=gen).cpu()
        return crop_center(samples, self._image_side or int(samples.shape[-1]))


class GlowRatioDetector(Detector):
    """Likelihood ratio against a general-domain Glow (Serra et al. 2020; Schirrmeister et al. 2020).

        S_ratio(x) = NLL_bits^normal(x) - NLL_bits^general(x) = -log2 [ p_normal(x) / p_general(x) ]     (4)

    Equation (3) subtracts L(x), the length of a PNG file. Any likelihood model is a lossless
    compressor (arithmetic coding turns -log2 p(x) into a code of about that many bits), so a Glow
    trained on *other* images of the same format is a learned compressor: it has learned what makes
    28 px grayscale images cheap or expensive (black background, smooth strokes) without knowing the
    normal class. Its code length replaces the PNG length; what is left is how much the knowledge of
    the normal class helps for this image.

    Protocol: the normal model sees only the normal class of the target dataset; the general model sees
    only the training split of ANOTHER dataset (``GENERAL_DOMAIN``: MNIST <-> Fashion-MNIST), never an
    image of the target dataset, so no anomaly of the test split is known to either. It is still extra
    data, which the pure one-class scores of :class:`GlowDetector` do not use: tables say so.

    Args:
        general_images: (M, C, S, S) in [0, 1], the general-domain training images (the same images for
            every normal class: the general model is trained once per seed and then comes from the cache).
        config: the normal model (default :data:`FULL_CONFIG`, the checkpoint of ``glow-nll``);
        general_config: the general model (default :data:`GENERAL_CONFIG`).
        seed, device, cache, progress, batch_size_eval: as in :class:`GlowDetector`.
    """

    score_kinds = ("ratio",)
    checkpoint_parts = ("normal", "general")

    def __init__(self, general_images: Tensor, config: GlowConfig | None = None, *,
                 general_config: GlowConfig | None = None, seed: int = 0, device: torch.device | str | None = None,
                 cache: bool = True, progress: bool = False, batch_size_eval: int = 500) -> None:
        check_images(general_images, "general_images")
        super().__init__("ratio", seed=seed, device=device, cache=cache, progress=progress)
        self.general_images = general_images
        options = {"seed": seed, "device": device, "cache": cache, "progress": progress,
                   "batch_size_eval": batch_size_eval}
        self.normal = GlowDetector(config or FULL_CONFIG, score="nll", **options)
        self.general = GlowDetector(general_config or GENERAL_CONFIG, score="nll", **options)

    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict[str, Any]:
        """The checkpoint key of ``part``: ``"normal"`` (the default; trained on ``train_images``) or
        ``"general"`` (trained on the general-domain images, whatever ``train_images`` are)."""
        if self._part(part) == "normal":
            return self.normal.cache_config(train_images)
        return self.general.cache_config(self.general_images)

    def validate(self, train_images: Tensor) -> None:
        """NORMAL images (N, C, S, S) in [0, 1] of the general-domain images' shape."""
        super().validate(train_images)
        if tuple(train_images.shape[1:]) != tuple(self.general_images.shape[1:]):
            raise ValueError(f"normal images {tuple(train_images.shape[1:])} and general-domain images "
                             f"{tuple(self.general_images.shape[1:])} must have the same shape: resize one of them")

    def train(self, train_images: Tensor) -> None:
        """Train the normal model and, once, the general model (each a :class:`GlowDetector` with its own cache)."""
        self.normal.fit(train_images)
        self.cache_hits["normal"] = self.normal.loaded_from_cache
        if self.general.model is None:
            self.general.fit(self.general_images)
        self.cache_hits["general"] = self.general.loaded_from_cache

    def score_parts(self, images: Tensor) -> dict[str, np.ndarray]:
        """``{"nll_bits", "general_bits", "ratio"}``, (N,) float64 arrays (equation 4)."""
        self.check_fitted()
        nll = self.normal.nll_bits(images).numpy()
        general = self.general.nll_bits(images).numpy()
        return {"nll_bits": nll, "general_bits": general, "ratio": nll - general}

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """``{"ratio": S_ratio(x)}`` of equation (4), (N,) float64, higher = more anomalous."""
        self.requested_kinds(kinds)
        return {"ratio": torch.from_numpy(self.score_parts(images)["ratio"])}
