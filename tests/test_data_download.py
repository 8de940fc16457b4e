"""Tests for the idx and MedMNIST formats and the data commands (``course_utils.datasets``,
``python -m data_download``): idx / npz parsing, import from a folder, atomic writes, verify,
status, the bundled-sample builder, download (with fake torchvision / medmnist) and the CLI.
Image-folder datasets are tested in ``test_folder_datasets.py``.

Every file is synthetic and lives in a temporary folder; no test touches the network, a
developer's data folder or the package's own sample_data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import time
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from course_utils.data import SAMPLE_DIR
from course_utils.datasets import get_spec
from course_utils.datasets.formats import DataFormatError, parse_idx, read_idx_file
from course_utils.datasets.store import SAMPLE_PER_CLASS, build_sample, download, import_from_dir, status, verify
from course_utils.files import atomic_write_bytes
from data_download.__main__ import main

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
ALL_STEMS = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (hidden ones included)."""
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


def part_files(folder: Path) -> list[Path]:
    return [p for p in files_under(folder) if p.name.endswith(".part")]


def staging_dirs(folder: Path) -> list[Path]:
    return [p for p in Path(folder).iterdir() if p.name.startswith(".download-")] if Path(folder).exists() else []


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in files_under(folder)}


@pytest.fixture
def data(data_home):
    """The (empty) data folder the tests import into."""
    return data_home


# =========================================================================== parse_idx / read_idx_file
def test_parse_idx_reads_images_and_labels(synth):
    images = synth.make_images(3)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    parsed_images = parse_idx(synth.idx_bytes(images))
    parsed_labels = parse_idx(synth.idx_bytes(labels))
    assert parsed_images.shape == (3, 28, 28) and parsed_images.dtype == np.uint8
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda b: b[:-1], id="data-one-byte-short"),
        pytest.param(lambda b: b[: len(b) // 2], id="data-half"),
        pytest.param(lambda b: b[:10], id="header-cut"),
        pytest.param(lambda b: b[:3], id="under-4-bytes"),
    ],
)
def test_parse_idx_truncated_names_source(cut, synth):
    data = cut(synth.idx_bytes(synth.make_images(4)))
    with pytest.raises(DataFormatError) as info:
        parse_idx(data, source="my-images-file")
    message = str(info.value)
    assert "my-images-file" in message
    assert "truncated" in message


@pytest.mark.parametrize("magic", [b"\x00\x00\x09\x03", b"\x01\x00\x08\x03", b"\x00\x01\x08\x03", b"PK\x03\x04"])
def test_parse_idx_rejects_bad_magic(magic, synth):
    good = synth.idx_bytes(synth.make_images(2))
    with pytest.raises(DataFormatError, match="src-name"):
        parse_idx(magic + good[4:], source="src-name")


def test_parse_idx_rejects_trailing_bytes(synth):
    with pytest.raises(DataFormatError, match="trailing"):
        parse_idx(synth.idx_bytes(synth.make_images(2)) + b"\x00\x00", source="x")


