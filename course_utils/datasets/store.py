"""Fetch, import, verify and sample the course datasets: the commands behind
``python -m data_download``, the same for every format (each dataset's format does the work).

Every file lands atomically: it is written to a temporary file (or, for image folders, a
staging folder) inside the data folder and renamed into place only after it was checked, so
an interrupted or failed run never leaves a half-written or corrupt file where the course
would read it.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from .formats import Report, write_npz_deterministic
from .registry import DATASETS, get_spec

__all__ = [
    "import_from_dir",
    "download",
    "verify",
    "status",
    "build_sample",
    "SAMPLE_PER_CLASS",
    "SAMPLE_SEED",
]

# images per class in the bundled sample, per split
SAMPLE_PER_CLASS = {"train": 300, "val": 50, "test": 100}
SAMPLE_SEED = 20_231_123


def import_from_dir(name: str, src_dir: Path, data_dir: Path, *, size: int | None = None) -> Report:
    """Check the files of dataset ``name`` found in ``src_dir`` and copy them into ``data_dir``.

    Accepts ``.gz`` or uncompressed idx files (MNIST, Fashion-MNIST; for example Debian's
    ``/usr/share/datasets/fashion-mnist``), medmnist npz files, and image folders in the
    dataset's own layout (chest X-rays, MVTec AD, bTAD). Files are written only when every
    file of the dataset passed its checks.

    Args:
        size: image side for formats that store one file per size (MedMNIST); default: the
            dataset's default size.
    """
    spec = get_spec(name)
    size = spec.default_size if size is None else size
    spec.check_size(size)
    src_dir = Path(src_dir).expanduser()
    report = Report()
    if not src_dir.is_dir():
        report.fail(f"{src_dir} is not a folder")
        return report
    spec.format.import_from_dir(spec, src_dir, Path(data_dir), size, report)
    return report


def download(name: str, data_dir: Path, *, size: int | None = None, quiet: bool = False) -> Report:
    """Download dataset ``name`` (torchvision / medmnist, both check the official md5).

    The download goes to a temporary folder inside ``data_dir``; the files are checked and
    only then moved into place.

    Raises:
        RuntimeError: the download failed (offline, checksum mismatch, missing medmnist) or
            the dataset cannot be downloaded by the course; the message says how to get the
            files another way.
    """
    spec = get_spec(name)
    size = spec.default_size if size is None else size
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=data_dir, prefix=".download-"))
    try:
        try:
            src = spec.format.fetch(spec, staging, size)
        except Exception as err:
            raise RuntimeError(
                f"download of {spec.name} failed ({type(err).__name__}: {err}). Offline? Copy the files from a machine "
                f"that has them and run: python -m data_download {spec.name} --from-dir DIR"
            ) from err
        if not quiet:
            print(f"downloaded {spec.name}; checking ...")
        report = import_from_dir(spec.name, src, data_dir, size=size)
        if not report.ok:
            raise RuntimeError(f"downloaded {spec.name} but its files failed the checks:\n{report}")
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify(name: str, data_dir: Path, *, size: int | None = None, remove_bad: bool = True) -> Report:
    """Check the local copy of ``name``; remove files that are truncated or corrupt.

    A partial but consistent copy (for idx files, a prefix of the split with a valid header)
    is kept and reported as partial.
    """
    spec = get_spec(name)
    size = spec.default_size if size is None else size
    report = Report()
    spec.format.verify(spec, Path(data_dir), size, report, remove_bad)
    return report


def status(name: str, data_dir: Path) -> str:
    """A few words for ``--list``: ``present``, ``partial (...)``, ``incomplete`` or ``missing``."""
    spec = get_spec(name)
    return spec.format.status(spec, Path(data_dir))


def build_sample(name: str, data_dir: Path, out_dir: Path) -> tuple[Path, dict[str, int]]:
    """Rebuild the bundled sample of ``name`` from the full local copy, deterministically.

    Per split, up to ``SAMPLE_PER_CLASS[split]`` images per class, chosen with a fixed seed
    and kept in their original order. The npz bytes depend only on the source data.

    Returns:
        (path written, number of images per split).

    Raises:
        FileNotFoundError: no local copy of ``name`` in ``data_dir``.
        ValueError: the dataset has no bundled sample (image folders).
    """
    spec = get_spec(name)
    if not spec.has_sample:
        raise ValueError(f"{spec.name} has no bundled sample (only {', '.join(n for n, s in DATASETS.items() if s.has_sample)} do)")
    root = Path(data_dir)
    missing = [str(p) for p in spec.format.local_files(spec, root, spec.default_size) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no full copy of {spec.name}: {', '.join(missing)} missing")
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for split_index, split in enumerate(spec.splits):
        split_arrays = spec.format.read(spec, split, root, spec.default_size)
        images, labels = split_arrays.images, split_arrays.labels
        keep = []
        for cls in range(spec.n_classes):
            idx = np.flatnonzero(labels == cls)
            rng = np.random.default_rng([SAMPLE_SEED, split_index, cls])
            keep.append(rng.choice(idx, size=min(SAMPLE_PER_CLASS[split], idx.size), replace=False))
        order = np.sort(np.concatenate(keep))
        arrays[f"{split}_images"] = images[order]
        arrays[f"{split}_labels"] = labels[order].astype(np.uint8)
        counts[split] = int(order.size)
    out = Path(out_dir) / f"{spec.name}.npz"
    buffer = io.BytesIO()
    write_npz_deterministic(buffer, arrays)
    atomic_write_bytes(out, buffer.getvalue())
    return out, counts

