"""Student versions and grading (issue #7): `python -m course_utils.grading release|grade`.

The grading tests run real Jupyter kernels. To stay fast they grade one small synthetic
source notebook (two exercises with tiny checks) for a dozen students once, in a
module-scoped fixture, and assert on that one result; notebook 00 is graded on its
setup and exercise cells only (its heavy cells would add about a minute per kernel).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils import grading
from docs.site.launch import is_colab_cell

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_00 = REPO / "notebooks" / "00_anomaly_detection_basics.ipynb"
TIMEOUT = 5  # seconds per cell in the synthetic grading run


# --------------------------------------------------------------------------- release
def _released(tmp_path: Path) -> dict:
    (path,) = grading.release([NOTEBOOK_00], tmp_path / "release")
    return json.loads(path.read_text(encoding="utf-8"))


def test_release_of_notebook_00_is_a_clean_student_version(tmp_path):
    source = json.loads(NOTEBOOK_00.read_text(encoding="utf-8"))
    student = _released(tmp_path)
    nbformat.validate(nbformat.from_dict(student))

    first = student["cells"][0]
    assert first["cell_type"] == "markdown" and first["id"] == grading.INSTRUCTIONS_CELL_ID
    text = "".join(first["source"])
    assert "check cell" in text and "✓" in text and "Do not edit or delete the check cells" in text

    assert [c["id"] for c in student["cells"][1:]] == [c["id"] for c in source["cells"]]  # ids kept, order kept
    everything = "".join("".join(c["source"]) for c in student["cells"])
    for marker in (grading.BEGIN_SOLUTION, grading.END_SOLUTION, grading.BEGIN_HIDDEN, grading.END_HIDDEN):
        assert marker not in everything
    assert "hidden=True" not in everything
    for exercise in grading.find_exercises(source):
        answer = "".join(source["cells"][exercise.solution_cell]["source"])
        region = answer.split(grading.BEGIN_SOLUTION)[1].split(grading.END_SOLUTION)[0]
        released = "".join(student["cells"][exercise.solution_cell + 1]["source"])
        assert "raise NotImplementedError()" in released and "# YOUR CODE HERE" in released
        for line in filter(None, (line.strip() for line in region.splitlines())):
            assert line not in released, f"solution line leaked: {line!r}"
        check = student["cells"][exercise.check_cell + 1]
        assert check["metadata"]["nbgrader"] == source["cells"][exercise.check_cell]["metadata"]["nbgrader"]
    for cell in student["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_release_twice_gives_identical_bytes(tmp_path):
    folder = tmp_path / "notebooks"  # a folder as SRC (only notebook 00: the others are not this test's business)
    folder.mkdir()
    (folder / NOTEBOOK_00.name).write_bytes(NOTEBOOK_00.read_bytes())
    first = grading.release([folder], tmp_path / "a")
    second = grading.release([NOTEBOOK_00], tmp_path / "b")
    again = grading.release([NOTEBOOK_00], tmp_path / "b")
    name = NOTEBOOK_00.name
    assert [p.name for p in first] == [p.name for p in second] == [p.name for p in again] == [name]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not [p for p in (tmp_path / "b").iterdir() if p.name != name], "no temporary files left behind"


def _source_with(tmp_path: Path, edit) -> Path:
    nb = json.loads(NOTEBOOK_00.read_text(encoding="utf-8"))
    edit(nb["cells"])
    path = tmp_path / "src" / NOTEBOOK_00.name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_release_refuses_unbalanced_markers_and_missing_check_cells(tmp_path):
    def unbalance(cells):
        exercise = grading.find_exercises({"cells": cells})[0]
        cells[exercise.solution_cell]["source"] = "".join(cells[exercise.solution_cell]["source"]).replace(
            grading.END_SOLUTION, "")

    def drop_check(cells):
        del cells[grading.find_exercises({"cells": cells})[1].check_cell]

    for edit, message in ((unbalance, "unbalanced"), (drop_check, "no check cell")):
        source = _source_with(tmp_path, edit)
        with pytest.raises(ValueError, match=message):
            grading.release([source], tmp_path / "out")
        assert not (tmp_path / "out").exists(), "a refused source writes nothing"


def test_release_never_overwrites_the_solutions(tmp_path):
    source = _source_with(tmp_path, lambda cells: None)
    with pytest.raises(ValueError, match="overwrite a solution"):
        grading.release([source], source.parent)
    assert grading.BEGIN_SOLUTION in source.read_text(encoding="utf-8")


def test_release_command_line(tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "course_utils.grading", "release", str(NOTEBOOK_00), "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / NOTEBOOK_00.name).read_bytes() == grading.notebook_bytes(
        grading.student_version(json.loads(NOTEBOOK_00.read_text(encoding="utf-8"))))
    bad = subprocess.run([sys.executable, "-m", "course_utils.grading", "release", str(tmp_path / "nope.ipynb"),
                          "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "no such notebook" in bad.stderr


# --------------------------------------------------------------------------- a small synthetic course
def _code(source: str, **nbgrader) -> dict:
    cell = nbformat.v4.new_code_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "grade": False, "locked": False, "solution": False,
                                     **nbgrader}
    return cell


DOUBLE_OK = "def double(x):\n    return 2 * x\n"
THRESHOLD_OK = "def threshold_for_fpr(scores, target_fpr):\n    return float(np.quantile(scores, 1.0 - target_fpr))\n"


def synthetic_source() -> dict:
    """Two exercises: `double` (1 point, a plain check against a locked data cell, plus a
    hidden case) and `threshold_for_fpr` (2 points, course_utils.checks)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Synthetic exercises"),
        _code("import numpy as np\nfrom course_utils import checks\n"
              "from course_utils.checks import ExerciseCheckError"),
        _code("DATA = [1, 2, 3]", grade_id="given-data", locked=True),
        _code(f"def double(x):\n    {grading.BEGIN_SOLUTION}\n    return 2 * x\n    {grading.END_SOLUTION}\n",
              grade_id="ex-double", solution=True),
        _code("found = [double(x) for x in DATA]\n"
              "if found != [2, 4, 6]:\n"
              "    raise ExerciseCheckError(f'[double] expected [2, 4, 6], found {found}')\n"
              "print('✓ double')\n"
              f"{grading.BEGIN_HIDDEN}\n"
              "if double(-5) != -10:\n"
              "    raise ExerciseCheckError(f'[double] hidden case: expected -10, found {double(-5)}')\n"
              f"{grading.END_HIDDEN}",
              grade_id="ex-double-check", grade=True, locked=True, points=1),
        _code("print(double(21))"),
        _code("def threshold_for_fpr(scores, target_fpr):\n"
              f"    {grading.BEGIN_SOLUTION}\n"
              "    return float(np.quantile(scores, 1.0 - target_fpr))\n"
              f"    {grading.END_SOLUTION}\n",
              grade_id="ex-threshold", solution=True),
        _code("checks.check_threshold_from_normals(threshold_for_fpr)\n"
              f"{grading.BEGIN_HIDDEN}\n"
              "checks.check_threshold_from_normals(threshold_for_fpr, hidden=True)\n"
              f"{grading.END_HIDDEN}",
              grade_id="ex-threshold-check", grade=True, locked=True, points=2),
    ]
    return nb


