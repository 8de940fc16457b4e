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

Input complexity (DESIGN.md pitfall; Serra et al., ICLR 2020): :func:`png_bits` (from
:mod:`course_utils.complexity`, re-exported here) gives L(x), the PNG-compressed length of the
8-bit image in bits (PIL, ``optimize=False``, deterministic), and
:func:`complexity_corrected` subtracts it (both standardised on normal training images).

Two presets: :meth:`AEFlowConfig.full` (256 px, ImageNet Wide-ResNet, for a GPU) and
:meth:`AEFlowConfig.reduced` (a small encoder trained from scratch on 32 px images, same flow and
decoder design, minutes on 2 CPU cores). ImageNet weights cannot be downloaded on an offline
machine: :func:`resolve_config` says so clearly and falls back to the reduced preset.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import check_images
from ..complexity import png_bits
from ..checkpoints import data_fingerprint
from ..metrics import finite_scores
from ..reconstruction import ssim_map, ssim_window_for
from .backbones import (IMAGENET_MEAN, IMAGENET_STD, PretrainedWeightsUnavailable, WideResNetEncoder,
                        load_imagenet_wide_resnet)
from .base import Detector

__all__ = [
    "AEFlowConfig",
    "AEFlow",
    "AEFlowOutput",
    "AEFlowDetector",
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
    "anomaly_maps",
    "png_bits",
    "complexity_corrected",
    "ALPHA",
    "BETA",
    "PNEUMONIA_CONFIG",
    "PNEUMONIA_FAST_CONFIG",
    "SELECTABLE_VARIANTS",
    "score_variants",
]

