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
  all-black output whose saturated sigmoid passes no gradient (observed in our runs).

Losses (``loss=``): ``"l2"`` (mean squared error), ``"l1"`` (mean absolute error) and
``"ssim"`` (1 - SSIM with ``pytorch_msssim.ssim``, ``data_range=1``, one channel; the
package's defaults, ``data_range=255`` and 3-channel module classes, are wrong for
MNIST). Image-level scores: ``"mse"`` (mean squared residual) and ``"ssim"`` (1 - mean
SSIM). Pixel-level maps: :func:`residual_map` ``|x - x_hat|`` and :func:`ssim_map`, a
full-size per-pixel SSIM map (pytorch-msssim only returns means).

:class:`AutoencoderDetector` wraps model, training (through ``course_utils.training.train``
and the checkpoint cache) and scoring in the detector interface of
``course_utils.protocol``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import config as course_config
from ..images import check_images

__all__ = [
    "ConvAutoencoder",
    "gaussian_window",
    "ssim_map",
    "ssim_score",
    "residual_map",
    "mse_score",
    "reconstruction_loss",
    "anomaly_map",
    "data_fingerprint",
    "AutoencoderDetector",
    "LOSSES",
    "SCORES",
    "FULL_SETTINGS",
    "FAST_SETTINGS",
]

LOSSES = ("l2", "l1", "ssim")
SCORES = ("mse", "ssim")

# The settings the benchmarks (protocol.METHODS "ae-l2" / "ae-ssim") and notebook 01 use.
# Full mode: chosen so that one class (6,000 images) trains in well under a minute on
# 2 CPU cores; fast mode: a tiny model for the tests.
# A budget of optimiser steps (not epochs) gives every class the same training whatever its
# size: 400 steps of 64 images are 5 epochs of a 6,000-image class, 13 of a 2,000-image one.
FULL_SETTINGS = {"latent_dim": 32, "width": 8, "steps": 400, "batch_size": 64, "lr": 1e-3}
FAST_SETTINGS = {"latent_dim": 16, "width": 4, "epochs": 2, "batch_size": 64, "lr": 1e-3}

# SSIM constants of Wang et al. 2004: C1 = (K1 L)^2, C2 = (K2 L)^2 with L = data range = 1.
K1, K2 = 0.01, 0.03


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
        width: channels of the first layer (w); 32 in full mode, 8 is enough for tests.
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


# --------------------------------------------------------------------------------------
# SSIM map
# --------------------------------------------------------------------------------------