def test_parse_idx_checks_expected_ndim(synth):
    labels = synth.idx_bytes(np.zeros(5, dtype=np.uint8))
    assert parse_idx(labels, expect_ndim=1).shape == (5,)
    with pytest.raises(DataFormatError, match="dimensions"):
        parse_idx(labels, expect_ndim=3)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_file_returns_array_and_uncompressed_bytes(tmp_path, gz, synth):
    images = synth.make_images(5)
    data = synth.idx_bytes(images)
    path = tmp_path / ("f-idx3-ubyte.gz" if gz else "f-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if gz else data)
    array, raw = read_idx_file(path)
    np.testing.assert_array_equal(array, images)
    assert raw == data


def test_read_idx_file_truncated_gz_names_the_file(tmp_path, synth):
    compressed = gzip.compress(synth.idx_bytes(synth.make_images(20)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataFormatError) as info:
        read_idx_file(path)
    assert str(path) in str(info.value)


def test_read_idx_file_not_gzip_named_gz(tmp_path, synth):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(synth.idx_bytes(np.zeros(3, dtype=np.uint8)))  # uncompressed content, .gz name
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx_file(path)


def test_get_spec_aliases_and_unknown_name():
    assert get_spec("Fashion_MNIST").name == "fashion-mnist"
    assert get_spec("fashionmnist").name == "fashion-mnist"
    assert get_spec(" MNIST ").name == "mnist"
    with pytest.raises(ValueError, match="pneumoniamnist"):  # the message lists the known datasets
        get_spec("cifar10")


# =========================================================================== import_from_dir: idx
LAYOUTS = {
    "flat": lambda src: src,
    "raw": lambda src: src / "raw",
    "torchvision": lambda src: src / "FashionMNIST" / "raw",
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw-files", "gz-files"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_import_idx_writes_uncompressed_torchvision_layout(tmp_path, data, gz, layout, synth):
    src = tmp_path / "src"
    written = synth.write_idx_set(LAYOUTS[layout](src), gz=gz)
    report = import_from_dir("fashion-mnist", src, data)
    assert report.ok, str(report)
    raw_dir = data / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(ALL_STEMS)
    for stem, array in written.items():
        assert (raw_dir / stem).read_bytes() == synth.idx_bytes(array)
    # small copies are accepted as partial, with a warning for each split
    assert len(report.warnings) == 2
    assert all("PARTIAL" in w for w in report.warnings)


def test_imported_files_load_in_torchvision(tmp_path, data, synth):
    torchvision = pytest.importorskip("torchvision")
    src = tmp_path / "src"
    written = synth.write_idx_set(src, n_train=40, n_test=20, gz=True)
    assert import_from_dir("fashion-mnist", src, data).ok
    for train, n, images, labels in (
        (True, 40, written[TRAIN_IMAGES], written[TRAIN_LABELS]),
        (False, 20, written[TEST_IMAGES], written[TEST_LABELS]),
    ):
        ds = torchvision.datasets.FashionMNIST(root=str(data), train=train, download=False)
        assert len(ds) == n
        np.testing.assert_array_equal(ds.data[0].numpy(), images[0])
        np.testing.assert_array_equal(ds.targets.numpy(), labels)


def test_import_accepts_fashion_mnist_alias(tmp_path, data, synth):
    synth.write_idx_set(tmp_path / "src")
    assert import_from_dir("fashion_mnist", tmp_path / "src", data).ok
    assert (data / "FashionMNIST" / "raw" / TRAIN_IMAGES).is_file()


def test_import_mnist_goes_to_mnist_folder(tmp_path, data, synth):
    synth.write_idx_set(tmp_path / "src")
    assert import_from_dir("mnist", tmp_path / "src", data).ok
    assert sorted(p.name for p in (data / "MNIST" / "raw").iterdir()) == sorted(ALL_STEMS)
    assert not (data / "FashionMNIST").exists()


def assert_nothing_written(data: Path) -> None:
    raw_dir = data / "FashionMNIST" / "raw"
    assert not raw_dir.exists() or not any(raw_dir.iterdir())
    assert part_files(data) == []


@pytest.mark.parametrize("stem", ALL_STEMS)
@pytest.mark.parametrize("gz", [False, True], ids=["raw-files", "gz-files"])
def test_import_rejects_truncated_file_and_writes_nothing(tmp_path, data, stem, gz, synth):
    src = tmp_path / "src"
    synth.write_idx_set(src, gz=gz)
    bad = src / (f"{stem}.gz" if gz else stem)
    content = bad.read_bytes()
    bad.write_bytes(content[: len(content) // 2])
    report = import_from_dir("fashion-mnist", src, data)
    assert not report.ok
    assert bad.name in str(report)
    assert_nothing_written(data)


def test_import_rejects_missing_file(tmp_path, data, synth):
    src = tmp_path / "src"
    synth.write_idx_set(src)
    (src / TEST_LABELS).unlink()
    report = import_from_dir("fashion-mnist", src, data)
    assert not report.ok
    assert TEST_LABELS in str(report)
    assert_nothing_written(data)


@pytest.mark.parametrize(
    "arrays, words",
    [
        pytest.param(lambda s: {TRAIN_LABELS: s.make_labels(39)}, "39 labels for 40 images", id="label-count"),
        pytest.param(lambda s: {TEST_IMAGES: s.make_images(20, side=32)}, "(20, 32, 32)", id="image-shape-32"),
        pytest.param(lambda s: {TRAIN_LABELS: np.full(40, 12, dtype=np.uint8)}, "label value 12", id="label-value-12"),
        pytest.param(lambda s: {TEST_LABELS: np.zeros((20, 1), dtype=np.uint8)}, "(20, 1) labels", id="labels-2d"),
    ],
)
def test_import_rejects_inconsistent_pairs(tmp_path, data, arrays, words, synth):
    src = tmp_path / "src"
    synth.write_idx_set(src, n_train=40, n_test=20, arrays=arrays(synth))
    report = import_from_dir("fashion-mnist", src, data)
    assert not report.ok
    assert words in str(report)
    assert_nothing_written(data)


def test_import_rejects_official_size_file_with_wrong_md5(tmp_path, data, synth):
    # 10,000 test labels is the official count, so the official md5 applies and must match
    src = tmp_path / "src"
    synth.write_idx_set(src, arrays={TEST_LABELS: synth.make_labels(10_000)})
    report = import_from_dir("fashion-mnist", src, data)
    assert not report.ok
    assert "md5" in str(report) and TEST_LABELS in str(report)
    assert_nothing_written(data)


def test_failed_import_leaves_existing_good_files_untouched(tmp_path, data, synth):
    good = tmp_path / "good"
    synth.write_idx_set(good, n_train=40, n_test=20, seed=0)
    assert import_from_dir("fashion-mnist", good, data).ok
    before = snapshot(data)
    assert len(before) == 4

    bad = tmp_path / "bad"
    synth.write_idx_set(bad, n_train=50, n_test=30, seed=5)  # different content ...
    cut = (bad / TRAIN_IMAGES).read_bytes()
    (bad / TRAIN_IMAGES).write_bytes(cut[:-100])  # ... and one file truncated
    report = import_from_dir("fashion-mnist", bad, data)
    assert not report.ok
    assert snapshot(data) == before


def test_import_from_missing_folder_fails(tmp_path, data):
    report = import_from_dir("fashion-mnist", tmp_path / "nope", data)
    assert not report.ok
    assert "nope" in str(report)


# =========================================================================== atomic_write_bytes
def test_atomic_write_creates_folders_and_usual_mode(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert part_files(tmp_path) == []


@pytest.mark.parametrize("existing", [True, False], ids=["replace-existing", "new-file"])
@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_atomic_write_failure_leaves_target_and_no_temp_file(tmp_path, monkeypatch, existing, fail_at):
    target = tmp_path / "out" / "file.bin"
    if existing:
        target.parent.mkdir()
        target.write_bytes(b"old content")

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new content that must not appear")
    monkeypatch.undo()
    if existing:
        assert target.read_bytes() == b"old content"
    else:
        assert not target.exists()
    assert part_files(tmp_path) == []


def test_atomic_write_interrupted_mid_write(tmp_path, monkeypatch):
    """A KeyboardInterrupt during the write (BaseException) also cleans up."""
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"0123456789" * 100)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert part_files(tmp_path) == []


# =========================================================================== import_from_dir: npz
@pytest.mark.parametrize("subfolder", [False, True], ids=["flat", "pneumoniamnist-subfolder"])
def test_import_npz_writes_medmnist_layout_with_warnings(tmp_path, data, subfolder, synth):
    src = tmp_path / "src"
    source = (src / "pneumoniamnist" if subfolder else src) / "pneumoniamnist.npz"
    synth.write_medmnist_npz(source)
    report = import_from_dir("pneumoniamnist", src, data)
    assert report.ok, str(report)
    target = data / "pneumoniamnist.npz"
    assert target.read_bytes() == source.read_bytes()
    warnings = "\n".join(report.warnings)
    assert "not the official" in warnings  # md5
    for split, official in (("train", 4708), ("val", 524), ("test", 624)):
        assert f"{split}:" in warnings and str(official) in warnings
    assert part_files(data) == []


def test_import_npz_other_size(tmp_path, data, synth):
    synth.write_medmnist_npz(tmp_path / "src" / "pneumoniamnist_64.npz", side=64)
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data, size=64)
    assert report.ok, str(report)
    assert (data / "pneumoniamnist_64.npz").is_file()
    assert not (data / "pneumoniamnist.npz").exists()


def test_import_npz_rejects_wrong_image_size(tmp_path, data, synth):
    synth.write_medmnist_npz(tmp_path / "src" / "pneumoniamnist_64.npz", side=28)  # 28 px content, 64 px name
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data, size=64)
    assert not report.ok
    assert "pneumoniamnist_64.npz" in str(report)
    assert not (data / "pneumoniamnist_64.npz").exists()


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_import_npz_rejects_truncated_file(tmp_path, data, keep, synth):
    source = tmp_path / "src" / "pneumoniamnist.npz"
    synth.write_medmnist_npz(source)
    content = source.read_bytes()
    source.write_bytes(content[: int(len(content) * keep)])
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data)
    assert not report.ok
    assert "pneumoniamnist.npz" in str(report)
    assert files_under(data) == []


def test_import_npz_rejects_corrupt_member(tmp_path, data, synth):
    source = tmp_path / "src" / "pneumoniamnist.npz"
    synth.write_medmnist_npz(source, synth.medmnist_arrays({"train": 200, "val": 10, "test": 12}))
    content = bytearray(source.read_bytes())
    middle = len(content) // 3  # inside the compressed train images
    content[middle: middle + 16] = bytes(16)
    source.write_bytes(bytes(content))
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data)
    assert not report.ok
    assert files_under(data) == []


def test_import_npz_rejects_missing_key(tmp_path, data, synth):
    arrays = synth.medmnist_arrays()
    del arrays["val_labels"]
    synth.write_medmnist_npz(tmp_path / "src" / "pneumoniamnist.npz", arrays)
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data)
    assert not report.ok
    assert "val_labels" in str(report)
    assert files_under(data) == []


