"""Invertible building blocks of Glow (FrEIA ``InvertibleModule`` subclasses) and the coupling subnet."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

__all__ = ["LogitTransform", "HouseholderConv1x1", "ChannelPermutation", "conv_subnet"]



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


