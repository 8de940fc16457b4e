"""Image-folder datasets through the front door: the Kermany chest X-ray, MVTec AD and bTAD
layouts on small folders the tests generate (PIL), imported with ``python -m data_download
NAME --from-dir DIR`` and read with ``load_dataset`` / ``one_class_split``.

Every image is synthetic and lives in a temporary folder. Masks are rectangles whose
position is known, so the masks ``load_dataset`` returns can be compared pixel for pixel.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils.data import SampleDataWarning, load_dataset, local_copy_present, one_class_split
from course_utils.datasets import DATASETS, DatasetSpec, ImageFolderFormat, MaskRule, get_spec, register
from course_utils.datasets.formats import DataFormatError
from course_utils.datasets.store import build_sample, import_from_dir, status, verify
from data_download.__main__ import main

pytestmark = pytest.mark.filterwarnings("ignore:.*PARTIAL copy:UserWarning")

SIDE = 24  # px of the generated images; loading at SIDE keeps masks exact (no resize)


def write_image(path: Path, seed: int, *, shape=(SIDE, SIDE), mode="RGB", fmt="PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=shape if mode == "L" else (*shape, 3), dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path, format=fmt)


def box_mask(seed: int, shape=(SIDE, SIDE)) -> np.ndarray:
    """A {0, 1} mask with one rectangle whose corner depends on ``seed``."""
    mask = np.zeros(shape, dtype=np.uint8)
    top, left = 2 + seed % 7, 3 + (seed * 5) % 9
    mask[top:top + 5, left:left + 7] = 1
    return mask


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask * 255, mode="L").save(path, format="PNG")


def files_under(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


# =========================================================================== generated folders
def make_mvtec(src: Path, category: str = "bottle", n_train: int = 4, n_good: int = 2, n_defect: int = 2) -> dict:
    """<src>/<category>/{train/good, test/{good,<defects>}, ground_truth/<defect>/<stem>_mask.png};
    returns the masks written, keyed by (defect, stem)."""
    spec = get_spec(f"mvtec-{category}")
    base, seed, masks = src / category, 0, {}
    for i in range(n_train):
        write_image(base / "train" / "good" / f"{i:03d}.png", seed := seed + 1)
    for i in range(n_good):
        write_image(base / "test" / "good" / f"{i:03d}.png", seed := seed + 1)
    for defect in spec.class_names[1:]:
        for i in range(n_defect):
            write_image(base / "test" / defect / f"{i:03d}.png", seed := seed + 1)
            masks[(defect, f"{i:03d}")] = box_mask(seed)
            write_mask(base / "ground_truth" / defect / f"{i:03d}_mask.png", masks[(defect, f"{i:03d}")])
    return masks


def make_btad(src: Path, product: str = "01") -> dict:
    """<src>/<product>/{train/ok, test/{ok,ko}, ground_truth/ko/<stem>.png}, images as .bmp like product 01."""
    base, masks = src / product, {}
    for i in range(3):
        write_image(base / "train" / "ok" / f"{i:04d}.bmp", 100 + i, fmt="BMP")
    for i in range(2):
        write_image(base / "test" / "ok" / f"{i:04d}.bmp", 200 + i, fmt="BMP")
        write_image(base / "test" / "ko" / f"{i:04d}.bmp", 300 + i, fmt="BMP")
        masks[f"{i:04d}"] = box_mask(300 + i)
        write_mask(base / "ground_truth" / "ko" / f"{i:04d}.png", masks[f"{i:04d}"])
    return masks


def make_kermany(src: Path) -> None:
    """<src>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg; non-square, some RGB, like the originals."""
    counts = {"train": (3, 2), "val": (1, 1), "test": (2, 3)}
    seed = 0
    for split, (n_normal, n_pneumonia) in counts.items():
        for folder, n in (("NORMAL", n_normal), ("PNEUMONIA", n_pneumonia)):
            for i in range(n):
                write_image(src / "chest_xray" / split / folder / f"img{i}.jpeg", seed := seed + 1, shape=(40, 52),
                            mode="RGB" if i == 0 else "L", fmt="JPEG")


@pytest.fixture
def mvtec_src(tmp_path) -> tuple[Path, dict]:
    src = tmp_path / "mvtec_anomaly_detection"
    return src, make_mvtec(src)


# =========================================================================== MVTec AD
def test_mvtec_import_and_load_with_masks(data_home, mvtec_src, capsys):
    src, masks = mvtec_src
    assert main(["mvtec-bottle", "--from-dir", str(src)]) == 0
    target = data_home / "mvtec_ad" / "bottle"
    manifest = json.loads((target / "manifest.json").read_text())
    # every file is listed with its sha256, and the copies are byte-identical to the sources
    assert len(manifest["sha256"]) == 4 + 2 + 3 * 2 * 2
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((target / rel).read_bytes()).hexdigest() == digest
        assert (target / rel).read_bytes() == (src / "bottle" / rel).read_bytes()
    out = capsys.readouterr().out
    assert "the official release has 209" in out  # counts differ from the release: a warning, not an error

    train = load_dataset("mvtec-bottle", "train", size=SIDE)  # fast mode (the tests' default) reads the local copy
    assert train.images.shape == (4, 3, SIDE, SIDE) and train.images.dtype == torch.float32
    assert train.labels.tolist() == [0] * 4 and train.source == "partial"
    assert train.masks.shape == (4, 1, SIDE, SIDE) and not train.masks.any()
    original = np.array(Image.open(src / "bottle" / "train" / "good" / "000.png"))
    torch.testing.assert_close(train.images[0], torch.from_numpy(original).permute(2, 0, 1).float() / 255)

    test = load_dataset("mvtec-bottle", "test", size=SIDE)
    spec = get_spec("mvtec-bottle")
    assert test.labels.tolist() == [0, 0] + [c for c in range(1, spec.n_classes) for _ in range(2)]
    assert test.masks.dtype == torch.bool and test.masks.shape == (len(test), 1, SIDE, SIDE)
    assert not test.masks[:2].any()  # good images: all-zero masks
    for row, (defect, stem) in enumerate(sorted(masks, key=lambda k: (spec.class_names.index(k[0]), k[1])), start=2):
        assert torch.equal(test.masks[row, 0], torch.from_numpy(masks[(defect, stem)].astype(bool))), (defect, stem)


def test_mvtec_resized_masks_stay_binary(data_home, mvtec_src):
    assert main(["mvtec-bottle", "--from-dir", str(mvtec_src[0])]) == 0
    test = load_dataset("mvtec-bottle", "test", size=12)
    assert test.images.shape[1:] == (3, 12, 12) and test.masks.shape[1:] == (1, 12, 12)
    assert test.masks[2:].flatten(1).any(dim=1).all()  # every defect keeps some anomalous pixels
    assert float(test.images.min()) >= 0 and float(test.images.max()) <= 1


def test_mvtec_one_class_protocol(data_home, mvtec_src):
    assert main(["mvtec-bottle", "--from-dir", str(mvtec_src[0])]) == 0
    split = one_class_split("mvtec-bottle", 0, size=SIDE)
    assert len(split.train_images) == 4 and set(split.train_classes.tolist()) == {0}
    assert split.test_labels.tolist() == [0, 0] + [1] * 6
    assert split.test_masks.shape == (8, 1, SIDE, SIDE)
    assert torch.equal(split.test_masks.flatten(1).any(dim=1).long(), split.test_labels)
    with pytest.raises(ValueError, match="contamination"):  # the train split has no anomalies to mix in
        one_class_split("mvtec-bottle", 0, size=SIDE, contamination=0.5)


def test_missing_folder_dataset_names_the_import_command(data_home):
    with pytest.raises(FileNotFoundError, match=r"python -m data_download mvtec-bottle --from-dir") as info:
        load_dataset("mvtec-bottle", "test")
    assert "mvtec.com" in str(info.value)  # where to download it
    with pytest.raises(FileNotFoundError, match="no bundled sample"):
        load_dataset("mvtec-bottle", "test", source="sample")
    with pytest.raises(ValueError, match="no bundled sample"):
        build_sample("mvtec-bottle", data_home, data_home / "out")


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_no_mode_falls_back_to_other_data(data_home, monkeypatch, offline, mode, capsys):
    monkeypatch.setenv("COURSE_FAST", "1" if mode == "fast" else "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampleDataWarning)
        with pytest.raises(FileNotFoundError, match="btad-02"):
            load_dataset("btad-02", "train")
    assert offline == []  # no download was even tried: the course cannot fetch these sets
    assert "SAMPLE" not in capsys.readouterr().out


# =========================================================================== clear errors, nothing written
def assert_nothing_written(data_home: Path) -> None:
    assert files_under(data_home) == []


def test_missing_mask_is_named(tmp_path, data_home, mvtec_src):
    src, _ = mvtec_src
    (src / "bottle" / "ground_truth" / "contamination" / "001_mask.png").unlink()
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok
    assert "test/contamination/001.png" in str(report) and "001_mask.png" in str(report)
    assert_nothing_written(data_home)


def test_empty_class_folder_is_named(data_home, mvtec_src):
    src, _ = mvtec_src
    for path in (src / "bottle" / "test" / "good").iterdir():
        path.unlink()
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok and "test/good holds no images" in str(report)
    assert_nothing_written(data_home)


def test_missing_class_folder_is_named(data_home, mvtec_src):
    src, _ = mvtec_src
    (src / "bottle" / "test" / "broken_small").rename(src / "bottle" / "test" / "Broken_Small")
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok and "Broken_Small" in str(report)  # an unknown folder (wrong case) is named
    assert_nothing_written(data_home)


def test_unreadable_image_is_named(data_home, mvtec_src):
    src, _ = mvtec_src
    bad = src / "bottle" / "test" / "broken_large" / "000.png"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated PNG
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok and "cannot read image" in str(report) and str(bad) in str(report)
    assert_nothing_written(data_home)


def test_unreadable_mask_and_wrong_mask_size_are_named(data_home, mvtec_src):
    src, _ = mvtec_src
    mask = src / "bottle" / "ground_truth" / "broken_large" / "000_mask.png"
    mask.write_bytes(b"not a png")
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok and "cannot read mask" in str(report) and "000_mask.png" in str(report)
    write_mask(mask, np.zeros((SIDE + 1, SIDE), dtype=np.uint8))
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok and "000_mask.png" in str(report) and f"{SIDE}x{SIDE + 1} px" in str(report)
    assert_nothing_written(data_home)


@pytest.mark.parametrize("where", ["split", "class"])
def test_stray_files_are_rejected(data_home, mvtec_src, where):
    src, _ = mvtec_src
    folder = src / "bottle" / "test" / ("" if where == "split" else "good")
    (folder / "notes.txt").write_text("not an image")
    report = import_from_dir("mvtec-bottle", src, data_home)
    assert not report.ok and "notes.txt" in str(report)
    assert_nothing_written(data_home)


def test_source_without_the_layout(tmp_path, data_home):
    (tmp_path / "empty").mkdir()
    report = import_from_dir("mvtec-bottle", tmp_path / "empty", data_home)
    assert not report.ok and "train/good" in str(report)


def test_failed_reimport_keeps_the_good_copy_and_a_good_one_replaces_it(tmp_path, data_home, mvtec_src):
    src, _ = mvtec_src
    assert import_from_dir("mvtec-bottle", src, data_home).ok
    target = data_home / "mvtec_ad" / "bottle"
    before = {p: p.read_bytes() for p in files_under(target)}
    other = tmp_path / "other"
    make_mvtec(other, n_train=5)
    (other / "bottle" / "ground_truth" / "broken_large" / "000_mask.png").unlink()
    assert not import_from_dir("mvtec-bottle", other, data_home).ok
    assert {p: p.read_bytes() for p in files_under(target)} == before
    write_mask(other / "bottle" / "ground_truth" / "broken_large" / "000_mask.png", box_mask(0))
    assert import_from_dir("mvtec-bottle", other, data_home).ok
    assert len(load_dataset("mvtec-bottle", "train", size=SIDE)) == 5
    assert [p.name for p in data_home.iterdir()] == ["mvtec_ad"]  # no staging or old copies left behind
    assert [p.name for p in (data_home / "mvtec_ad").iterdir()] == ["bottle"]


def test_files_added_after_the_import_are_not_read(data_home, mvtec_src):
    src, _ = mvtec_src
    assert import_from_dir("mvtec-bottle", src, data_home).ok
    write_image(data_home / "mvtec_ad" / "bottle" / "train" / "good" / "999.png", 99)
    assert len(load_dataset("mvtec-bottle", "train", size=SIDE)) == 4


# =========================================================================== verify and status
def test_verify_and_status(data_home, mvtec_src):
    src, _ = mvtec_src
    assert status("mvtec-bottle", data_home) == "missing"
    assert not verify("mvtec-bottle", data_home).ok
    assert import_from_dir("mvtec-bottle", src, data_home).ok
    assert status("mvtec-bottle", data_home) == "partial (4 train, 8 test)"
    assert main(["mvtec-bottle", "--verify"]) == 0
    changed = data_home / "mvtec_ad" / "bottle" / "test" / "good" / "001.png"
    write_image(changed, 1234)  # a valid image, but not the imported one
    report = verify("mvtec-bottle", data_home)
    assert not report.ok and "001.png" in str(report) and "sha256" in str(report)
    assert not changed.exists() and not (data_home / "mvtec_ad" / "bottle" / "manifest.json").exists()
    assert status("mvtec-bottle", data_home) == "not imported (no manifest)"
    with pytest.raises(FileNotFoundError, match="--from-dir"):  # never read half a dataset
        load_dataset("mvtec-bottle", "test")


def test_corrupt_manifest_is_reported(data_home, mvtec_src):
    assert import_from_dir("mvtec-bottle", mvtec_src[0], data_home).ok
    manifest = data_home / "mvtec_ad" / "bottle" / "manifest.json"
    good = json.loads(manifest.read_text())
    for broken in ("{not json", json.dumps({**good, "images": [{"split": "train"}]}), json.dumps({**good, "version": 99})):
        manifest.write_text(broken)
        with pytest.raises(DataFormatError, match="manifest.json"):
            load_dataset("mvtec-bottle", "train")
        assert status("mvtec-bottle", data_home) == "corrupt manifest"
        assert not verify("mvtec-bottle", data_home).ok


def test_cli_list_shows_folder_datasets(data_home, capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("mvtec-bottle "))
    assert "image-folder+masks" in line and "missing" in line and "CC BY-NC-SA" in line
    assert any(line.startswith("btad-03 ") for line in out.splitlines())
    assert any(line.startswith("chest-xray ") and "masks" not in line for line in out.splitlines())


# =========================================================================== bTAD
def test_btad_import_and_load(tmp_path, data_home):
    src = tmp_path / "BTech_Dataset_transformed"
    masks = make_btad(src)
    assert main(["btad-01", "--from-dir", str(src)]) == 0
    test = load_dataset("btad-01", "test", size=SIDE)
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert test.images.shape == (4, 3, SIDE, SIDE)
    assert not test.masks[:2].any()
    for row, stem in enumerate(sorted(masks), start=2):
        assert torch.equal(test.masks[row, 0], torch.from_numpy(masks[stem].astype(bool)))
    assert len(load_dataset("btad-01", "train", size=SIDE)) == 3


def test_btad_mask_as_bmp(tmp_path, data_home):
    src = tmp_path / "btad"
    make_btad(src, "03")
    mask = src / "03" / "ground_truth" / "ko" / "0001.png"
    Image.open(mask).save(mask.with_suffix(".bmp"), format="BMP")
    mask.unlink()
    assert import_from_dir("btad-03", src, data_home).ok
    assert load_dataset("btad-03", "test", size=SIDE).masks[3].any()


# =========================================================================== Kermany chest X-rays
def test_chest_xray_import_and_load(tmp_path, data_home):
    make_kermany(tmp_path / "download")
    assert not local_copy_present("chest-xray")
    assert main(["chest-xray", "--from-dir", str(tmp_path / "download")]) == 0
    assert local_copy_present("chest-xray") and local_copy_present("chest-xray", size=512)
    train = load_dataset("chest-xray", "train", size=32)
    assert train.images.shape == (5, 1, 32, 32) and train.labels.tolist() == [0, 0, 0, 1, 1]
    assert train.masks is None  # no pixel ground truth
    assert float(train.images.std()) > 0
    normals = load_dataset("chest-xray", "train", size=16, classes=0)
    assert normals.images.shape == (3, 1, 16, 16) and normals.labels.tolist() == [0, 0, 0]
    assert len(load_dataset("chest-xray", "val", size=16)) == 2
    split = one_class_split("chest-xray", 0, size=16)
    assert len(split.train_images) == 3 and split.val_labels.tolist() == [0, 1]
    assert split.test_labels.tolist() == [0, 0, 1, 1, 1] and split.test_masks is None
    with pytest.raises(ValueError, match="classes"):
        load_dataset("chest-xray", "train", size=16, classes=2)


def test_chest_xray_in_place_import_writes_only_the_manifest(tmp_path, data_home):
    make_kermany(data_home)  # unpacked straight into COURSE_DATA_DIR/chest_xray
    before = sorted(files_under(data_home))
    with pytest.raises(FileNotFoundError, match="--from-dir"):
        load_dataset("chest-xray", "test", size=16)  # no manifest yet: not read
    assert import_from_dir("chest-xray", data_home, data_home).ok
    assert sorted(files_under(data_home)) == sorted(before + [data_home / "chest_xray" / "manifest.json"])
    assert len(load_dataset("chest-xray", "test", size=16)) == 5


def test_chest_xray_layout_errors(tmp_path, data_home):
    make_kermany(tmp_path / "download")
    split = tmp_path / "download" / "chest_xray" / "train"
    (split / "PNEUMONIA").rename(split / "Pneumonia")
    report = import_from_dir("chest-xray", tmp_path / "download", data_home)
    assert not report.ok and "Pneumonia" in str(report)
    (split / "Pneumonia").rename(split / "PNEUMONIA")
    write_image(split / "NORMAL" / "nested" / "a.jpeg", 9, fmt="JPEG")
    report = import_from_dir("chest-xray", tmp_path / "download", data_home)
    assert not report.ok and "sub-folder" in str(report)
    for path in (split / "NORMAL" / "nested").iterdir():
        path.unlink()
    (split / "NORMAL" / "nested").rmdir()
    for path in (split.parent / "val" / "PNEUMONIA").iterdir():
        path.unlink()
    (split.parent / "val" / "PNEUMONIA").rmdir()
    report = import_from_dir("chest-xray", tmp_path / "download", data_home)
    assert not report.ok and "class folder" in str(report) and "val/PNEUMONIA is missing" in str(report)
    assert_nothing_written(data_home)


@pytest.mark.parametrize("kwargs, match", [({"size": 4}, "8 px"), ({"size": 32.0}, "integer"), ({"split": "training"}, "splits"),
                                           ({"source": "internet"}, "source")])
def test_folder_dataset_bad_arguments(data_home, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("chest-xray", **{"split": "train", **kwargs})


# =========================================================================== the registry: one entry
@pytest.fixture
def toy_dataset():
    """A new folder dataset added the documented way: one registry entry, no other file."""
    spec = register(DatasetSpec(
        name="toy-shapes",
        format=ImageFolderFormat(folder="toy_shapes", class_folders=("fine", "dented"),
                                 split_classes={"train": (0,), "test": (0, 1)},
                                 masks=MaskRule(folder="masks", suffix="", extensions=(".png",)), color=False),
        class_names=("fine", "dented"),
        split_sizes={"train": 2, "test": 2},
        license="CC0",
        citation="made by the tests",
        sizes=None,
        default_size=SIDE,
    ))
    yield spec
    del DATASETS[spec.name]


def test_a_new_dataset_is_one_registry_entry(tmp_path, data_home, toy_dataset, capsys):
    src = tmp_path / "toy"
    write_image(src / "train" / "fine" / "a.png", 1, mode="L")
    write_image(src / "train" / "fine" / "b.png", 2, mode="L")
    write_image(src / "test" / "fine" / "c.png", 3, mode="L")
    write_image(src / "test" / "dented" / "d.png", 4, mode="L")
    write_mask(src / "masks" / "dented" / "d.png", box_mask(4))
    assert main(["toy-shapes", "--from-dir", str(src)]) == 0
    assert main(["--list"]) == 0 and "toy-shapes" in capsys.readouterr().out
    split = one_class_split("toy-shapes", 0)
    assert split.train_images.shape == (2, 1, SIDE, SIDE) and split.test_labels.tolist() == [0, 1]
    assert torch.equal(split.test_masks[1, 0], torch.from_numpy(box_mask(4).astype(bool)))
    assert split.source == "full"
    with pytest.raises(ValueError, match="registered twice"):
        register(toy_dataset)