@pytest.mark.parametrize(
    "change, words",
    [
        pytest.param(lambda a: a.update(test_labels=np.zeros((11, 1), np.uint8)), "test labels", id="label-count"),
        pytest.param(lambda a: a.update(train_labels=np.full((30, 1), 2, np.uint8)), "train labels", id="label-value"),
        pytest.param(lambda a: a.update(val_images=a["val_images"].astype(np.float32)), "val_images", id="dtype"),
    ],
)
def test_import_npz_rejects_inconsistent_arrays(tmp_path, data, change, words, synth):
    arrays = synth.medmnist_arrays()
    change(arrays)
    synth.write_medmnist_npz(tmp_path / "src" / "pneumoniamnist.npz", arrays)
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data)
    assert not report.ok
    assert words in str(report)
    assert files_under(data) == []


def test_import_npz_rejects_npy_file_named_npz(tmp_path, data):
    source = tmp_path / "src" / "pneumoniamnist.npz"
    source.parent.mkdir()
    with open(source, "wb") as handle:
        np.save(handle, np.zeros((3, 28, 28), dtype=np.uint8))
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data)
    assert not report.ok
    assert "pneumoniamnist.npz" in str(report)
    assert files_under(data) == []


def test_import_npz_missing_file(tmp_path, data):
    (tmp_path / "src").mkdir()
    report = import_from_dir("pneumoniamnist", tmp_path / "src", data)
    assert not report.ok
    assert "pneumoniamnist.npz" in str(report)


