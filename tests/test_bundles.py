"""Checkpoint bundles (course_utils.bundles): export a cache as one file, import it into another.

The caches hold tiny checkpoints written through ``train_or_load``; every damaged bundle is made
from a good one by rewriting the tar file, and every refusal must leave the target cache as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

from course_utils import __version__ as COURSE_VERSION
from course_utils import bundles
from course_utils.bundles import BundleError, export_bundle, import_bundle, read_manifest
from course_utils.checkpoints import checkpoint_path, config_key, model_versions, train_or_load
from course_utils.models.autoencoder import MODEL_VERSION as AE_VERSION


def _tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def _fill(cache: Path, name: str, config: dict, seed: int = 0) -> Path:
    """Cache one tiny "trained" model (weights drawn from ``seed``) under ``name`` / ``config``."""
    model = _tiny_model(seed)
    train_or_load(model, name, config, lambda: None, directory=cache, verbose=False)
    return checkpoint_path(name, config, cache)


CURRENT = {"model": AE_VERSION, "latent_dim": 2, "seed": 0}
NO_VERSION = {"method": "notebook-exercise", "epochs": 1}  # a notebook's own train_or_load config


@pytest.fixture()
def filled(tmp_path) -> Path:
    cache = tmp_path / "filled"
    _fill(cache, "ae-l2-d2", CURRENT)
    _fill(cache, "ae-l2-d2", {**CURRENT, "seed": 1}, seed=1)
    _fill(cache, "exercise", NO_VERSION, seed=2)
    return cache


@pytest.fixture()
def bundle(tmp_path, filled) -> Path:
    path = tmp_path / "course-checkpoints.tar"
    export_bundle(path, filled)
    return path


def _cache_state(cache: Path) -> dict[str, bytes]:
    """Every file under ``cache`` (hidden ones and staging folders included) with its bytes."""
    if not cache.exists():
        return {}
    return {str(p.relative_to(cache)): (p.read_bytes() if p.is_file() else b"<dir>") for p in cache.rglob("*")}


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _with_manifest(members: dict[str, bytes], **changes) -> dict[str, bytes]:
    manifest = json.loads(members["course-bundle/manifest.json"])
    manifest.update(changes)
    return {**members, "course-bundle/manifest.json": json.dumps(manifest).encode()}


def _assert_refused(bundle: Path, cache: Path, match: str) -> None:
    before = _cache_state(cache)
    with pytest.raises(BundleError, match=match):
        import_bundle(bundle, cache)
    assert _cache_state(cache) == before, "a refused bundle changed the cache"


# ---------------------------------------------------------------------------- round trip
def test_export_then_import_fills_another_cache_and_train_or_load_uses_it(tmp_path, filled, bundle):
    manifest = read_manifest(bundle)
    assert manifest["kind"] == bundles.BUNDLE_KIND and manifest["course_version"] == COURSE_VERSION
    assert manifest["created"].endswith("+00:00")
    assert manifest["git_commit"] is None or len(manifest["git_commit"]) == 40
    by_file = {e["file"]: e for e in manifest["entries"]}
    assert set(by_file) == {p.name for p in filled.glob("*.pt")}
    for path in filled.glob("*.pt"):
        entry = by_file[path.name]
        assert entry["size"] == path.stat().st_size
        assert entry["config_key"] == config_key(entry["config"]) and path.name.endswith(f"-{entry['config_key'][:16]}.pt")
    assert by_file[checkpoint_path("ae-l2-d2", CURRENT, filled).name]["model_versions"] == [AE_VERSION]
    assert by_file[checkpoint_path("exercise", NO_VERSION, filled).name]["model_versions"] == []

    other = tmp_path / "other-clone-cache"
    report = import_bundle(bundle, other)
    assert sorted(report.imported) == sorted(by_file) and not report.skipped
    assert {p.name: p.read_bytes() for p in other.iterdir()} == {p.name: p.read_bytes() for p in filled.glob("*.pt")}

    model = _tiny_model(seed=99)  # other initial weights, replaced by the imported checkpoint
    _, hit = train_or_load(model, "ae-l2-d2", CURRENT, lambda: pytest.fail("trained instead of loading"),
                           directory=other, verbose=False)
    assert hit and torch.equal(model.weight, _tiny_model(seed=0).weight)

    again = import_bundle(bundle, other)  # a second import finds everything there
    assert sorted(again.already_present) == sorted(by_file) and not again.imported


def test_cli_export_inspect_import(tmp_path, filled, capsys):
    path = tmp_path / "b.tar"
    assert bundles.main(["export", str(path), "--cache-dir", str(filled)]) == 0
    assert bundles.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 checkpoint(s)" in out and AE_VERSION in out
    assert bundles.main(["import", str(path), "--cache-dir", str(tmp_path / "new")]) == 0
    assert "imported 3 checkpoint(s)" in capsys.readouterr().out
    assert bundles.main(["import", str(tmp_path / "missing.tar"), "--cache-dir", str(tmp_path / "new")]) == 1
    assert "no bundle at" in capsys.readouterr().err


def test_export_refuses_an_empty_cache_and_a_misnamed_checkpoint(tmp_path, filled):
    with pytest.raises(BundleError, match="holds no checkpoints"):
        export_bundle(tmp_path / "b.tar", tmp_path / "empty")
    source = checkpoint_path("ae-l2-d2", CURRENT, filled)
    source.rename(filled / "ae-l2-d2-0123456789abcdef.pt")  # the key in the name no longer fits the config
    with pytest.raises(BundleError, match="does not hold the key"):
        export_bundle(tmp_path / "b.tar", filled)
    assert not (tmp_path / "b.tar").exists()


# ---------------------------------------------------------------------------- damaged bundles
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_bundle_is_refused_and_writes_nothing(tmp_path, bundle, keep):
    with tarfile.open(bundle) as tar:  # cut inside the members, not in the zero padding after them
        content_end = max(m.offset_data + m.size for m in tar.getmembers())
    bundle.write_bytes(bundle.read_bytes()[:int(content_end * keep)])
    cache = tmp_path / "target"
    _fill(cache, "mine", {"model": AE_VERSION, "seed": 5})
    _assert_refused(bundle, cache, "truncated|damaged|disagree|not a checkpoint bundle")


def test_a_corrupted_checkpoint_fails_its_checksum_and_writes_nothing(tmp_path, bundle):
    members = _members(bundle)
    name = next(n for n in members if n.endswith(".pt"))
    flipped = bytearray(members[name])
    flipped[len(flipped) // 2] ^= 0xFF
    damaged = _write_tar(tmp_path / "damaged.tar", {**members, name: bytes(flipped)})
    _assert_refused(damaged, tmp_path / "target", "checksum")


def test_files_and_manifest_that_disagree_are_refused(tmp_path, bundle, filled):
    members = _members(bundle)
    checkpoint = next(n for n in members if n.endswith(".pt"))
    missing = _write_tar(tmp_path / "missing.tar", {k: v for k, v in members.items() if k != checkpoint})
    _assert_refused(missing, tmp_path / "target", "disagree")
    extra_name = "course-bundle/checkpoints/extra-0123456789abcdef.pt"
    extra = _write_tar(tmp_path / "extra.tar", {**members, extra_name: members[checkpoint]})
    _assert_refused(extra, tmp_path / "target", "disagree")
    # a file swapped for another checkpoint, with its checksum updated: the config no longer fits
    manifest = json.loads(members["course-bundle/manifest.json"])
    entry = next(e for e in manifest["entries"] if e["file"] == checkpoint.rsplit("/", 1)[1])
    other = next(p for p in filled.glob("*.pt") if p.name != entry["file"]).read_bytes()
    entry.update(size=len(other), sha256=hashlib.sha256(other).hexdigest())
    swapped = {**members, checkpoint: other, "course-bundle/manifest.json": json.dumps(manifest).encode()}
    _assert_refused(_write_tar(tmp_path / "swapped.tar", swapped), tmp_path / "target", "disagree")


def test_something_else_than_a_course_bundle_is_refused(tmp_path, bundle):
    not_tar = tmp_path / "notes.tar"
    not_tar.write_bytes(b"these are lecture notes, not a tar file" * 50)
    _assert_refused(not_tar, tmp_path / "target", "not a checkpoint bundle")
    other_tar = _write_tar(tmp_path / "other.tar", {"photos/cat.jpg": b"\xff\xd8"})
    _assert_refused(other_tar, tmp_path / "target", "unexpected member")
    members = _members(bundle)
    no_manifest = _write_tar(tmp_path / "nomanifest.tar",
                             {k: v for k, v in members.items() if not k.endswith("manifest.json")})
    _assert_refused(no_manifest, tmp_path / "target", "no course-bundle/manifest.json")
    wrong_kind = _write_tar(tmp_path / "kind.tar", _with_manifest(members, kind="something-else"))
    _assert_refused(wrong_kind, tmp_path / "target", "not a course checkpoint bundle")
    not_json = _write_tar(tmp_path / "json.tar", {**members, "course-bundle/manifest.json": b"{entries"})
    _assert_refused(not_json, tmp_path / "target", "not valid JSON")
    entries = json.loads(members["course-bundle/manifest.json"])["entries"]
    bad_entry = _write_tar(tmp_path / "entry.tar", _with_manifest(members, entries=[{**entries[0], "config": [1]},
                                                                                     *entries[1:]]))
    _assert_refused(bad_entry, tmp_path / "target", "wrong type")


def test_a_bundle_of_another_course_version_is_refused(tmp_path, bundle):
    older = _write_tar(tmp_path / "older.tar", _with_manifest(_members(bundle), course_version="0.0.1"))
    _assert_refused(older, tmp_path / "target", "course version '0.0.1'")
    with pytest.raises(BundleError, match="course version"):
        read_manifest(older)


@pytest.mark.parametrize("evil", ["course-bundle/checkpoints/../../evil-0123456789abcdef.pt",
                                  "/tmp/evil-0123456789abcdef.pt", "../evil-0123456789abcdef.pt"])
def test_path_traversal_in_member_names_is_refused(tmp_path, bundle, evil):
    members = _members(bundle)
    target = tmp_path / "deep" / "er" / "target"
    _assert_refused(_write_tar(tmp_path / "evil.tar", {**members, evil: b"x"}), target, "unsafe path")
    assert not list(tmp_path.rglob("evil-*"))


def test_links_in_a_bundle_are_refused(tmp_path, bundle):
    path = tmp_path / "link.tar"
    _write_tar(path, _members(bundle))
    with tarfile.open(path, "a") as tar:
        link = tarfile.TarInfo("course-bundle/checkpoints/link-0123456789abcdef.pt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    _assert_refused(path, tmp_path / "target", "not a plain file")


# ---------------------------------------------------------------------------- versions, existing entries
def test_entries_of_another_model_version_are_named_and_skipped(tmp_path, filled):
    stale = _fill(filled, "ae-l2-d2", {**CURRENT, "model": "ConvAutoencoder-v1"})
    unknown = _fill(filled, "retired", {"model": "RetiredNet-v3", "seed": 0})
    path = tmp_path / "b.tar"
    export_bundle(path, filled)
    report = import_bundle(path, tmp_path / "target")
    assert set(report.skipped) == {stale.name, unknown.name}
    assert "ConvAutoencoder-v1" in report.skipped[stale.name] and AE_VERSION in report.skipped[stale.name]
    assert "RetiredNet-v3" in report.skipped[unknown.name]
    assert stale.name in report.summary() and unknown.name in report.summary()
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == sorted(report.imported)
    assert len(report.imported) == 3


def test_an_existing_checkpoint_that_differs_is_kept_unless_overwrite(tmp_path, bundle):
    target = tmp_path / "target"
    mine = _fill(target, "ae-l2-d2", CURRENT, seed=7)  # same name and config, other weights
    my_bytes = mine.read_bytes()
    report = import_bundle(bundle, target)
    assert report.kept_existing == [mine.name] and mine.read_bytes() == my_bytes
    assert "--overwrite" in report.summary()
    report = import_bundle(bundle, target, overwrite=True)
    assert report.replaced == [mine.name] and mine.read_bytes() != my_bytes
    assert not [p for p in target.iterdir() if p.name.startswith(".import-")]


def test_model_versions_are_collected_from_nested_configs_and_known_to_the_bundles():
    from course_utils.models.fanogan import FAST_SETTINGS, FAnoGANDetector
    from course_utils.models.glow import FAST_CONFIG, GlowDetector

    images = torch.rand(4, 1, 28, 28)
    fanogan = FAnoGANDetector("izif", "mse", settings=FAST_SETTINGS)
    encoder_versions = model_versions(fanogan.cache_config(images, "encoder"))
    assert len(encoder_versions) == 2  # the encoder's and its GAN's
    known = set(bundles.current_model_versions().values())
    for versions in (encoder_versions, model_versions(GlowDetector(FAST_CONFIG).cache_config(images)),
                     model_versions(CURRENT)):
        assert versions and set(versions) <= known
