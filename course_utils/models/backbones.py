"""Pretrained feature extractors (ImageNet backbones), shared by feature-based methods.

AE-FLOW uses :class:`WideResNetEncoder` (Wide-ResNet-50-2 up to layer3) as its encoder; methods
that compare pretrained features (PatchCore, PaDiM, FastFlow, ...) build on the same loader and
normalisation. Weights come from torchvision's cache or a download: on an offline machine
:func:`load_imagenet_wide_resnet` raises :class:`PretrainedWeightsUnavailable` with instructions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PretrainedWeightsUnavailable", "imagenet_normalise",
           "load_imagenet_wide_resnet", "WideResNetEncoder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights could not be loaded (usually: this machine is offline)."""


def imagenet_normalise(x: Tensor) -> Tensor:
    """(N, 1, H, W) grayscale in [0, 1] -> (N, 3, H, W) ImageNet-normalised."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


_WEIGHTS_HELP = (
    "Fix: on a machine with internet run\n"
    "    python -c \"import torchvision; torchvision.models.wide_resnet50_2(weights='IMAGENET1K_V1')\"\n"
    "and copy the file it writes (~/.cache/torch/hub/checkpoints/wide_resnet50_2-*.pth, about 263 MB) to the\n"
    "same folder here (or set TORCH_HOME to a folder that holds hub/checkpoints/). Without it the course uses\n"
    "the reduced model, trained from scratch: results are then NOT comparable to the paper."
)


def load_imagenet_wide_resnet() -> nn.Module:
    """torchvision's Wide-ResNet-50-2 with ImageNet weights (IMAGENET1K_V1), downloaded if needed.

    Raises:
        PretrainedWeightsUnavailable: the weights are not cached and could not be downloaded
            (offline, proxy, checksum); the message says how to get them.
    """
    from torchvision.models import Wide_ResNet50_2_Weights, wide_resnet50_2

    weights = Wide_ResNet50_2_Weights.IMAGENET1K_V1
    try:
        return wide_resnet50_2(weights=weights)
    except Exception as error:  # URLError, socket errors, hash mismatch, ...
        raise PretrainedWeightsUnavailable(
            f"Could not load the ImageNet weights of Wide-ResNet-50-2 ({type(error).__name__}: {error}). "
            f"This machine is probably offline.\n{_WEIGHTS_HELP}"
        ) from error


class WideResNetEncoder(nn.Module):
    """Wide-ResNet-50-2 up to layer3: (N, 1|3, H, W) in [0, 1] -> (N, 1024, H/16, W/16).

    Grayscale inputs are replicated to 3 channels and ImageNet-normalised first.

    Args:
        weights: ``"imagenet"`` (may raise :class:`PretrainedWeightsUnavailable`) or None.
        trainable: False freezes the encoder (no gradients; BatchNorm kept in eval mode).
    """

    def __init__(self, weights: str | None = "imagenet", trainable: bool = True) -> None:
        super().__init__()
        if weights == "imagenet":
            backbone = load_imagenet_wide_resnet()
        elif weights is None:
            from torchvision.models import wide_resnet50_2

            backbone = wide_resnet50_2(weights=None)
        else:
            raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.layer1, self.layer2, self.layer3 = backbone.layer1, backbone.layer2, backbone.layer3
        self.trainable = trainable
        if not trainable:
            self.requires_grad_(False)

    def train(self, mode: bool = True) -> "WideResNetEncoder":
        # a frozen encoder keeps its ImageNet BatchNorm statistics
        return super().train(mode and self.trainable)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(imagenet_normalise(x)))))
