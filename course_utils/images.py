"""Validation of the image tensors that every model, metric and data helper passes around.

The course's one image convention: a float tensor of shape (N, C, H, W) with values in
[0, 1]. Models never load data; they call :func:`check_images` on what they are given.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_images"]


def check_images(images: Tensor, name: str) -> None:
    """Raise ValueError unless ``images`` is a float tensor (N, C, H, W) with values in [0, 1].

    Args:
        images: the tensor to check.
        name: the argument's name, used in the error message.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"{name} must be a tensor of shape (N, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1], got dtype {images.dtype}: divide uint8 images by 255")
    if images.numel() and (images.min() < 0 or images.max() > 1 or not torch.isfinite(images).all()):
        raise ValueError(f"{name} must lie in [0, 1], found range [{float(images.min()):.3g}, {float(images.max()):.3g}]")
