"""Patch-level heat maps from a Glow trained on patches."""

from __future__ import annotations

import torch
from torch import Tensor

from ...images import check_images
from .detector import GlowDetector

__all__ = ["patch_scores", "extract_patches"]




def patch_scores(detector: GlowDetector, images: Tensor, *, stride: int = 2, patch: int | None = None) -> Tensor:
    """Patch-level NLL heat maps (N, 1, S, S) from a Glow trained on PATCHES of side ``patch``.

    Every patch (overlapping, step ``stride``) of each image is scored with the detector's NLL in
    bits per dimension; a pixel's heat is the mean over the patches that contain it. The
    detector must have been fitted on patches of the same side (see :func:`extract_patches`).
    """
    model = detector.fitted_flow()
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