def gaussian_window(win_size: int = 11, sigma: float = 1.5, *, dtype=torch.float32, device=None) -> Tensor:
    """1-D normalised Gaussian window g of length ``win_size`` (odd): the SSIM window is g g^T."""
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive integer, got {win_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    coords = torch.arange(win_size, dtype=dtype, device=device) - win_size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _check_pair(x: Tensor, y: Tensor) -> None:
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
    _check_pair(x, y)
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
    _check_pair(x, x_hat)
    return (x - x_hat).abs()


def mse_score(x: Tensor, x_hat: Tensor) -> Tensor:
    """Image-level anomaly score: mean squared residual per image, shape (N,)."""
    _check_pair(x, x_hat)
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


def reconstruction_loss(x: Tensor, x_hat: Tensor, loss: str = "l2", *, win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Scalar training loss between a batch and its reconstruction.

    ``"l2"``: mean (x - x_hat)^2; ``"l1"``: mean |x - x_hat|; ``"ssim"``:
    1 - ``pytorch_msssim.ssim(x_hat, x, data_range=1, win_size, win_sigma)`` (the mean SSIM
    over the batch, 'valid' window positions, one channel). Inputs are validated first:
    values outside [0, 1] or a wrong shape raise ``ValueError`` before any SSIM is computed.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    _check_pair(x, x_hat)
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


def data_fingerprint(images: Tensor) -> str:
    """Cheap identity of a training set: ``"<N>x<C>x<H>x<W>-<16 hex digits of SHA-256>"``.

    The hash runs over the images quantised to 8 bits (exact for images that came from
    uint8 files): about 10 ms for 6,000 MNIST images. Used in checkpoint-cache keys, so a
    model trained on other data is never loaded by mistake.
    """
    check_images(images, "images")
    quantised = (images.detach().cpu().float() * 255.0).round().to(torch.uint8).contiguous().numpy()
    digest = hashlib.sha256(quantised.tobytes()).hexdigest()[:16]
    return "x".join(str(s) for s in images.shape) + "-" + digest


class AutoencoderDetector:
    """Reconstruction-based detector: train a :class:`ConvAutoencoder` on normal images, score.

    ``fit`` trains with ``course_utils.training.train`` through ``train_or_load``: the
    checkpoint is keyed by every setting that determines the weights (architecture,
    loss, epochs, learning rate, batch size, seed and a fingerprint of the training data),
    so a rerun on the same data loads the model instead of training again.

    Args:
        loss: training loss, ``"l2"``, ``"l1"`` or ``"ssim"``.
        score: image-level score, ``"mse"`` or ``"ssim"`` (default: the one matching the
            loss, ``"ssim"`` for the SSIM loss, ``"mse"`` otherwise).
        latent_dim, width: see :class:`ConvAutoencoder`.
        epochs, lr, batch_size: training settings (Adam).
        steps: if given, a budget of optimiser steps instead of ``epochs``: training runs
            ``ceil(steps / batches per epoch)`` epochs (at least 1).
        seed: seeds the initialisation and the shuffling.
        win_size, sigma: SSIM window (loss, score and maps).
        device: default ``config.get_device()``.
        cache: use the checkpoint cache (``COURSE_CACHE_DIR``); False always trains.
        progress: show the training progress bar.
    """

    def __init__(
        self,
        loss: str = "ssim",
        score: str | None = None,
        *,
        latent_dim: int = 32,
        width: int = 32,
        epochs: int = 10,
        steps: int | None = None,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
        win_size: int = 11,
        sigma: float = 1.5,
        device: torch.device | str | None = None,
        cache: bool = True,
        progress: bool = False,
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        score = score if score is not None else ("ssim" if loss == "ssim" else "mse")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.loss, self.score_kind = loss, score
        self.latent_dim, self.width = latent_dim, width
        self.epochs, self.steps, self.lr, self.batch_size, self.seed = epochs, steps, lr, batch_size, seed
        self.win_size, self.sigma = win_size, sigma
        self.device = torch.device(device) if device is not None else course_config.get_device(verbose=False)
        self.cache, self.progress = cache, progress
        self.model: ConvAutoencoder | None = None
        self.history = None
        self.loaded_from_cache = False

    def config(self, train_images: Tensor) -> dict:
        """The checkpoint-cache config: everything that determines the trained weights."""
        return {
            "model": "ConvAutoencoder-v2",
            "batchnorm": True,
            "loss": self.loss,
            "latent_dim": self.latent_dim,
            "width": self.width,
            "image_size": int(train_images.shape[-1]),
            "epochs": self.epochs_for(len(train_images)),
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "win_size": self.win_size,
            "sigma": self.sigma,
            "data": data_fingerprint(train_images),
        }

    def epochs_for(self, n_images: int) -> int:
        """Epochs to train on ``n_images`` images: ``epochs``, or enough to make ``steps`` steps."""
        if self.steps is None:
            return self.epochs
        per_epoch = math.ceil(n_images / self.batch_size)
        return max(1, math.ceil(self.steps / max(per_epoch, 1)))

    def fit(self, train_images: Tensor) -> "AutoencoderDetector":
        """Train on normal images (N, 1, S, S) in [0, 1] (or load the cached model)."""
        from ..training import train, train_or_load

        check_images(train_images, "train_images")
        if train_images.shape[-1] != train_images.shape[-2]:
            raise ValueError(f"train_images must be square, got {tuple(train_images.shape[-2:])}")
        course_config.seed_everything(self.seed)
        self.model = ConvAutoencoder(self.latent_dim, self.width, int(train_images.shape[-1]), int(train_images.shape[1]),
                                     batchnorm=True)
        self.model.to(self.device)
        loss, win, sigma = self.loss, self.win_size, self.sigma

        def loss_fn(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
            (x,) = batch
            return reconstruction_loss(x, model(x), loss, win_size=win, sigma=sigma)

        def train_fn():
            return train(self.model, loss_fn, train_images, epochs=self.epochs_for(len(train_images)), lr=self.lr,
                         batch_size=self.batch_size, seed=self.seed, device=self.device,
                         progress=self.progress, desc=f"AE ({self.loss})")

        cfg = self.config(train_images)
        if self.cache:
            name = f"ae-{self.loss}-d{self.latent_dim}"
            self.history, self.loaded_from_cache = train_or_load(self.model, name, cfg, train_fn, verbose=False)
        else:
            self.history, self.loaded_from_cache = train_fn(), False
        self.model.eval()
        return self

    @torch.no_grad()
    def reconstruct(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """Reconstructions (N, 1, S, S) in [0, 1], on the CPU."""
        check_images(images, "images")
        model = self._require_fit()
        parts = [model(chunk.to(self.device)).float().cpu() for chunk in images.split(batch_size)]
        return torch.cat(parts) if parts else images.clone()

    def score(self, images: Tensor, kind: str | None = None) -> Tensor:
        """Image-level anomaly scores (N,), higher = more anomalous.

        Args:
            images: (N, 1, S, S) in [0, 1].
            kind: ``"mse"`` or ``"ssim"`` (1 - SSIM); default the detector's ``score``.
        """
        kind = self.score_kind if kind is None else kind
        if kind not in SCORES:
            raise ValueError(f"kind must be one of {SCORES}, got {kind!r}")
        x_hat = self.reconstruct(images)
        if kind == "mse":
            return mse_score(images.cpu(), x_hat).double()
        return ssim_score(images.cpu(), x_hat, win_size=self.win_size, sigma=self.sigma).double()

    def scores(self, images: Tensor) -> dict[str, Tensor]:
        """Both image-level scores from one reconstruction: ``{"mse": (N,), "ssim": (N,)}``."""
        x_hat = self.reconstruct(images)
        x = images.cpu()
        return {"mse": mse_score(x, x_hat).double(),
                "ssim": ssim_score(x, x_hat, win_size=self.win_size, sigma=self.sigma).double()}

    def maps(self, images: Tensor, kind: str = "ssim") -> Tensor:
        """Pixel-level anomaly maps (N, 1, S, S): ``"residual"`` |x - x_hat| or ``"ssim"`` 1 - SSIM map."""
        x_hat = self.reconstruct(images)
        return anomaly_map(images.cpu(), x_hat, kind, win_size=self.win_size, sigma=self.sigma)

    def _require_fit(self) -> ConvAutoencoder:
        if self.model is None:
            raise RuntimeError("call fit(train_images) before using the detector")
        return self.model
