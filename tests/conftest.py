"""Shared fixtures for the data tests: synthetic idx / MedMNIST files and an isolated,
offline data folder.

The root ``conftest.py`` already points ``COURSE_DATA_DIR`` and ``COURSE_CACHE_DIR`` at
empty temporary folders and sets ``COURSE_FAST=1``; the fixtures here give each test its
own folders and let a test switch to full mode.
"""

from __future__ import annotations

import gzip
import types
from pathlib import Path

import numpy as np
import pytest

IDX_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx (MNIST format) bytes of a uint8 array: magic 00 00 08 ndim, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def make_images(n: int, seed: int = 0, side: int = 28) -> np.ndarray:
    """n random uint8 images (n, side, side); distinct from each other with near certainty."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def make_labels(n: int, n_classes: int = 10) -> np.ndarray:
    """n labels cycling through the classes (every class present once n >= n_classes)."""
    return (np.arange(n) % n_classes).astype(np.uint8)


def write_idx_set(
    folder: Path,
    *,
    n_train: int = 40,
    n_test: int = 20,
    gz: bool = False,
    seed: int = 0,
    arrays: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Write the four idx files of a small MNIST-style set into ``folder``.

    ``arrays`` may replace any of the four arrays (keyed by file stem). Returns the arrays
    written, keyed by stem (without ``.gz``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        IDX_STEMS[("train", "images")]: make_images(n_train, seed),
        IDX_STEMS[("train", "labels")]: make_labels(n_train),
        IDX_STEMS[("test", "images")]: make_images(n_test, seed + 1),
        IDX_STEMS[("test", "labels")]: make_labels(n_test),
    }
    content.update(arrays or {})
    for stem, array in content.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return content


def medmnist_arrays(
    sizes: dict[str, int] | None = None, *, side: int = 28, seed: int = 0, labels_2d: bool = True
) -> dict[str, np.ndarray]:
    """Arrays of a small synthetic PneumoniaMNIST npz (labels (N, 1) as medmnist stores them)."""
    sizes = sizes or {"train": 30, "val": 10, "test": 12}
    arrays = {}
    for i, (split, n) in enumerate(sizes.items()):
        arrays[f"{split}_images"] = make_images(n, seed + i, side)
        labels = (np.arange(n) % 2).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1) if labels_2d else labels
    return arrays


def write_medmnist_npz(path: Path, arrays: dict[str, np.ndarray] | None = None, **kwargs) -> dict[str, np.ndarray]:
    """Write a medmnist-style npz (``np.savez_compressed``) to ``path``; return the arrays."""
    arrays = medmnist_arrays(**kwargs) if arrays is None else arrays
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.fixture
def synth():
    """Helpers that build synthetic dataset files (see the functions of this conftest)."""
    return types.SimpleNamespace(
        IDX_STEMS=IDX_STEMS,
        idx_bytes=idx_bytes,
        make_images=make_images,
        make_labels=make_labels,
        write_idx_set=write_idx_set,
        medmnist_arrays=medmnist_arrays,
        write_medmnist_npz=write_medmnist_npz,
    )


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """An empty per-test data folder in ``COURSE_DATA_DIR``; download failures are forgotten
    before and after the test, so no test sees another test's remembered failure."""
    import course_utils.data as course_data

    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("COURSE_DATA_DIR", str(folder))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    course_data._failed_downloads.clear()
    yield folder
    course_data._failed_downloads.clear()


@pytest.fixture
def offline(monkeypatch):
    """Every download fails as it would without network; returns the list of attempted calls."""
    import course_utils.datasets.store as core

    calls = []

    def fail(name, *args, **kwargs):
        calls.append(name)
        raise RuntimeError("offline")

    monkeypatch.setattr(core, "download", fail)
    return calls


@pytest.fixture
def full_mode(monkeypatch):
    """Full mode (``COURSE_FAST=0``): data resolution goes local copy -> download -> sample."""
    monkeypatch.setenv("COURSE_FAST", "0")


@pytest.fixture(scope="session")
def fast_site_out(tmp_path_factory) -> Path:
    """The fast site's build folder. The notebook re-run test records its first pass of each
    notebook there (``docs.site.build.record_execution``), so the build reuses it."""
    return tmp_path_factory.getbasetemp() / "site"


@pytest.fixture(scope="session")
def fast_site(fast_site_out) -> Path:
    """The course website built once per session in fast mode; returns its ``html`` folder
    (tests/test_site.py checks its pages, tests/test_browser.py opens one in Chromium). A notebook
    that the re-run test did not hand over (deselected, or changed since) is executed here."""
    from docs.site.build import FAST_CELL_TIMEOUT_S, build_site

    return build_site("fast", fast_site_out, jobs=2, timeout=FAST_CELL_TIMEOUT_S, log=lambda _: None).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the fast site run last, after the notebook re-run tests have handed it their
    executions (otherwise tests/test_browser.py, collected first, would build it from scratch)."""
    items.sort(key=lambda item: "fast_site" in getattr(item, "fixturenames", ()))
