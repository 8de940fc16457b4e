"""How the course's datasets are stored on disk: the format classes and their file parsers.

A dataset's *format* knows everything that depends on how its files look: where they live
under the data folder, how to fetch them, import them from a folder, verify them and read
one split. ``registry.DATASETS`` pairs each dataset with one format instance, so adding a
dataset of a known format is one registry entry, and a new format is one class here (or in
``folders.py``) that implements :class:`DatasetFormat`.

Layouts written under the data folder (the ones torchvision and medmnist read with
``download=False``, so a copy made here also serves those libraries):

- ``<data>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed idx);
- ``<data>/FashionMNIST/raw/...`` (same names);
- ``<data>/pneumoniamnist.npz`` (28 px) and ``<data>/pneumoniamnist_{64,128,224}.npz``;
- image folders (``folders.py``): ``<data>/<folder>/`` in the dataset's own layout plus a
  ``manifest.json`` with every file's sha256.
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

from ..files import atomic_write_bytes

__all__ = [
    "DataFormatError",
    "DatasetSpec",
    "Report",
    "SplitArrays",
    "DatasetFormat",
    "IdxFormat",
    "MedMNISTFormat",
    "IDX_FILES",
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


@dataclass
class Report:
    """What a data command did: lines for the user, and whether everything is usable."""

    ok: bool = True
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.ok = False
        self.lines.append("ERROR: " + text)

    def __str__(self) -> str:
        return "\n".join(self.lines + ["WARNING: " + w for w in self.warnings])


@dataclass
class SplitArrays:
    """One split of a local copy, as read from disk.

    Attributes:
        images: uint8, (N, H, W) for grayscale or (N, H, W, 3) for colour datasets.
        labels: int64 (N,), class indices into the spec's ``class_names``.
        masks: uint8 (N, H, W) in {0, 1} (1 = anomalous pixel; all 0 for normal images) for
            datasets with pixel ground truth, else None.
        note: "" for a complete copy, else why it is partial (counts differ from the official split).
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    note: str = ""


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# idx file stem per (split, part)
IDX_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