ALPHA = 0.5  # loss weight of L_flow (paper)
BETA = 0.9  # score weight of S_flow (paper)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AEFlowConfig:
    """Everything that determines an AE-FLOW model and its training.

    Attributes:
        encoder: ``"wide_resnet50_2"`` (paper; 1024-channel features at 1/16 resolution) or
            ``"small"`` (a from-scratch CNN of stride-2 3x3 convs, see :class:`SmallEncoder`).
        weights: ``"imagenet"`` or ``None`` (random init) for the Wide-ResNet encoder.
        trainable_encoder: train the encoder (paper) or keep it frozen.
        image_size: side of the (square) model input; images are resized to it.
        feature_channels: C of the bottleneck map (1024 for Wide-ResNet layer3).
        encoder_widths: channels of the small encoder's stages (its last stage outputs
            ``feature_channels``); ignored for the Wide-ResNet.
        decoder_widths: channels after each upsampling stage except the last, e.g.
            (512, 256, 64): 1024 -> 512 -> 256 -> 64 -> image channels (paper). The number of
            stages, len + 1, must undo the encoder's downsampling (16 = 2^4 for the paper).
        n_flow_blocks: AllInOneBlock steps (8 in the paper).
        subnet: ``"resnet"`` or ``"conv"`` (see :data:`SUBNETS`).
        subnet_hidden: hidden channels of the conv-type subnet (default: its input channels).
        affine_clamping: AllInOneBlock's soft clamp of the log-scales.
        alpha, beta: loss and score weights.
        epochs, batch_size, lr, weight_decay: Adam training settings.
    """

    encoder: str = "small"
    weights: str | None = None
    trainable_encoder: bool = True
    image_size: int = 32
    feature_channels: int = 64
    encoder_widths: tuple[int, ...] = (32, 64, 64)
    decoder_widths: tuple[int, ...] = (64, 32)
    n_flow_blocks: int = 8
    subnet: str = "resnet"
    subnet_hidden: int | None = None
    affine_clamping: float = 2.0
    alpha: float = ALPHA
    beta: float = BETA
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5

    @classmethod
    def full(cls, **overrides: Any) -> "AEFlowConfig":
        """The paper's model: 256 px, ImageNet Wide-ResNet-50-2 up to layer3, 1024 x 16 x 16."""
        settings = dict(encoder="wide_resnet50_2", weights="imagenet", image_size=256, feature_channels=1024,
                        encoder_widths=(), decoder_widths=(512, 256, 64), epochs=100, batch_size=16, lr=1e-3)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def reduced(cls, **overrides: Any) -> "AEFlowConfig":
        """The CPU model: 32 px, small encoder from scratch (32 -> 16 -> 8 -> 4), 64 x 4 x 4 features."""
        return cls(**overrides)

    @property
    def downsampling(self) -> int:
        return 16 if self.encoder == "wide_resnet50_2" else 2 ** len(self.encoder_widths)

    def validate(self) -> "AEFlowConfig":
        """Raise ValueError for inconsistent settings; return self."""
        if self.encoder not in ("wide_resnet50_2", "small"):
            raise ValueError(f"encoder must be 'wide_resnet50_2' or 'small', got {self.encoder!r}")
        if self.weights not in (None, "imagenet"):
            raise ValueError(f"weights must be 'imagenet' or None, got {self.weights!r}")
        if self.encoder == "small" and self.weights is not None:
            raise ValueError("the small encoder is trained from scratch: use weights=None")
        if self.encoder == "wide_resnet50_2" and self.feature_channels != 1024:
            raise ValueError("Wide-ResNet-50-2 layer3 has 1024 channels: use feature_channels=1024")
        if self.encoder == "small" and (not self.encoder_widths or self.encoder_widths[-1] != self.feature_channels):
            raise ValueError(f"the small encoder's last width {self.encoder_widths} must equal "
                             f"feature_channels={self.feature_channels}")
        if self.subnet not in SUBNETS:
            raise ValueError(f"subnet must be one of {sorted(SUBNETS)}, got {self.subnet!r}")
        if self.image_size % self.downsampling:
            raise ValueError(f"image_size {self.image_size} must be divisible by the encoder's downsampling "
                             f"{self.downsampling}")
        if 2 ** (len(self.decoder_widths) + 1) != self.downsampling:
            raise ValueError(f"decoder_widths {self.decoder_widths} give {len(self.decoder_widths) + 1} upsampling "
                             f"stages (x{2 ** (len(self.decoder_widths) + 1)}); the encoder downsamples "
                             f"x{self.downsampling}")
        if self.n_flow_blocks < 1:
            raise ValueError(f"n_flow_blocks must be >= 1, got {self.n_flow_blocks}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists), for checkpoint keys and result files."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def replace(self, **changes: Any) -> "AEFlowConfig":
        return replace(self, **changes)


# --------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------


class SmallEncoder(nn.Module):
    """From-scratch CNN: per stage a stride-2 3x3 conv + BatchNorm + ReLU, then a 3x3 conv + BN + ReLU.

    (N, C_in, S, S) -> (N, widths[-1], S / 2^len(widths), S / 2^len(widths)). The last stage has
    no ReLU (a linear feature map, like ResNet's last block output before the flow)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            last = i == len(widths) - 1
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w)]
            if not last:
                layers.append(nn.ReLU())
            c = w
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------
# Flow bottleneck
# --------------------------------------------------------------------------------------


class ResNetSubnet(nn.Module):
    """ResNet-type subnet: ReLU(BN(conv3x3(x))) + conv1x1(x) (the 1x1-conv shortcut is added to the output).

    The output is a sum, not a ReLU output: FrEIA 0.2's AllInOneBlock scales its subnet's
    output in place, which breaks backward under torch 2.x when the last op is ReLU / Tanh.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x))) + self.shortcut(x)


