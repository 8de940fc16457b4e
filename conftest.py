"""Test-suite settings, applied before any test or notebook kernel starts.

Fast mode everywhere, and empty temporary data and cache folders, so that no test
depends on the network, on dataset copies outside the repository, or on data a developer
happens to have in data/.
Notebook kernels started by the tests inherit these variables (the re-run test and the grader tests
set their own per-test folders on top).
"""

import os
import tempfile

_session_dir = tempfile.mkdtemp(prefix="course-tests-")
os.environ["COURSE_FAST"] = "1"
os.environ["COURSE_DATA_DIR"] = os.path.join(_session_dir, "data")
os.environ["COURSE_CACHE_DIR"] = os.path.join(_session_dir, "cache")
os.environ.setdefault("MPLBACKEND", "Agg")
