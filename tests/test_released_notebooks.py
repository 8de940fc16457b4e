"""Run All never stops: notebook 00's released version runs top to bottom in fast mode, in a fresh
process, with a wrong answer in every exercise (errors not allowed).

Each exercise's check then says what is wrong and the later cells go on with the course's reference
implementation. Every released notebook with its stubs ("not solved yet, 0 points") runs in
``tests/test_notebook_hygiene.py::test_every_cell_can_be_run_again``, in the kernel of the notebook's
re-run test after ``%reset -f``: it shares that kernel's start, imports and trained checkpoints
instead of paying for them a second time.
"""

from __future__ import annotations

import json
from pathlib import Path

import subprocess
import sys

import nbformat
import pytest

from course_grader import markers

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WRONG = "return 0  # a wrong answer"


_EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
node = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(node, timeout=900, kernel_name="python3", allow_errors=False,
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(node, sys.argv[1])
"""


def _run(notebook: dict, cwd: Path, tmp_path: Path) -> nbformat.NotebookNode:
    """Execute in a fresh process (nbclient's event loop, once per notebook); errors are not allowed."""
    path = tmp_path / "run.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    run = subprocess.run([sys.executable, "-c", _EXECUTE, str(path), str(cwd)], capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    return nbformat.read(path, as_version=4)


def _outputs(node: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for cell in node.cells if cell.cell_type == "code" for out in cell.outputs)


def test_notebook_00_runs_to_the_end_with_wrong_answers(tmp_path):
    released = markers.release([NOTEBOOKS[0]], tmp_path / "released")[0]   # only the notebook this test runs
    notebook = json.loads(released.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell["source"] = "".join(cell["source"]).replace("raise NotImplementedError()", WRONG)
    text = _outputs(_run(notebook, REPO / "notebooks", tmp_path))
    for exercise in markers.find_exercises(json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))):
        assert f"✗ {exercise.grade_id}: " in text and "visible cases are wrong" in text
    assert "expected" in text and "Hint:" in text
