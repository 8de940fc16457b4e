"""Convolutional autoencoders for anomaly detection: L2 / L1 / SSIM losses, scores and maps.

After Bergmann et al. 2018 ("Improving Unsupervised Defect Segmentation by Applying
Structural Similarity to Autoencoders"), shrunk from 128 px to 28 / 32 px images:

- encoder: strided 4x4 convolutions halve the image twice (28 -> 14 -> 7), 3x3
  convolutions in between, and a last convolution whose kernel covers the whole 7 x 7
  map, down to a **1 x 1 x d bottleneck** (``latent_dim = d``); LeakyReLU(0.2) after
  every layer except the bottleneck (linear, as in the paper);
- decoder: the mirror image with transposed convolutions, ending in a sigmoid, so
  reconstructions lie in [0, 1] like the inputs;
- one change from the paper: batch normalisation after the hidden convolutions (not on
  the 1 x 1 maps next to the bottleneck, where a batch of one image would break it).
  Without it, training on mostly-black MNIST drifted within a few hundred steps into an
  all-black output whose saturated sigmoid passes no gradient (seen while developing it).

Losses (``loss=``): ``"l2"`` (mean squared error), ``"l1"`` (mean absolute error) and
``"ssim"`` (1 - SSIM with ``pytorch_msssim.ssim``, ``data_range=1``, one channel; the
package's defaults, ``data_range=255`` and 3-channel module classes, are wrong for
MNIST). Image-level scores: ``"mse"`` (mean squared residual) and ``"ssim"`` (1 - mean
SSIM). Pixel-level maps: :func:`residual_map` ``|x - x_hat|`` and :func:`ssim_map`, a
full-size per-pixel SSIM map (pytorch-msssim only returns means); these live in
:mod:`course_utils.reconstruction` (shared with f-AnoGAN and AE-FLOW) and are re-exported here.

:class:`AutoencoderDetector` wraps model, training (through ``course_utils.training.train``
and the checkpoint cache) and scoring on the detector base (:mod:`course_utils.models.base`);
:class:`AutoencoderSettings` holds its model and training settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import data_fingerprint
from ..reconstruction import (anomaly_map, check_image_pair, gaussian_window, mse_score, residual_map, ssim_map,
                              ssim_score)
from ..images import check_images
from .base import Detector

__all__ = [
    "ConvAutoencoder",
    "gaussian_window",
    "ssim_map",
    "ssim_score",
    "residual_map",
    "mse_score",
    "reconstruction_loss",
    "anomaly_map",
    "AutoencoderSettings",
    "AutoencoderDetector",
    "LOSSES",
    "SCORES",
    "FULL_SETTINGS",
    "FAST_SETTINGS",
    "MODEL_VERSION",
]

# the checkpoint-cache model version: bump it when a change the cache config does not capture changes the
# trained weights (old checkpoints then stop loading, and bundles skip them; see course_utils.bundles)
MODEL_VERSION = "ConvAutoencoder-v2"
LOSSES = ("l2", "l1", "ssim")
SCORES = ("mse", "ssim")


@dataclass(frozen=True)
class AutoencoderSettings:
    """Model and training settings of :class:`AutoencoderDetector` (all of them enter the cache key).

    Attributes:
        latent_dim, width: see :class:`ConvAutoencoder`.
        epochs, lr, batch_size: training settings (Adam).
        steps: if given, a budget of optimiser steps instead of ``epochs``: training runs
            ``ceil(steps / batches per epoch)`` epochs (at least 1).
        win_size, sigma: SSIM window (loss, score and maps).
    """

    latent_dim: int = 32
    width: int = 32
    epochs: int = 10
    steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 64
    win_size: int = 11
    sigma: float = 1.5

    def replace(self, **changes) -> "AutoencoderSettings":
        """A copy with ``changes`` (e.g. ``FULL_SETTINGS.replace(latent_dim=8)``)."""
        return AutoencoderSettings(**{**asdict(self), **changes})


# The settings the benchmarks (protocol.METHODS "ae-l2" / "ae-ssim") and notebook 01 use.
# Full mode: chosen so that one class (6,000 images) trains in well under a minute on
# 2 CPU cores; fast mode: a tiny model for the tests.
# A budget of optimiser steps (not epochs) gives every class the same training whatever its
# size: 400 steps of 64 images are 5 epochs of a 6,000-image class, 13 of a 2,000-image one.
FULL_SETTINGS = AutoencoderSettings(latent_dim=32, width=8, steps=400, batch_size=64, lr=1e-3)
FAST_SETTINGS = AutoencoderSettings(latent_dim=16, width=4, epochs=2, batch_size=64, lr=1e-3)


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


class ConvAutoencoder(nn.Module):
    """Bergmann-style convolutional autoencoder for (N, 1, S, S) images, S divisible by 4.

    Hidden convolutions are followed by BatchNorm (if ``batchnorm``) and LeakyReLU(0.2).
    Shapes for S = 28 and width w (S = 32 works the same way, with an 8 x 8 map before
    the bottleneck)::

        encoder: 1x28x28 -conv4 s2-> w x14x14 -conv3-> w x14x14 -conv4 s2-> 2w x7x7
                 -conv3-> 2w x7x7 -conv7-> 4w x1x1 -conv1-> d x1x1   (bottleneck z)
        decoder: d x1x1 -convT1-> 4w x1x1 -convT7-> 2w x7x7 -conv3-> 2w x7x7
                 -convT4 s2-> w x14x14 -conv3-> w x14x14 -convT4 s2-> 1x28x28 -> sigmoid

    Args:
        latent_dim: d, size of the 1 x 1 x d bottleneck (the paper used 100 at 128 px).
        width: channels of the first layer (w); ``FULL_SETTINGS`` uses 8, ``FAST_SETTINGS`` 4.
        image_size: S, the side of the square input images (28 or 32).
        in_channels: image channels (1 for MNIST / Fashion-MNIST).
        batchnorm: batch normalisation after the hidden convolutions (default True).
    """

    def __init__(
        self, latent_dim: int = 32, width: int = 32, image_size: int = 28, in_channels: int = 1, batchnorm: bool = True
    ) -> None:
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("width", width), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 or image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8 (28 or 32), got {image_size!r}")
        self.latent_dim, self.width, self.image_size, self.in_channels = latent_dim, width, image_size, in_channels
        self.batchnorm = batchnorm
        w, k = width, image_size // 4  # k: side of the map before the bottleneck (7 for 28 px)

        def block(conv: nn.Module, channels: int, norm: bool = True) -> list[nn.Module]:
            # conv -> (batch norm) -> LeakyReLU(0.2). No batch norm on the 1 x 1 maps next to the
            # bottleneck: there a batch of one image has one value per channel and BN fails.
            return [conv, *([nn.BatchNorm2d(channels)] if batchnorm and norm else []), nn.LeakyReLU(0.2)]

        self.encoder = nn.Sequential(
            *block(nn.Conv2d(in_channels, w, 4, stride=2, padding=1), w),
            *block(nn.Conv2d(w, w, 3, padding=1), w),
            *block(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), 2 * w),
            *block(nn.Conv2d(2 * w, 2 * w, 3, padding=1), 2 * w),
            *block(nn.Conv2d(2 * w, 4 * w, k), 4 * w, norm=False),
            nn.Conv2d(4 * w, latent_dim, 1),  # linear bottleneck, 1 x 1 x d
        )
        self.decoder = nn.Sequential(
            *block(nn.ConvTranspose2d(latent_dim, 4 * w, 1), 4 * w, norm=False),
            *block(nn.ConvTranspose2d(4 * w, 2 * w, k), 2 * w),
            *block(nn.Conv2d(2 * w, 2 * w, 3, padding=1), 2 * w),
            *block(nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), w),
            *block(nn.Conv2d(w, w, 3, padding=1), w),
            nn.ConvTranspose2d(w, in_channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> Tensor:
        """(N, C, S, S) -> latent codes (N, d, 1, 1)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """(N, d, 1, 1) -> reconstructions (N, C, S, S) in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"expected images of shape (N, {self.in_channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}"
            )
        return self.decode(self.encode(x))


def reconstruction_loss(x: Tensor, x_hat: Tensor, loss: str = "l2", *, win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Scalar training loss between a batch and its reconstruction.

    ``"l2"``: mean (x - x_hat)^2; ``"l1"``: mean |x - x_hat|; ``"ssim"``:
    1 - ``pytorch_msssim.ssim(x_hat, x, data_range=1, win_size, win_sigma)`` (the mean SSIM
    over the batch, 'valid' window positions, one channel). Inputs are validated first:
    values outside [0, 1] or a wrong shape raise ``ValueError`` before any SSIM is computed.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_image_pair(x, x_hat)
    if loss == "l2":
        return F.mse_loss(x_hat, x)
    if loss == "l1":
        return F.l1_loss(x_hat, x)
    from pytorch_msssim import ssim

    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are too small for a {win_size} px SSIM window")
    return 1.0 - ssim(x_hat, x, data_range=1.0, size_average=True, win_size=win_size, win_sigma=sigma)


# --------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------


class AutoencoderDetector(Detector):
    """Reconstruction-based detector: train a :class:`ConvAutoencoder` on normal images, score.

    ``fit`` trains with ``course_utils.training.train`` through the checkpoint cache: the
    checkpoint is keyed by every setting that determines the weights (architecture, loss,
    epochs, learning rate, batch size, seed and a fingerprint of the training data), so a rerun
    on the same data loads the model instead of training again.

    Args:
        loss: training loss, ``"l2"``, ``"l1"`` or ``"ssim"``.
        score: image-level score, ``"mse"`` or ``"ssim"`` (default: the one matching the
            loss, ``"ssim"`` for the SSIM loss, ``"mse"`` otherwise).
        settings: model and training settings (default ``AutoencoderSettings()``).
        seed, device, cache, progress: see :class:`~course_utils.models.base.Detector`.
    """

    score_kinds = SCORES
    checkpoint_parts = ("model",)

    def __init__(self, loss: str = "ssim", score: str | None = None, settings: AutoencoderSettings | None = None, *,
                 seed: int = 0, device: torch.device | str | None = None, cache: bool = True,
                 progress: bool = False) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        super().__init__(score if score is not None else ("ssim" if loss == "ssim" else "mse"), seed=seed,
                         device=device, cache=cache, progress=progress)
        self.loss = loss
        self.settings = settings if settings is not None else AutoencoderSettings()
        self.model: ConvAutoencoder | None = None
        self.history = None

    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict:
        """The checkpoint-cache config: everything that determines the trained weights."""
        self._part(part)
        s = self.settings
        return {
            "model": MODEL_VERSION,
            "batchnorm": True,
            "loss": self.loss,
            "latent_dim": s.latent_dim,
            "width": s.width,
            "image_size": int(train_images.shape[-1]),
            "epochs": self.epochs_for(len(train_images)),
            "lr": s.lr,
            "batch_size": s.batch_size,
            "seed": self.seed,
            "win_size": s.win_size,
            "sigma": s.sigma,
            "data": data_fingerprint(train_images),
        }

    def epochs_for(self, n_images: int) -> int:
        """Epochs to train on ``n_images`` images: ``epochs``, or enough to make ``steps`` steps."""
        s = self.settings
        if s.steps is None:
            return s.epochs
        per_epoch = math.ceil(n_images / s.batch_size)
        return max(1, math.ceil(s.steps / max(per_epoch, 1)))

    def validate(self, train_images: Tensor) -> None:
        """Images (N, C, S, S) in [0, 1], square."""
        super().validate(train_images)
        if train_images.shape[-1] != train_images.shape[-2]:
            raise ValueError(f"train_images must be square, got {tuple(train_images.shape[-2:])}")

    def build(self, train_images: Tensor) -> None:
        s = self.settings
        self.model = ConvAutoencoder(s.latent_dim, s.width, int(train_images.shape[-1]), int(train_images.shape[1]),
                                     batchnorm=True).to(self.device)

    def train(self, train_images: Tensor) -> None:
        from ..training import train

        s, loss, model = self.settings, self.loss, self.model

        def loss_fn(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
            (x,) = batch
            return reconstruction_loss(x, model(x), loss, win_size=s.win_size, sigma=s.sigma)

        def train_fn():
            return train(model, loss_fn, train_images, epochs=self.epochs_for(len(train_images)), lr=s.lr,
                         batch_size=s.batch_size, seed=self.seed, device=self.device,
                         progress=self.progress, desc=f"AE ({loss})")

        self.history = self.load_or_train("model", model, f"ae-{loss}-d{s.latent_dim}",
                                          self.cache_config(train_images), train_fn)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """Reconstructions (N, 1, S, S) in [0, 1], on the CPU."""
        check_images(images, "images")
        self.check_fitted()
        parts = [self.model(chunk.to(self.device)).float().cpu() for chunk in images.split(batch_size)]
        return torch.cat(parts) if parts else images.clone()

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Image-level scores from one reconstruction, (N,) float64: ``"mse"`` (mean squared residual)
        and ``"ssim"`` (1 - SSIM), higher = more anomalous."""
        kinds = self.requested_kinds(kinds)
        x_hat = self.reconstruct(images)
        x = images.cpu()
        out = {}
        if "mse" in kinds:
            out["mse"] = mse_score(x, x_hat).double()
        if "ssim" in kinds:
            out["ssim"] = ssim_score(x, x_hat, win_size=self.settings.win_size, sigma=self.settings.sigma).double()
        return out

    def maps(self, images: Tensor, kind: str = "ssim") -> Tensor:
        """Pixel-level anomaly maps (N, 1, S, S): ``"residual"`` |x - x_hat| or ``"ssim"`` 1 - SSIM map."""
        x_hat = self.reconstruct(images)
        return anomaly_map(images.cpu(), x_hat, kind, win_size=self.settings.win_size, sigma=self.settings.sigma)
