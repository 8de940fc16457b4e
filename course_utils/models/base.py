"""The detector base class: the fit recipe written once, with hooks for each method.

Every detector of the course (PCA, k-NN, autoencoder, f-AnoGAN, Glow, Glow ratio, AE-FLOW)
subclasses :class:`Detector`. :meth:`Detector.fit` is the only fit recipe::

    validate(train_images)        hook: reject bad input with a clear message (default: check_images)
    seed_everything(self.seed)    the same seed before any weight is drawn
    build(train_images)           hook: create the networks (nothing is trained yet)
    train(train_images)           hook: train every network through load_or_train (the checkpoint cache
                                  around course_utils.training.train), or fit in closed form
    finish(train_images)          hook: anything computed from the fitted model and the training images
                                  (reference statistics, health checks); default nothing

and one name per concept:

- ``scores(images, kinds=None) -> {kind: Tensor (N,) float64}``: every image score the detector
  computes from one pass (``score_kinds``), higher = more anomalous;
- ``score(images, kind=None)``: one of them, by default the detector's own ``score_kind``;
- ``cache_config(train_images, part=None) -> dict``: everything that determines the weights of a
  checkpoint (``checkpoint_parts`` names them, e.g. ``("gan", "encoder")``); the cache key;
- ``check_fitted()``: raises :class:`NotFittedError` before ``fit``;
- ``loaded_from_cache``: True when every checkpoint of the last ``fit`` came from the cache;
  ``cache_hits`` says it per part.

Models never load data: ``fit`` and ``scores`` take tensors (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import config as course_config
from ..checkpoints import train_or_load
from ..images import check_images
from ..training import History

__all__ = ["Detector", "NotFittedError"]


class NotFittedError(RuntimeError):
    """A detector was used (scored, asked for its model) before ``fit(train_images)``."""


class Detector(ABC):
    """Base of every anomaly detector: ``fit(normal images)``, then ``scores`` / ``score``.

    Subclasses set the class attributes ``score_kinds`` (the kinds :meth:`scores` returns) and
    ``checkpoint_parts`` (the names of their cached networks; empty for closed-form methods),
    call ``super().__init__`` and implement :meth:`train` and :meth:`scores` (and usually
    :meth:`build` and :meth:`cache_config`).

    Args:
        score_kind: the kind :meth:`score` returns by default; one of ``score_kinds``.
        seed: seeds initialisation and shuffling (``fit`` calls ``config.seed_everything(seed)``).
        device: where the networks run; default ``config.get_device()``.
        cache: use the checkpoint cache (``COURSE_CACHE_DIR``); False always trains.
        progress: show training progress bars.
    """

    score_kinds: tuple[str, ...] = ()
    checkpoint_parts: tuple[str, ...] = ()

    def __init__(self, score_kind: str, *, seed: int = 0, device: torch.device | str | None = None,
                 cache: bool = True, progress: bool = False) -> None:
        if score_kind not in self.score_kinds:
            raise ValueError(f"score must be one of {self.score_kinds}, got {score_kind!r}")
        self.score_kind = score_kind
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else course_config.get_device(verbose=False)
        self.cache, self.progress = cache, progress
        self.cache_hits: dict[str, bool] = {}
        self._fitted = False

    # ------------------------------------------------------------------ the recipe
    def fit(self, train_images: Tensor) -> "Detector":
        """Fit on NORMAL images (N, C, H, W) in [0, 1]: validate, seed, build, train, finish."""
        self._fitted = False
        self.cache_hits = {}
        self.validate(train_images)
        course_config.seed_everything(self.seed)
        self.build(train_images)
        self.train(train_images)
        self._fitted = True
        self.finish(train_images)
        return self

    def validate(self, train_images: Tensor) -> None:
        """Hook: raise ValueError for training images this method cannot use (default: shape, dtype, range)."""
        check_images(train_images, "train_images")

    def build(self, train_images: Tensor) -> None:
        """Hook: create the (untrained) networks for images shaped like ``train_images``; default nothing."""

    @abstractmethod
    def train(self, train_images: Tensor) -> None:
        """Hook: train (or load) every network, each through :meth:`load_or_train`, or fit in closed form."""

    def finish(self, train_images: Tensor) -> None:
        """Hook: runs once the detector is fitted (it may score); default nothing."""

    # ------------------------------------------------------------------ the checkpoint cache
    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict[str, Any]:
        """Everything that determines the weights of checkpoint ``part`` (default: the only one)."""
        raise ValueError(f"{type(self).__name__} has no checkpoint: it fits in closed form")

    def _part(self, part: str | None) -> str:
        """``part`` checked against ``checkpoint_parts`` (None: the first one)."""
        if not self.checkpoint_parts:
            raise ValueError(f"{type(self).__name__} has no checkpoint: it fits in closed form")
        part = self.checkpoint_parts[0] if part is None else part
        if part not in self.checkpoint_parts:
            raise ValueError(f"{type(self).__name__} has checkpoints {self.checkpoint_parts}, not {part!r}")
        return part

    def load_or_train(self, part: str, model: nn.Module, name: str, config: Mapping[str, Any],
                      train_fn: Callable[[], History | None], *, verbose: bool = False) -> History | None:
        """Load checkpoint ``part`` of ``model`` (file stem ``name``, key ``config``) or train it with
        ``train_fn`` and save it; without the cache, always train. Records the hit in ``cache_hits``
        and leaves the model in eval mode. Returns the training history (None if none was saved)."""
        part = self._part(part)
        if self.cache:
            history, hit = train_or_load(model, name, config, train_fn, verbose=verbose)
        else:
            history, hit = train_fn(), False
        model.eval()
        self.cache_hits[part] = hit
        return history

    @property
    def loaded_from_cache(self) -> bool:
        """True when every checkpoint of the last ``fit`` came from the cache (False before ``fit``)."""
        return bool(self.cache_hits) and all(self.cache_hits.values())

    # ------------------------------------------------------------------ scores
    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless ``fit`` has run."""
        if not self._fitted:
            raise NotFittedError(f"call fit(train_images) before using the {type(self).__name__}")

    def requested_kinds(self, kinds: Sequence[str] | None) -> tuple[str, ...]:
        """``kinds`` checked against ``score_kinds`` (None: all of them)."""
        if kinds is None:
            return self.score_kinds
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in self.score_kinds]
        if unknown or not kinds:
            raise ValueError(f"kind must be one of {self.score_kinds}, got {list(kinds) or 'none'}")
        return kinds

    @abstractmethod
    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        """``{kind: (N,) float64 on the CPU}`` for images (N, C, H, W) in [0, 1], from one pass;
        ``kinds`` (default all of ``score_kinds``) limits what is computed. Higher = more anomalous."""

    def score(self, images: Tensor, kind: str | None = None) -> Tensor:
        """Anomaly score (N,) float64 of ``kind`` (default: the detector's ``score_kind``)."""
        kind = self.score_kind if kind is None else kind
        return self.scores(images, (kind,))[kind]
