"""The AE-FLOW model and its settings: :class:`AEFlowConfig`, encoders, the flow bottleneck, the decoder
and :class:`AEFlow` (see :mod:`course_utils.models.aeflow` for the architecture)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import WideResNetEncoder

__all__ = ["ALPHA", "BETA", "AEFlowConfig", "SmallEncoder", "ResNetSubnet", "ConvSubnet", "SUBNETS", "build_flow",
           "Decoder", "AEFlowOutput", "AEFlow"]

ALPHA = 0.5  # loss weight of L_flow (paper)
BETA = 0.9  # score weight of S_flow (paper)


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


