"""From 8-bit images to a density and back: padding, dequantization (uniform or learned), NLL in bits,
bits per dimension and the complexity-corrected score (equations (2) and (3) of :mod:`course_utils.models.glow`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...images import check_images

__all__ = ["N_BINS", "LOG2", "HALF_LOG_2PI", "pad_images", "crop_center", "quantization_levels", "dequantize",
           "VariationalDequantizer", "nll_bits_from_log_prob", "bits_per_dim", "complexity_score"]

N_BINS = 256  # 8-bit images
LOG2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)




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


def crop_center(images: Tensor, side: int) -> Tensor:
    """The central side x side pixels of (N, C, S, S) images: undoes :func:`pad_images`."""
    border = (int(images.shape[-1]) - side) // 2
    return images[..., border:border + side, border:border + side] if border > 0 else images


def quantization_levels(images: Tensor) -> Tensor:
    """The 8-bit levels k in {0, ..., 255} (as floats) of images (N, C, H, W) in [0, 1] (values k / 255)."""
    return (images * (N_BINS - 1)).round()


def dequantize(images: Tensor, mode: str = "uniform", *, generator: torch.Generator | None = None) -> Tensor:
    """8-bit images x in [0, 1] (values k / 255) -> y = (k + u) / 256 in [0, 1), (N, C, H, W).

    ``mode="uniform"``: u ~ U[0, 1) (training and test bpd; from ``generator`` if given, else the
    global RNG); ``mode="center"``: u = 1/2 (deterministic, for anomaly scores).
    """
    check_images(images, "images")
    k = quantization_levels(images)
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
        log_q = -0.5 * eps.square() - HALF_LOG_2PI - log_sigma - F.logsigmoid(v) - F.logsigmoid(-v)
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