class DatasetFormat:
    """How one kind of dataset is stored: the interface every format class implements.

    A format instance carries the facts of ONE dataset that depend on its format (folder
    names, checksums); the facts every dataset has (classes, split sizes, licence) are in
    its ``DatasetSpec``. Methods receive the spec and the data folder ``root``
    (``COURSE_DATA_DIR``); ``size`` is the image side in px where a format stores several.
    """

    kind: str = "?"  # a short name for listings ("idx", "medmnist", "image-folder")
    has_masks: bool = False  # pixel ground truth for anomalous images
    downloadable: bool = True  # ``fetch`` can download it (False: import from a folder only)

    def local_files(self, spec: DatasetSpec, root: Path, size: int) -> list[Path]:
        """The files a complete local copy consists of (their mtimes key the in-memory read cache)."""
        raise NotImplementedError

    def present(self, spec: DatasetSpec, root: Path, size: int) -> bool:
        """True when a local copy is there to read (whether it is complete is for ``read`` to say)."""
        return all(path.is_file() for path in self.local_files(spec, root, size))

    def read(self, spec: DatasetSpec, split: str, root: Path, size: int) -> SplitArrays:
        """Read one split of the local copy.

        Raises:
            DataFormatError: a file is truncated, corrupt or inconsistent (naming it).
        """
        raise NotImplementedError

    def import_from_dir(self, spec: DatasetSpec, src_dir: Path, root: Path, size: int, report: Report) -> None:
        """Check the dataset's files in ``src_dir`` and write them into ``root``, atomically,
        only when every file passed; problems go into ``report``."""
        raise NotImplementedError

    def fetch(self, spec: DatasetSpec, staging: Path, size: int) -> Path:
        """Download the dataset into the empty folder ``staging``; return the folder that
        ``import_from_dir`` then imports from.

        Raises:
            RuntimeError: no download exists for this format or it failed; the message says
                how to get the files another way.
        """
        raise RuntimeError(
            f"{spec.name} cannot be downloaded by the course: get it from {spec.homepage}, then run "
            f"python -m data_download {spec.name} --from-dir DIR"
        )

    def verify(self, spec: DatasetSpec, root: Path, size: int, report: Report, remove_bad: bool) -> None:
        """Check the local copy; with ``remove_bad`` remove what is corrupt, so it is never read."""
        raise NotImplementedError

    def status(self, spec: DatasetSpec, root: Path) -> str:
        """A few words for ``--list``: ``present``, ``partial (...)``, ``missing``, ..."""
        raise NotImplementedError


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset: classes, official split sizes, licence, and its format.

    Attributes:
        name: the name used everywhere (``load_dataset``, the command line, result files).
        format: how its files are stored, fetched, imported, verified and read.
        class_names: one name per class index; class 0 is the normal class of the
            industrial / medical sets (``good``, ``ok``, ``normal``).
        split_sizes: official number of images per split; a local copy with other counts
            is read but reported as partial.
        license, citation: shown by ``--list`` and in the README.
        homepage: where to get the files when the course cannot download them.
        sizes: image sides (px) the dataset comes in; None = any side >= 8 (image folders
            are resized when read).
        default_size: the side ``load_dataset`` uses when none is given.
        has_sample: a bundled sample exists in ``course_utils/sample_data/<name>.npz``.
    """

    name: str
    format: DatasetFormat
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    license: str
    citation: str
    homepage: str = ""
    sizes: tuple[int, ...] | None = (28,)
    default_size: int = 28
    has_sample: bool = False

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_sizes)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_masks(self) -> bool:
        """True when anomalous test images come with pixel ground truth."""
        return self.format.has_masks

    def check_size(self, size: int) -> None:
        """Raise ValueError unless the dataset can be read at ``size`` px."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"size must be an integer number of px, got {size!r}")
        if self.sizes is None:
            if size < 8:
                raise ValueError(f"{self.name}: size must be >= 8 px, got {size}")
        elif size not in self.sizes:
            raise ValueError(f"{self.name} comes in sizes {self.sizes} px, not {size}")


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