# =========================================================================== verify
def imported(synth, tmp_path: Path, data: Path, name: str = "fashion-mnist") -> Path:
    synth.write_idx_set(tmp_path / "src")
    assert import_from_dir(name, tmp_path / "src", data).ok
    return data / get_spec(name).format.folder / "raw"


def test_verify_good_copy_passes(tmp_path, data, synth):
    raw_dir = imported(synth, tmp_path, data)
    before = snapshot(raw_dir)
    report = verify("fashion-mnist", data)
    assert report.ok, str(report)
    assert any("PARTIAL" in w for w in report.warnings)
    assert snapshot(raw_dir) == before


@pytest.mark.parametrize("stem", [TRAIN_IMAGES, TEST_LABELS])
def test_verify_reports_and_removes_truncated_file(tmp_path, data, stem, synth):
    raw_dir = imported(synth, tmp_path, data)
    content = (raw_dir / stem).read_bytes()
    (raw_dir / stem).write_bytes(content[:-7])
    report = verify("fashion-mnist", data)
    assert not report.ok
    assert stem in str(report)
    assert not (raw_dir / stem).exists()
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(set(ALL_STEMS) - {stem})


def test_verify_keep_bad_file_when_asked(tmp_path, data, synth):
    raw_dir = imported(synth, tmp_path, data)
    (raw_dir / TRAIN_LABELS).write_bytes(b"\x00\x00\x08\x01\x00\x00\x01\x00")  # says 256 labels, has none
    report = verify("fashion-mnist", data, remove_bad=False)
    assert not report.ok
    assert (raw_dir / TRAIN_LABELS).exists()


