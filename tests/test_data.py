"""Tests for course_utils.data (loading, resolution order, one-class split, synthetic
anomalies, toy stripes) and course_utils.config (paths, fast mode, seeding).

No test uses the network: downloads are replaced by a function that fails (``offline``)
or by one that places synthetic files. Full local copies are small synthetic idx / npz
files in a per-test ``COURSE_DATA_DIR``.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import course_utils.datasets.store as core
from course_utils import config
from course_utils.data import (
    SAMPLE_DIR,
    SampleDataWarning,
    dataset_info,
    frequency_stripes,
    load_dataset,
    one_class_split,
    paste_squares,
)
from course_utils.datasets.formats import DataFormatError

DATASETS = ("mnist", "fashion-mnist", "pneumoniamnist")


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails the test."""

    def forbidden(*args, **kwargs):
        pytest.fail("download() must not be called here")

    monkeypatch.setattr(core, "download", forbidden)


def sample_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLE_DIR / f"{name}.npz") as npz:
        return npz[f"{split}_images"], npz[f"{split}_labels"]


# =========================================================================== load_dataset: bundled sample
@pytest.mark.parametrize(
    "name, split",
    [(n, s) for n in DATASETS for s in ("train", "test")] + [("pneumoniamnist", "val")],
)
def test_load_sample(data_home, no_download, name, split):
    result = load_dataset(name, split, source="sample")
    images, labels = result.images, result.labels
    assert result.source == "sample"
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.ndim == 4 and images.shape[1:] == (1, 28, 28)
    assert len(result) == images.shape[0] == labels.shape[0] > 0
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert float(images.max()) > 0.5  # really scaled to [0, 1], not [0, 1/255]
    assert set(labels.tolist()) == set(range(dataset_info(name).n_classes))
    raw_images, raw_labels = sample_arrays(name, split)
    torch.testing.assert_close(images[:, 0], torch.from_numpy(raw_images).float() / 255)
    assert labels.tolist() == raw_labels.astype(np.int64).tolist()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_val_split_only_for_pneumoniamnist(name):
    with pytest.raises(ValueError, match="val"):
        load_dataset(name, "val", source="sample")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "cifar10"},
        {"name": "mnist", "split": "validation"},
        {"name": "mnist", "source": "internet"},
        {"name": "pneumoniamnist", "size": 32},
    ],
)
def test_load_dataset_rejects_bad_arguments(no_download, kwargs):
    with pytest.raises(ValueError):
        load_dataset(**{"split": "train", "source": "sample", **kwargs})


# =========================================================================== load_dataset: resolution order
def test_fast_mode_uses_sample_without_download(data_home, fast, no_download):
    result = load_dataset("mnist", "train")  # source="auto"
    assert result.source == "sample"
    assert list(data_home.iterdir()) == []  # nothing was fetched


def test_fast_mode_prefers_sample_over_local_copy(data_home, fast, no_download, synth):
    synth.write_idx_set(data_home / "MNIST" / "raw", n_train=40)
    result = load_dataset("mnist", "train")
    assert result.source == "sample"
    assert len(result) == len(sample_arrays("mnist", "train")[1])


def test_auto_without_copy_falls_back_loudly(data_home, full_mode, offline, capsys):
    with pytest.warns(SampleDataWarning):
        result = load_dataset("fashion-mnist", "train")
    assert result.source == "sample"
    assert "offline" in result.note
    out = capsys.readouterr().out
    assert "SAMPLE" in out
    assert "python -m data_download fashion-mnist" in out
    assert len(result) == len(sample_arrays("fashion-mnist", "train")[1])


def test_failed_download_is_not_retried(data_home, full_mode, offline):
    with pytest.warns(SampleDataWarning):
        load_dataset("mnist", "train")
    with pytest.warns(SampleDataWarning):
        load_dataset("mnist", "test")
    assert offline == ["mnist"]


def test_full_without_copy_raises_with_instructions(data_home, full_mode, offline):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", "test", source="full")
    assert "python -m data_download" in str(info.value)
    assert str(data_home) in str(info.value)


