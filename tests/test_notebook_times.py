"""benchmarks/notebook_times.py: a notebook's wall time, its slowest cells, and a failing cell reported."""

from __future__ import annotations

import nbformat
import pytest

from benchmarks import notebook_times


def _notebook(path, sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def test_time_notebook_reports_seconds_slowest_cells_and_the_cache_it_ran_with(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    cache = tmp_path / "cache"
    cache.mkdir()
    path = _notebook(tmp_path / "nb.ipynb", ["import os, time", "time.sleep(0.3)",
                                              "assert os.environ['COURSE_CACHE_DIR'] == %r" % str(cache),
                                              "assert 'COURSE_FAST' not in os.environ  # full mode"])
    result = notebook_times.time_notebook(path, cache)
    assert result["ok"] and result["error"] is None, result
    assert result["seconds"] >= 0.3
    assert result["slowest_cells"][0]["seconds"] >= 0.3  # the sleeping cell comes first
    import os
    assert os.environ["COURSE_FAST"] == "1"  # restored after the run


def test_a_failing_cell_is_reported_not_raised(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", ["x = 1", "raise ValueError('broken on purpose')", "y = 2"])
    result = notebook_times.time_notebook(path, tmp_path)
    assert not result["ok"] and "broken on purpose" in result["error"]


def test_the_command_refuses_fast_mode_and_unknown_notebooks(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_FAST", "1")
    with pytest.raises(SystemExit):
        notebook_times.main(["--out", str(tmp_path / "t.json")])
    monkeypatch.delenv("COURSE_FAST")
    with pytest.raises(SystemExit):
        notebook_times.main(["99", "--out", str(tmp_path / "t.json")])
    with pytest.raises(SystemExit):
        notebook_times.main(["00", "--bundle", str(tmp_path / "missing.tar"), "--out", str(tmp_path / "t.json")])
