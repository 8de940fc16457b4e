"""Fetch, import, verify and sample the course datasets.

Every file lands atomically: it is written to a temporary file in the target folder and
renamed into place only after it was checked, so an interrupted or failed run never
leaves a half-written or corrupt file where the course would read it.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from course_utils.files import atomic_write_bytes

from .formats import (
    IDX_FILES,
    DataFormatError,
    DatasetSpec,
    check_idx_pair,
    get_spec,
    md5_bytes,
    medmnist_filename,
    parse_medmnist_npz,
    read_idx_file,
    write_npz_deterministic,
)

__all__ = [
    "Report",
    "atomic_write_bytes",
    "import_from_dir",
    "download",
    "verify",
    "status",
    "build_sample",
    "SAMPLE_PER_CLASS",
]

# images per class in the bundled sample, per split
SAMPLE_PER_CLASS = {"train": 300, "val": 50, "test": 100}
SAMPLE_SEED = 20_231_123


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


def _raw_dir(spec: DatasetSpec, data_dir: Path) -> Path:
    return Path(data_dir) / spec.torchvision_folder / "raw"


# --------------------------------------------------------------------------- idx datasets
def _find_idx_source(spec: DatasetSpec, src_dir: Path, stem: str) -> Path | None:
    """Look for ``stem`` or ``stem.gz`` in src_dir, src_dir/raw and src_dir/<Folder>/raw."""
    for folder in (src_dir, src_dir / "raw", src_dir / spec.torchvision_folder / "raw"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _check_idx_file(spec: DatasetSpec, path: Path) -> tuple[np.ndarray, bytes, str]:
    """Read and check one idx file; return (array, raw bytes, how it was verified).

    Raises:
        DataFormatError: truncated / corrupt / wrong checksum.
    """
    stem = path.name.removesuffix(".gz")
    array, raw = read_idx_file(path)
    known = spec.raw_md5.get(stem)
    if path.suffix == ".gz" and md5_bytes(path.read_bytes()) == spec.gz_md5.get(stem):
        return array, raw, "md5 of the official .gz"
    if known is not None and array.shape[0] == spec.split_sizes["train" if stem.startswith("train") else "test"]:
        if md5_bytes(raw) != known:
            raise DataFormatError(f"{path}: content md5 {md5_bytes(raw)} differs from the official {known} (corrupt copy)")
        return array, raw, "md5 of the official content"
    return array, raw, "structure only (no official checksum for this copy)"


def _import_idx(spec: DatasetSpec, src_dir: Path, data_dir: Path, report: Report) -> None:
    checked: dict[str, tuple[np.ndarray, bytes]] = {}
    for (split, part), stem in IDX_FILES.items():
        source = _find_idx_source(spec, src_dir, stem)
        if source is None:
            report.fail(f"{stem}(.gz) not found in {src_dir} (also looked in raw/ and {spec.torchvision_folder}/raw/)")
            continue
        try:
            array, raw, how = _check_idx_file(spec, source)
        except DataFormatError as err:
            report.fail(str(err))
            continue
        checked[stem] = (array, raw)
        report.lines.append(f"checked {source.name}: shape {array.shape}, verified by {how}")
    for split in ("train", "test"):
        images_stem, labels_stem = IDX_FILES[(split, "images")], IDX_FILES[(split, "labels")]
        if images_stem in checked and labels_stem in checked:
            try:
                partial = check_idx_pair(spec, split, checked[images_stem][0], checked[labels_stem][0], source=str(src_dir))
            except DataFormatError as err:
                report.fail(str(err))
                continue
            if partial:
                report.warnings.append(partial)
    if not report.ok:
        report.lines.append(f"nothing was written to {_raw_dir(spec, data_dir)}: fix the files above and run again")
        return
    # all four checked: only now write, each atomically
    raw_dir = _raw_dir(spec, data_dir)
    for stem, (_, raw) in checked.items():
        atomic_write_bytes(raw_dir / stem, raw)
    report.lines.append(f"wrote {len(checked)} files to {raw_dir} (torchvision layout, uncompressed)")


# --------------------------------------------------------------------------- medmnist
def _import_npz(spec: DatasetSpec, src_dir: Path, data_dir: Path, size: int, report: Report) -> None:
    filename = medmnist_filename(spec.name, size)
    source = next((p for p in (src_dir / filename, src_dir / spec.name / filename) if p.is_file()), None)
    if source is None:
        report.fail(f"{filename} not found in {src_dir}")
        return
    _check_and_place_npz(spec, source, Path(data_dir) / filename, size, report)


def _check_and_place_npz(spec: DatasetSpec, source: Path, target: Path, size: int, report: Report) -> None:
    data = source.read_bytes()
    try:
        _, problems = parse_medmnist_npz(source, spec, size)
    except DataFormatError as err:
        report.fail(str(err))
        report.lines.append(f"nothing was written to {target}")
        return
    if md5_bytes(data) == spec.npz_md5.get(size):
        report.lines.append(f"checked {source.name}: md5 matches the official release")
    else:
        report.lines.append(f"checked {source.name}: structure and split sizes OK")
        report.warnings.append(
            f"{source.name}: md5 {md5_bytes(data)} is not the official {spec.npz_md5.get(size)} (a rebuilt copy?); "
            "medmnist's download=True would reject it, download=False reads it"
        )
    report.warnings.extend(problems)
    if source.resolve() != target.resolve():
        atomic_write_bytes(target, data)
    report.lines.append(f"wrote {target} (medmnist layout)")


# --------------------------------------------------------------------------- public commands
def import_from_dir(name: str, src_dir: Path, data_dir: Path, *, size: int = 28) -> Report:
    """Check the files of dataset ``name`` found in ``src_dir`` and copy them into ``data_dir``.

    Accepts ``.gz`` or uncompressed idx files (MNIST, Fashion-MNIST; for example Debian's
    ``/usr/share/datasets/fashion-mnist``) and medmnist npz files. Files are written only
    when every file of the dataset passed its checks.
    """
    spec = get_spec(name)
    src_dir = Path(src_dir).expanduser()
    report = Report()
    if not src_dir.is_dir():
        report.fail(f"{src_dir} is not a folder")
        return report
    if spec.kind == "idx":
        _import_idx(spec, src_dir, Path(data_dir), report)
    else:
        _import_npz(spec, src_dir, Path(data_dir), size, report)
    return report


def download(name: str, data_dir: Path, *, size: int = 28, quiet: bool = False) -> Report:
    """Download dataset ``name`` with torchvision / medmnist (both check the official md5).

    The download goes to a temporary folder inside ``data_dir``; the files are checked and
    only then moved into place.

    Raises:
        RuntimeError: the download failed (offline, checksum mismatch, missing medmnist);
            the message says how to get the files another way.
    """
    spec = get_spec(name)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=data_dir, prefix=".download-"))
    try:
        try:
            if spec.kind == "idx":
                import torchvision.datasets as tvd

                cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[spec.name]
                for train in (True, False):
                    cls(root=str(staging), train=train, download=True)
                src = staging / spec.torchvision_folder / "raw"
            else:
                try:
                    import medmnist
                except ImportError as err:
                    raise RuntimeError("medmnist is not installed: pip install -e '.[medical]'") from err
                for split in spec.splits:
                    medmnist.PneumoniaMNIST(split=split, root=str(staging), download=True, size=size)
                src = staging
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


def verify(name: str, data_dir: Path, *, size: int = 28, remove_bad: bool = True) -> Report:
    """Check the local copy of ``name``; remove files that are truncated or corrupt.

    A partial but consistent copy (a prefix of the split with a valid header) is kept and
    reported as partial.
    """
    spec = get_spec(name)
    report = Report()
    if spec.kind == "idx":
        raw_dir = _raw_dir(spec, data_dir)
        arrays = {}
        for stem in IDX_FILES.values():
            path = raw_dir / stem
            if not path.is_file():
                report.fail(f"{path} is missing")
                continue
            try:
                array, _, how = _check_idx_file(spec, path)
                arrays[stem] = array
                report.lines.append(f"{path}: OK, shape {array.shape}, verified by {how}")
            except DataFormatError as err:
                report.fail(str(err))
                if remove_bad:
                    path.unlink()
                    report.lines.append(f"removed {path}")
        for split in ("train", "test"):
            pair = [arrays.get(IDX_FILES[(split, p)]) for p in ("images", "labels")]
            if all(a is not None for a in pair):
                try:
                    partial = check_idx_pair(spec, split, pair[0], pair[1], source=str(raw_dir))
                    if partial:
                        report.warnings.append(partial)
                except DataFormatError as err:
                    report.fail(str(err))
        return report
    path = Path(data_dir) / medmnist_filename(spec.name, size)
    if not path.is_file():
        report.fail(f"{path} is missing")
        return report
    try:
        _, problems = parse_medmnist_npz(path, spec, size)
        official = md5_bytes(path.read_bytes()) == spec.npz_md5.get(size)
        report.lines.append(f"{path}: OK ({'official md5' if official else 'structure checked; not the official md5'})")
        report.warnings.extend(problems)
    except DataFormatError as err:
        report.fail(str(err))
        if remove_bad:
            path.unlink()
            report.lines.append(f"removed {path}")
    return report


def status(name: str, data_dir: Path) -> str:
    """One word for ``--list``: ``present``, ``partial``, ``incomplete`` or ``missing``."""
    spec = get_spec(name)
    if spec.kind == "idx":
        raw_dir = _raw_dir(spec, data_dir)
        present = [(raw_dir / stem).is_file() for stem in IDX_FILES.values()]
        if not any(present):
            return "missing"
        if not all(present):
            return "incomplete"
        with open(raw_dir / IDX_FILES[("train", "images")], "rb") as handle:
            n_train = int.from_bytes(handle.read(8)[4:8], "big")
        return "present" if n_train == spec.split_sizes["train"] else f"partial ({n_train:,} train)"
    sizes = [s for s in spec.sizes if (Path(data_dir) / medmnist_filename(spec.name, s)).is_file()]
    return f"present ({', '.join(f'{s} px' for s in sizes)})" if sizes else "missing"


def build_sample(name: str, data_dir: Path, out_dir: Path) -> tuple[Path, dict[str, int]]:
    """Rebuild the bundled sample of ``name`` from the full local copy, deterministically.

    Per split, up to ``SAMPLE_PER_CLASS[split]`` images per class, chosen with a fixed seed
    and kept in their original order. The npz bytes depend only on the source data.

    Returns:
        (path written, number of images per split).
    """
    from course_utils.data import _read_full  # the one reader of full local copies

    spec = get_spec(name)
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for split_index, split in enumerate(spec.splits):
        images, labels, _ = _read_full(spec.name, split, str(Path(data_dir)), 28)
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

