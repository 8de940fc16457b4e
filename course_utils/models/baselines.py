"""Pixel-space baselines of notebook 00: PCA reconstruction error and k-NN distance.

Both are detectors of the common base (:mod:`course_utils.models.base`): ``fit(train_images)``
on normal images only (closed form: no training loop, no checkpoint), then ``score(images)``
with higher = more anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..images import check_images
from .base import Detector

__all__ = ["PCADetector", "KNNDetector"]


def _flatten(images: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W) in float64, so scores do not depend on summation order."""
    return images.reshape(images.shape[0], -1).double()


class PCADetector(Detector):
    """Reconstruction error after projecting onto the top principal components of normal data.

    With mean mu and the top-k principal directions U (D x k) of the training images,
    x_hat = mu + U U^T (x - mu) and the score is the squared residual ||x - x_hat||^2:
    what the normal class's main modes of variation cannot explain.

    Args:
        n_components: k, an int, or a float in (0, 1) = the fraction of variance to keep.
    """

    score_kinds = ("residual",)

    def __init__(self, n_components: int | float = 0.9) -> None:
        super().__init__("residual", device="cpu")
        if isinstance(n_components, float) and not 0.0 < n_components < 1.0:
            raise ValueError(f"a float n_components is a variance fraction in (0, 1), got {n_components}")
        if isinstance(n_components, int) and n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.mean: Tensor | None = None
        self.components: Tensor | None = None  # (k, D)

    def validate(self, train_images: Tensor) -> None:
        """Normal images (N, C, H, W) in [0, 1]; N >= 2."""
        super().validate(train_images)
        if train_images.shape[0] < 2:
            raise ValueError("PCA needs at least 2 training images")

    def train(self, train_images: Tensor) -> None:
        """Closed form: the mean and the top principal directions of the training images."""
        x = _flatten(train_images)
        self.mean = x.mean(0)
        # SVD of the centred data: rows of vh are the principal directions
        _, singular, vh = torch.linalg.svd(x - self.mean, full_matrices=False)
        variance = singular.square()
        if isinstance(self.n_components, float):
            explained = torch.cumsum(variance, 0) / variance.sum()
            k = int(torch.searchsorted(explained, torch.tensor(self.n_components, dtype=explained.dtype))) + 1
        else:
            k = self.n_components
        self.components = vh[: min(k, vh.shape[0])]

    @property
    def k(self) -> int:
        """Number of principal components kept."""
        self.check_fitted()
        return int(self.components.shape[0])

    def reconstruct(self, images: Tensor) -> Tensor:
        """Projection onto the principal subspace, same shape as ``images`` (not clipped)."""
        self.check_fitted()
        x = _flatten(images) - self.mean
        return ((x @ self.components.T) @ self.components + self.mean).reshape(images.shape).float()

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """``{"residual": squared reconstruction error per image, (N,) float64, >= 0}``."""
        self.requested_kinds(kinds)
        check_images(images, "images")
        self.check_fitted()
        x = _flatten(images) - self.mean
        residual = x - (x @ self.components.T) @ self.components
        return {"residual": residual.square().sum(1)}


class KNNDetector(Detector):
    """Mean Euclidean distance to the k nearest normal training images (in pixel space).

    score(x) = (1/k) sum_{j=1..k} ||x - t_(j)||, t_(j) the j-th nearest training image.

    Args:
        k: number of neighbours.
        chunk_size: test images per distance block (bounds memory at chunk x N_train).
    """

    score_kinds = ("distance",)

    def __init__(self, k: int = 5, chunk_size: int = 1024) -> None:
        super().__init__("distance", device="cpu")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.chunk_size = chunk_size
        self.train_images: Tensor | None = None  # (N_train, D) after fit

    def validate(self, train_images: Tensor) -> None:
        """Normal images (N, C, H, W) in [0, 1]; N >= k."""
        super().validate(train_images)
        if train_images.shape[0] < self.k:
            raise ValueError(f"k = {self.k} neighbours need at least {self.k} training images, got {train_images.shape[0]}")

    def train(self, train_images: Tensor) -> None:
        """Closed form: store the training images (flattened) and their squared norms."""
        self.train_images = train_images.reshape(train_images.shape[0], -1).float()
        self._train_sq = self.train_images.square().sum(1)

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """``{"distance": mean distance to the k nearest training images, (N,) float64, >= 0}``."""
        self.requested_kinds(kinds)
        check_images(images, "images")
        self.check_fitted()
        x = images.reshape(images.shape[0], -1).float()
        scores = []
        for chunk in x.split(self.chunk_size):
            # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2: one matrix product per chunk
            d2 = chunk.square().sum(1, keepdim=True) - 2 * chunk @ self.train_images.T + self._train_sq
            nearest = torch.topk(d2.clamp_min_(0), self.k, dim=1, largest=False).values
            scores.append(nearest.sqrt().mean(1))
        return {"distance": torch.cat(scores).double()}