def test_verify_reports_missing_file(tmp_path, data, synth):
    raw_dir = imported(synth, tmp_path, data)
    (raw_dir / TEST_IMAGES).unlink()
    report = verify("fashion-mnist", data)
    assert not report.ok
    assert TEST_IMAGES in str(report) and "missing" in str(report)


def test_verify_reports_inconsistent_pair(tmp_path, data, synth):
    raw_dir = imported(synth, tmp_path, data)
    (raw_dir / TEST_LABELS).write_bytes(synth.idx_bytes(synth.make_labels(5)))  # valid file, wrong count
    report = verify("fashion-mnist", data)
    assert not report.ok
    assert "5 labels for 20 images" in str(report)


def test_verify_npz(tmp_path, data, synth):
    target = data / "pneumoniamnist.npz"
    assert not verify("pneumoniamnist", data).ok  # missing
    synth.write_medmnist_npz(target)
    report = verify("pneumoniamnist", data)
    assert report.ok, str(report)
    assert report.warnings  # split sizes differ from the official ones
    target.write_bytes(target.read_bytes()[:-50])
    report = verify("pneumoniamnist", data)
    assert not report.ok
    assert "pneumoniamnist.npz" in str(report)
    assert not target.exists()


# =========================================================================== status
def test_status_idx(tmp_path, data, synth):
    assert status("fashion-mnist", data) == "missing"
    raw_dir = imported(synth, tmp_path, data)
    assert status("fashion-mnist", data) == "partial (40 train)"
    (raw_dir / TEST_LABELS).unlink()
    assert status("fashion-mnist", data) == "incomplete"
    # a train images file with the official count (content not checked by status)
    (raw_dir / TEST_LABELS).write_bytes(synth.idx_bytes(synth.make_labels(20)))
    (raw_dir / TRAIN_IMAGES).write_bytes(synth.idx_bytes(np.zeros((60_000, 28, 28), dtype=np.uint8)))
    assert status("fashion-mnist", data) == "present"
    assert status("mnist", data) == "missing"


def test_status_npz(data, synth):
    assert status("pneumoniamnist", data) == "missing"
    synth.write_medmnist_npz(data / "pneumoniamnist.npz")
    assert status("pneumoniamnist", data) == "present (28 px)"
    synth.write_medmnist_npz(data / "pneumoniamnist_64.npz", side=64)
    assert status("pneumoniamnist", data) == "present (28 px, 64 px)"


