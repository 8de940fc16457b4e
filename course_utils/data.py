"""Datasets by name, the one-class split, synthetic anomalies and toy sets.

Every image the course uses comes through here, as a float32 tensor of shape
(N, C, H, W) with values in [0, 1]: C = 1 for the grayscale sets (MNIST, Fashion-MNIST,
PneumoniaMNIST, chest X-rays), C = 3 for the colour industrial sets (MVTec AD, bTAD).
Datasets with pixel ground truth also give masks, bool (N, 1, H, W), True = anomalous
pixel (all False for normal images). The datasets themselves (registry, formats, import)
are in ``course_utils.datasets``; ``docs/design.md`` explains how to add one.

Where the data come from (``source``):

- ``"auto"`` (default): a full local copy under ``COURSE_DATA_DIR`` -> a download
  (torchvision / medmnist, checksums checked) -> the bundled sample, with a loud warning
  that results come from a small sample. In fast mode (``COURSE_FAST=1``) the bundled
  sample is used directly, so tests need no network and no data set-up. Datasets without
  a bundled sample (the image folders) use their local copy in every mode, and a missing
  copy raises FileNotFoundError naming the command that imports it: never other data.
- ``"full"``: local copy or download; never the sample (raises instead).
- ``"sample"``: the bundled sample (a few hundred real images per class).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from . import config
from .datasets import store
from .datasets.formats import DataFormatError, SplitArrays
from .datasets.registry import DATASETS as _REGISTRY
from .datasets.registry import SAMPLE_DIR, DatasetSpec, get_spec
from .images import check_images

__all__ = [
    "SAMPLE_DIR",
    "DATASETS",
    "LabelledImages",
    "OneClassSplit",
    "SampleDataWarning",
    "dataset_info",
    "load_dataset",
    "local_copy_present",
    "one_class_split",
    "paste_squares",
    "frequency_stripes",
]

DATASETS = tuple(_REGISTRY)  # the registered names, in registry order
SOURCES = ("auto", "full", "sample")


class SampleDataWarning(UserWarning):
    """Results come from the small bundled sample, not the full dataset."""


@dataclass
class LabelledImages:
    """Images with their class labels.

    Attributes:
        images: float32 (N, C, H, W) in [0, 1].
        labels: int64 (N,), original class indices.
        source: ``"full"``, ``"partial"`` (a consistent but incomplete local copy) or ``"sample"``.
        note: why the source is what it is (partial counts, sample fallback), or "".
        masks: bool (N, 1, H, W), True = anomalous pixel, for datasets with pixel ground
            truth (all False for normal images); None for the others.
    """

    images: Tensor
    labels: Tensor
    source: str
    note: str = ""
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class OneClassSplit:
    """The one-class protocol: train on normals, evaluate on the full test split.

    Attributes:
        dataset: dataset name.
        normal_classes: original class indices treated as normal.
        train_images: (N_train, C, H, W) in [0, 1]: normal images (plus the contamination).
        train_classes: (N_train,) original class labels of the training images.
        val_images: (N_val, C, H, W): the official validation split where the dataset has
            one (PneumoniaMNIST), else ``val_fraction`` of the normal training images held out.
        val_labels: (N_val,) 1 = anomaly, 0 = normal. Thresholds are chosen here, never on test.
        test_images: (N_test, C, H, W): the WHOLE official test split.
        test_labels: (N_test,) 1 = anomaly, 0 = normal.
        test_classes: (N_test,) original class labels of the test images.
        source: where the images came from (see ``LabelledImages.source``).
        n_contamination: number of anomalous images mixed into training.
        test_masks: bool (N_test, 1, H, W) pixel ground truth of the test images for datasets
            that have it (MVTec AD, bTAD), else None.
    """

    dataset: str
    normal_classes: tuple[int, ...]
    train_images: Tensor
    train_classes: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    test_classes: Tensor
    source: str
    n_contamination: int = 0
    test_masks: Tensor | None = None

    def describe(self) -> str:
        """One line for notebooks: sizes, normal classes, anomaly rate, source."""
        rate = float(self.test_labels.float().mean()) if len(self.test_labels) else float("nan")
        names = dataset_info(self.dataset).class_names
        normal = ", ".join(names[c] for c in self.normal_classes)
        return (
            f"{self.dataset}: normal = [{normal}] | train {len(self.train_images):,}"
            f" (contamination {self.n_contamination:,}) | val {len(self.val_images):,}"
            f" | test {len(self.test_images):,} ({rate:.0%} anomalies) | source: {self.source}"
        )


def dataset_info(name: str) -> DatasetSpec:
    """Class names, official split sizes, licence, citation and format of dataset ``name``."""
    return get_spec(name)


# --------------------------------------------------------------------------- loading
def load_dataset(
    name: str,
    split: str = "train",
    *,
    source: str = "auto",
    size: int | None = None,
    classes: int | Iterable[int] | None = None,
) -> LabelledImages:
    """Load one split of a dataset as tensors in [0, 1].

    Args:
        name: a registered name (``course_utils.data.DATASETS``), e.g. ``"mnist"``,
            ``"pneumoniamnist"``, ``"chest-xray"``, ``"mvtec-bottle"``, ``"btad-01"``.
        split: ``"train"``, ``"test"`` (and ``"val"`` where the dataset has one).
        source: ``"auto"``, ``"full"`` or ``"sample"`` (module docstring).
        size: image side in px; default: the dataset's (28 for the MNIST-like sets, 256 for
            the image folders). PneumoniaMNIST comes in 28 / 64 / 128 / 224 (via medmnist);
            image folders are resized to any side >= 8.
        classes: keep only the images of these class indices (e.g. ``0`` for the normal
            X-rays of a training split), converted to float only for them.

    Returns:
        LabelledImages: images float32 (N, C, size, size) in [0, 1], labels int64 (N,), and
        for datasets with pixel ground truth masks bool (N, 1, size, size).

    Raises:
        ValueError: unknown name, split, source, size or class.
        FileNotFoundError: ``source="full"`` (or a dataset without bundled sample) and neither
            a local copy nor a download worked; the message says which command to run.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has splits {spec.splits}, not {split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    size = spec.default_size if size is None else size
    spec.check_size(size)
    keep = None if classes is None else _as_class_tuple(classes, spec, "classes")
    arrays, resolved = _resolve_arrays(spec, split, source, size)
    rows = slice(None) if keep is None else np.flatnonzero(np.isin(arrays.labels, keep))
    # the cached arrays are read-only; torch wants a writable buffer, so copy the uint8 data (cheap)
    images = torch.from_numpy(np.array(arrays.images[rows], copy=True))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    masks = None if arrays.masks is None else torch.from_numpy(arrays.masks[rows] > 0).unsqueeze(1)
    labels = torch.from_numpy(arrays.labels[rows].astype(np.int64))
    return LabelledImages(images.float().div_(255.0), labels, resolved, arrays.note, masks)


def local_copy_present(name: str, size: int | None = None) -> bool:
    """True when a local copy of dataset ``name`` (at ``size`` px, default: the dataset's) is in
    ``COURSE_DATA_DIR``, so loading it needs neither a download nor the sample."""
    spec = get_spec(name)
    return spec.format.present(spec, config.data_dir(), spec.default_size if size is None else size)


def _resolve_arrays(spec: DatasetSpec, split: str, source: str, size: int) -> tuple[SplitArrays, str]:
    """Follow the resolution order of the module docstring; return (arrays, source)."""
    # the sample is 28 px only: other sizes always need a local copy or a download
    if source == "sample" or (source == "auto" and config.is_fast() and spec.has_sample and size == 28):
        return _read_sample(spec, split, size), "sample"
    local_dir = config.data_dir()
    if not spec.format.present(spec, local_dir, size):
        if not spec.format.downloadable:
            raise FileNotFoundError(f"{spec.name} is not in {local_dir}; it has no bundled sample and the course cannot "
                                    f"download it.\n{_how_to_get(spec, local_dir, size)}")
        error = _try_download(spec, local_dir, size)
        if error is not None:
            instructions = _how_to_get(spec, local_dir, size)
            if source == "full" or size != 28 or not spec.has_sample:
                raise FileNotFoundError(f"{spec.name} ({size} px) is not in {local_dir} and could not be downloaded "
                                        f"({error}).\n{instructions}")
            message = (
                f"\n{'!' * 78}\n! {spec.name}: no full copy in {local_dir} and the download failed:\n! {error}\n"
                f"! USING THE SMALL BUNDLED SAMPLE: results are NOT comparable to the literature.\n"
                f"! {instructions.replace(chr(10), chr(10) + '! ')}\n{'!' * 78}"
            )
            print(message)
            warnings.warn(f"{spec.name}: using the bundled sample ({error})", SampleDataWarning, stacklevel=3)
            arrays = _read_sample(spec, split, size)
            arrays.note = "sample fallback: " + str(error)
            return arrays, "sample"
    try:
        arrays = _read_local(spec.name, split, str(local_dir), size)
    except DataFormatError as err:
        raise DataFormatError(
            f"{err}\nFix: `python -m data_download {spec.name} --verify` removes corrupt files; then fetch them "
            f"again ({_how_to_get(spec, local_dir, size)[5:]})"
        ) from err
    return arrays, ("partial" if arrays.note else "full")


def _how_to_get(spec: DatasetSpec, local_dir: Path, size: int) -> str:
    extra = f" --size {size}" if spec.sizes is not None and size != spec.default_size else ""
    if spec.format.downloadable:
        fetch = f"on a machine with internet run `python -m data_download {spec.name}{extra}`; offline, copy the files"
    else:
        fetch = f"download it from {spec.homepage} (the course cannot fetch it for you), unpack it"
    return (
        f"Fix: {fetch} and run `python -m data_download {spec.name} --from-dir DIR{extra}` (data folder: {local_dir}, "
        "set COURSE_DATA_DIR to change it)."
    )


_failed_downloads: dict[tuple[str, str, int], str] = {}


def _try_download(spec: DatasetSpec, root: Path, size: int) -> str | None:
    """Download into ``root``; return None on success, else the error text.

    A failure is remembered for the rest of the process, so loading the train and the
    test split does not wait for the network twice.
    """
    key = (spec.name, str(root), size)
    if key in _failed_downloads:
        return _failed_downloads[key]
    try:
        store.download(spec.name, root, size=size, quiet=True)
    except Exception as err:  # any failure (offline, checksum, missing medmnist) falls through
        _failed_downloads[key] = f"{type(err).__name__}: {err}"
        return _failed_downloads[key]
    return None


_WARNED_COPIES: set[tuple] = set()  # the local copies whose partial / non-official note was shown


def _read_local(name: str, split: str, root: str, size: int) -> SplitArrays:
    """Read a split of the full local copy (see ``SplitArrays``); a partial copy warns (once per process).

    Results are cached in memory, keyed by the files' modification times, so a replaced
    file is read again.
    """
    spec = get_spec(name)
    files = spec.format.local_files(spec, Path(root), size)
    stamp = tuple(f.stat().st_mtime_ns if f.exists() else None for f in files)
    arrays = _read_local_cached(name, split, root, size, stamp)
    if arrays.note and (name, split, root, size, stamp) not in _WARNED_COPIES:
        # once per copy and process: a notebook that trains ten classes shows the warning once, not ten times
        _WARNED_COPIES.add((name, split, root, size, stamp))
        warnings.warn(arrays.note if "PARTIAL" in arrays.note else f"{spec.name}: PARTIAL or non-official copy: "
                      f"{arrays.note}", UserWarning, stacklevel=4)
    return SplitArrays(arrays.images, arrays.labels, arrays.masks, arrays.note)


@functools.lru_cache(maxsize=8)
def _read_local_cached(name: str, split: str, root: str, size: int, stamp: tuple) -> SplitArrays:
    spec = get_spec(name)
    arrays = spec.format.read(spec, split, Path(root), size)
    for array in (arrays.images, arrays.labels, arrays.masks):
        if array is not None:
            array.flags.writeable = False  # shared by every caller: nobody may change it
    return arrays


def sample_path(name: str) -> Path:
    """Path of the bundled sample of dataset ``name``."""
    return SAMPLE_DIR / f"{get_spec(name).name}.npz"


def _read_sample(spec: DatasetSpec, split: str, size: int) -> SplitArrays:
    if not spec.has_sample:
        raise FileNotFoundError(
            f"{spec.name} has no bundled sample: import the full data first. " + _how_to_get(spec, config.data_dir(), size)
        )
    if size != 28:
        raise FileNotFoundError(
            f"the bundled sample of {spec.name} is 28 px only; for {size} px get the full data: "
            + _how_to_get(spec, config.data_dir(), size)
        )
    path = sample_path(spec.name)
    if not path.is_file():
        raise FileNotFoundError(f"bundled sample {path} is missing: reinstall the course or run "
                                f"`python -m data_download {spec.name} --build-sample`")
    with np.load(path, allow_pickle=False) as npz:
        return SplitArrays(npz[f"{split}_images"], npz[f"{split}_labels"].astype(np.int64), None, "bundled sample")


# --------------------------------------------------------------------------- one-class split
def one_class_split(
    name: str,
    normal_classes: int | Iterable[int],
    *,
    contamination: float = 0.0,
    contamination_classes: Iterable[int] | None = None,
    val_fraction: float = 0.0,
    n_train: int | None = None,
    seed: int = 0,
    source: str = "auto",
    size: int | None = None,
) -> OneClassSplit:
    """Build the one-class protocol (docs/design.md) for dataset ``name``.

    Training set: the images of ``normal_classes`` from the official train split
    (optionally a random subset of ``n_train``), plus contamination. Test set: the whole
    official test split, labelled 1 (anomaly) unless its class is normal; for datasets with
    pixel ground truth its masks come along (``test_masks``). For MVTec AD and bTAD, whose
    train split holds only the normal class 0, this is "train on train/good, score the
    whole test split".

    Args:
        name: dataset name.
        normal_classes: one class index or several.
        contamination: number of anomalous training images to add, as a fraction of the
            number of normal training images (0.01 adds 1 anomaly per 100 normals). The
            images are drawn at random from the training images of ``contamination_classes``.
        contamination_classes: classes to draw contamination from (default: all non-normal).
        val_fraction: for datasets without an official validation split, the fraction of
            normal training images held out (labels all 0) for choosing thresholds.
            Ignored when the dataset has an official val split, which is then used whole.
        n_train: keep at most this many normal training images (random, seeded).
        seed: seeds the subset, hold-out and contamination choices.
        source, size: as in ``load_dataset``.

    Raises:
        ValueError: a class outside the dataset, no normal class, all classes normal,
            a fraction outside its range, or more contamination than images available.
    """
    spec = get_spec(name)
    normal = _as_class_tuple(normal_classes, spec, "normal_classes")
    if len(normal) == spec.n_classes:
        raise ValueError("every class is normal: leave at least one class out as the anomaly")
    if not (math.isfinite(contamination) and contamination >= 0.0):
        raise ValueError(f"contamination must be >= 0, got {contamination}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if n_train is not None and n_train < 1:
        raise ValueError(f"n_train must be a positive integer, got {n_train}")
    anomaly_pool = tuple(c for c in range(spec.n_classes) if c not in normal)
    if contamination_classes is not None:
        anomaly_pool = _as_class_tuple(contamination_classes, spec, "contamination_classes")
        overlap = set(anomaly_pool) & set(normal)
        if overlap:
            raise ValueError(f"contamination_classes {sorted(overlap)} are also normal classes")

    rng = np.random.default_rng(seed)
    train = load_dataset(spec.name, "train", source=source, size=size)
    test = load_dataset(spec.name, "test", source=source, size=size)
    is_normal_train = _isin(train.labels, normal)
    normal_idx = torch.nonzero(is_normal_train).flatten().numpy()
    if normal_idx.size == 0:
        raise ValueError(f"no training images of classes {normal} in {spec.name} ({train.source})")
    normal_idx = rng.permutation(normal_idx)

    if "val" in spec.splits:
        val = load_dataset(spec.name, "val", source=source, size=size)
        val_images, val_labels = val.images, (~_isin(val.labels, normal)).long()
    else:
        n_val = int(round(val_fraction * normal_idx.size))
        val_idx, normal_idx = normal_idx[:n_val], normal_idx[n_val:]
        val_images = train.images[np.sort(val_idx)]
        val_labels = torch.zeros(len(val_idx), dtype=torch.long)
    if n_train is not None:
        normal_idx = normal_idx[:n_train]

    n_contamination = int(round(contamination * normal_idx.size))
    pool_idx = torch.nonzero(_isin(train.labels, anomaly_pool)).flatten().numpy()
    if n_contamination > pool_idx.size:
        raise ValueError(
            f"contamination {contamination} needs {n_contamination} anomalous images but classes "
            f"{anomaly_pool} have only {pool_idx.size} in the training split ({train.source})"
        )
    contamination_idx = rng.choice(pool_idx, size=n_contamination, replace=False) if n_contamination else []
    train_idx = np.sort(np.concatenate([normal_idx, np.asarray(contamination_idx, dtype=np.int64)]))

    return OneClassSplit(
        dataset=spec.name,
        normal_classes=normal,
        train_images=train.images[train_idx],
        train_classes=train.labels[train_idx],
        val_images=val_images,
        val_labels=val_labels,
        test_images=test.images,
        test_labels=(~_isin(test.labels, normal)).long(),
        test_classes=test.labels,
        source=train.source if train.source == test.source else f"{train.source}/{test.source}",
        n_contamination=n_contamination,
        test_masks=test.masks,
    )


def _as_class_tuple(classes: int | Iterable[int], spec: DatasetSpec, what: str) -> tuple[int, ...]:
    if isinstance(classes, (int, np.integer)):
        classes = (int(classes),)
    result = tuple(sorted({int(c) for c in classes}))
    if not result:
        raise ValueError(f"{what} is empty: give at least one class index")
    bad = [c for c in result if not 0 <= c < spec.n_classes]
    if bad:
        raise ValueError(f"{what} {bad} outside 0..{spec.n_classes - 1} for {spec.name} ({', '.join(spec.class_names)})")
    return result


def _isin(labels: Tensor, classes: Sequence[int]) -> Tensor:
    return torch.isin(labels, torch.tensor(list(classes), dtype=labels.dtype))


# --------------------------------------------------------------------------- synthetic anomalies
def paste_squares(
    images: Tensor,
    *,
    size_range: tuple[int, int] = (2, 4),
    values: Sequence[float] = (0.0, 1.0),
    n_squares: int = 1,
    on_foreground: bool = True,
    foreground_level: float = 0.2,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Paste small black or white squares into images: synthetic pixel-level anomalies.

    This is the defect of the thesis's shirt experiment: a square of side 2 to 4 px.

    Args:
        images: (N, 1, H, W) in [0, 1].
        size_range: smallest and largest side in px (inclusive).
        values: intensities to choose from per square (default black or white).
        n_squares: squares per image.
        on_foreground: put the square where the whole square lies on the object
            (pixels > ``foreground_level``), so that a black square on a black
            background, which changes nothing, is avoided; images without room fall
            back to a random position.
        seed: the positions, sizes and values depend only on it.

    Returns:
        (defective, mask): defective (N, 1, H, W) in [0, 1]; mask bool (N, 1, H, W), True
        where a pixel was replaced (a pixel-level ground truth).
    """
    check_images(images, "images")
    low, high = size_range
    if not (1 <= low <= high < min(images.shape[-2:])):
        raise ValueError(f"size_range {size_range} must satisfy 1 <= low <= high < image side")
    if n_squares < 1:
        raise ValueError(f"n_squares must be >= 1, got {n_squares}")
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"values must be intensities in [0, 1], got {values}")
    rng = np.random.default_rng(seed)
    defective = images.clone()
    mask = torch.zeros_like(images, dtype=torch.bool)
    height, width = images.shape[-2:]
    for i in range(images.shape[0]):
        for _ in range(n_squares):
            side = int(rng.integers(low, high + 1))
            value = float(values[int(rng.integers(len(values)))])
            top, left = _square_position(images[i, 0], side, on_foreground, foreground_level, rng)
            defective[i, :, top:top + side, left:left + side] = value
            mask[i, :, top:top + side, left:left + side] = True
    return defective, mask


def _square_position(image: Tensor, side: int, on_foreground: bool, level: float, rng: np.random.Generator) -> tuple[int, int]:
    height, width = image.shape
    if on_foreground:
        # a square fits at (top, left) when all side*side pixels are foreground
        fg = (image > level).float()[None, None]
        fits = torch.nn.functional.avg_pool2d(fg, side, stride=1)[0, 0] >= 1.0 - 1e-6
        candidates = torch.nonzero(fits).numpy()
        if len(candidates):
            top, left = candidates[int(rng.integers(len(candidates)))]
            return int(top), int(left)
    return int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))


def frequency_stripes(
    frequencies: Sequence[int],
    n_per_frequency: int,
    *,
    size: int = 28,
    intensity_range: tuple[float, float] = (0.5, 1.0),
    rotate: bool = True,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Toy images of sinusoidal stripes (the thesis's frequency experiment).

    Image: x(u, v) = a * (1 + sin(2 pi f u / size + phi)) / 2, with amplitude a drawn
    from ``intensity_range``, random phase phi, and, when ``rotate``, half of the images
    turned by 90 degrees (horizontal instead of vertical stripes).

    Returns:
        (images, freqs): images float32 (len(frequencies) * n_per_frequency, 1, size, size)
        in [0, 1]; freqs int64, the frequency of each image (cycles per image).
    """
    if not frequencies or any(f < 1 or f >= size / 2 for f in frequencies):
        raise ValueError(f"frequencies must be between 1 and {size // 2 - 1} cycles per image (Nyquist), got {frequencies}")
    if n_per_frequency < 1:
        raise ValueError(f"n_per_frequency must be >= 1, got {n_per_frequency}")
    low, high = intensity_range
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"intensity_range must satisfy 0 < low <= high <= 1, got {intensity_range}")
    gen = torch.Generator().manual_seed(seed)
    u = torch.arange(size, dtype=torch.float32)
    images, freqs = [], []
    for f in frequencies:
        amplitude = low + (high - low) * torch.rand(n_per_frequency, 1, 1, generator=gen)
        phase = 2 * math.pi * torch.rand(n_per_frequency, 1, 1, generator=gen)
        wave = amplitude * (1 + torch.sin(2 * math.pi * f * u.view(1, 1, -1) / size + phase)) / 2
        stripes = wave.expand(n_per_frequency, size, size).clone()
        if rotate:
            turn = torch.rand(n_per_frequency, generator=gen) < 0.5
            stripes[turn] = stripes[turn].transpose(-1, -2)
        images.append(stripes.unsqueeze(1))
        freqs.append(torch.full((n_per_frequency,), int(f), dtype=torch.long))
    return torch.cat(images).clamp_(0.0, 1.0), torch.cat(freqs)
