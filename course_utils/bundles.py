"""Checkpoint bundles: the filled checkpoint cache as ONE file, to share trained models offline.

A teaching assistant (or anyone with a GPU or a free evening) fills ``COURSE_CACHE_DIR`` with
the benchmark commands, exports it, and puts the file on the course page; students import it
and the notebooks then load every model instead of training it::

    python -m course_utils.bundles export course-checkpoints.tar      # in the filled clone
    python -m course_utils.bundles inspect course-checkpoints.tar     # what is inside
    python -m course_utils.bundles import course-checkpoints.tar      # in any other clone

A bundle is an uncompressed tar file (checkpoints are float tensors, which hardly compress)::

    course-bundle/manifest.json
    course-bundle/checkpoints/<name>-<16 hex digits>.pt      one per cached checkpoint

The manifest (``BUNDLE_KIND``, ``BUNDLE_FORMAT``) records the course version, the creation
time (UTC), the git commit of the exporting clone when known, and per checkpoint its file
name, checkpoint name, full cache key, cache config, model version strings, size and SHA-256.

Import is all-or-nothing per file and verifies before it writes: every member name is checked
(no absolute paths, no ``..``, no links: a bundle that tries path traversal is refused), the
manifest must be a course manifest of THIS course version and list exactly the files in the
archive, and every file is extracted into a staging folder inside the cache folder, where its
size, SHA-256, checkpoint format and config (against the manifest and the key in its name) are
checked. Only when every file passed are they renamed into the cache; a truncated, corrupted
or mismatched bundle raises :class:`BundleError` and leaves the cache as it was. Entries whose
model version no longer matches the code (``current_model_versions``) are named and skipped;
an existing checkpoint of the same name is kept (and reported) unless ``overwrite=True``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import torch

from . import __version__ as COURSE_VERSION
from . import config as course_config
from .checkpoints import CHECKPOINT_FILE, CHECKPOINT_FORMAT, config_key, model_versions
from .files import atomic_write

__all__ = [
    "BUNDLE_KIND",
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleEntry",
    "ImportReport",
    "current_model_versions",
    "git_commit",
    "export_bundle",
    "read_manifest",
    "import_bundle",
    "main",
]

BUNDLE_KIND = "anomaly-course-checkpoint-bundle"
BUNDLE_FORMAT = 1
_ROOT = "course-bundle"
_MANIFEST = f"{_ROOT}/manifest.json"
_CHECKPOINTS = f"{_ROOT}/checkpoints"
_VERSION = re.compile(r"(?P<family>.+)-v(?P<number>\d+)")
_CHUNK = 1 << 20


class BundleError(RuntimeError):
    """A bundle that cannot be exported or imported; the message names the file and what to do."""


@dataclass(frozen=True)
class BundleEntry:
    """One checkpoint of a bundle, as its manifest lists it.

    Attributes:
        file: the checkpoint's file name in the cache, ``<name>-<key[:16]>.pt``.
        name: the checkpoint name (``"ae-l2-d32"``).
        config_key: the 64 hex digits of ``checkpoints.config_key(config)``.
        config: the cache config the checkpoint was trained with.
        model_versions: the model version strings in ``config`` (e.g. ``["ConvAutoencoder-v2"]``).
        size: file size in bytes.
        sha256: 64 hex digits.
    """

    file: str
    name: str
    config_key: str
    config: dict[str, Any]
    model_versions: list[str]
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "name": self.name, "config_key": self.config_key, "config": self.config,
                "model_versions": self.model_versions, "size": self.size, "sha256": self.sha256}


@dataclass
class ImportReport:
    """What :func:`import_bundle` did, one list of file names per outcome."""

    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)  # same bytes already in the cache
    kept_existing: list[str] = field(default_factory=list)  # another file of that name was kept (no overwrite)
    replaced: list[str] = field(default_factory=list)  # another file of that name was replaced (overwrite)
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> why (model version, format)

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [f"imported {len(self.imported)} checkpoint(s), {len(self.already_present)} already present"]
        if self.replaced:
            lines.append(f"replaced {len(self.replaced)} existing checkpoint(s) that differed: "
                         + ", ".join(self.replaced))
        if self.kept_existing:
            lines.append(f"kept {len(self.kept_existing)} existing checkpoint(s) that differ from the bundle's "
                         "(import with --overwrite to replace them): " + ", ".join(self.kept_existing))
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        return "\n".join(lines)


def current_model_versions() -> dict[str, str]:
    """{model family: version string} of the models this code trains, e.g.
    ``{"ConvAutoencoder": "ConvAutoencoder-v2", ...}``. A new cached model adds its ``MODEL_VERSION`` here."""
    from .models import autoencoder, fanogan
    from .models.aeflow import detector as aeflow_detector
    from .models.aeflow import flowgmm
    from .models.glow import detector as glow_detector

    versions = (autoencoder.MODEL_VERSION, fanogan.GAN_MODEL_VERSION, fanogan.ENCODER_MODEL_VERSION,
                glow_detector.MODEL_VERSION, aeflow_detector.MODEL_VERSION, flowgmm.MODEL_VERSION)
    return {_family(v): v for v in versions}


def _family(version: str) -> str:
    match = _VERSION.fullmatch(version)
    return match["family"] if match else version


def _stale_reason(entry: BundleEntry, current: dict[str, str]) -> str | None:
    """Why ``entry`` no longer fits the code (None if it does). A config without a model version (a
    notebook's own ``train_or_load``) is keyed by its whole config, so it cannot be loaded wrongly."""
    for version in entry.model_versions:
        family = _family(version)
        if family not in current:
            return f"model {version!r} is not trained by this version of the course"
        if current[family] != version:
            return f"made by model version {version!r}, the code is now at {current[family]!r}"
    return None


def git_commit(folder: Path | None = None, *, short: bool = False) -> str | None:
    """The commit hash (``short``: abbreviated) of the git checkout at ``folder`` (default: the
    course's), or None when git or the checkout is missing."""
    try:
        result = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
                                capture_output=True, text=True,
                                cwd=folder or course_config.REPO_ROOT, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def _cached_files(cache: Path) -> list[Path]:
    """The checkpoint files in ``cache`` (not lock files, staging folders or anything else)."""
    if not cache.is_dir():
        return []
    return sorted(p for p in cache.iterdir() if p.is_file() and CHECKPOINT_FILE.fullmatch(p.name))


def _read_checkpoint(data: bytes, where: str) -> dict[str, Any]:
    """The payload of a checkpoint file's bytes; BundleError when it is not a course checkpoint."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean: unusable file
        raise BundleError(f"{where} is not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or "state_dict" not in payload or not isinstance(payload.get("config"), dict):
        raise BundleError(f"{where} is not a course checkpoint (no state_dict / config)")
    return payload


def _entry_for(path: Path) -> BundleEntry:
    data = path.read_bytes()
    payload = _read_checkpoint(data, str(path))
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise BundleError(f"{path} has checkpoint format {payload.get('format')!r}, the code writes "
                          f"{CHECKPOINT_FORMAT}: delete it (the notebook retrains it) and export again.")
    cfg = payload["config"]
    key = config_key(cfg)
    match = CHECKPOINT_FILE.fullmatch(path.name)
    if match is None or match["key"] != key[:16]:
        raise BundleError(f"{path}: its name does not hold the key of its stored config ({key[:16]}); it was "
                          "renamed or is damaged. Delete it and export again.")
    entry = BundleEntry(file=path.name, name=match["name"], config_key=key, config=cfg,
                        model_versions=model_versions(cfg), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest())
    return entry


def export_bundle(bundle: Path, cache: Path | None = None) -> dict[str, Any]:
    """Write every checkpoint of ``cache`` (default ``COURSE_CACHE_DIR``) into the tar file ``bundle``.

    The file is written atomically: it appears complete, or not at all. Returns the manifest.

    Raises:
        BundleError: the cache holds no checkpoint, or a file in it is not a readable checkpoint
            whose name matches its config (the message names it: delete it and export again).
    """
    cache = course_config.cache_dir() if cache is None else Path(cache)
    files = _cached_files(cache)
    if not files:
        raise BundleError(f"nothing to export: {cache} holds no checkpoints. Fill it first, e.g. with "
                          "`python -m benchmarks.one_class --method ae-ssim --dataset mnist --jobs 2`.")
    entries = [_entry_for(path) for path in files]
    manifest = {
        "kind": BUNDLE_KIND,
        "bundle_format": BUNDLE_FORMAT,
        "course_version": COURSE_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "checkpoint_format": CHECKPOINT_FORMAT,
        "torch_version": str(torch.__version__),
        "entries": [e.to_dict() for e in entries],
    }

    def write(handle: BinaryIO) -> None:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_member(tar, _MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
            for entry in entries:  # one file in memory at a time; the bytes archived are the bytes hashed
                data = (cache / entry.file).read_bytes()
                if hashlib.sha256(data).hexdigest() != entry.sha256:
                    raise BundleError(f"{cache / entry.file} changed during the export (is a job still training?); "
                                      "export again when no job writes to the cache.")
                _add_member(tar, f"{_CHECKPOINTS}/{entry.file}", data)

    atomic_write(Path(bundle), write)
    return manifest


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(datetime.datetime.now().timestamp())
    tar.addfile(info, io.BytesIO(data))


def _open(bundle: Path) -> tarfile.TarFile:
    bundle = Path(bundle)
    if not bundle.is_file():
        raise BundleError(f"no bundle at {bundle}; download the course's checkpoint bundle (a .tar file) first.")
    try:
        return tarfile.open(bundle, mode="r:")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{bundle} is not a checkpoint bundle, or it is truncated or damaged ({error}). "
                          "Download it again.") from error


def _members(tar: tarfile.TarFile, bundle: Path) -> dict[str, tarfile.TarInfo]:
    """{member name: info}, after refusing anything but plain files at the two allowed places."""
    try:
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{bundle} is truncated or damaged ({error}); download it again.") from error
    found: dict[str, tarfile.TarInfo] = {}
    for info in members:
        name = info.name
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or ":" in name:
            raise BundleError(f"{bundle} holds a member with an unsafe path ({name!r}); refusing the bundle. "
                              "Only import bundles from the course page.")
        if info.isdir() and name.rstrip("/") in (_ROOT, _CHECKPOINTS):
            continue
        if not info.isfile():
            raise BundleError(f"{bundle} holds {name!r}, which is not a plain file (a link or device); "
                              "refusing the bundle.")
        in_checkpoints = len(parts) == 3 and f"{parts[0]}/{parts[1]}" == _CHECKPOINTS
        if name != _MANIFEST and not (in_checkpoints and CHECKPOINT_FILE.fullmatch(parts[2])):
            raise BundleError(f"{bundle} holds an unexpected member {name!r}; it is not a course checkpoint bundle.")
        if name in found:
            raise BundleError(f"{bundle} holds {name!r} twice; it is damaged. Download it again.")
        found[name] = info
    return found


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, bundle: Path) -> bytes:
    try:
        handle = tar.extractfile(info)
        data = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{bundle} is truncated or damaged at {info.name!r} ({error}); download it again.") from error
    if len(data) != info.size:
        raise BundleError(f"{bundle} is truncated at {info.name!r}; download it again.")
    return data


def _parse_manifest(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], bundle: Path) -> dict[str, Any]:
    if _MANIFEST not in members:
        raise BundleError(f"{bundle} has no {_MANIFEST}; it is not a course checkpoint bundle.")
    try:
        manifest = json.loads(_read_member(tar, members[_MANIFEST], bundle))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"the manifest of {bundle} is not valid JSON ({error}); download the bundle again.") from error
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise BundleError(f"{bundle} is not a course checkpoint bundle (its manifest's kind is not {BUNDLE_KIND!r}).")
    if manifest.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(f"{bundle} has bundle format {manifest.get('bundle_format')!r}; this code reads format "
                          f"{BUNDLE_FORMAT}. Update the course, or ask for a bundle made with your version.")
    if manifest.get("course_version") != COURSE_VERSION:
        raise BundleError(f"{bundle} was made by course version {manifest.get('course_version')!r}, this clone is "
                          f"version {COURSE_VERSION!r}: its checkpoints may not fit this code. Use the bundle of "
                          "your course version (or update your clone to the bundle's).")
    entries = manifest.get("entries")
    if not isinstance(entries, list):
        raise BundleError(f"the manifest of {bundle} has no list of entries; it is damaged.")
    return manifest


def _entries(manifest: dict[str, Any], bundle: Path) -> list[BundleEntry]:
    entries = []
    for raw in manifest["entries"]:
        try:
            entry = BundleEntry(**{k: raw[k] for k in BundleEntry.__dataclass_fields__})
        except (KeyError, TypeError) as error:
            raise BundleError(f"the manifest of {bundle} has a malformed entry ({error}); it is damaged.") from error
        if not isinstance(entry.file, str) or not CHECKPOINT_FILE.fullmatch(entry.file):
            raise BundleError(f"the manifest of {bundle} lists an unsafe or odd file name {entry.file!r}.")
        if not (isinstance(entry.config, dict) and isinstance(entry.size, int) and isinstance(entry.sha256, str)
                and isinstance(entry.config_key, str) and isinstance(entry.model_versions, list)
                and all(isinstance(v, str) for v in entry.model_versions)):
            raise BundleError(f"the manifest of {bundle} describes {entry.file} with values of the wrong type; "
                              "it is damaged.")
        entries.append(entry)
    return entries


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The manifest of ``bundle`` (checked: a course bundle of this course version, safe member names).

    Raises:
        BundleError: as :func:`import_bundle` for the archive and its manifest.
    """
    bundle = Path(bundle)
    with _open(bundle) as tar:
        members = _members(tar, bundle)
        manifest = _parse_manifest(tar, members, bundle)
        _entries(manifest, bundle)
        return manifest


def _verify_staged(entry: BundleEntry, data: bytes, bundle: Path) -> None:
    where = f"{entry.file} in {bundle}"
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError(f"{where} does not match its checksum in the manifest (size {len(data)} bytes, manifest "
                          f"{entry.size}): the bundle is corrupted. Download it again.")
    payload = _read_checkpoint(data, where)
    if payload["config"] != entry.config or config_key(entry.config) != entry.config_key \
            or CHECKPOINT_FILE.fullmatch(entry.file)["key"] != entry.config_key[:16]:
        raise BundleError(f"{where}: the manifest's config and key disagree with the file; the bundle is "
                          "damaged. Download it again.")


def import_bundle(bundle: Path, cache: Path | None = None, *, overwrite: bool = False) -> ImportReport:
    """Verify ``bundle`` completely, then move its checkpoints into ``cache`` (default ``COURSE_CACHE_DIR``).

    Every file is extracted into a staging folder inside ``cache`` and checked (size, SHA-256,
    checkpoint format, config against the manifest and the file name) before the first one is
    renamed into place, so a bad bundle changes nothing. Entries whose model version no longer
    matches the code are skipped and named in the report. A checkpoint already in the cache
    with the same name but other bytes (trained elsewhere, perhaps with another thread count)
    is kept unless ``overwrite``; with the same bytes it counts as already present.

    Raises:
        BundleError: a missing, truncated, corrupted or mismatched bundle (not a course bundle,
            manifest and files disagree, another course version, unsafe member names).
    """
    bundle = Path(bundle)
    cache = course_config.cache_dir() if cache is None else Path(cache)
    current = current_model_versions()
    report = ImportReport()
    with _open(bundle) as tar:
        members = _members(tar, bundle)
        manifest = _parse_manifest(tar, members, bundle)
        entries = _entries(manifest, bundle)
        listed = {f"{_CHECKPOINTS}/{e.file}" for e in entries}
        in_archive = set(members) - {_MANIFEST}
        missing = sorted(n.rsplit("/", 1)[-1] for n in listed - in_archive)
        extra = sorted(n.rsplit("/", 1)[-1] for n in in_archive - listed)
        if missing:
            raise BundleError(f"{bundle} lacks {len(missing)} file(s) its manifest lists ({_shorten(missing)}): "
                              "the manifest and the files disagree, the bundle is truncated or damaged. "
                              "Download it again.")
        if extra or len(listed) != len(entries):
            raise BundleError(f"{bundle} holds file(s) its manifest does not list, or lists one twice "
                              f"({_shorten(extra)}): the manifest and the files disagree. Download it again.")
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".import-"))
        try:
            staged: list[tuple[BundleEntry, Path]] = []
            for entry in entries:
                data = _read_member(tar, members[f"{_CHECKPOINTS}/{entry.file}"], bundle)
                _verify_staged(entry, data, bundle)
                reason = _stale_reason(entry, current)
                if reason is not None:
                    report.skipped[entry.file] = reason
                    continue
                target = staging / entry.file
                atomic_write(target, lambda handle, data=data: handle.write(data))
                staged.append((entry, target))
            for entry, target in staged:  # everything verified: now move into place
                final = cache / entry.file
                if final.is_file():
                    if hashlib.sha256(final.read_bytes()).hexdigest() == entry.sha256:
                        report.already_present.append(entry.file)
                        continue
                    if not overwrite:
                        report.kept_existing.append(entry.file)
                        continue
                    report.replaced.append(entry.file)
                else:
                    report.imported.append(entry.file)
                os.replace(target, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def _shorten(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _describe(manifest: dict[str, Any], bundle: Path) -> str:
    entries = manifest["entries"]
    total = sum(int(e.get("size", 0)) for e in entries)
    lines = [f"{bundle}: course {manifest.get('course_version')}, created {manifest.get('created')}, "
             f"git commit {manifest.get('git_commit') or 'unknown'}, torch {manifest.get('torch_version')}",
             f"{len(entries)} checkpoint(s), {total / 1e6:.1f} MB"]
    for e in entries:
        lines.append(f"  {e['file']}  {int(e['size']) / 1e6:7.2f} MB  {', '.join(e['model_versions']) or '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m course_utils.bundles {export,import,inspect} BUNDLE [--cache-dir DIR] [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="python -m course_utils.bundles",
                                     description="Export the checkpoint cache as one file, or import such a file.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("export", "write the cache's checkpoints into BUNDLE (a .tar file)"),
                       ("import", "verify BUNDLE, then add its checkpoints to the cache"),
                       ("inspect", "show BUNDLE's manifest")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("bundle", type=Path, metavar="BUNDLE")
        if name != "inspect":
            sub.add_argument("--cache-dir", type=Path, default=None,
                             help="checkpoint cache (default: COURSE_CACHE_DIR, else <repo>/cache)")
        if name == "import":
            sub.add_argument("--overwrite", action="store_true",
                             help="replace cached checkpoints whose bytes differ from the bundle's")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            manifest = export_bundle(args.bundle, args.cache_dir)
            print(_describe(manifest, args.bundle))
        elif args.command == "import":
            cache = args.cache_dir or course_config.cache_dir()
            report = import_bundle(args.bundle, cache, overwrite=args.overwrite)
            print(f"{args.bundle} -> {cache}\n{report.summary()}")
        else:
            print(_describe(read_manifest(args.bundle), args.bundle))
    except BundleError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