@pytest.mark.parametrize("source", ["auto", "full"])
def test_local_partial_copy_is_used_with_warning(data_home, full_mode, no_download, synth, source):
    written = synth.write_idx_set(data_home / "FashionMNIST" / "raw", n_train=40, n_test=20)
    with pytest.warns(UserWarning, match="PARTIAL"):
        train = load_dataset("fashion-mnist", "train", source=source)
    assert train.source == "partial"
    assert "40" in train.note
    expected = torch.from_numpy(written["train-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    torch.testing.assert_close(train.images, expected)
    assert train.labels.tolist() == written["train-labels-idx1-ubyte"].astype(int).tolist()
    test = load_dataset("fashion-mnist", "test", source=source)
    assert len(test) == 20 and test.source == "partial"


def test_a_partial_copy_warns_once_per_process_not_per_load(data_home, full_mode, no_download, synth):
    synth.write_idx_set(data_home / "FashionMNIST" / "raw", n_train=40, n_test=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # no deduplication by the warnings module: the loader's own
        for _ in range(3):
            load_dataset("fashion-mnist", "train", source="full")
    assert sum("PARTIAL" in str(w.message) for w in caught) == 1


def test_download_then_local_copy(data_home, full_mode, monkeypatch, synth, tmp_path):
    """auto: no local copy -> a (fake) download places the files -> they are read."""
    calls = []

    def fake_download(name, root, size=28, quiet=False):
        calls.append(name)
        synth.write_idx_set(tmp_path / "fetched", n_train=30, n_test=10)
        report = core.import_from_dir(name, tmp_path / "fetched", root)
        assert report.ok

    monkeypatch.setattr(core, "download", fake_download)
    with pytest.warns(UserWarning, match="PARTIAL"):
        result = load_dataset("mnist", "train")
    assert calls == ["mnist"]
    assert result.source == "partial" and len(result) == 30


def test_corrupt_local_copy_is_reported_not_silently_replaced(data_home, full_mode, no_download, synth):
    raw_dir = data_home / "MNIST" / "raw"
    synth.write_idx_set(raw_dir)
    path = raw_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampleDataWarning)
        with pytest.raises(DataFormatError, match="train-images-idx3-ubyte"):
            load_dataset("mnist", "train")


def test_local_npz_copy(data_home, full_mode, no_download, synth):
    arrays = synth.write_medmnist_npz(data_home / "pneumoniamnist.npz")
    result = load_dataset("pneumoniamnist", "val")
    assert result.source == "partial"
    torch.testing.assert_close(result.images[:, 0], torch.from_numpy(arrays["val_images"]).float() / 255)
    assert result.labels.tolist() == arrays["val_labels"].ravel().astype(int).tolist()


def test_local_partial_npz_copy_warns_like_idx(data_home, full_mode, no_download, synth):
    synth.write_medmnist_npz(data_home / "pneumoniamnist.npz")
    with pytest.warns(UserWarning):
        load_dataset("pneumoniamnist", "train")


def test_local_64px_copy(data_home, full_mode, no_download, synth):
    synth.write_medmnist_npz(data_home / "pneumoniamnist_64.npz", side=64)
    result = load_dataset("pneumoniamnist", "test", size=64)
    assert result.images.shape[1:] == (1, 64, 64)


@pytest.mark.parametrize("mode", ["fast", "full-offline"])
def test_64px_without_copy_raises_instead_of_28px_sample(data_home, monkeypatch, offline, mode):
    monkeypatch.setenv("COURSE_FAST", "1" if mode == "fast" else "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleDataWarning)
        with pytest.raises(FileNotFoundError, match="64"):
            load_dataset("pneumoniamnist", "train", size=64)


def test_64px_without_copy_does_not_claim_to_use_sample(data_home, full_mode, offline, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampleDataWarning)
        with pytest.raises(FileNotFoundError):
            load_dataset("pneumoniamnist", "train", size=64)
    assert "USING THE SMALL BUNDLED SAMPLE" not in capsys.readouterr().out


def test_64px_for_mnist_is_rejected(no_download):
    with pytest.raises(ValueError, match="64"):
        load_dataset("mnist", "train", size=64)


# =========================================================================== one_class_split (on the bundled sample)
def split(name="mnist", normal=3, **kwargs):
    return one_class_split(name, normal, source="sample", **kwargs)


def as_bytes(images: torch.Tensor) -> list[bytes]:
    """The images as a sorted list of byte strings: equal lists mean the same multiset of images."""
    pixels = (images * 255).round().to(torch.uint8).numpy()
    return sorted(image.tobytes() for image in pixels)


def test_one_class_split_single_normal_class():
    result = split(normal=3)
    test = load_dataset("mnist", "test", source="sample")
    assert result.normal_classes == (3,)
    assert set(result.train_classes.tolist()) == {3}
    assert len(result.train_images) == 300 and result.n_contamination == 0
    torch.testing.assert_close(result.test_images, test.images)
    assert result.test_classes.tolist() == test.labels.tolist()
    assert result.test_labels.tolist() == [int(c != 3) for c in test.labels.tolist()]
    assert result.source == "sample"
    assert "sample" in result.describe()


def test_one_class_split_train_images_are_the_normal_images():
    result = split(normal=5)
    train = load_dataset("mnist", "train", source="sample")
    assert as_bytes(result.train_images) == as_bytes(train.images[train.labels == 5])


def test_one_class_split_several_normal_classes():
    result = split(normal=[7, 1])
    assert result.normal_classes == (1, 7)
    assert set(result.train_classes.tolist()) == {1, 7} and len(result.train_images) == 600
    expected = [int(c not in (1, 7)) for c in result.test_classes.tolist()]
    assert result.test_labels.tolist() == expected and sum(expected) == 800


def test_one_class_split_val_fraction_holds_out_normals():
    result = split(normal=2, val_fraction=0.2)
    assert len(result.val_images) == 60 and len(result.train_images) == 240
    assert result.val_labels.tolist() == [0] * 60
    train = load_dataset("mnist", "train", source="sample")
    # train and val together are exactly the normal images, each once
    assert as_bytes(torch.cat([result.train_images, result.val_images])) == as_bytes(train.images[train.labels == 2])
    assert len(split(normal=2).val_images) == 0  # default: no hold-out


def test_one_class_split_pneumoniamnist_uses_official_val():
    result = split("pneumoniamnist", normal=0, val_fraction=0.5)  # val_fraction ignored: official val split
    val = load_dataset("pneumoniamnist", "val", source="sample")
    torch.testing.assert_close(result.val_images, val.images)
    assert result.val_labels.tolist() == [int(c != 0) for c in val.labels.tolist()]
    assert set(result.val_labels.tolist()) == {0, 1}
    assert len(result.train_images) == 300 and set(result.train_classes.tolist()) == {0}


def test_one_class_split_pneumoniamnist_pneumonia_as_normal():
    result = split("pneumoniamnist", normal=1)
    val = load_dataset("pneumoniamnist", "val", source="sample")
    assert result.val_labels.tolist() == [int(c != 1) for c in val.labels.tolist()]
    assert result.test_labels.tolist() == [int(c != 1) for c in result.test_classes.tolist()]
    assert set(result.train_classes.tolist()) == {1}


def test_one_class_split_n_train_caps():
    assert len(split(normal=4, n_train=50).train_images) == 50
    assert set(split(normal=4, n_train=50).train_classes.tolist()) == {4}
    assert len(split(normal=4, n_train=10_000).train_images) == 300


def test_one_class_split_contamination():
    result = split(normal=0, contamination=0.1, contamination_classes=[6, 8])
    classes = result.train_classes.tolist()
    assert result.n_contamination == 30
    assert classes.count(0) == 300 and len(classes) == 330
    assert set(classes) - {0} <= {6, 8}
    # default pool: every non-normal class
    default = split(normal=0, contamination=0.1, seed=1)
    assert default.n_contamination == 30 and 0 not in set(default.train_classes.tolist()) - {0}
    assert (default.train_classes != 0).sum().item() == 30
    # contamination is a fraction of the normals actually kept
    capped = split(normal=0, contamination=0.1, n_train=47)
    assert capped.n_contamination == 5 and len(capped.train_images) == 52  # round(4.7)


def test_one_class_split_seeds():
    a = split(normal=0, contamination=0.1, n_train=100, seed=0)
    b = split(normal=0, contamination=0.1, n_train=100, seed=0)
    c = split(normal=0, contamination=0.1, n_train=100, seed=1)
    torch.testing.assert_close(a.train_images, b.train_images)
    assert a.train_classes.tolist() == b.train_classes.tolist()
    assert not torch.equal(a.train_images, c.train_images)
    contamination = lambda s: as_bytes(s.train_images[s.train_classes != 0])  # noqa: E731
    assert contamination(a) != contamination(c)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"normal": 10}, "10"),
        ({"normal": -1}, "-1"),
        ({"normal": []}, "empty"),
        ({"normal": list(range(10))}, "every class"),
        ({"normal": 0, "contamination": 2.0, "contamination_classes": [5]}, "contamination"),
        ({"normal": 0, "contamination": -0.1}, "contamination"),
        ({"normal": 0, "contamination_classes": [0, 5]}, "also normal"),
        ({"normal": 0, "contamination_classes": [11]}, "11"),
        ({"normal": 0, "val_fraction": 1.0}, "val_fraction"),
        ({"normal": 0, "n_train": 0}, "n_train"),
    ],
)
def test_one_class_split_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split(**kwargs)


