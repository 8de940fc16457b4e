"""The command line for the course datasets: ``python -m data_download --help``.

The work is done by ``course_utils.datasets`` (registry, formats, import / download /
verify / sample); this package is only its command line, so it depends on course_utils and
never the other way round. The functions are re-exported for scripts that used them from here.
"""

from course_utils.datasets import DATASETS, DataFormatError, build_sample, download, get_spec, import_from_dir, status, verify

__all__ = ["DATASETS", "DataFormatError", "get_spec", "build_sample", "download", "import_from_dir", "status", "verify"]
