"""Image-folder datasets, optionally with pixel ground-truth masks: one format for the Kermany
chest X-rays, the MVTec AD categories and the bTAD products.

A dataset of this format is a folder per split and class, as the datasets are distributed::

    <root>/<split>/<class folder>/*.png|jpg|jpeg|bmp
    <root>/ground_truth/<class folder>/<image stem><suffix>.png     (datasets with masks)

``ImageFolderFormat`` says which class folders each split has (``split_classes``) and where
the masks are (``MaskRule``). Class 0 is the normal class: its images have no mask (an
all-zero mask is returned), every image of another class must have one.

``python -m data_download NAME --from-dir DIR`` checks the whole layout (every image and
mask decodes, masks match their image's size, no empty class folder, no stray file), copies
the files into ``COURSE_DATA_DIR/<folder>`` through a staging folder that is renamed into
place only when everything passed, and writes ``manifest.json`` there: the image list (split,
label, path, mask) and every file's sha256. Reading uses the manifest, never a new walk of the
folders, so a file added later is not read silently; ``--verify`` re-hashes every file.
These datasets have no bundled sample: when the copy is missing, the error says which
command imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from .formats import DataFormatError, DatasetFormat, DatasetSpec, Report, SplitArrays

__all__ = ["ImageFolderFormat", "MaskRule", "IMAGE_SUFFIXES", "MANIFEST"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class MaskRule:
    """Where the ground-truth mask of an anomalous image lies.

    The mask of ``<split>/<class folder>/<stem>.<ext>`` is
    ``<folder>/<class folder>/<stem><suffix><one of extensions>``: MVTec AD uses
    ``ground_truth/<defect>/000_mask.png``, bTAD ``ground_truth/ko/0000.png`` (or ``.bmp``).
    A mask pixel is anomalous where its gray value is >= 128.
    """

    folder: str = "ground_truth"
    suffix: str = "_mask"
    extensions: tuple[str, ...] = (".png",)


@dataclass(frozen=True)
class _Entry:
    """One image of the dataset: its split, class index, path and mask path (relative to the root)."""

    split: str
    label: int
    path: str
    mask: str | None


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageFolderFormat(DatasetFormat):
    """Images in ``<split>/<class folder>/`` (and masks in ``ground_truth/``) under ``<data>/<folder>``.

    Attributes:
        folder: where the imported copy lives under the data folder, e.g. ``mvtec_ad/bottle``.
        class_folders: the folder name of each class, in class-index order (class 0 = normal).
        split_classes: the class indices that have a folder in each split (MVTec's train split
            holds ``good`` only).
        masks: where the masks of anomalous images are, or None for a dataset without them.
        color: read RGB images as (H, W, 3); False converts to grayscale (H, W).
        source_names: sub-folders of a ``--from-dir`` folder that may hold the layout, e.g.
            ``chest_xray`` (the Mendeley zip) or ``bottle`` (the MVTec AD archive).
    """

    folder: str
    class_folders: tuple[str, ...]
    split_classes: dict[str, tuple[int, ...]]
    masks: MaskRule | None = None
    color: bool = False
    source_names: tuple[str, ...] = field(default_factory=tuple)
    kind = "image-folder"
    downloadable = False  # these sets need a licence click or a manual download: --from-dir only

    @property
    def has_masks(self) -> bool:  # type: ignore[override]
        return self.masks is not None

    # ----- where ------------------------------------------------------------------------------
    def target(self, root: Path) -> Path:
        return Path(root) / self.folder

    def local_files(self, spec: DatasetSpec, root: Path, size: int) -> list[Path]:
        return [self.target(root) / MANIFEST]

    def _layout_hint(self) -> str:
        parts = []
        for split, classes in self.split_classes.items():
            names = [self.class_folders[c] for c in classes]
            parts.append(f"{split}/{names[0] if len(names) == 1 else '{' + ','.join(names) + '}'}/*.png")
        text = ", ".join(parts)
        if self.masks is not None:
            text += f" and {self.masks.folder}/<class>/<image stem>{self.masks.suffix}{self.masks.extensions[0]}"
        return text

    def _source_root(self, src_dir: Path) -> Path:
        """The folder in ``src_dir`` that holds the split folders (src_dir itself or a known sub-folder)."""
        if not src_dir.is_dir():
            raise FileNotFoundError(f"{src_dir} does not exist or is not a folder")
        for candidate in (src_dir, *(src_dir / name for name in self.source_names)):
            if any((candidate / split).is_dir() for split in self.split_classes):
                return candidate
        found = sorted(p.name for p in src_dir.iterdir() if _visible(p))[:10]
        tried = ", ".join([str(src_dir)] + [str(src_dir / n) for n in self.source_names])
        raise FileNotFoundError(f"no {'/'.join(self.split_classes)} folders in {tried} (found: {found}); "
                                f"the layout is {self._layout_hint()}")

    # ----- the layout check -------------------------------------------------------------------
    def scan(self, base: Path) -> list[_Entry]:
        """Walk the layout under ``base`` and return every image with its label and mask.

        Raises:
            FileNotFoundError: a split, class or mask folder, or a mask, is missing.
            DataFormatError: a class folder is empty, or holds sub-folders or non-image files,
                or a split folder holds stray files or unknown folders.
        """
        entries: list[_Entry] = []
        for split, classes in self.split_classes.items():
            split_dir = base / split
            if not split_dir.is_dir():
                raise FileNotFoundError(f"split folder {split_dir} is missing; the layout is {self._layout_hint()}")
            expected = {self.class_folders[c] for c in classes}
            stray = sorted(p.name for p in split_dir.iterdir() if p.is_file() and _visible(p))
            if stray:
                raise DataFormatError(f"{len(stray)} file(s) lie directly in {split_dir} (e.g. {stray[:3]}); every "
                                      f"image must be inside one of the class folders {sorted(expected)}")
            unknown = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p) and p.name not in expected)
            if unknown:
                raise DataFormatError(f"unexpected folder(s) {unknown} in {split_dir}: only {sorted(expected)} are "
                                      "allowed (names are case-sensitive)")
            for label in classes:
                for image in self._class_images(split_dir / self.class_folders[label]):
                    mask = self._mask_of(base, image, label)
                    entries.append(_Entry(split, label, image.relative_to(base).as_posix(),
                                          None if mask is None else mask.relative_to(base).as_posix()))
        return entries

    @staticmethod
    def _class_images(folder: Path) -> list[Path]:
        if not folder.is_dir():
            found = sorted(p.name for p in folder.parent.iterdir() if p.is_dir())
            raise FileNotFoundError(f"class folder {folder} is missing (found: {found}; names are case-sensitive)")
        entries = [p for p in folder.iterdir() if _visible(p)]
        nested = sorted(p.name for p in entries if p.is_dir())
        if nested:
            raise DataFormatError(f"sub-folder(s) {nested[:3]} inside {folder}: images must lie directly in the class folder")
        others = sorted(p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES)
        if others:
            raise DataFormatError(f"{len(others)} non-image file(s) in {folder} (e.g. {others[:3]}); "
                                  f"expected {', '.join(IMAGE_SUFFIXES)} images only")
        if not entries:
            raise DataFormatError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): the "
                                  "download or unpacking is incomplete")
        return sorted(entries)

    def _mask_of(self, base: Path, image: Path, label: int) -> Path | None:
        if self.masks is None or label == 0:
            return None
        folder = base / self.masks.folder / self.class_folders[label]
        candidates = [folder / f"{image.stem}{self.masks.suffix}{ext}" for ext in self.masks.extensions]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"the mask of {image} is missing: expected {candidates[0]}"
                                + (f" (or {', '.join(c.suffix for c in candidates[1:])})" if len(candidates) > 1 else ""))

    # ----- decoding ---------------------------------------------------------------------------
    def _decode(self, path: Path, size: int | None, *, mask: bool = False) -> np.ndarray:
        """uint8 pixels of ``path``, resized to ``size`` x ``size`` (None: original size).

        Images: bilinear resize, aspect ratio not kept (as AE-FLOW and most MVTec code do);
        (H, W) or (H, W, 3). Masks: nearest-neighbour resize, then {0, 1} (gray >= 128).
        """
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.load()
                converted = image.convert("L" if mask or not self.color else "RGB")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise DataFormatError(f"cannot read {'mask' if mask else 'image'} {path} ({type(error).__name__}: "
                                  f"{error}); the file is corrupt or not an image: replace it and import again") from error
        if size is not None:
            converted = converted.resize((size, size), Image.NEAREST if mask else Image.BILINEAR)
        pixels = np.asarray(converted, dtype=np.uint8)
        return (pixels >= 128).astype(np.uint8) if mask else pixels

    def _check_entries(self, base: Path, entries: list[_Entry]) -> None:
        """Decode every image and mask once; a mask must have its image's width and height."""
        for entry in entries:
            image = self._decode(base / entry.path, None)
            if entry.mask is not None:
                mask = self._decode(base / entry.mask, None, mask=True)
                if mask.shape[:2] != image.shape[:2]:
                    raise DataFormatError(f"mask {base / entry.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                                          f"{base / entry.path} is {image.shape[1]}x{image.shape[0]} px")

    # ----- the format interface ---------------------------------------------------------------
    def _manifest(self, spec: DatasetSpec, root: Path) -> tuple[list[_Entry], dict[str, str]]:
        """The manifest's image list and sha256 per file.

        Raises:
            DataFormatError: the manifest is unreadable, of another version or dataset, or malformed.
        """
        path = self.target(root) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("version") != MANIFEST_VERSION or manifest.get("dataset") != spec.name:
                raise ValueError(f"version {manifest.get('version')} / dataset {manifest.get('dataset')!r}")
            entries = [_Entry(**item) for item in manifest["images"]]
            return entries, {str(rel): str(digest) for rel, digest in manifest["sha256"].items()}
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as error:
            raise DataFormatError(f"{path} is unreadable or not {spec.name}'s manifest ({error}); import the dataset "
                                  f"again: python -m data_download {spec.name} --from-dir DIR") from error

    def read(self, spec: DatasetSpec, split: str, root: Path, size: int) -> SplitArrays:
        base = self.target(root)
        entries = [entry for entry in self._manifest(spec, root)[0] if entry.split == split]
        images = np.stack([self._decode(base / e.path, size) for e in entries]) if entries else np.zeros(
            (0, size, size, 3) if self.color else (0, size, size), np.uint8)
        labels = np.array([e.label for e in entries], dtype=np.int64)
        masks = None
        if self.masks is not None:
            masks = np.zeros((len(entries), size, size), dtype=np.uint8)
            for i, entry in enumerate(entries):
                if entry.mask is not None:
                    masks[i] = self._decode(base / entry.mask, size, mask=True)
        official = spec.split_sizes.get(split)
        note = "" if official in (None, len(entries)) else (
            f"{spec.name} {split}: PARTIAL copy, {len(entries):,} of {official:,} images; results will differ "
            "from the published protocol")
        return SplitArrays(images, labels, masks, note)

    def import_from_dir(self, spec: DatasetSpec, src_dir: Path, root: Path, size: int, report: Report) -> None:
        target = self.target(root)
        try:
            base = self._source_root(src_dir)
            entries = self.scan(base)
            self._check_entries(base, entries)
        except (FileNotFoundError, DataFormatError) as error:
            report.fail(str(error))
            report.lines.append(f"nothing was written to {target}: fix the files above and run again")
            return
        for split in self.split_classes:
            count = sum(e.split == split for e in entries)
            report.lines.append(f"checked {split}: {count:,} images"
                                + (f" ({sum(e.split == split and e.mask is not None for e in entries):,} with masks)"
                                   if self.masks is not None else ""))
            official = spec.split_sizes.get(split)
            if official is not None and count != official:
                report.warnings.append(f"{spec.name} {split}: {count:,} images, the official release has {official:,}")
        files = sorted({e.path for e in entries} | {e.mask for e in entries if e.mask is not None})
        manifest = {"version": MANIFEST_VERSION, "dataset": spec.name, "format": self.kind,
                    "images": [e.__dict__ for e in entries], "sha256": {}}
        if base.resolve() == target.resolve():  # already in place: the manifest is all that is missing
            manifest["sha256"] = {rel: _sha256(base / rel) for rel in files}
            atomic_write_bytes(target / MANIFEST, json.dumps(manifest, indent=1).encode())
            report.lines.append(f"checked the copy in place; wrote {target / MANIFEST}")
            return
        Path(root).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".import-"))
        try:
            for rel in files:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(base / rel, staging / rel)
                manifest["sha256"][rel] = _sha256(staging / rel)
            atomic_write_bytes(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
            _swap_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report.lines.append(f"wrote {len(files):,} files and {MANIFEST} to {target}")

    def verify(self, spec: DatasetSpec, root: Path, size: int, report: Report, remove_bad: bool) -> None:
        target = self.target(root)
        if not (target / MANIFEST).is_file():
            report.fail(f"{target / MANIFEST} is missing: import the dataset with "
                        f"python -m data_download {spec.name} --from-dir DIR")
            return
        try:
            _, sha256 = self._manifest(spec, root)
        except DataFormatError as error:
            report.fail(str(error))
            return
        bad = []
        for rel, digest in sha256.items():
            path = target / rel
            if not path.is_file():
                report.fail(f"{path} is missing")
                bad.append(path)
            elif _sha256(path) != digest:
                report.fail(f"{path}: sha256 differs from the manifest (changed or corrupt)")
                bad.append(path)
        if not bad:
            report.lines.append(f"{target}: OK, {len(sha256):,} files match their sha256")
        elif remove_bad:
            for path in bad:
                path.unlink(missing_ok=True)
            (target / MANIFEST).unlink()
            report.lines.append(f"removed {sum(p.name != MANIFEST for p in bad)} bad file(s) and {MANIFEST}: import "
                                f"the dataset again (python -m data_download {spec.name} --from-dir DIR)")

    def status(self, spec: DatasetSpec, root: Path) -> str:
        target = self.target(root)
        if not (target / MANIFEST).is_file():
            return "not imported (no manifest)" if target.is_dir() else "missing"
        try:
            entries, _ = self._manifest(spec, root)
        except DataFormatError:
            return "corrupt manifest"
        counts = {split: sum(entry.split == split for entry in entries) for split in spec.splits}
        complete = all(counts[s] == spec.split_sizes[s] for s in spec.splits)
        return "present" if complete else "partial (" + ", ".join(f"{n:,} {s}" for s, n in counts.items()) + ")"


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the checked ``staging`` folder to ``target``; a previous copy is replaced only after
    the new one is complete, and removed only once the rename succeeded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = None
    if target.exists():
        previous = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, previous / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        if previous is not None:  # put the old copy back
            os.replace(previous / target.name, target)
        raise
    finally:
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
