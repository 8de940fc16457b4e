"""AE-FLOW: an autoencoder with a normalizing-flow bottleneck (Zhao, Ding & Zhang, ICLR 2023).

Architecture (paper, Section 3 and Appendix; ``AEFlowConfig.full()`` builds exactly this)::

    x (N, 1, 256, 256) in [0, 1]
      -> grayscale replicated to 3 channels, ImageNet normalisation
      -> encoder f: Wide-ResNet-50-2 up to layer3 (ImageNet-pretrained)  -> z  (N, 1024, 16, 16)
      -> flow g: 8 FrEIA AllInOneBlock steps (ResNet-type or conv-type subnets) -> z' (N, 1024, 16, 16)
      -> decoder h: 4 x (2x2 stride-2 transposed conv) 1024 -> 512 -> 256 -> 64 -> 1, the first
         three each followed by a same-width 3x3 conv, sigmoid output   -> x' (N, 1, 256, 256) in [0, 1]

The decoder reconstructs the image from the *normalised* feature z' = g(z), not from z.

Loss (what :func:`aeflow_loss` computes)::

    L = alpha * L_flow + (1 - alpha) * L_recon,          alpha = 0.5
    L_flow  = -(1/D) log p(z),  log p(z) = log N(z'; 0, I) + log|det dg/dz|   (NLL per dimension,
              D = C*H*W of the feature map; this is the usual flow objective on the features z)
    L_recon = (1/|x|) ||x - x'||^2                        (pixel-wise mean squared error)

Anomaly score (what :func:`aeflow_score` computes; higher = more anomalous)::

    S = beta * S_flow + (1 - beta) * S_recon,             beta = 0.9
    S_recon = -SSIM(x, x')        (paper; we report 1 - SSIM, the same ranking shifted by 1, in [0, 2])
    S_flow  = -(1/D) log N(z'; 0, I) = mean(z'^2) / 2 + log(2 pi) / 2       (``flow_score="z"``)

The paper builds S_flow from "the likelihood of z'" and negates it so that unlikely features
score high. We implement it as the negative log-density of z' under the standard normal, per
dimension, WITHOUT the Jacobian term (the public reproduction pimpraat/ae_flow does the same);
``flow_score="full"`` adds -log|det J|/D, i.e. the NLL of the encoder features z, the quantity
L_flow trains. Raw S_flow (about 1.4 for N(0, I) features) and 1 - SSIM (0..2) have different
scales, so with beta = 0.9 the raw sum is dominated by S_flow; ``normalise="zscore"`` first
standardises each term with the mean / std of the scores of NORMAL training images (no labels
needed). Both are available; which one a notebook reports is chosen on the validation split.

Pixel-level maps (:func:`anomaly_maps`): the residual |x - x'|, the SSIM map 1 - SSIM(x, x')(p),
and the flow map: the per-position -log N(z'; 0, I) averaged over channels, upsampled to image size.

Input complexity (a pitfall of docs/design.md; Serra et al., ICLR 2020): :func:`png_bits` (from
:mod:`course_utils.complexity`, re-exported here) gives L(x), the PNG-compressed length of the
8-bit image in bits (PIL, ``optimize=False``, deterministic), and
:func:`complexity_corrected` subtracts it (both standardised on normal training images).

Two presets: :meth:`AEFlowConfig.full` (256 px, ImageNet Wide-ResNet, for a GPU) and
:meth:`AEFlowConfig.reduced` (a small encoder trained from scratch on 32 px images, same flow and
decoder design, minutes on 2 CPU cores). ImageNet weights cannot be downloaded on an offline
machine: :func:`resolve_config` says so clearly and falls back to the reduced preset.

The package, by role: ``model`` (:class:`AEFlowConfig` and the networks), ``scores`` (loss, scores,
maps, complexity correction) and ``detector`` (:class:`AEFlowDetector`, :func:`resolve_config`, the
PneumoniaMNIST presets and score variants) and ``flowgmm`` (FlowGMM: a two-component Gaussian mixture as
the flow's base, trained with a few labelled anomalies; :class:`FlowGMMDetector`) and ``reported`` (the published
numbers of the paper and two reproductions, with citations); the ImageNet encoder is in
:mod:`course_utils.models.backbones`. Everything in ``__all__`` is importable from here.
"""

from __future__ import annotations

from ...complexity import png_bits
from ..backbones import (IMAGENET_MEAN, IMAGENET_STD, PretrainedWeightsUnavailable, WideResNetEncoder,
                         load_imagenet_wide_resnet)
from .detector import (ABLATION_SETTINGS, PNEUMONIA_CONFIG, PNEUMONIA_FAST_CONFIG, SELECTABLE_VARIANTS, VARIANT_ROLES,
                       AEFlowDetector, resolve_config, score_variants)
from .flowgmm import (FLOWGMM_VARIANTS, UNLABELLED, AEFlowGMM, FlowGMMDetector, FlowGMMSettings, GaussianMixtureBase,
                      anomaly_posterior, draw_labelled, flowgmm_loss, flowgmm_variants)
from .model import (ALPHA, BETA, SUBNETS, AEFlow, AEFlowConfig, AEFlowOutput, ConvSubnet, Decoder, ResNetSubnet,
                    SmallEncoder, build_flow)
from .reported import AEFLOW_REPORTED_CHEST_XRAY, MEDMNIST_RESNET18_28_AUC, PAPER_CHEST_XRAY, reported_row
from .scores import (S_FLOW_FORMS, aeflow_loss, aeflow_score, anomaly_maps, combine_scores, compare_flow_forms,
                     complexity_corrected, flow_likelihood_form, flow_nll_per_dim, flow_score, paper_score, recon_score)

__all__ = [
    "AEFlowConfig",
    "AEFlow",
    "AEFlowOutput",
    "AEFlowDetector",
    "FlowGMMDetector",
    "FlowGMMSettings",
    "GaussianMixtureBase",
    "AEFlowGMM",
    "flowgmm_loss",
    "UNLABELLED",
    "FLOWGMM_VARIANTS",
    "flowgmm_variants",
    "draw_labelled",
    "anomaly_posterior",
    "PAPER_CHEST_XRAY",
    "AEFLOW_REPORTED_CHEST_XRAY",
    "MEDMNIST_RESNET18_28_AUC",
    "reported_row",
    "PretrainedWeightsUnavailable",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNetSubnet",
    "ConvSubnet",
    "SUBNETS",
    "SmallEncoder",
    "WideResNetEncoder",
    "Decoder",
    "build_flow",
    "load_imagenet_wide_resnet",
    "resolve_config",
    "flow_nll_per_dim",
    "aeflow_loss",
    "flow_score",
    "recon_score",
    "combine_scores",
    "aeflow_score",
    "S_FLOW_FORMS",
    "flow_likelihood_form",
    "paper_score",
    "compare_flow_forms",
    "anomaly_maps",
    "png_bits",
    "complexity_corrected",
    "ALPHA",
    "BETA",
    "PNEUMONIA_CONFIG",
    "PNEUMONIA_FAST_CONFIG",
    "SELECTABLE_VARIANTS",
    "score_variants",
    "VARIANT_ROLES",
    "ABLATION_SETTINGS",
]
