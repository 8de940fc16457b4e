"""The course's datasets on disk: the registry, the formats, and the commands that fetch,
import, verify and sample them (``python -m data_download`` is their command line).

``course_utils.data`` is the front door that notebooks use (``load_dataset``,
``one_class_split``); this package is what it stands on. Layers, each importing only the
ones before it: ``formats`` (idx / MedMNIST files, the ``DatasetFormat`` interface) ->
``folders`` (image folders with masks) -> ``registry`` (one ``DatasetSpec`` per dataset) ->
``store`` (import / download / verify / status / sample).
"""

from .folders import ImageFolderFormat, MaskRule
from .formats import DataFormatError, DatasetFormat, IdxFormat, MedMNISTFormat, Report, SplitArrays
from .registry import DATASETS, SAMPLE_DIR, DatasetSpec, get_spec, register
from .store import SAMPLE_PER_CLASS, SAMPLE_SEED, build_sample, download, import_from_dir, status, verify

__all__ = [
    "DATASETS", "SAMPLE_DIR", "DatasetSpec", "get_spec", "register",
    "DatasetFormat", "IdxFormat", "MedMNISTFormat", "ImageFolderFormat", "MaskRule",
    "DataFormatError", "Report", "SplitArrays",
    "import_from_dir", "download", "verify", "status", "build_sample", "SAMPLE_PER_CLASS", "SAMPLE_SEED",
]