class ConvSubnet(nn.Module):
    """Conv-type subnet: conv3x3 -> ReLU -> conv1x1 (ends in a conv, as FrEIA 0.2 needs)."""

    def __init__(self, c_in: int, c_out: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or c_in
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


SUBNETS: dict[str, Callable[..., nn.Module]] = {"resnet": ResNetSubnet, "conv": ConvSubnet}


def build_flow(channels: int, height: int, width: int, *, n_blocks: int = 8, subnet: str = "resnet",
               hidden: int | None = None, affine_clamping: float = 2.0) -> nn.Module:
    """A FrEIA ``SequenceINN`` of ``n_blocks`` ``AllInOneBlock`` steps on (channels, height, width) maps.

    Each step: affine coupling (half the channels predict scale and shift of the other half with
    the subnet), a learned global affine transform, and a fixed random channel permutation.
    Calling the flow returns ``(z', log|det J|)`` with ``log|det J|`` of shape (N,);
    ``flow(z', rev=True)`` inverts it.
    """
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    if subnet not in SUBNETS:
        raise ValueError(f"subnet must be one of {sorted(SUBNETS)}, got {subnet!r}")
    if channels < 2:
        raise ValueError(f"the coupling blocks need >= 2 channels, got {channels}")

    def constructor(c_in: int, c_out: int) -> nn.Module:
        return ConvSubnet(c_in, c_out, hidden) if subnet == "conv" else ResNetSubnet(c_in, c_out)

    flow = Ff.SequenceINN(channels, height, width)
    for _ in range(n_blocks):
        flow.append(Fm.AllInOneBlock, subnet_constructor=constructor, affine_clamping=affine_clamping,
                    permute_soft=False)
    return flow


class Decoder(nn.Module):
    """Upsampling decoder: per stage a 2x2 stride-2 transposed conv (+ ReLU) and a same-width 3x3 conv (+ ReLU);
    the last stage is a transposed conv to the image channels with a sigmoid, so x' lies in [0, 1] like x.

    Paper: ``Decoder(1024, (512, 256, 64), 1)``: 1024 -> 512 -> 256 -> 64 -> 1, x16.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.ConvTranspose2d(c, w, 2, stride=2), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU()]
            c = w
        layers += [nn.ConvTranspose2d(c, out_channels, 2, stride=2), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


@dataclass
class AEFlowOutput:
    """What :meth:`AEFlow.forward` returns.

    Attributes:
        x_hat: reconstruction x' (N, C, S, S) in [0, 1].
        z: encoder features (N, Cf, S/16, S/16) for the paper's model.
        z_prime: normalised features z' = g(z), same shape.
        log_jac_det: log|det dz'/dz| per image, (N,).
    """

    x_hat: Tensor
    z: Tensor
    z_prime: Tensor
    log_jac_det: Tensor


class AEFlow(nn.Module):
    """Encoder -> flow -> decoder. Input (N, C, S, S) in [0, 1] with S = ``config.image_size``.

    Args:
        config: an :class:`AEFlowConfig` (``weights="imagenet"`` may raise
            :class:`PretrainedWeightsUnavailable`; see :func:`resolve_config`).
        in_channels: image channels (1 for X-rays).
    """

    def __init__(self, config: AEFlowConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.config = config.validate()
        self.in_channels = in_channels
        if config.encoder == "wide_resnet50_2":
            self.encoder: nn.Module = WideResNetEncoder(config.weights, config.trainable_encoder)
        else:
            self.encoder = SmallEncoder(in_channels, config.encoder_widths)
            if not config.trainable_encoder:
                self.encoder.requires_grad_(False)
        side = config.image_size // config.downsampling
        self.flow = build_flow(config.feature_channels, side, side, n_blocks=config.n_flow_blocks,
                               subnet=config.subnet, hidden=config.subnet_hidden,
                               affine_clamping=config.affine_clamping)
        self.decoder = Decoder(config.feature_channels, config.decoder_widths, in_channels)

    def forward(self, x: Tensor) -> AEFlowOutput:
        size = self.config.image_size
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"AEFlow expects images (N, {self.in_channels}, {size}, {size}), got {tuple(x.shape)}; "
                             "resize them first (AEFlowDetector does)")
        z = self.encoder(x)
        z_prime, log_jac_det = self.flow(z)
        return AEFlowOutput(self.decoder(z_prime), z, z_prime, log_jac_det.reshape(-1))


# --------------------------------------------------------------------------------------
# Loss and scores
# --------------------------------------------------------------------------------------


def _log_normal_per_dim(z_prime: Tensor) -> Tensor:
    """(1/D) log N(z'; 0, I) per image, (N,), computed in float32."""
    z = z_prime.float().flatten(1)
    return -0.5 * z.square().mean(1) - _HALF_LOG_2PI


def flow_nll_per_dim(z_prime: Tensor, log_jac_det: Tensor) -> Tensor:
    """-(1/D) [log N(z'; 0, I) + log|det J|] per image, (N,): the NLL of the features z in nats/dim."""
    d = z_prime[0].numel()
    return -(_log_normal_per_dim(z_prime) + log_jac_det.float() / d)


def aeflow_loss(model: AEFlow, x: Tensor, alpha: float | None = None) -> dict[str, Tensor]:
    """L = alpha * L_flow + (1 - alpha) * L_recon on a batch (see the module docstring).

    Returns:
        ``{"loss", "flow", "recon"}`` scalars, the format ``course_utils.training.train`` logs.
    """
    alpha = model.config.alpha if alpha is None else alpha
    out = model(x)
    l_flow = flow_nll_per_dim(out.z_prime, out.log_jac_det).mean()
    l_recon = F.mse_loss(out.x_hat.float(), x.float())
    return {"loss": alpha * l_flow + (1 - alpha) * l_recon, "flow": l_flow, "recon": l_recon}


def flow_score(out: AEFlowOutput, kind: str = "z") -> Tensor:
    """S_flow per image, (N,), higher = less likely features.

    ``kind="z"``: -(1/D) log N(z'; 0, I) (default; see module docstring); ``kind="full"``: the
    per-dimension NLL of z including -log|det J| / D.
    """
    if kind == "z":
        return -_log_normal_per_dim(out.z_prime)
    if kind == "full":
        return flow_nll_per_dim(out.z_prime, out.log_jac_det)
    raise ValueError(f"flow score kind must be 'z' or 'full', got {kind!r}")


def _ssim_map(x: Tensor, y: Tensor, win_size: int) -> Tensor:
    return ssim_map(x.float().clamp(0, 1), y.float().clamp(0, 1), win_size=win_size, padding="same")


def recon_score(x: Tensor, x_hat: Tensor, kind: str = "ssim") -> Tensor:
    """S_recon per image, (N,): ``"ssim"``: 1 - mean SSIM(x, x') (paper: -SSIM); ``"mse"``: mean squared error."""
    if kind == "ssim":
        return 1.0 - _ssim_map(x, x_hat, ssim_window_for(x.shape[-1])).flatten(1).mean(1)
    if kind == "mse":
        return (x.float() - x_hat.float()).square().flatten(1).mean(1)
    raise ValueError(f"recon score kind must be 'ssim' or 'mse', got {kind!r}")


def _standardise(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    if reference is None:
        return values
    std = float(np.std(reference))
    return (values - float(np.mean(reference))) / (std if std > 0 else 1.0)


def combine_scores(s_flow: Any, s_recon: Any, beta: float = BETA, *, ref_flow: Any = None,
                   ref_recon: Any = None) -> np.ndarray:
    """S = beta * S_flow + (1 - beta) * S_recon, per image.

    With ``ref_flow`` / ``ref_recon`` (scores of NORMAL reference images, e.g. the training set)
    each term is first standardised, (s - mean(ref)) / std(ref), so that beta weighs terms of equal
    spread; without them the raw terms are combined, as written in the paper.
    """
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    flow = finite_scores(s_flow, "s_flow")
    recon = finite_scores(s_recon, "s_recon")
    if flow.shape != recon.shape:
        raise ValueError(f"s_flow and s_recon have different lengths {flow.shape} and {recon.shape}")
    if (ref_flow is None) != (ref_recon is None):
        raise ValueError("give both ref_flow and ref_recon (normal reference scores), or neither")
    if ref_flow is not None:
        flow = _standardise(flow, finite_scores(ref_flow, "ref_flow"))
        recon = _standardise(recon, finite_scores(ref_recon, "ref_recon"))
    return float(beta) * flow + (1.0 - float(beta)) * recon


def aeflow_score(model: AEFlow, x: Tensor, beta: float | None = None, *, flow_kind: str = "z",
                 recon_kind: str = "ssim") -> Tensor:
    """The paper's raw score S = beta * S_flow + (1 - beta) * S_recon for a batch, (N,)."""
    beta = model.config.beta if beta is None else beta
    with torch.no_grad():
        out = model(x)
        return beta * flow_score(out, flow_kind) + (1 - beta) * recon_score(x, out.x_hat, recon_kind)


def anomaly_maps(model: AEFlow, x: Tensor) -> dict[str, Tensor]:
    """Pixel-level maps (N, 1, S, S), higher = more anomalous, plus the reconstruction.

    ``"residual"``: mean over channels of |x - x'|; ``"ssim"``: 1 - SSIM(x, x')(p); ``"flow"``:
    the per-position -log N(z'; 0, I) / C (channel mean of z'^2 / 2 + log(2 pi) / 2), bilinearly
    upsampled from the feature grid; ``"x_hat"``: the reconstruction.
    """
    with torch.no_grad():
        out = model(x)
        x_hat = out.x_hat.float()
        residual = (x.float() - x_hat).abs().mean(1, keepdim=True)
        ssim = (1.0 - _ssim_map(x, x_hat, ssim_window_for(x.shape[-1]))).mean(1, keepdim=True)
        flow = (0.5 * out.z_prime.float().square().mean(1, keepdim=True) + _HALF_LOG_2PI)
        flow = F.interpolate(flow, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return {"residual": residual, "ssim": ssim, "flow": flow, "x_hat": x_hat}


# --------------------------------------------------------------------------------------
# Input complexity
# --------------------------------------------------------------------------------------


def complexity_corrected(scores: Any, bits: Any, *, ref_scores: Any, ref_bits: Any, weight: float = 1.0) -> np.ndarray:
    """Complexity-corrected score z(S) - weight * z(L), after Serra et al. (ICLR 2020).

    Serra et al. use S(x) = -log2 p(x) - L(x) with both terms in bits of the same image. An
    AE-FLOW score is not in bits of the image, so both terms are standardised with the mean / std
    over NORMAL reference images (``ref_scores``, ``ref_bits``; e.g. the training images) and
    subtracted: an image scores high when the model finds it unusual *for its complexity*.
    """
    s = _standardise(finite_scores(scores, "scores"), finite_scores(ref_scores, "ref_scores"))
    b = _standardise(finite_scores(bits, "bits"), finite_scores(ref_bits, "ref_bits"))
    if s.shape != b.shape:
        raise ValueError(f"scores and bits have different lengths {s.shape} and {b.shape}")
    return s - float(weight) * b


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


def _resize(images: Tensor, size: int) -> Tensor:
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

    score_kinds = ("aeflow", "flow", "flow_full", "ssim", "mse")
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
        return {"model": "AEFlow-v1", **self.config.to_dict(), "seed": self.seed,
                "data": data_fingerprint(train_images)}

    def validate(self, train_images: Tensor) -> None:
        """Images (N, C, H, W) in [0, 1]; also settles the config (ImageNet weights or the fallback)."""
        super().validate(train_images)
        self.config, self.fallback_message = resolve_config(self.requested_config, fallback=self.fallback)

    def build(self, train_images: Tensor) -> None:
        if self.device.type == "cuda" and self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self.model = AEFlow(self.config, in_channels=int(train_images.shape[1])).to(self.device)

    def train(self, train_images: Tensor) -> None:
        from ..training import train

        cfg, model = self.config, self.model
        x = _resize(train_images, cfg.image_size)
        name = f"aeflow-{cfg.encoder}-{cfg.subnet}-{cfg.image_size}px"
        params = [p for p in model.parameters() if p.requires_grad]

        def run():
            optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            return train(model, lambda m, batch: aeflow_loss(m, batch[0]), x, epochs=cfg.epochs,
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
        parts: dict[str, list[Tensor]] = {"flow": [], "flow_full": [], "ssim": [], "mse": []}
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size_eval):
                x = _resize(images[start:start + self.batch_size_eval], self.config.image_size).to(self.device)
                out = model(x)
                parts["flow"].append(flow_score(out, "z").cpu())
                parts["flow_full"].append(flow_score(out, "full").cpu())
                parts["ssim"].append(recon_score(x, out.x_hat, "ssim").cpu())
                parts["mse"].append(recon_score(x, out.x_hat, "mse").cpu())
        result = {k: torch.cat(v).double().numpy() for k, v in parts.items()}
        result["bits"] = png_bits(images)
        return result

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
        ``"ssim"`` (1 - SSIM) and ``"mse"`` of :meth:`score_parts`."""
        kinds = self.requested_kinds(kinds)
        parts = self.score_parts(images)
        out = {k: torch.from_numpy(parts[k]) for k in kinds if k != "aeflow"}
        if "aeflow" in kinds:
            out["aeflow"] = torch.from_numpy(self.combine(parts))
        return {k: out[k] for k in kinds}

    def maps(self, images: Tensor) -> dict[str, Tensor]:
        """:func:`anomaly_maps` of images (resized to the model's input size), on the CPU."""
        self.check_fitted()
        x = _resize(images, self.config.image_size).to(self.device)
        return {k: v.cpu() for k, v in anomaly_maps(self.model, x).items()}


# --------------------------------------------------------------------------------------
# Settings and score variants shared by notebook 04 and benchmarks/aeflow.py
# --------------------------------------------------------------------------------------

PNEUMONIA_CONFIG = AEFlowConfig.reduced(epochs=30)
"""The reduced model on PneumoniaMNIST (28 px data resized to 32 px), full mode."""

PNEUMONIA_FAST_CONFIG = AEFlowConfig.reduced(feature_channels=16, encoder_widths=(8, 16, 16), decoder_widths=(16, 8),
                                             n_flow_blocks=4, epochs=2)
"""A tiny model for fast mode (tests): checks that everything runs, not that it detects."""

SELECTABLE_VARIANTS = ("paper: raw terms", "paper - 1 L(x)", "paper - 2 L(x)", "z-scored terms",
                       "z-scored terms - 1 L(x)")
"""The AE-FLOW score variants a benchmark may choose between, on the VALIDATION split only."""


def score_variants(detector: "AEFlowDetector", parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every score variant from :meth:`AEFlowDetector.score_parts` output, by name (higher = more anomalous).

    ``SELECTABLE_VARIANTS`` are the AE-FLOW scores: the paper's raw beta-combination, the same with
    each term z-scored on the training images, and these minus 1 or 2 x the standardised PNG
    length L(x) (:func:`complexity_corrected`). The single terms
    (``"S_flow"``, ``"S_flow (with log det)"``, ``"S_recon = 1 - SSIM"``, ``"MSE"``) and
    ``"-L(x) only"`` (minus the PNG length: a model-free reference) are included for comparison.
    """
    beta = detector.config.beta
    return {
        "paper: raw terms": detector.combine(parts, beta, normalise="none"),
        "paper - 1 L(x)": detector.combine(parts, beta, normalise="none", complexity_weight=1.0),
        "paper - 2 L(x)": detector.combine(parts, beta, normalise="none", complexity_weight=2.0),
        "z-scored terms": detector.combine(parts, beta, normalise="zscore"),
        "z-scored terms - 1 L(x)": detector.combine(parts, beta, normalise="zscore", complexity_weight=1.0),
        "S_flow": parts["flow"],
        "S_flow (with log det)": parts["flow_full"],
        "S_recon = 1 - SSIM": parts["ssim"],
        "MSE": parts["mse"],
        "-L(x) only": -parts["bits"],
    }