def test_one_class_split_rejects_infinite_contamination():
    with pytest.raises(ValueError, match="contamination"):
        split(normal=0, contamination=float("inf"))


def test_one_class_split_pneumoniamnist_all_normal():
    with pytest.raises(ValueError, match="every class"):
        split("pneumoniamnist", normal=[0, 1])


# =========================================================================== paste_squares
def random_images(n=40, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def object_images(n=30):
    """Black images with one bright 10 x 10 object at rows 6..15, columns 9..18."""
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 6:16, 9:19] = 0.9
    return images


@pytest.mark.parametrize("on_foreground", [False, True])
def test_paste_squares_one_square_per_image(on_foreground):
    images = random_images(60)
    defective, mask = paste_squares(images, on_foreground=on_foreground, seed=3)
    assert defective.shape == images.shape and mask.shape == images.shape and mask.dtype == torch.bool
    sizes = mask.sum(dim=(1, 2, 3)).tolist()
    assert set(sizes) == {4, 9, 16}  # sides 2, 3 and 4 all occur
    for m, size in zip(mask[:, 0], sizes):
        rows, cols = torch.nonzero(m, as_tuple=True)
        side = int(round(size ** 0.5))
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side  # a solid square
    assert torch.equal(defective[~mask], images[~mask])
    inside = defective[mask]
    assert torch.all((inside == 0) | (inside == 1))
    assert float(defective.min()) >= 0 and float(defective.max()) <= 1


