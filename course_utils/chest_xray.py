"""The Kermany et al. (2018) chest X-ray folder layout as a PyTorch dataset.

AE-FLOW's chest X-ray results use the original images (Kermany, Zhang, Goldbaum, "Labeled
Optical Coherence Tomography (OCT) and Chest X-Ray Images for Classification", Mendeley Data
v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0), unpacked as::

    <root>/chest_xray/train/NORMAL/*.jpeg        <root>/chest_xray/train/PNEUMONIA/*.jpeg
    <root>/chest_xray/val/NORMAL/*.jpeg          <root>/chest_xray/val/PNEUMONIA/*.jpeg
    <root>/chest_xray/test/NORMAL/*.jpeg         <root>/chest_xray/test/PNEUMONIA/*.jpeg

(``root`` may also be the ``chest_xray`` folder itself). PneumoniaMNIST is the same images,
resplit and shrunk to 28 px; this class reads the originals at any size, e.g. 256 px for the
paper's model. Images are read lazily (5,856 files), converted to grayscale, resized and
returned as float tensors (1, size, size) in [0, 1] with label 1 = pneumonia, 0 = normal.
Training uses NORMAL images only: ``normal_only=True``.
"""

from __future__ import annotations

from pathlib import Path
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["KermanyChestXRay", "CLASSES", "SPLITS", "IMAGE_SUFFIXES"]

CLASSES = ("NORMAL", "PNEUMONIA")  # label 0, label 1
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


class KermanyChestXRay(Dataset):
    """Chest X-rays from ``chest_xray/{split}/{NORMAL,PNEUMONIA}/*.jpeg``.

    Args:
        root: folder holding ``chest_xray/`` (or the ``chest_xray`` folder itself).
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: side of the square output images in px (bilinear resize, aspect ratio not kept,
            as in AE-FLOW's preprocessing).
        normal_only: only NORMAL images (for training a one-class model); PNEUMONIA may then be absent.
        verify: open every image once now, so an unreadable file fails at construction, not mid-epoch.

    Attributes:
        files: the image paths, sorted (NORMAL first); ``labels``: int64 tensor, 1 = pneumonia.

    Raises:
        FileNotFoundError: ``root``, the split folder or a needed class folder is missing (the
            message lists what was found, e.g. a ``Normal`` folder with the wrong case).
        ValueError: a class folder holds no images, images or sub-folders lie where they do not
            belong (e.g. directly in ``train/`` or in ``train/OTHER/``), an image cannot be read,
            or an argument is invalid.
    """

    def __init__(self, root: str | Path, split: str = "train", size: int = 256, *, normal_only: bool = False,
                 verify: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer >= 8 px, got {size!r}")
        self.root = self._find_root(Path(root).expanduser())
        self.split, self.size, self.normal_only = split, size, normal_only
        split_dir = self.root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise FileNotFoundError(f"no {split!r} folder in {self.root} (found folders: {found}); the layout is "
                                    f"chest_xray/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg")
        self._check_split_folder(split_dir)
        classes = CLASSES[:1] if normal_only else CLASSES
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            images = self._class_images(split_dir, name)
            files += images
            labels += [label] * len(images)
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        if verify:
            for index in range(len(self.files)):
                self._read(index)

    # ----- layout checks ------------------------------------------------------------

    @staticmethod
    def _find_root(root: Path) -> Path:
        if not root.is_dir():
            raise FileNotFoundError(f"{root} does not exist or is not a folder; download the Kermany chest X-rays "
                                    "(Mendeley Data doi:10.17632/rscbjbr9sj.2) and unpack them there")
        if (root / "chest_xray").is_dir():
            return root / "chest_xray"
        if any((root / s).is_dir() for s in SPLITS):
            return root
        raise FileNotFoundError(f"{root} holds neither chest_xray/ nor train/ val/ test/ folders "
                                f"(found: {sorted(p.name for p in root.iterdir() if _visible(p))[:10]})")

    @staticmethod
    def _check_split_folder(split_dir: Path) -> None:
        stray_files = sorted(p.name for p in split_dir.iterdir() if p.is_file() and _visible(p))
        if stray_files:
            raise ValueError(f"{len(stray_files)} file(s) lie directly in {split_dir} (e.g. {stray_files[:3]}); every "
                             f"image must be inside {split_dir}/NORMAL or {split_dir}/PNEUMONIA so its label is known")
        unknown = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p) and p.name not in CLASSES)
        if unknown:
            raise ValueError(f"unexpected folder(s) {unknown} in {split_dir}: only {list(CLASSES)} are allowed "
                             "(names are case-sensitive); move the images into NORMAL or PNEUMONIA")

    @staticmethod
    def _class_images(split_dir: Path, name: str) -> list[Path]:
        folder = split_dir / name
        if not folder.is_dir():
            found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
            raise FileNotFoundError(f"class folder {folder} is missing (found: {found}); expected "
                                    f"{list(CLASSES)}, case-sensitive")
        entries = [p for p in folder.iterdir() if _visible(p)]
        nested = sorted(p.name for p in entries if p.is_dir())
        if nested:
            raise ValueError(f"sub-folder(s) {nested[:3]} inside {folder}: images must lie directly in the class folder")
        others = sorted(p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES)
        if others:
            raise ValueError(f"{len(others)} non-image file(s) in {folder} (e.g. {others[:3]}); "
                             f"expected {', '.join(IMAGE_SUFFIXES)} images only")
        images = sorted(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): the download or unpacking "
                             "is incomplete")
        return images

    # ----- access ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, index: int) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as image:
                gray = image.convert("L").resize((self.size, self.size), Image.BILINEAR)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"cannot read image {path} ({type(error).__name__}: {error}); the file is corrupt or "
                             "not an image: re-download it or delete it") from error
        data = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8)
        return data.view(1, self.size, self.size).float().div_(255.0)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """(image (1, size, size) float32 in [0, 1], label int64: 1 = pneumonia)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        return self._read(index), self.labels[index]

    def load_all(self) -> tuple[Tensor, Tensor]:
        """All images stacked, ((N, 1, size, size), (N,)): convenient for a few hundred images at 256 px."""
        images = torch.stack([self._read(i) for i in range(len(self))])
        return images, self.labels.clone()

    def counts(self) -> dict[str, int]:
        """Images per class, e.g. ``{"NORMAL": 1341, "PNEUMONIA": 3875}`` for the original train split."""
        names = CLASSES[:1] if self.normal_only else CLASSES
        return {name: int((self.labels == label).sum()) for label, name in enumerate(names)}

    def __repr__(self) -> str:
        return f"KermanyChestXRay({str(self.root)!r}, split={self.split!r}, size={self.size}, counts={self.counts()})"