# =========================================================================== build_sample
def skewed_labels(counts: dict[int, int]) -> np.ndarray:
    """Labels with ``counts[c]`` of class c, interleaved (not sorted by class)."""
    labels = np.concatenate([np.full(n, c, dtype=np.uint8) for c, n in counts.items()])
    return labels[np.random.default_rng(1).permutation(labels.size)]


def unique_images(synth, n: int) -> np.ndarray:
    """Images whose first two pixels encode their index, so a chosen image can be traced back."""
    images = synth.make_images(n, seed=3)
    images[:, 0, 0] = np.arange(n) // 256
    images[:, 0, 1] = np.arange(n) % 256
    return images


def image_index(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0].astype(np.int64) * 256 + images[:, 0, 1]


@pytest.mark.filterwarnings("ignore:.*PARTIAL copy:UserWarning")
def test_build_sample_idx(tmp_path, data, synth, monkeypatch):
    train_counts = {0: SAMPLE_PER_CLASS["train"] + 10, 1: 7, 2: 0, **{c: 20 for c in range(3, 10)}}
    test_counts = {0: SAMPLE_PER_CLASS["test"] + 5, 1: 3, **{c: 10 for c in range(2, 10)}}
    train_labels, test_labels = skewed_labels(train_counts), skewed_labels(test_counts)
    written = synth.write_idx_set(
        data / "FashionMNIST" / "raw",
        arrays={
            TRAIN_IMAGES: unique_images(synth, train_labels.size),
            TRAIN_LABELS: train_labels,
            TEST_IMAGES: unique_images(synth, test_labels.size),
            TEST_LABELS: test_labels,
        },
    )
    package_sample = (SAMPLE_DIR / "fashion-mnist.npz").read_bytes()
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    path1, counts1 = build_sample("fashion-mnist", data, out1)
    path2, counts2 = build_sample("fashion-mnist", data, out2)
    assert path1 == out1 / "fashion-mnist.npz" and path1.is_file()
    assert path1.read_bytes() == path2.read_bytes()
    assert counts1 == counts2
    with monkeypatch.context() as later:  # rebuilt in place a year later: same bytes (no timestamps inside)
        now = time.time()
        later.setattr(time, "time", lambda: now + 366 * 86_400)
        path3, _ = build_sample("fashion-mnist", data, out1)
    assert path3.read_bytes() == path2.read_bytes()
    assert (SAMPLE_DIR / "fashion-mnist.npz").read_bytes() == package_sample  # never touched

    with np.load(path1) as npz:
        assert sorted(npz.files) == ["test_images", "test_labels", "train_images", "train_labels"]
        for split, source_counts, images_stem, labels_stem in (
            ("train", train_counts, TRAIN_IMAGES, TRAIN_LABELS),
            ("test", test_counts, TEST_IMAGES, TEST_LABELS),
        ):
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
            expected = {c: min(SAMPLE_PER_CLASS[split], n) for c, n in source_counts.items()}
            assert {c: int((labels == c).sum()) for c in range(10)} == expected
            assert counts1[split] == sum(expected.values()) == len(labels)
            # the chosen images are real images of the split, with their own labels, in original order
            index = image_index(images)
            assert np.all(np.diff(index) > 0)
            np.testing.assert_array_equal(images, written[images_stem][index])
            np.testing.assert_array_equal(labels, written[labels_stem][index])


