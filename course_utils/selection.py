"""The validation protocol for choosing settings without test data: a held-out split of the TRAINING split.

Every setting that is chosen by comparing runs (a learning rate, a model size, a score variant) is chosen
on what :func:`selection_split` returns, never on the test split:

- ``held_out_normal``: normal training images the model does not fit on. Use them with a label-free
  criterion where the method has one: the held-out likelihood (bits/dim) of a flow, the held-out
  reconstruction error of an autoencoder;
- ``held_out_other``: training images of the OTHER classes, labelled anomalous. Where a detection
  criterion (AUROC) is needed, it is measured on held-out normals against these. This uses images of
  the anomaly classes, so a report must say so ("chosen on held-out training images of the other
  classes"); it still never touches the test split.

Datasets with an official validation split (PneumoniaMNIST) may use that instead; this helper is for
the ones without (MNIST, Fashion-MNIST), and for a label-free criterion on any dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .data import dataset_info, load_dataset

__all__ = ["SelectionSplit", "selection_split"]


@dataclass
class SelectionSplit:
    """A split of the official TRAINING split for model selection (module doc).

    Attributes:
        dataset, normal_classes: as in :class:`course_utils.data.OneClassSplit`.
        fit_images: (N_fit, C, H, W) in [0, 1], the normal training images to fit on.
        held_out_normal: (N_norm, C, H, W), normal training images NOT in ``fit_images``.
        held_out_other: (N_other, C, H, W), training images of the other classes (anomalies).
        held_out_other_classes: (N_other,) int64, their original class labels.
        seed: the seed of the draws; source: where the images came from.
    """

    dataset: str
    normal_classes: tuple[int, ...]
    fit_images: Tensor
    held_out_normal: Tensor
    held_out_other: Tensor
    held_out_other_classes: Tensor
    seed: int
    source: str

    def detection_set(self) -> tuple[Tensor, Tensor]:
        """(images, labels): the held-out normals (label 0) then the other classes' images (label 1), for a
        detection criterion on training images only.

        Raises:
            ValueError: no other-class images were held out (``n_other=0``): use a label-free criterion.
        """
        if not len(self.held_out_other):
            raise ValueError("this split holds out no other-class images (n_other=0); a detection criterion needs "
                             "some: call selection_split with n_other > 0 and at least one class left out")
        images = torch.cat([self.held_out_normal, self.held_out_other])
        labels = torch.cat([torch.zeros(len(self.held_out_normal), dtype=torch.long),
                            torch.ones(len(self.held_out_other), dtype=torch.long)])
        return images, labels


def selection_split(name: str, normal_classes: int | Iterable[int], *, held_out_fraction: float = 0.2,
                    n_other: int | None = None, seed: int = 0, source: str = "auto",
                    size: int | None = None) -> SelectionSplit:
    """Hold out ``held_out_fraction`` of the normal training images of dataset ``name`` and draw ``n_other``
    training images of the other classes (default: as many as held-out normals), all seeded with ``seed``.
    With every class normal (a label-free criterion such as held-out bits/dim), ``n_other`` must be 0 or
    None and no other-class images are drawn.

    Raises:
        ValueError: a fraction outside (0, 1), every class normal, or more other-class images asked
            for than the training split has.
    """
    spec = dataset_info(name)
    normal = tuple(sorted({int(normal_classes)} if isinstance(normal_classes, int) else
                          {int(c) for c in normal_classes}))
    if not normal or any(not 0 <= c < spec.n_classes for c in normal):
        raise ValueError(f"normal_classes must be classes of {spec.name} (0..{spec.n_classes - 1}), got {normal}")
    if len(normal) == spec.n_classes and n_other not in (None, 0):
        raise ValueError("every class is normal, so there are no other-class images to hold out: pass n_other=0 "
                         "(a label-free criterion on held_out_normal only) or leave a class out")
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must lie in (0, 1), got {held_out_fraction}")
    train = load_dataset(spec.name, "train", source=source, size=size)
    is_normal = torch.isin(train.labels, torch.tensor(normal))
    rng = np.random.default_rng(seed)
    normal_idx = rng.permutation(torch.nonzero(is_normal).flatten().numpy())
    n_held = max(1, int(round(held_out_fraction * len(normal_idx))))
    if n_held >= len(normal_idx):
        raise ValueError(f"holding out {n_held} of {len(normal_idx)} normal images leaves none to fit on")
    other_pool = torch.nonzero(~is_normal).flatten().numpy()
    n_other = (0 if len(normal) == spec.n_classes else n_held) if n_other is None else int(n_other)
    if not 0 <= n_other <= len(other_pool):
        raise ValueError(f"n_other must lie in [0, {len(other_pool)}] (other-class training images of "
                         f"{spec.name}), got {n_other}")
    other_idx = np.sort(rng.choice(other_pool, size=n_other, replace=False))
    held_idx, fit_idx = np.sort(normal_idx[:n_held]), np.sort(normal_idx[n_held:])
    return SelectionSplit(dataset=spec.name, normal_classes=normal, fit_images=train.images[fit_idx],
                          held_out_normal=train.images[held_idx], held_out_other=train.images[other_idx],
                          held_out_other_classes=train.labels[other_idx], seed=seed, source=train.source)