def test_paste_squares_is_deterministic():
    images = random_images()
    a = paste_squares(images, seed=7)
    b = paste_squares(images, seed=7)
    c = paste_squares(images, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(images, random_images())  # input not modified


def test_paste_squares_on_foreground_lies_on_the_object():
    images = object_images()
    _, mask = paste_squares(images, size_range=(2, 4), on_foreground=True, seed=0)
    assert torch.all(images[mask] > 0.2)
    # without the option, squares land on the background too
    _, anywhere = paste_squares(images, size_range=(2, 4), on_foreground=False, seed=0)
    assert torch.any(images[anywhere] == 0)


def test_paste_squares_without_room_on_foreground_still_pastes():
    images = torch.zeros(5, 1, 28, 28)
    defective, mask = paste_squares(images, size_range=(3, 3), values=(1.0,), seed=0)
    assert mask.sum(dim=(1, 2, 3)).tolist() == [9] * 5
    assert torch.all(defective[mask] == 1.0)


def test_paste_squares_several_squares():
    _, mask = paste_squares(object_images(10), n_squares=3, size_range=(2, 2), seed=0)
    assert torch.all(mask.sum(dim=(1, 2, 3)) >= 4) and torch.any(mask.sum(dim=(1, 2, 3)) > 4)


@pytest.mark.parametrize(
    "images, kwargs",
    [
        pytest.param(torch.full((2, 1, 28, 28), 1.5), {}, id="above-1"),
        pytest.param(torch.full((2, 1, 28, 28), -0.1), {}, id="below-0"),
        pytest.param(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), {}, id="uint8"),
        pytest.param(torch.zeros(1, 28, 28), {}, id="3-D"),
        pytest.param(np.zeros((2, 1, 28, 28), dtype=np.float32), {}, id="numpy"),
        pytest.param(torch.zeros(2, 1, 28, 28), {"size_range": (0, 2)}, id="size-0"),
        pytest.param(torch.zeros(2, 1, 28, 28), {"size_range": (4, 2)}, id="size-reversed"),
        pytest.param(torch.zeros(2, 1, 28, 28), {"size_range": (2, 28)}, id="size-too-big"),
        pytest.param(torch.zeros(2, 1, 28, 28), {"values": (2.0,)}, id="value-2"),
        pytest.param(torch.zeros(2, 1, 28, 28), {"n_squares": 0}, id="no-squares"),
    ],
)
def test_paste_squares_rejects_bad_inputs(images, kwargs):
    with pytest.raises(ValueError):
        paste_squares(images, **kwargs)