def test_build_sample_npz_has_val(tmp_path, data, synth):
    arrays = synth.medmnist_arrays({"train": 700, "val": 60, "test": 30})
    arrays["val_labels"][:] = 0
    arrays["val_labels"][:4] = 1
    synth.write_medmnist_npz(data / "pneumoniamnist.npz", arrays)
    path, counts = build_sample("pneumoniamnist", data, tmp_path / "out")
    with np.load(path) as npz:
        assert {k for k in npz.files} == {f"{s}_{p}" for s in ("train", "val", "test") for p in ("images", "labels")}
        assert np.bincount(npz["train_labels"], minlength=2).tolist() == [300, 300]
        assert np.bincount(npz["val_labels"], minlength=2).tolist() == [50, 4]
        assert np.bincount(npz["test_labels"], minlength=2).tolist() == [15, 15]
    assert counts == {"train": 600, "val": 54, "test": 30}


def test_build_sample_without_data_fails(tmp_path, data):
    with pytest.raises(FileNotFoundError):
        build_sample("mnist", data, tmp_path / "out")
    assert not (tmp_path / "out" / "mnist.npz").exists()


# =========================================================================== download (fake torchvision / medmnist)
def fake_mnist_class(synth, behaviour: str):
    """A stand-in for torchvision.datasets.MNIST that 'downloads' synthetic files into root/MNIST/raw."""
    calls = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False, **kwargs):
            calls.append((root, train, download))
            if behaviour == "offline":
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            raw = Path(root) / "MNIST" / "raw"
            split = "train" if train else "t10k"
            n = 30 if train else 10
            raw.mkdir(parents=True, exist_ok=True)
            images = synth.idx_bytes(synth.make_images(n, seed=int(train)))
            if behaviour == "truncated" and not train:
                images = images[:-10]
            (raw / f"{split}-images-idx3-ubyte").write_bytes(images)
            (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
            (raw / f"{split}-labels-idx1-ubyte").write_bytes(synth.idx_bytes(synth.make_labels(n)))

    return FakeMNIST, calls


def test_download_success_places_files(data, monkeypatch, synth):
    import torchvision.datasets

    fake, calls = fake_mnist_class(synth, "ok")
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake)
    report = download("mnist", data, quiet=True)
    assert report.ok
    assert sorted(train for _, train, _ in calls) == [False, True] and all(d for _, _, d in calls)
    raw_dir = data / "MNIST" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(ALL_STEMS)
    np.testing.assert_array_equal(read_idx_file(raw_dir / TRAIN_IMAGES)[0], synth.make_images(30, seed=1))
    assert staging_dirs(data) == []
    assert part_files(data) == []


def test_download_offline_says_how_to_import(data, monkeypatch, synth):
    import torchvision.datasets

    fake, _ = fake_mnist_class(synth, "offline")
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake)
    with pytest.raises(RuntimeError) as info:
        download("mnist", data, quiet=True)
    assert "--from-dir" in str(info.value)
    assert "URLError" in str(info.value)
    assert staging_dirs(data) == []
    assert files_under(data) == []


def test_download_with_bad_files_writes_nothing(data, monkeypatch, synth):
    import torchvision.datasets

    fake, _ = fake_mnist_class(synth, "truncated")
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake)
    with pytest.raises(RuntimeError, match="failed the checks"):
        download("mnist", data, quiet=True)
    assert staging_dirs(data) == []
    assert files_under(data) == []


def test_download_medmnist_with_fake_module(data, monkeypatch, synth):
    class FakePneumoniaMNIST:
        def __init__(self, split, root, download, size=28, **kwargs):
            assert download
            path = Path(root) / ("pneumoniamnist.npz" if size == 28 else f"pneumoniamnist_{size}.npz")
            if not path.exists():
                synth.write_medmnist_npz(path, side=size)

    monkeypatch.setitem(sys.modules, "medmnist", types.SimpleNamespace(PneumoniaMNIST=FakePneumoniaMNIST))
    report = download("pneumoniamnist", data, quiet=True)
    assert report.ok
    assert (data / "pneumoniamnist.npz").is_file()
    assert staging_dirs(data) == []


