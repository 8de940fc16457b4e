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

The package, by role: ``config`` (:class:`GlowConfig` and the presets), ``layers`` (the invertible
blocks), ``flow`` (:class:`GlowFlow`), ``dequantization`` (8-bit images <-> densities, bits, the
complexity score), ``training`` (:func:`train_glow`, batched log-likelihoods, test bpd), ``detector``
(:class:`GlowDetector`, :class:`GlowRatioDetector`) and ``patches`` (patch heat maps). Everything
listed in ``__all__`` is importable from ``course_utils.models.glow`` itself.
"""

from __future__ import annotations

from ...complexity import png_bits
from .config import (BPD_CONFIG, DEQUANTIZATIONS, EXPERIMENT_CONFIG, FAST_CONFIG, FAST_FINAL_SCALE_CONFIG,
                     FINAL_SCALE_CONFIG, FULL_CONFIG, GENERAL_CONFIG, GENERAL_DOMAIN, GlowConfig)
from .dequantization import (VariationalDequantizer, bits_per_dim, complexity_score, dequantize,
                             nll_bits_from_log_prob, pad_images)
from .detector import SCORES, GlowDetector, GlowRatioDetector
from .flow import GlowFlow
from .layers import ChannelPermutation, HouseholderConv1x1, LogitTransform, conv_subnet
from .patches import extract_patches, patch_scores
from .training import (glow_loss, images_log_prob, importance_weighted_bits_per_image, test_bits_per_dim,
                       test_bits_per_image, train_glow)

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
    "importance_weighted_bits_per_image",
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
