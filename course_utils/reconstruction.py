"""Comparing images with their reconstructions: SSIM maps and scores, residual maps, MSE.

Shared by every reconstruction-based method (the autoencoder of notebook 01, f-AnoGAN, AE-FLOW)
and by future ones. :func:`ssim_map` is a full-size per-pixel SSIM map (pytorch-msssim only
returns means); :func:`ssim_score` is 1 - mean SSIM over the 'valid' window positions, exactly
``1 - pytorch_msssim.ssim(x, x_hat, data_range=1)``. All functions take images (N, C, H, W)
in [0, 1] and check them first.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import check_images

__all__ = [
    "K1",
    "K2",
    "check_image_pair",
    "gaussian_window",
    "ssim_map",
    "ssim_score",
    "ssim_window_for",
    "residual_map",
    "mse_score",
    "anomaly_map",
]

# SSIM constants of Wang et al. 2004: C1 = (K1 L)^2, C2 = (K2 L)^2 with L = data range = 1.
K1, K2 = 0.01, 0.03




def gaussian_window(win_size: int = 11, sigma: float = 1.5, *, dtype=torch.float32, device=None) -> Tensor:
    """1-D normalised Gaussian window g of length ``win_size`` (odd): the SSIM window is g g^T."""
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive integer, got {win_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    coords = torch.arange(win_size, dtype=dtype, device=device) - win_size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def check_image_pair(x: Tensor, y: Tensor) -> None:
    """Raise ValueError unless ``x`` and ``y`` are valid images (N, C, H, W) in [0, 1] of the same shape."""
    check_images(x, "x")
    check_images(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def _blur(images: Tensor, g: Tensor, padding: str) -> Tensor:
    """Separable Gaussian filtering of every channel; 'valid' shrinks, 'same' reflect-pads."""
    channels, half = images.shape[1], g.numel() // 2
    if padding == "same":
        images = F.pad(images, (half, half, half, half), mode="reflect")
    kernel_h = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    kernel_v = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(images, kernel_h, groups=channels)
    return F.conv2d(out, kernel_v, groups=channels)


def ssim_map(
    x: Tensor,
    y: Tensor,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    padding: Literal["same", "valid"] = "same",
) -> Tensor:
    """Per-pixel SSIM between images ``x`` and ``y`` (both (N, C, H, W) in [0, 1]).

    With Gaussian-weighted local means mu, variances sigma^2 and covariance sigma_xy,

        SSIM(p) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),

    C1 = (0.01)^2, C2 = (0.03)^2 (data range 1). Values lie in [-1, 1]; 1 means the two
    neighbourhoods are identical.

    Why this window: a circularly symmetric **Gaussian** window (11 x 11, sigma = 1.5) is
    the choice of Wang et al. 2004; unlike a square box window it weights the centre
    pixel most and gives smooth maps without blocking artefacts, and it is exactly the
    window ``pytorch_msssim`` uses, so the mean of the ``"valid"`` map equals
    ``pytorch_msssim.ssim(x, y, data_range=1)`` (the unit tests check this) and the
    autoencoder's SSIM loss and our maps measure the same thing. ``pytorch_msssim`` uses
    'valid' convolution, which on 28 px images with an 11 px window leaves only the
    central 18 x 18 pixels; a defect near the border would then get no score. The
    default ``padding="same"`` therefore reflect-pads the images first (reflection
    continues edges and textures instead of inventing a black frame, as zero padding
    would), so the map has the full H x W size needed for pixel-level localisation.
    The computation is separable (a row then a column convolution), cheap on a CPU.

    Args:
        x, y: images of the same shape (N, C, H, W), float in [0, 1].
        win_size: odd side of the Gaussian window.
        sigma: standard deviation of the window in pixels.
        padding: ``"same"`` (reflect padding, map (N, C, H, W)) or ``"valid"`` (no padding,
            map (N, C, H - win_size + 1, W - win_size + 1), as pytorch-msssim).

    Raises:
        ValueError: wrong shape or dtype, values outside [0, 1], different shapes, bad
            window, or a window larger than the images.
    """
    check_image_pair(x, y)
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    g = gaussian_window(win_size, sigma, dtype=x.dtype, device=x.device)
    if min(x.shape[-2:]) < win_size or (padding == "same" and min(x.shape[-2:]) <= win_size // 2):
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are too small for a {win_size} px window")
    c1, c2 = K1**2, K2**2
    mu_x, mu_y = _blur(x, g, padding), _blur(y, g, padding)
    var_x = _blur(x * x, g, padding) - mu_x**2
    var_y = _blur(y * y, g, padding) - mu_y**2
    cov = _blur(x * y, g, padding) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance * contrast_structure


def ssim_score(x: Tensor, x_hat: Tensor, *, win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Image-level anomaly score 1 - SSIM(x, x_hat), shape (N,); SSIM = mean of the 'valid' map.

    This is ``1 - pytorch_msssim.ssim(x, x_hat, data_range=1, size_average=False)``, i.e. the
    quantity the SSIM loss minimises, so score and loss agree.
    """
    return 1.0 - ssim_map(x, x_hat, win_size=win_size, sigma=sigma, padding="valid").flatten(1).mean(1)


def residual_map(x: Tensor, x_hat: Tensor) -> Tensor:
    """Per-pixel absolute residual |x - x_hat|, same shape as the inputs, in [0, 1]."""
    check_image_pair(x, x_hat)
    return (x - x_hat).abs()


def mse_score(x: Tensor, x_hat: Tensor) -> Tensor:
    """Image-level anomaly score: mean squared residual per image, shape (N,)."""
    check_image_pair(x, x_hat)
    return (x - x_hat).square().flatten(1).mean(1)


def anomaly_map(x: Tensor, x_hat: Tensor, kind: str = "ssim", *, win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Pixel-level anomaly map (higher = more anomalous), same shape as ``x``.

    ``kind="residual"``: |x - x_hat|; ``kind="ssim"``: 1 - SSIM map (``padding="same"``).
    """
    if kind == "residual":
        return residual_map(x, x_hat)
    if kind == "ssim":
        return 1.0 - ssim_map(x, x_hat, win_size=win_size, sigma=sigma, padding="same")
    raise ValueError(f"kind must be 'residual' or 'ssim', got {kind!r}")


def ssim_window_for(side: int) -> int:
    """The SSIM window for images of ``side`` px: the standard 11 px, or the largest odd window
    that fits half the image (at least 3 px) for images smaller than 22 px."""
    return 11 if side >= 22 else max(3, (side // 2) | 1)