def test_download_medmnist_not_installed(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import medmnist -> ImportError
    with pytest.raises(RuntimeError, match="medmnist"):
        download("pneumoniamnist", data, quiet=True)
    assert staging_dirs(data) == []


# =========================================================================== CLI
def test_cli_list(data, capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "pneumoniamnist"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), out
    assert str(data) in out
    assert "missing" in out


def test_cli_list_honours_data_dir(tmp_path, data, capsys, synth):
    other = tmp_path / "other"
    synth.write_idx_set(other / "MNIST" / "raw")
    assert main(["--list", "--data-dir", str(other)]) == 0
    out = capsys.readouterr().out
    assert f"data folder: {other}" in out
    mnist_line = next(line for line in out.splitlines() if line.startswith("mnist "))
    assert "partial (40 train)" in mnist_line


def test_cli_from_dir_good_folder_with_data_dir(tmp_path, data, capsys, synth):
    synth.write_idx_set(tmp_path / "src", gz=True)
    target = tmp_path / "elsewhere"
    assert main(["fashion-mnist", "--from-dir", str(tmp_path / "src"), "--data-dir", str(target)]) == 0
    assert sorted(p.name for p in (target / "FashionMNIST" / "raw").iterdir()) == sorted(ALL_STEMS)
    assert files_under(data) == []  # COURSE_DATA_DIR was overridden
    assert "PARTIAL" in capsys.readouterr().out


def test_cli_from_dir_uses_course_data_dir_by_default(tmp_path, data, synth):
    synth.write_idx_set(tmp_path / "src")
    assert main(["mnist", "--from-dir", str(tmp_path / "src")]) == 0
    assert (data / "MNIST" / "raw" / TRAIN_IMAGES).is_file()


@pytest.mark.parametrize("problem", ["missing-folder", "truncated-file"])
def test_cli_from_dir_bad_folder_exits_1(tmp_path, data, capsys, problem, synth):
    src = tmp_path / "src"
    if problem == "truncated-file":
        synth.write_idx_set(src)
        (src / TRAIN_LABELS).write_bytes((src / TRAIN_LABELS).read_bytes()[:-3])
    assert main(["fashion-mnist", "--from-dir", str(src)]) == 1
    assert "ERROR" in capsys.readouterr().out
    assert files_under(data) == []


@pytest.mark.parametrize("argv", [["cifar10"], [], ["mnist", "--size", "30"], ["mnist", "--bogus"]])
def test_cli_bad_arguments_exit_2(data, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_cli_verify(tmp_path, data, capsys, synth):
    assert main(["fashion-mnist", "--verify"]) == 1  # nothing there yet
    raw_dir = imported(synth, tmp_path, data)
    assert main(["fashion-mnist", "--verify"]) == 0
    (raw_dir / TEST_IMAGES).write_bytes((raw_dir / TEST_IMAGES).read_bytes()[:-1])
    assert main(["fashion-mnist", "--verify"]) == 1
    assert not (raw_dir / TEST_IMAGES).exists()


def test_cli_download_offline_exits_1(data, monkeypatch, capsys, synth):
    import torchvision.datasets

    fake, _ = fake_mnist_class(synth, "offline")
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake)
    assert main(["mnist"]) == 1
    assert "--from-dir" in capsys.readouterr().out
    assert staging_dirs(data) == []


@pytest.mark.filterwarnings("ignore:.*PARTIAL copy:UserWarning")
def test_cli_build_sample(tmp_path, data, capsys, synth):
    assert main(["mnist", "--build-sample", "--sample-dir", str(tmp_path / "s")]) == 1  # no full data
    assert "python -m data_download mnist" in capsys.readouterr().out
    synth.write_idx_set(data / "MNIST" / "raw")
    assert main(["mnist", "--build-sample", "--sample-dir", str(tmp_path / "s")]) == 0
    with np.load(tmp_path / "s" / "mnist.npz") as npz:
        assert len(npz["train_labels"]) == 40 and len(npz["test_labels"]) == 20


def test_md5_helper_matches_hashlib():
    from course_utils.datasets.formats import md5_bytes

    assert md5_bytes(b"abc") == hashlib.md5(b"abc").hexdigest()
