"""The validation protocol: a held-out split of the training split, never the test split."""

from __future__ import annotations

import pytest
import torch

from course_utils.data import load_dataset
from course_utils.selection import selection_split


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes((row * 255).round().to(torch.uint8).numpy().tobytes()) for row in images}


def test_selection_split_holds_out_training_images_only():
    split = selection_split("mnist", 0, held_out_fraction=0.25, seed=1, source="sample")
    train = load_dataset("mnist", "train", source="sample")
    normal_train = _rows(train.images[train.labels == 0])
    assert _rows(split.fit_images) | _rows(split.held_out_normal) <= normal_train
    assert not _rows(split.fit_images) & _rows(split.held_out_normal)  # nothing fitted on is held out
    n_normal = int((train.labels == 0).sum())
    assert len(split.fit_images) + len(split.held_out_normal) == n_normal
    assert len(split.held_out_normal) == round(0.25 * n_normal) == len(split.held_out_other)
    assert (split.held_out_other_classes != 0).all()
    assert _rows(split.held_out_other) <= _rows(train.images[train.labels != 0])
    images, labels = split.detection_set()
    assert len(images) == len(labels) and int(labels.sum()) == len(split.held_out_other)
    again = selection_split("mnist", 0, held_out_fraction=0.25, seed=1, source="sample")
    assert torch.equal(again.held_out_normal, split.held_out_normal)
    other_seed = selection_split("mnist", 0, held_out_fraction=0.25, seed=2, source="sample")
    assert not torch.equal(other_seed.held_out_normal, split.held_out_normal)


@pytest.mark.parametrize("kwargs,message", [
    (dict(held_out_fraction=0.0), "held_out_fraction"),
    (dict(held_out_fraction=1.0), "held_out_fraction"),
    (dict(n_other=10**6), "n_other"),
    (dict(normal_classes=list(range(10)), n_other=5), "every class is normal"),
    (dict(normal_classes=12), "normal_classes"),
])
def test_selection_split_rejects_bad_arguments(kwargs, message):
    kwargs = {"normal_classes": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        selection_split("mnist", source="sample", **kwargs)


def test_selection_split_with_every_class_normal_holds_out_normals_only():
    split = selection_split("mnist", range(10), held_out_fraction=0.1, n_other=0, seed=0, source="sample")
    assert len(split.held_out_other) == 0 and len(split.held_out_normal) > 0
    with pytest.raises(ValueError, match="n_other=0"):
        split.detection_set()
