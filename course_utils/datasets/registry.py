"""The dataset registry: every dataset the course knows, one entry each.

An entry is a :class:`DatasetSpec` (defined in ``formats.py``, re-exported here): the name, the classes, the official split sizes, the
licence and citation, and ONE format instance that knows the files (``formats.py`` for idx
and MedMNIST npz, ``folders.py`` for image folders). Everything else (``load_dataset``,
``python -m data_download``, ``--list``, ``--verify``, the bundled sample) works from the
entry alone. How to add a dataset: ``docs/design.md``, section "Datasets".
"""

from __future__ import annotations

from pathlib import Path

from .folders import ImageFolderFormat, MaskRule
from .formats import DatasetSpec, IdxFormat, MedMNISTFormat

__all__ = ["DatasetSpec", "DATASETS", "SAMPLE_DIR", "get_spec", "register"]

# the bundled samples (a few hundred real images per class) of the datasets that have one
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (its name must be new); returns it."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    if spec.default_size is not None:
        spec.check_size(spec.default_size)
    DATASETS[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (case-insensitive; ``_`` and ``-`` alike; ``fashionmnist`` too)."""
    key = str(name).strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


# =========================================================================== MNIST-like (idx)
register(DatasetSpec(
    name="mnist",
    format=IdxFormat(
        folder="MNIST",
        torchvision_class="MNIST",
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
    class_names=tuple(str(d) for d in range(10)),
    split_sizes={"train": 60_000, "test": 10_000},
    license="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges)",
    citation="LeCun et al. 1998, Gradient-based learning applied to document recognition",
    homepage="http://yann.lecun.com/exdb/mnist/",
    has_sample=True,
))

register(DatasetSpec(
    name="fashion-mnist",
    format=IdxFormat(
        folder="FashionMNIST",
        torchvision_class="FashionMNIST",
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
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    split_sizes={"train": 60_000, "test": 10_000},
    license="MIT (Zalando SE)",
    citation="Xiao, Rasul, Vollgraf 2017, Fashion-MNIST, arXiv:1708.07747",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    has_sample=True,
))

# =========================================================================== MedMNIST (npz)
register(DatasetSpec(
    name="pneumoniamnist",
    format=MedMNISTFormat(
        medmnist_class="PneumoniaMNIST",
        npz_md5={
            28: "28209eda62fecd6e6a2d98b1501bb15f",
            64: "8f4eceb4ccffa70c672198ea285246c6",
            128: "05b46931834c231683c68f40c47b2971",
            224: "d6a3c71de1b945ea11211b03746c1fe1",
        },
    ),
    class_names=("normal", "pneumonia"),
    split_sizes={"train": 4_708, "val": 524, "test": 624},
    license="CC BY 4.0 (Kermany et al. 2018; Yang et al. MedMNIST v2)",
    citation="Yang et al. 2023, MedMNIST v2, Scientific Data 10:41",
    homepage="https://medmnist.com/",
    sizes=(28, 64, 128, 224),
    has_sample=True,
))

# =========================================================================== image folders
# Kermany et al. 2018 chest X-rays (the originals behind PneumoniaMNIST), as unpacked from Mendeley Data:
# chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg. No pixel ground truth.
register(DatasetSpec(
    name="chest-xray",
    format=ImageFolderFormat(
        folder="chest_xray",
        class_folders=("NORMAL", "PNEUMONIA"),
        split_classes={"train": (0, 1), "val": (0, 1), "test": (0, 1)},
        source_names=("chest_xray",),
    ),
    class_names=("normal", "pneumonia"),
    split_sizes={"train": 5_216, "val": 16, "test": 624},
    license="CC BY 4.0 (Kermany, Zhang, Goldbaum 2018)",
    citation="Kermany et al. 2018, Cell 172(5); data: Mendeley Data doi:10.17632/rscbjbr9sj.2",
    homepage="https://data.mendeley.com/datasets/rscbjbr9sj/2",
    sizes=None,
    default_size=256,
))

# MVTec AD (Bergmann et al. 2019/2021): one dataset per category, because every consumer (results,
# caches, the benchmark command line) keys on the dataset name. Layout of a category:
# <category>/train/good, <category>/test/{good,<defect>...}, <category>/ground_truth/<defect>/<stem>_mask.png.
_MVTEC_CATEGORIES: dict[str, tuple[tuple[str, ...], int, int]] = {
    # category: (defect types, train images, test images), as in the official release
    "bottle": (("broken_large", "broken_small", "contamination"), 209, 83),
    "cable": (("bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
               "missing_cable", "missing_wire", "poke_insulation"), 224, 150),
    "capsule": (("crack", "faulty_imprint", "poke", "scratch", "squeeze"), 219, 132),
    "carpet": (("color", "cut", "hole", "metal_contamination", "thread"), 280, 117),
    "grid": (("bent", "broken", "glue", "metal_contamination", "thread"), 264, 78),
    "hazelnut": (("crack", "cut", "hole", "print"), 391, 110),
    "leather": (("color", "cut", "fold", "glue", "poke"), 245, 124),
    "metal_nut": (("bent", "color", "flip", "scratch"), 220, 115),
    "pill": (("color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"), 267, 167),
    "screw": (("manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"), 320, 160),
    "tile": (("crack", "glue_strip", "gray_stroke", "oil", "rough"), 230, 117),
    "toothbrush": (("defective",), 60, 42),
    "transistor": (("bent_lead", "cut_lead", "damaged_case", "misplaced"), 213, 100),
    "wood": (("color", "combined", "hole", "liquid", "scratch"), 247, 79),
    "zipper": (("broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
                "squeezed_teeth"), 240, 151),
}
for _category, (_defects, _n_train, _n_test) in _MVTEC_CATEGORIES.items():
    register(DatasetSpec(
        name=f"mvtec-{_category.replace('_', '-')}",
        format=ImageFolderFormat(
            folder=f"mvtec_ad/{_category}",
            class_folders=("good", *_defects),
            split_classes={"train": (0,), "test": tuple(range(1 + len(_defects)))},
            masks=MaskRule(folder="ground_truth", suffix="_mask", extensions=(".png",)),
            color=True,
            source_names=(_category, f"mvtec_ad/{_category}", f"mvtec_anomaly_detection/{_category}"),
        ),
        class_names=("good", *_defects),
        split_sizes={"train": _n_train, "test": _n_test},
        license="CC BY-NC-SA 4.0 (MVTec Software GmbH)",
        citation="Bergmann et al. 2021, The MVTec Anomaly Detection Dataset, IJCV 129:1038-1059",
        homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
        sizes=None,
        default_size=256,
    ))

# bTAD, the beanTech industrial set that AE-FLOW also reports on (Mishra et al. 2021): products 01, 02, 03.
# Layout of a product: <id>/train/ok, <id>/test/{ok,ko}, <id>/ground_truth/ko/<stem>.png (or .bmp).
_BTAD_PRODUCTS = {"01": (400, 70), "02": (399, 230), "03": (1_000, 441)}
for _product, (_n_train, _n_test) in _BTAD_PRODUCTS.items():
    register(DatasetSpec(
        name=f"btad-{_product}",
        format=ImageFolderFormat(
            folder=f"btad/{_product}",
            class_folders=("ok", "ko"),
            split_classes={"train": (0,), "test": (0, 1)},
            masks=MaskRule(folder="ground_truth", suffix="", extensions=(".png", ".bmp")),
            color=True,
            source_names=(_product, f"BTech_Dataset_transformed/{_product}", f"btad/{_product}"),
        ),
        class_names=("ok", "ko"),
        split_sizes={"train": _n_train, "test": _n_test},
        license="CC BY-SA 4.0 (beanTech srl)",
        citation="Mishra et al. 2021, VT-ADL: A Vision Transformer Network for Image Anomaly Detection and "
                 "Localization, ISIE",
        homepage="https://avires.dimi.uniud.it/papers/btad/btad.zip",
        sizes=None,
        default_size=256,
    ))
