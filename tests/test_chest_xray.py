"""KermanyChestXRay on a small folder of generated JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils.chest_xray import KermanyChestXRay


def _write_jpeg(path: Path, seed: int, shape=(40, 52), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=shape if mode == "L" else (*shape, 3), dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path, format="JPEG")


@pytest.fixture
def xray_root(tmp_path) -> Path:
    """root/chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg; non-square, some RGB, like the originals."""
    counts = {("train", "NORMAL"): 3, ("train", "PNEUMONIA"): 2, ("test", "NORMAL"): 2, ("test", "PNEUMONIA"): 3}
    seed = 0
    for (split, cls), n in counts.items():
        for i in range(n):
            seed += 1
            _write_jpeg(tmp_path / "chest_xray" / split / cls / f"img{i}.jpeg", seed, mode="RGB" if i == 0 else "L")
    return tmp_path


def test_reads_generated_images(xray_root):
    data = KermanyChestXRay(xray_root, "train", size=32, verify=True)
    assert len(data) == 5 and data.counts() == {"NORMAL": 3, "PNEUMONIA": 2}
    image, label = data[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert int(data[-1][1]) == 1
    images, labels = data.load_all()
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1]
    # root may also be the chest_xray folder itself
    assert len(KermanyChestXRay(xray_root / "chest_xray", "test", size=16)) == 5


def test_normal_only_for_training(xray_root):
    data = KermanyChestXRay(xray_root, "train", size=16, normal_only=True)
    assert len(data) == 3 and data.labels.sum() == 0
    # PNEUMONIA may be absent when only normals are needed
    for f in (xray_root / "chest_xray" / "train" / "PNEUMONIA").iterdir():
        f.unlink()
    (xray_root / "chest_xray" / "train" / "PNEUMONIA").rmdir()
    assert len(KermanyChestXRay(xray_root, "train", size=16, normal_only=True)) == 3


def test_missing_root_split_or_class_folder(xray_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        KermanyChestXRay(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="'val' folder"):
        KermanyChestXRay(xray_root, "val")
    (xray_root / "chest_xray" / "test" / "PNEUMONIA").rename(xray_root / "chest_xray" / "test" / "Pneumonia")
    with pytest.raises(ValueError, match="unexpected folder.*Pneumonia"):
        KermanyChestXRay(xray_root, "test")


def test_empty_folder_is_rejected(xray_root):
    folder = xray_root / "chest_xray" / "test" / "NORMAL"
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="holds no images"):
        KermanyChestXRay(xray_root, "test")
    folder.rmdir()
    with pytest.raises(FileNotFoundError, match="class folder .*NORMAL is missing"):
        KermanyChestXRay(xray_root, "test")


def test_mislabelled_or_misplaced_files_are_rejected(xray_root):
    split = xray_root / "chest_xray" / "train"
    _write_jpeg(split / "stray.jpeg", 99)
    with pytest.raises(ValueError, match="directly in"):
        KermanyChestXRay(xray_root, "train")
    (split / "stray.jpeg").unlink()
    _write_jpeg(split / "NORMAL" / "nested" / "a.jpeg", 98)
    with pytest.raises(ValueError, match="sub-folder"):
        KermanyChestXRay(xray_root, "train")
    for f in (split / "NORMAL" / "nested").iterdir():
        f.unlink()
    (split / "NORMAL" / "nested").rmdir()
    (split / "NORMAL" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="non-image"):
        KermanyChestXRay(xray_root, "train")


def test_unreadable_image_names_the_file(xray_root):
    bad = xray_root / "chest_xray" / "test" / "NORMAL" / "broken.jpeg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpeg"):
        KermanyChestXRay(xray_root, "test", verify=True)
    data = KermanyChestXRay(xray_root, "test")  # lazy: fails when the file is read
    index = [p.name for p in data.files].index("broken.jpeg")
    with pytest.raises(ValueError, match="broken.jpeg"):
        data[index]


def test_bad_arguments(xray_root):
    with pytest.raises(ValueError, match="split"):
        KermanyChestXRay(xray_root, "training")
    with pytest.raises(ValueError, match="size"):
        KermanyChestXRay(xray_root, "train", size=4)
