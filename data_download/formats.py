"""On-disk formats of the course datasets: what the files are called, how to read them,
how to check them. The single owner of file layouts and checksums.

Layouts written under the data folder are the ones torchvision and medmnist read with
``download=False``:

- ``<data>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed idx);
- ``<data>/FashionMNIST/raw/...`` (same names);
- ``<data>/pneumoniamnist.npz`` (28 px) and ``<data>/pneumoniamnist_{64,128,224}.npz``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DataFormatError",
    "DatasetSpec",
    "DATASETS",
    "IDX_FILES",
    "get_spec",
    "parse_idx",
    "read_idx_file",
    "check_idx_pair",
    "parse_medmnist_npz",
    "medmnist_filename",
    "md5_bytes",
    "write_npz_deterministic",
]


class DataFormatError(ValueError):
    """A data file is truncated, corrupt, or not the data it claims to be."""


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset: classes, official split sizes, files and licence."""

    name: str
    kind: str  # "idx" (MNIST-style) or "medmnist" (npz)
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    license: str
    citation: str
    torchvision_folder: str | None = None  # folder torchvision uses under root
    sizes: tuple[int, ...] = (28,)
    # md5 of the UNCOMPRESSED idx files of the official release (None: not known)
    raw_md5: dict[str, str | None] = field(default_factory=dict)
    # md5 of the official .gz files, as torchvision lists them
    gz_md5: dict[str, str] = field(default_factory=dict)
    # md5 of the official medmnist npz per image size, as medmnist's INFO lists them
    npz_md5: dict[int, str] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_sizes)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