# =========================================================================== frequency_stripes
def test_frequency_stripes_shape_range_labels():
    images, freqs = frequency_stripes([2, 5, 9], 4, size=28, intensity_range=(0.5, 0.8), seed=0)
    assert images.shape == (12, 1, 28, 28) and images.dtype == torch.float32
    assert freqs.dtype == torch.int64 and freqs.tolist() == [2] * 4 + [5] * 4 + [9] * 4
    assert float(images.min()) >= 0.0 and float(images.max()) <= 0.8 + 1e-6
    assert float(images.amax(dim=(1, 2, 3)).min()) >= 0.5 * 0.9  # amplitude from the range (grid max near peak)
    again, _ = frequency_stripes([2, 5, 9], 4, size=28, intensity_range=(0.5, 0.8), seed=0)
    assert torch.equal(images, again)


def spectrum_peak(image: torch.Tensor) -> tuple[int, int]:
    spectrum = torch.fft.fft2(image - image.mean()).abs()
    index = int(torch.argmax(spectrum))
    return divmod(index, image.shape[-1])


@pytest.mark.parametrize("frequency", [3, 12])
def test_frequency_stripes_spectrum_peak(frequency):
    images, _ = frequency_stripes([frequency], 5, rotate=False, seed=1)
    for image in images[:, 0]:
        assert torch.allclose(image, image[0].expand_as(image))  # vertical stripes: every row alike
        row, col = spectrum_peak(image)
        assert row == 0 and col in (frequency, 28 - frequency)


def test_frequency_stripes_rotate_gives_both_orientations():
    images, _ = frequency_stripes([4], 40, rotate=True, seed=0)
    peaks = {spectrum_peak(image) for image in images[:, 0]}
    assert peaks <= {(0, 4), (0, 24), (4, 0), (24, 0)}  # the requested frequency, along one axis
    assert any(row == 0 for row, _ in peaks) and any(col == 0 for _, col in peaks)  # vertical and horizontal


@pytest.mark.parametrize(
    "frequencies, n, kwargs",
    [
        ([0], 2, {}),
        ([14], 2, {}),  # Nyquist of a 28 px image
        ([3, 20], 2, {}),
        ([], 2, {}),
        ([3], 0, {}),
        ([3], 2, {"intensity_range": (0.0, 1.0)}),
        ([3], 2, {"intensity_range": (0.5, 1.2)}),
        ([8], 2, {"size": 16}),
    ],
)
def test_frequency_stripes_rejects_bad_arguments(frequencies, n, kwargs):
    with pytest.raises(ValueError):
        frequency_stripes(frequencies, n, **kwargs)


# =========================================================================== config
@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), (" YES ", True), ("on", True),
                                             ("0", False), ("", False), ("false", False), ("off", False)])
def test_is_fast_parses(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_FAST", value)
    assert config.is_fast() is expected


def test_is_fast_unset_is_full_mode(monkeypatch):
    monkeypatch.delenv("COURSE_FAST", raising=False)
    assert config.is_fast() is False


@pytest.mark.parametrize("value", ["ture", "2", "fast"])
def test_is_fast_rejects_typos(monkeypatch, value):
    monkeypatch.setenv("COURSE_FAST", value)
    with pytest.raises(ValueError, match="COURSE_FAST"):
        config.is_fast()


@pytest.mark.parametrize("function, variable, default", [(config.data_dir, "COURSE_DATA_DIR", "data"),
                                                          (config.cache_dir, "COURSE_CACHE_DIR", "cache")])
def test_folders_follow_environment(monkeypatch, tmp_path, function, variable, default):
    monkeypatch.setenv(variable, str(tmp_path / "x"))
    assert function() == tmp_path / "x"
    monkeypatch.setenv(variable, "~/somewhere")
    assert function() == Path.home() / "somewhere"
    monkeypatch.delenv(variable)
    assert function() == config.REPO_ROOT / default


def test_seed_everything_reproduces_draws():
    generator = config.seed_everything(123)
    first = (torch.rand(5), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    generator = config.seed_everything(123)
    second = (torch.rand(5), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    assert torch.equal(first[0], second[0]) and torch.equal(first[3], second[3])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
    config.seed_everything(124)
    assert not torch.equal(torch.rand(5), first[0])


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", None])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises(ValueError):
        config.seed_everything(seed)
