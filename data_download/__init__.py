"""Fetch, import, verify and sample the course datasets: ``python -m data_download --help``."""

from .core import build_sample, download, import_from_dir, status, verify
from .formats import DATASETS, DataFormatError, get_spec

__all__ = ["DATASETS", "DataFormatError", "get_spec", "build_sample", "download", "import_from_dir", "status", "verify"]