def _idx_source(folder_name: str, src_dir: Path, stem: str) -> Path | None:
    """Look for ``stem`` or ``stem.gz`` in src_dir, src_dir/raw and src_dir/<folder_name>/raw."""
    for folder in (src_dir, src_dir / "raw", src_dir / folder_name / "raw"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


@dataclass(frozen=True)
class IdxFormat(DatasetFormat):
    """MNIST-style idx files (four per dataset), read by torchvision's dataset classes.

    Attributes:
        folder: torchvision's folder name under the data folder (``MNIST``, ``FashionMNIST``);
            the files live in ``<data>/<folder>/raw/`` uncompressed.
        torchvision_class: the ``torchvision.datasets`` class that downloads it.
        raw_md5: md5 of the UNCOMPRESSED idx files of the official release (None: not known).
        gz_md5: md5 of the official ``.gz`` files, as torchvision lists them.
    """

    folder: str
    torchvision_class: str
    raw_md5: dict[str, str | None] = field(default_factory=dict)
    gz_md5: dict[str, str] = field(default_factory=dict)
    kind = "idx"

    def raw_dir(self, root: Path) -> Path:
        return Path(root) / self.folder / "raw"

    def local_files(self, spec: DatasetSpec, root: Path, size: int) -> list[Path]:
        return [self.raw_dir(root) / stem for stem in IDX_FILES.values()]

    def read(self, spec: DatasetSpec, split: str, root: Path, size: int) -> SplitArrays:
        raw = self.raw_dir(root)
        images, _ = read_idx_file(raw / IDX_FILES[(split, "images")])
        labels, _ = read_idx_file(raw / IDX_FILES[(split, "labels")])
        note = check_idx_pair(spec, split, images, labels, source=str(raw)) or ""
        return SplitArrays(images, labels.astype(np.int64), None, note)

    def check_file(self, spec: DatasetSpec, path: Path) -> tuple[np.ndarray, bytes, str]:
        """Read and check one idx file; return (array, raw bytes, how it was verified).

        Raises:
            DataFormatError: truncated / corrupt / wrong checksum.
        """
        stem = path.name.removesuffix(".gz")
        array, raw = read_idx_file(path)
        known = self.raw_md5.get(stem)
        if path.suffix == ".gz" and md5_bytes(path.read_bytes()) == self.gz_md5.get(stem):
            return array, raw, "md5 of the official .gz"
        if known is not None and array.shape[0] == spec.split_sizes["train" if stem.startswith("train") else "test"]:
            if md5_bytes(raw) != known:
                raise DataFormatError(f"{path}: content md5 {md5_bytes(raw)} differs from the official {known} (corrupt copy)")
            return array, raw, "md5 of the official content"
        return array, raw, "structure only (no official checksum for this copy)"

    def _check_pairs(self, spec: DatasetSpec, arrays: dict[str, np.ndarray], source: str, report: Report) -> None:
        """Check each split's images / labels pair that is complete in ``arrays`` (keyed by stem)."""
        for split in ("train", "test"):
            images, labels = (arrays.get(IDX_FILES[(split, part)]) for part in ("images", "labels"))
            if images is None or labels is None:
                continue
            try:
                partial = check_idx_pair(spec, split, images, labels, source=source)
            except DataFormatError as err:
                report.fail(str(err))
                continue
            if partial:
                report.warnings.append(partial)

    def import_from_dir(self, spec: DatasetSpec, src_dir: Path, root: Path, size: int, report: Report) -> None:
        checked: dict[str, tuple[np.ndarray, bytes]] = {}
        for stem in IDX_FILES.values():
            source = _idx_source(self.folder, src_dir, stem)
            if source is None:
                report.fail(f"{stem}(.gz) not found in {src_dir} (also looked in raw/ and {self.folder}/raw/)")
                continue
            try:
                array, raw, how = self.check_file(spec, source)
            except DataFormatError as err:
                report.fail(str(err))
                continue
            checked[stem] = (array, raw)
            report.lines.append(f"checked {source.name}: shape {array.shape}, verified by {how}")
        self._check_pairs(spec, {stem: array for stem, (array, _) in checked.items()}, str(src_dir), report)
        raw_dir = self.raw_dir(root)
        if not report.ok:
            report.lines.append(f"nothing was written to {raw_dir}: fix the files above and run again")
            return
        # all four checked: only now write, each atomically
        for stem, (_, raw) in checked.items():
            atomic_write_bytes(raw_dir / stem, raw)
        report.lines.append(f"wrote {len(checked)} files to {raw_dir} (torchvision layout, uncompressed)")

    def fetch(self, spec: DatasetSpec, staging: Path, size: int) -> Path:
        import torchvision.datasets as tvd

        dataset_class = getattr(tvd, self.torchvision_class)
        for train in (True, False):
            dataset_class(root=str(staging), train=train, download=True)
        return self.raw_dir(staging)

    def verify(self, spec: DatasetSpec, root: Path, size: int, report: Report, remove_bad: bool) -> None:
        arrays = {}
        for path in self.local_files(spec, root, size):
            if not path.is_file():
                report.fail(f"{path} is missing")
                continue
            try:
                array, _, how = self.check_file(spec, path)
                arrays[path.name] = array
                report.lines.append(f"{path}: OK, shape {array.shape}, verified by {how}")
            except DataFormatError as err:
                report.fail(str(err))
                if remove_bad:
                    path.unlink()
                    report.lines.append(f"removed {path}")
        self._check_pairs(spec, arrays, str(self.raw_dir(root)), report)

    def status(self, spec: DatasetSpec, root: Path) -> str:
        files = self.local_files(spec, root, 28)
        present = [path.is_file() for path in files]
        if not any(present):
            return "missing"
        if not all(present):
            return "incomplete"
        with open(self.raw_dir(root) / IDX_FILES[("train", "images")], "rb") as handle:
            n_train = int.from_bytes(handle.read(8)[4:8], "big")
        return "present" if n_train == spec.split_sizes["train"] else f"partial ({n_train:,} train)"


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


@dataclass(frozen=True)
class MedMNISTFormat(DatasetFormat):
    """A MedMNIST npz file per image size, read by the ``medmnist`` package.

    Attributes:
        medmnist_class: the ``medmnist`` class that downloads it (``PneumoniaMNIST``).
        npz_md5: md5 of the official npz per image size, as medmnist's INFO lists them.
    """

    medmnist_class: str
    npz_md5: dict[int, str] = field(default_factory=dict)
    kind = "medmnist"

    def path(self, spec: DatasetSpec, root: Path, size: int) -> Path:
        return Path(root) / medmnist_filename(spec.name, size)

    def local_files(self, spec: DatasetSpec, root: Path, size: int) -> list[Path]:
        return [self.path(spec, root, size)]

    def read(self, spec: DatasetSpec, split: str, root: Path, size: int) -> SplitArrays:
        arrays, problems = parse_medmnist_npz(self.path(spec, root, size), spec, size)
        note = "; ".join(problems)
        return SplitArrays(arrays[f"{split}_images"], arrays[f"{split}_labels"], None, note)

    def import_from_dir(self, spec: DatasetSpec, src_dir: Path, root: Path, size: int, report: Report) -> None:
        filename = medmnist_filename(spec.name, size)
        source = next((p for p in (src_dir / filename, src_dir / spec.name / filename) if p.is_file()), None)
        if source is None:
            report.fail(f"{filename} not found in {src_dir}")
            return
        target = self.path(spec, root, size)
        data = source.read_bytes()
        try:
            _, problems = parse_medmnist_npz(source, spec, size)
        except DataFormatError as err:
            report.fail(str(err))
            report.lines.append(f"nothing was written to {target}")
            return
        if md5_bytes(data) == self.npz_md5.get(size):
            report.lines.append(f"checked {source.name}: md5 matches the official release")
        else:
            report.lines.append(f"checked {source.name}: structure and split sizes OK")
            report.warnings.append(
                f"{source.name}: md5 {md5_bytes(data)} is not the official {self.npz_md5.get(size)} (a rebuilt copy?); "
                "medmnist's download=True would reject it, download=False reads it"
            )
        report.warnings.extend(problems)
        if source.resolve() != target.resolve():
            atomic_write_bytes(target, data)
        report.lines.append(f"wrote {target} (medmnist layout)")

    def fetch(self, spec: DatasetSpec, staging: Path, size: int) -> Path:
        try:
            import medmnist
        except ImportError as err:
            raise RuntimeError("medmnist is not installed: pip install -e '.[medical]'") from err
        dataset_class = getattr(medmnist, self.medmnist_class)
        for split in spec.splits:
            dataset_class(split=split, root=str(staging), download=True, size=size)
        return staging

    def verify(self, spec: DatasetSpec, root: Path, size: int, report: Report, remove_bad: bool) -> None:
        path = self.path(spec, root, size)
        if not path.is_file():
            report.fail(f"{path} is missing")
            return
        try:
            _, problems = parse_medmnist_npz(path, spec, size)
            official = md5_bytes(path.read_bytes()) == self.npz_md5.get(size)
            report.lines.append(f"{path}: OK ({'official md5' if official else 'structure checked; not the official md5'})")
            report.warnings.extend(problems)
        except DataFormatError as err:
            report.fail(str(err))
            if remove_bad:
                path.unlink()
                report.lines.append(f"removed {path}")

    def status(self, spec: DatasetSpec, root: Path) -> str:
        sizes = [s for s in spec.sizes if self.path(spec, root, s).is_file()]
        return f"present ({', '.join(f'{s} px' for s in sizes)})" if sizes else "missing"
