"""The multi-scale Glow flow as a FrEIA ``GraphINN`` (see :mod:`course_utils.models.glow` for the graph)."""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import Tensor, nn

from ...images import check_images
from .config import GlowConfig
from .dequantization import HALF_LOG_2PI, N_BINS, VariationalDequantizer, dequantize, quantization_levels
from .layers import ChannelPermutation, HouseholderConv1x1, LogitTransform, conv_subnet

__all__ = ["GlowFlow"]




def _level_of(node_name: str) -> int:
    """The level (scale) of a :class:`GlowFlow` node from its name: "coupling1.2" -> 1; "logit" -> 0."""
    match = re.match(r"[a-z]+(\d+)", node_name)
    return int(match.group(1)) if match else 0


class GlowFlow(nn.Module):
    """Multi-scale Glow as a FrEIA ``GraphINN`` (see the module docstring for the graph).

    Args:
        config: architecture settings.
        image_shape: (C, S, S) of the inputs, e.g. (1, 28, 28).
        seed: seeds the Householder vectors / permutations (the conv weights are initialised
            from torch's global RNG: call ``config.seed_everything`` first for reproducibility).

    ``forward(y)`` -> ``(z, log_det)``: z (N, D) the concatenated latents, log_det (N,) the
    log|det dz/dy| in nats. ``inverse(z)`` -> y (N, C, S, S).
    """

    def __init__(self, config: GlowConfig, image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0) -> None:
        super().__init__()
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        c, h, w = (int(v) for v in image_shape)
        if h != w:
            raise ValueError(f"GlowFlow needs square images, got {h} x {w}")
        config.validate(h)
        if config.pad_to is not None and h != config.pad_to:
            raise ValueError(f"this config pads images to {config.pad_to} px: build the flow for ({c}, {config.pad_to}, "
                             f"{config.pad_to}) images (GlowDetector pads them), not {h} px")
        self.config, self.image_shape = config, (c, h, w)
        nodes: list = [Ff.InputNode(c, h, w, name="input")]
        nodes.append(Ff.Node(nodes[-1], LogitTransform, {"alpha": config.logit_alpha}, name="logit"))
        outputs = []
        node = nodes[-1]
        for level in range(config.n_levels):
            node = Ff.Node(node, Fm.IRevNetDownsampling, {}, name=f"squeeze{level}")
            nodes.append(node)
            channels = node.output_dims[0][0]
            for k in range(config.steps_per_level):
                node = Ff.Node(node, Fm.ActNorm, {}, name=f"actnorm{level}.{k}")
                nodes.append(node)
                mix_seed = seed * 1000 + level * 100 + k
                if config.mixing == "householder":
                    node = Ff.Node(node, HouseholderConv1x1, {"n_reflections": config.n_reflections, "seed": mix_seed},
                                   name=f"householder{level}.{k}")
                else:
                    node = Ff.Node(node, ChannelPermutation, {"seed": mix_seed}, name=f"permute{level}.{k}")
                nodes.append(node)
                node = Ff.Node(node, Fm.GLOWCouplingBlock,
                               {"subnet_constructor": conv_subnet(config.hidden), "clamp": config.clamp},
                               name=f"coupling{level}.{k}")
                nodes.append(node)
            if level < config.n_levels - 1 and config.split_prior:
                # learned prior of the leaving half (the last `half` channels) given the staying half
                half = channels // 2
                node = Ff.Node(node, Fm.AffineCouplingOneSided,
                               {"subnet_constructor": conv_subnet(config.hidden), "clamp": config.clamp,
                                "split_len": channels - half}, name=f"prior{level}")
                nodes.append(node)
                split = Ff.Node(node, Fm.Split, {"section_sizes": [channels - half, half], "dim": 0},
                                name=f"split{level}")
                nodes.append(split)
                outputs.append(Ff.OutputNode(split.out1, name=f"z{level}"))
                node = split.out0
            elif level < config.n_levels - 1:
                half = channels // 2
                split = Ff.Node(node, Fm.Split, {"section_sizes": [half, channels - half], "dim": 0},
                                name=f"split{level}")
                nodes.append(split)
                outputs.append(Ff.OutputNode(split.out0, name=f"z{level}"))
                node = split.out1
        outputs.append(Ff.OutputNode(node, name=f"z{config.n_levels - 1}"))
        self.latent_shapes = [tuple(int(v) for v in o.input_dims[0]) for o in outputs]
        self.inn = Ff.GraphINN(nodes + outputs, force_tuple_output=True)
        # the level (scale) of every node, for log_prob_by_level: "logit" counts to the finest level 0
        self._node_levels = {node.name: _level_of(node.name) for node in nodes[1:]}
        self.n_dims = c * h * w
        # built after the flow, so that uniform-dequantization models initialise exactly as before
        self.dequantizer = VariationalDequantizer(c) if config.dequantization == "variational" else None

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y (N, C, S, S) -> (z (N, D), log|det dz/dy| (N,) in nats)."""
        self._check_input(y)
        zs, log_det = self.inn(y)
        return torch.cat([z.flatten(1) for z in zs], 1), log_det

    def _check_input(self, y: Tensor) -> None:
        if y.ndim != 4 or tuple(y.shape[1:]) != self.image_shape:
            raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(y.shape)}")

    def inverse(self, z: Tensor) -> Tensor:
        """z (N, D) -> y (N, C, S, S) (exact inverse of :meth:`forward`)."""
        if z.ndim != 2 or z.shape[1] != self.n_dims:
            raise ValueError(f"expected latents of shape (N, {self.n_dims}), got {tuple(z.shape)}")
        parts, start = [], 0
        for shape in self.latent_shapes:
            size = int(np.prod(shape))
            parts.append(z[:, start:start + size].reshape(-1, *shape))
            start += size
        y, _ = self.inn(parts, rev=True, jac=False)
        return y[0]

    def log_prob(self, y: Tensor) -> Tensor:
        """log p_Y(y) in nats, (N,): equation (1), log N(z; 0, I) + log|det dz/dy|."""
        z, log_det = self(y)
        return -0.5 * z.square().sum(1) - self.n_dims * HALF_LOG_2PI + log_det

    def log_prob_by_level(self, y: Tensor) -> Tensor:
        """Each level's share of log p_Y(y) in nats, (N, L): equation (7); the row sums are :meth:`log_prob`.

        ``y`` (N, C, S, S) are dequantised images as for :meth:`forward` (S = ``config.pad_to`` if set).
        Level l contributes the log-density of the latent it factors out (the last level: of what is
        left) plus the log|det| of its own layers (squeeze, ActNorm, mixing, coupling, split prior); the
        logit pre-transform counts to level 0, the finest. One pass of FrEIA's ``GraphINN`` with
        ``intermediate_outputs=True`` gives every latent and every layer's log|det|.
        """
        self._check_input(y)
        outs, log_dets = self.inn(y, intermediate_outputs=True)
        per_level = y.new_zeros(len(y), self.config.n_levels)
        for node, log_det in log_dets.items():
            per_level[:, self._node_levels[node.name]] += log_det
        for out_node in self.inn.out_nodes:  # "z<level>": the latent that leaves at that level
            z = outs[out_node, 0].flatten(1)
            per_level[:, _level_of(out_node.name)] += -0.5 * z.square().sum(1) - z.shape[1] * HALF_LOG_2PI
        return per_level

    def dequantized_log_prob(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """log p_Y(y) - log q(u | x) in nats, (N,), for 8-bit images x (N, C, S, S) in [0, 1] and y = (k + u) / 256.

        Its expectation over u bounds log P(x) + D log 256 from below (equation (2) and the variational
        form in the module docstring). Uniform dequantization: u ~ U[0, 1), log q = 0. Variational: u ~
        q(u | x) of :attr:`dequantizer`. The noise is drawn on the CPU from ``generator`` (default: the
        global RNG), so a seeded result does not depend on the device.
        """
        device = next(self.parameters()).device
        if self.dequantizer is None:
            return self.log_prob(dequantize(images, "uniform", generator=generator).to(device))
        check_images(images, "images")
        levels = quantization_levels(images).to(device)
        eps = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(device)
        u, log_q = self.dequantizer(levels, eps)
        return self.log_prob((levels + u) / N_BINS) - log_q

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
        """n images (n, C, S, S) in [0, 1]: z ~ N(0, T^2 I), y = f^{-1}(z), clipped to [0, 1].

        A temperature T < 1 samples from the "typical" centre of the distribution: cleaner,
        less varied images (Kingma & Dhariwal 2018, Section 5).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        p = next(self.parameters())
        z = torch.randn(n, self.n_dims, generator=generator).to(device=p.device, dtype=p.dtype) * temperature
        y = self.inverse(z)
        return torch.nan_to_num(y, nan=0.0).clamp(0.0, 1.0)