def _index(nb: dict, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb["cells"])
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _answer(nb: dict, grade_id: str, source: str) -> None:
    nb["cells"][_index(nb, grade_id)]["source"] = source


def _correct(nb: dict) -> None:
    _answer(nb, "ex-double", DOUBLE_OK)
    _answer(nb, "ex-threshold", THRESHOLD_OK)


def _wrong(nb):  # passes the visible check, fails the hidden case
    _correct(nb)
    _answer(nb, "ex-double", "def double(x):\n    return abs(2 * x)\n")


def _nan(nb):
    _correct(nb)
    _answer(nb, "ex-threshold", "def threshold_for_fpr(scores, target_fpr):\n    return float('nan')\n")


def _crash(nb):
    _correct(nb)
    _answer(nb, "ex-double", "def double(x):\n    raise RuntimeError('boom')\n")


def _loop(nb):
    _correct(nb)
    _answer(nb, "ex-double", DOUBLE_OK + "while True:\n    pass\n")


def _stubborn_loop(nb):  # ignores the interrupt: the kernel is shut down, the rest of the notebook scores 0
    _correct(nb)
    _answer(nb, "ex-threshold", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n")


def _tests_deleted(nb):
    _correct(nb)
    _answer(nb, "ex-threshold", "def threshold_for_fpr(scores, target_fpr):\n    return 0.0\n")
    del nb["cells"][_index(nb, "ex-threshold-check")]
    del nb["cells"][_index(nb, "ex-double-check")]


def _tests_edited(nb):
    _correct(nb)
    _answer(nb, "ex-double", "def double(x):\n    return 3 * x\n")
    _answer(nb, "given-data", "DATA = []")
    _answer(nb, "ex-double-check", "pass")
    _answer(nb, "ex-threshold-check", "pass")


def _no_answer_cell(nb):
    _correct(nb)
    at = _index(nb, "ex-double")
    del nb["cells"][at]
    nb["cells"].insert(at, nbformat.v4.new_code_cell(DOUBLE_OK))  # the right answer, but not in the answer cell


def _marker(nb):
    _correct(nb)
    nb["cells"].append(nbformat.v4.new_code_cell("open('marker.txt', 'w').write('written by the kernel')"))


def _dead_kernel(nb):
    _correct(nb)
    _answer(nb, "ex-threshold", "import os\nos._exit(1)\n")


STUDENTS = {  # student: (how the notebook was changed, points for ex-double, points for ex-threshold)
    "correct": (_correct, 1, 2),
    "wrong": (_wrong, 0, 2),
    "nan": (_nan, 1, 0),
    "crash": (_crash, 0, 2),
    "loop": (_loop, 0, 2),
    "stubborn_loop": (_stubborn_loop, 1, 0),
    "tests_deleted": (_tests_deleted, 1, 0),
    "tests_edited": (_tests_edited, 0, 2),
    "no_answer_cell": (_no_answer_cell, 0, 2),
    "marker": (_marker, 1, 2),
    "dead_kernel": (_dead_kernel, 1, 0),
    "invalid_json": (None, 0, 0),
    "missing": (None, 0, 0),
}
NAME = "synthetic.ipynb"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Release the synthetic notebook, build every student's submission from the student
    version, grade them all once through the command line entry point."""
    root = tmp_path_factory.mktemp("grading")
    source_dir = root / "source"
    source_dir.mkdir()
    (source_dir / NAME).write_text(nbformat.writes(synthetic_source()), encoding="utf-8")
    (released,) = grading.release([source_dir], root / "release")
    submissions = root / "submitted"
    for student, (change, _, _) in STUDENTS.items():
        folder = submissions / student
        folder.mkdir(parents=True)
        if student == "invalid_json":
            (folder / NAME).write_text('{"cells": [', encoding="utf-8")
        elif change is not None:
            nb = json.loads(released.read_text(encoding="utf-8"))
            change(nb)
            (folder / NAME).write_text(json.dumps(nb), encoding="utf-8")
    cwd = Path.cwd()
    assert not (cwd / "marker.txt").exists()
    code = grading.main(["grade", "--source", str(source_dir), "--submissions", str(submissions),
                         "--out", str(root / "grades.csv"), "--timeout", str(TIMEOUT),
                         "--feedback-dir", str(root / "feedback"), "--work-dir", str(root / "work")])
    with open(root / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    return {"root": root, "code": code, "rows": rows, "cwd": cwd, "source_dir": source_dir}


def test_every_student_gets_a_row_with_the_exact_points(graded):
    assert graded["code"] == 0
    rows = graded["rows"]
    assert sorted(rows) == sorted(STUDENTS)
    for student, (_, double, threshold) in STUDENTS.items():
        row = rows[student]
        assert row["notebook"] == NAME
        found = (row["ex-double"], row["ex-threshold"], row["total"], row["max"])
        assert found == (str(double), str(threshold), str(double + threshold), "3"), (student, row)


def test_csv_columns_and_statuses(graded):
    with open(graded["root"] / "grades.csv", encoding="utf-8") as handle:
        header = handle.readline().strip()
    assert header == "student,notebook,ex-double,ex-threshold,total,max,status,notes"
    rows = graded["rows"]
    assert rows["correct"]["status"] == "graded" and rows["correct"]["notes"] == ""
    assert rows["missing"]["status"] == "missing"
    assert rows["invalid_json"]["status"] == "invalid notebook"
    assert "not a readable notebook" in rows["invalid_json"]["notes"]
    assert rows["dead_kernel"]["status"] == "kernel died"
    assert rows["loop"]["status"] == "graded" and "TimeoutError" in rows["loop"]["notes"]
    assert rows["stubborn_loop"]["status"] == "timeout: kernel killed"
    assert "ex-double: [double] hidden case: expected -10, found 10" in rows["wrong"]["notes"]
    assert "had been deleted" in rows["tests_deleted"]["notes"]
    assert "`ex-double-check` had been edited" in rows["tests_edited"]["notes"]
    assert "`given-data` had been edited" in rows["tests_edited"]["notes"]
    assert "answer cell for this exercise is missing" in rows["no_answer_cell"]["notes"]


def test_feedback_says_why_points_were_lost(graded):
    feedback = graded["root"] / "feedback"
    assert sorted(p.stem for p in feedback.glob("*.md")) == sorted(STUDENTS)
    text = {student: (feedback / f"{student}.md").read_text(encoding="utf-8") for student in STUDENTS}
    assert "synthetic.ipynb: 3 / 3 points" in text["correct"] and "✗" not in text["correct"]
    assert "[double] hidden case: expected -10, found 10" in text["wrong"]
    assert "[threshold-from-normals]" in text["nan"] and "found nan" in text["nan"]
    assert "RuntimeError: boom" in text["crash"]
    assert "TimeoutError: the cell was still running after 5 s and was interrupted" in text["loop"]
    assert "DeadKernelError" in text["dead_kernel"]
    assert "ignored the interrupt, so the kernel was shut down" in text["stubborn_loop"]
    assert "were not run" not in text["loop"], "after an interrupted loop the next cells still run"
    assert "not a readable notebook" in text["invalid_json"]
    assert "not handed in" in text["missing"]
    assert "print(double(21))" in text["crash"], "errors outside the exercises are listed too"


def test_student_code_runs_only_in_the_kernel(graded):
    kernel_dir = graded["root"] / "work" / "marker" / "synthetic"
    assert (kernel_dir / "marker.txt").read_text() == "written by the kernel"
    assert not (graded["cwd"] / "marker.txt").exists()
    assert not (graded["source_dir"] / "marker.txt").exists()
    executed = nbformat.read(kernel_dir / NAME, as_version=4)
    outputs = [out.get("text", "") for c in executed.cells if c.cell_type == "code" for out in c.outputs]
    assert any("✓ double" in text for text in outputs)
    # the grader process survived os._exit(1) in a kernel and went on with the next students
    assert graded["rows"]["invalid_json"]["status"] == "invalid notebook"  # comes after dead_kernel
    assert graded["rows"]["wrong"]["total"] == "2"


# --------------------------------------------------------------------------- notebook 00, end to end
def _exercises_only(nb: dict) -> dict:
    """Notebook 00 without its heavy cells: markdown, the setup cell and the exercise cells."""
    setup = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and not is_colab_cell(c))
    keep = {setup} | {i for e in grading.find_exercises(nb) for i in (e.solution_cell, e.check_cell)}
    nb["cells"] = [c for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown" or i in keep]
    return nb


def test_notebook_00_stub_scores_0_and_solution_scores_4(tmp_path):
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = source_dir / NOTEBOOK_00.name
    trimmed = _exercises_only(json.loads(NOTEBOOK_00.read_text(encoding="utf-8")))
    source.write_text(json.dumps(trimmed), encoding="utf-8")
    (released,) = grading.release([source], tmp_path / "release")
    for student, path in (("stub", released), ("solution", source)):
        (tmp_path / "submitted" / student).mkdir(parents=True)
        (tmp_path / "submitted" / student / NOTEBOOK_00.name).write_bytes(path.read_bytes())
    grades = grading.grade([source_dir], tmp_path / "submitted", tmp_path / "grades.csv",
                           feedback_dir=tmp_path / "feedback", timeout=120)
    by_student = {g.student: g for g in grades}
    assert (by_student["stub"].total, by_student["stub"].max_points) == (0, 4)
    assert (by_student["solution"].total, by_student["solution"].max_points) == (4, 4)
    assert by_student["solution"].status == "graded" and not by_student["solution"].cell_errors
    feedback = (tmp_path / "feedback" / "stub.md").read_text(encoding="utf-8")
    assert "[auroc-from-ranks] not implemented yet" in feedback
    assert "[threshold-from-normals] not implemented yet" in feedback


def test_grade_refuses_a_broken_source_before_running_anything(tmp_path):
    source = tmp_path / "source" / NAME
    source.parent.mkdir()
    nb = synthetic_source()
    del nb.cells[4]  # the check cell of ex-double
    source.write_text(nbformat.writes(nb), encoding="utf-8")
    (tmp_path / "submitted" / "someone").mkdir(parents=True)
    code = grading.main(["grade", "--source", str(source), "--submissions", str(tmp_path / "submitted"),
                         "--out", str(tmp_path / "grades.csv")])
    assert code == 2 and not (tmp_path / "grades.csv").exists()


def test_a_kernel_that_cannot_start_is_a_grader_error_not_a_zero(tmp_path):
    source = synthetic_source()
    submission = tmp_path / NAME
    submission.write_bytes(grading.notebook_bytes(grading.student_version(source)))
    result = grading.grade_submission(source, submission, student="someone", work_dir=tmp_path / "work",
                                      kernel_name="no-such-kernel")
    assert result.status == "grader error" and result.total == 0
    assert "could not start a kernel" in " ".join(result.notes)
