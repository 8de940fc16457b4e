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


def test_kept_checkpoints_are_merged_without_overwriting(tmp_path):
    first, second, keep = tmp_path / "a", tmp_path / "b", tmp_path / "keep"
    for folder in (first, second):
        folder.mkdir()
    (first / "glow-1.pt").write_bytes(b"first")
    (first / ".glow-1.pt.lock").write_bytes(b"")  # lock files are not checkpoints
    (second / "glow-1.pt").write_bytes(b"second")
    (second / "ae-2.pt").write_bytes(b"ae")
    assert notebook_times.keep_checkpoints(first, keep) == ["glow-1.pt"]
    assert notebook_times.keep_checkpoints(second, keep) == ["ae-2.pt"]
    assert sorted(p.name for p in keep.iterdir()) == ["ae-2.pt", "glow-1.pt"]
    assert (keep / "glow-1.pt").read_bytes() == b"first"


def test_every_record_names_the_cpu_and_its_vector_instructions():
    import torch

    from benchmarks.report import environment_info

    machine = environment_info()["machine"]
    assert f"({torch.backends.cpu.get_cpu_capability()})" in machine, machine
    assert machine.split(", ")[1].split(" (")[0].strip(), machine  # a CPU name before the instruction set