# idx file stem per (split, part)
IDX_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        kind="idx",
        class_names=tuple(str(d) for d in range(10)),
        split_sizes={"train": 60_000, "test": 10_000},
        license="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges)",
        citation="LeCun et al. 1998, Gradient-based learning applied to document recognition",
        torchvision_folder="MNIST",
        raw_md5={
            "train-images-idx3-ubyte": None,
            "train-labels-idx1-ubyte": None,
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        kind="idx",
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        split_sizes={"train": 60_000, "test": 10_000},
        license="MIT (Zalando SE)",
        citation="Xiao, Rasul, Vollgraf 2017, Fashion-MNIST, arXiv:1708.07747",
        torchvision_folder="FashionMNIST",
        raw_md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "pneumoniamnist": DatasetSpec(
        name="pneumoniamnist",
        kind="medmnist",
        class_names=("normal", "pneumonia"),
        split_sizes={"train": 4_708, "val": 524, "test": 624},
        license="CC BY 4.0 (Kermany et al. 2018; Yang et al. MedMNIST v2)",
        citation="Yang et al. 2023, MedMNIST v2, Scientific Data 10:41",
        sizes=(28, 64, 128, 224),
        npz_md5={
            28: "28209eda62fecd6e6a2d98b1501bb15f",
            64: "8f4eceb4ccffa70c672198ea285246c6",
            128: "05b46931834c231683c68f40c47b2971",
            224: "d6a3c71de1b945ea11211b03746c1fe1",
        },
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (case-insensitive; ``fashion_mnist`` also accepted)."""
    key = str(name).strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- idx
_IDX_DTYPES = {0x08: np.uint8}


def parse_idx(data: bytes, *, source: str = "<bytes>", expect_ndim: int | None = None) -> np.ndarray:
    """Parse an uncompressed idx file (the MNIST format).

    Header: two zero bytes, a dtype code (0x08 = uint8), the number of dimensions,
    then one big-endian uint32 per dimension. The data must hold exactly
    ``prod(dims)`` items: a shorter file is truncated, a longer one is corrupt.

    Returns:
        uint8 array of shape ``dims`` (for example (N, 28, 28) or (N,)).

    Raises:
        DataFormatError: naming ``source`` and what was wrong.
    """
    if len(data) < 4:
        raise DataFormatError(f"{source}: only {len(data)} bytes, not an idx file (truncated?)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{source}: bad idx magic number {data[:4].hex()} (expected 0000 08 0n)")
    ndim = data[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataFormatError(f"{source}: has {ndim} dimensions, expected {expect_ndim}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataFormatError(f"{source}: header cut short (truncated file)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) + header_len
    if len(data) < expected:
        raise DataFormatError(
            f"{source}: truncated: header says shape {dims} ({expected} bytes) but the file has {len(data)} bytes"
        )
    if len(data) > expected:
        raise DataFormatError(f"{source}: {len(data) - expected} unexpected trailing bytes after shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx_file(path: Path) -> tuple[np.ndarray, bytes]:
    """Read an idx file, ``.gz`` or uncompressed; return (array, uncompressed bytes).

    Raises:
        DataFormatError: a gzip stream that is cut short or corrupt, or a bad idx file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataFormatError(f"{path}: gzip data is truncated or corrupt ({err})") from err
    return parse_idx(raw, source=str(path)), raw


def check_idx_pair(spec: DatasetSpec, split: str, images: np.ndarray, labels: np.ndarray, *, source: str) -> str | None:
    """Check an images / labels pair of an idx dataset.

    Returns:
        None when the pair has the official size, else a warning text saying that the
        copy is partial (a consistent prefix of the split, such as the MNIST train
        copy in this environment).

    Raises:
        DataFormatError: wrong image shape, label count different from image count,
            label values outside the classes, or more images than the official split.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataFormatError(f"{source}: images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataFormatError(
            f"{source}: {labels.shape[0] if labels.ndim == 1 else labels.shape} labels for {images.shape[0]} images"
        )
    if labels.size and int(labels.max()) >= spec.n_classes:
        raise DataFormatError(f"{source}: label value {int(labels.max())} outside 0..{spec.n_classes - 1}")
    official = spec.split_sizes[split]
    if images.shape[0] > official:
        raise DataFormatError(f"{source}: {images.shape[0]} images, more than the official {official}")
    if images.shape[0] < official:
        return (
            f"{spec.name} {split}: PARTIAL copy, {images.shape[0]:,} of {official:,} images; "
            "results will differ from the published protocol"
        )
    return None


# --------------------------------------------------------------------------- medmnist
def medmnist_filename(name: str, size: int = 28) -> str:
    """File name medmnist uses: ``pneumoniamnist.npz`` at 28 px, else ``pneumoniamnist_{size}.npz``."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def parse_medmnist_npz(path: Path, spec: DatasetSpec, size: int = 28) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read and check a MedMNIST npz file.

    Returns:
        (arrays, warnings): arrays holds ``{split}_images`` (N, size, size) uint8 and
        ``{split}_labels`` (N,) int64 for every split; warnings lists split sizes that
        differ from the official ones.

    Raises:
        DataFormatError: not a readable npz (truncated zip, CRC error), a missing key,
            a wrong image shape or dtype, labels that do not match the images.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a plain .npy array saved under an .npz name
            raise DataFormatError(f"{path}: holds a single array, not an npz archive with {spec.name}'s splits")
        with loaded as npz:
            for split in spec.splits:
                for part in ("images", "labels"):
                    key = f"{split}_{part}"
                    if key not in npz.files:
                        raise DataFormatError(f"{path}: key {key!r} missing (has {sorted(npz.files)})")
                    arrays[key] = np.asarray(npz[key])
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as err:
        raise DataFormatError(f"{path}: not a readable npz file, truncated or corrupt ({err})") from err
    for split in spec.splits:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
            raise DataFormatError(
                f"{path}: {split}_images has shape {images.shape} / dtype {images.dtype}, expected (N, {size}, {size}) uint8"
            )
        labels = labels.reshape(-1).astype(np.int64)
        if labels.shape[0] != images.shape[0]:
            raise DataFormatError(f"{path}: {labels.shape[0]} {split} labels for {images.shape[0]} images")
        if labels.size and (labels.min() < 0 or labels.max() >= spec.n_classes):
            raise DataFormatError(f"{path}: {split} labels outside 0..{spec.n_classes - 1}")
        arrays[f"{split}_labels"] = labels
        if images.shape[0] != spec.split_sizes[split]:
            warnings.append(
                f"{spec.name} {split}: {images.shape[0]} images, official release has {spec.split_sizes[split]}"
            )
    return arrays, warnings


def write_npz_deterministic(path_or_file, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as a compressed npz whose bytes depend only on the arrays.

    ``np.savez_compressed`` stamps the current time into the zip; here every member has
    a fixed date, so rebuilding the bundled sample gives byte-identical files.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    data = buffer.getvalue()
    if hasattr(path_or_file, "write"):
        path_or_file.write(data)
    else:
        Path(path_or_file).write_bytes(data)
