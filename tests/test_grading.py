"""Student versions and grading: `python -m course_grader release|grade|merge`.

The grading tests run real Jupyter kernels. To stay fast they grade one small synthetic
source notebook (`ex-double`, the template exercise, and notebook 00's threshold exercise)
for about twenty students (honest, wrong, stub, and every kind of tampering) once, in a
module-scoped fixture with --jobs 2, and assert on that one result; notebook 00 is graded on its
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

from course_grader import markers as grading
from course_grader.batch import grade as grade_class
from course_grader.cli import main as grader_main
from course_grader.sandbox import Limits
from course_grader.verdict import grade_submission
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
    run = subprocess.run([sys.executable, "-m", "course_grader", "release", str(NOTEBOOK_00), "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / NOTEBOOK_00.name).read_bytes() == grading.notebook_bytes(
        grading.student_version(json.loads(NOTEBOOK_00.read_text(encoding="utf-8"))))
    bad = subprocess.run([sys.executable, "-m", "course_grader", "release", str(tmp_path / "nope.ipynb"),
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
DOUBLE_WRONG = "def double(x):\n    return 3 * x\n"
THRESHOLD_OK = "def threshold_for_fpr(scores, target_fpr):\n    return float(np.quantile(scores, 1.0 - target_fpr))\n"


def synthetic_source() -> dict:
    """Two exercises: `ex-double` (1 point, 4 cases) and `ex-threshold-for-fpr` (2 points, 4 cases)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Synthetic exercises"),
        _code("import numpy as np\nfrom course_utils import checks"),
        _code("DATA = np.array([1, 2, 3])", grade_id="given-data", locked=True),
        _code(f"def double(x):\n    {grading.BEGIN_SOLUTION}\n    return 2 * x\n    {grading.END_SOLUTION}\n",
              grade_id="ex-double", solution=True),
        _code('double_fn = checks.check_exercise("ex-double", double)',
              grade_id="ex-double-check", grade=True, locked=True, points=1),
        _code("print(double_fn(DATA))"),
        _code("def threshold_for_fpr(scores, target_fpr):\n"
              f"    {grading.BEGIN_SOLUTION}\n"
              "    return float(np.quantile(scores, 1.0 - target_fpr))\n"
              f"    {grading.END_SOLUTION}\n",
              grade_id="ex-threshold-for-fpr", solution=True),
        _code('threshold_fn = checks.check_exercise("ex-threshold-for-fpr", threshold_for_fpr)',
              grade_id="ex-threshold-for-fpr-check", grade=True, locked=True, points=2),
        _code("print(threshold_fn(np.arange(100.0), 0.05))"),
    ]
    return nb


def _index(nb: dict, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb["cells"])
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _answer(nb: dict, grade_id: str, source: str) -> None:
    nb["cells"][_index(nb, grade_id)]["source"] = source


def _correct(nb: dict) -> None:
    _answer(nb, "ex-double", DOUBLE_OK)
    _answer(nb, "ex-threshold-for-fpr", THRESHOLD_OK)


def _tampered_double(prefix: str):
    """A wrong `double` whose answer cell also runs ``prefix`` (the tampering)."""
    def change(nb):
        _correct(nb)
        _answer(nb, "ex-double", prefix + "\n" + DOUBLE_WRONG)
    return change


def _partial(nb):  # right for positive numbers only: 1 of the 4 cases
    _correct(nb)
    _answer(nb, "ex-double", "def double(x):\n    return abs(2 * x)\n")


def _wrong(nb):
    _correct(nb)
    _answer(nb, "ex-double", DOUBLE_WRONG)


def _nan(nb):
    _correct(nb)
    _answer(nb, "ex-threshold-for-fpr", "def threshold_for_fpr(scores, target_fpr):\n    return float('nan')\n")


def _crash(nb):
    _correct(nb)
    _answer(nb, "ex-double", "def double(x):\n    raise RuntimeError('boom')\n")


def _loop(nb):  # the function is right; the endless loop after it is interrupted
    _correct(nb)
    _answer(nb, "ex-double", DOUBLE_OK + "while True:\n    pass\n")


def _loop_in_function(nb):  # every graded case hangs: the probe's per-case limit stops them
    _correct(nb)
    _answer(nb, "ex-double", "def double(x):\n    while True:\n        pass\n")


def _fake_success(nb):
    _wrong(nb)
    _answer(nb, "ex-double", DOUBLE_WRONG + "print('✓ ex-double: all 4 visible cases pass')\n")


def _late_rebind(nb):  # a right `double` defined after the answer cell does not count
    _wrong(nb)
    nb["cells"].insert(_index(nb, "ex-double-check") + 1, nbformat.v4.new_code_cell(DOUBLE_OK))


def _tests_deleted(nb):
    _correct(nb)
    _answer(nb, "ex-threshold-for-fpr", "def threshold_for_fpr(scores, target_fpr):\n    return 0.0\n")
    del nb["cells"][_index(nb, "ex-threshold-for-fpr-check")]
    del nb["cells"][_index(nb, "ex-double-check")]


def _tests_edited(nb):
    _correct(nb)
    _answer(nb, "ex-double", DOUBLE_WRONG)
    _answer(nb, "given-data", "DATA = []")
    _answer(nb, "ex-double-check", "double_fn = double")
    _answer(nb, "ex-threshold-for-fpr-check", "pass")


def _no_answer_cell(nb):
    _correct(nb)
    at = _index(nb, "ex-double")
    del nb["cells"][at]
    nb["cells"].insert(at, nbformat.v4.new_code_cell(DOUBLE_OK))  # the right answer, but not in the answer cell


def _marker(nb):
    _correct(nb)
    nb["cells"].append(nbformat.v4.new_code_cell("open('marker.txt', 'w').write('written by the kernel')"))


def _reads_sources(nb):  # tries to read the solution notebook (the path is put in by the fixture)
    _correct(nb)
    nb["cells"].append(nbformat.v4.new_code_cell(
        "import pathlib\nsolution = pathlib.Path(SOURCE_PATH)\n"
        "print('SOURCE:', solution.read_text()[:200] if solution.exists() else 'not visible')\n"
        "try:\n    pathlib.Path(OUTSIDE).write_text('escaped')\nexcept OSError as error:\n    print('WRITE:', error)\n"))


def _flood(nb):  # 5 MB of output: only the first --output-kb are kept, the points stay
    _correct(nb)
    nb["cells"].append(nbformat.v4.new_code_cell("for _ in range(50):\n    print('x' * 100_000)"))


def _dead_kernel(nb):
    _correct(nb)
    _answer(nb, "ex-threshold-for-fpr", "import os\nos._exit(1)\n")


TAMPERING = {  # student: the tampering code in a wrong answer's cell
    "rebind_checks": "class _Fake:\n    def check_exercise(self, *a):\n        print('✓')\nchecks = _Fake()",
    "patch_checks": "import course_utils.checks\ncourse_utils.checks.check_exercise = lambda grade_id, answer: answer",
    "input_transformer": "get_ipython().input_transformers_cleanup.append(\n"
                         "    lambda lines: [l for l in lines if 'check' not in l])",
    "ast_transformer": "import ast\nclass Drop(ast.NodeTransformer):\n    def visit_Call(self, node):\n"
                       "        return ast.Constant(True)\nget_ipython().ast_transformers.append(Drop())",
    "custom_exc": "get_ipython().set_custom_exc((Exception,), lambda *args, **kwargs: None)",
    "sys_exit": "import sys\nsys.exit(0)",
    "os_exit_late": "import os\nif False:\n    os._exit(0)",
    "globals_write": "globals()['checks'] = None",
    "exec_hidden": "exec('import course_utils.checks as c; c.check_exercise = lambda g, a: a')",
}

STUDENTS = {  # student: (how the notebook was changed, points for ex-double, points for ex-threshold-for-fpr)
    "correct": (_correct, 1, 2),
    "late_correct": (_correct, 1, 2),  # handed in 25 hours late: 2 started days, 20 % off
    "partial": (_partial, 0.25, 2),
    "wrong": (_wrong, 0, 2),
    "stub": (lambda nb: None, 0, 0),
    "nan": (_nan, 1, 0),
    "crash": (_crash, 0, 2),
    "loop": (_loop, 1, 2),
    "loop_in_function": (_loop_in_function, 0, 2),
    "fake_success": (_fake_success, 0, 2),
    "late_rebind": (_late_rebind, 0, 2),
    "tests_deleted": (_tests_deleted, 1, 0),
    "tests_edited": (_tests_edited, 0, 2),
    "no_answer_cell": (_no_answer_cell, 0, 2),
    "marker": (_marker, 1, 2),
    "reads_sources": (_reads_sources, 1, 2),
    "dead_kernel": (_dead_kernel, 1, 0),
    "flood": (_flood, 1, 2),
    **{name: (_tampered_double(code), 0, 0) for name, code in TAMPERING.items()},
    "invalid_json": (None, 0, 0),
    "missing": (None, 0, 0),
}
NAME = "synthetic.ipynb"


def _make_class(root: Path, students: dict) -> tuple[Path, Path]:
    source_dir = root / "source"
    source_dir.mkdir()
    (source_dir / NAME).write_text(nbformat.writes(synthetic_source()), encoding="utf-8")
    (released,) = grading.release([source_dir], root / "release")
    submissions = root / "submitted"
    for student, (change, _, _) in students.items():
        folder = submissions / student
        folder.mkdir(parents=True)
        if student == "invalid_json":
            (folder / NAME).write_text('{"cells": [', encoding="utf-8")
        elif change is not None:
            nb = json.loads(released.read_text(encoding="utf-8"))
            change(nb)
            for cell in nb["cells"]:
                cell["source"] = "".join(cell["source"]).replace("SOURCE_PATH", repr(str(source_dir / NAME))).replace(
                    "OUTSIDE", repr(str(root / "escaped.txt")))
            (folder / NAME).write_text(json.dumps(nb), encoding="utf-8")
    return source_dir, submissions


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Release the synthetic notebook, build every student's submission from the student
    version, grade them all once through the command line entry point (2 jobs, bwrap if it works)."""
    root = tmp_path_factory.mktemp("grading")
    source_dir, submissions = _make_class(root, STUDENTS)
    cwd = Path.cwd()
    assert not (cwd / "marker.txt").exists()
    (root / "lms.csv").write_text("student,submitted_at\ncorrect,2026-12-01T20:00:00+01:00\n"
                                  "late_correct,2026-12-03T00:00:00Z\n", encoding="utf-8")
    code = grader_main(["grade", "--source", str(source_dir), "--submissions", str(submissions),
                        "--due", "2026-12-01T23:00Z", "--timestamps", str(root / "lms.csv"),
                        "--out", str(root / "grades.csv"), "--timeout", str(TIMEOUT), "--jobs", "2",
                        "--seed", "7", "--feedback-dir", str(root / "feedback"), "--work-dir", str(root / "work"),
                        "--canvas", str(root / "canvas.csv"), "--report", str(root / "report")])
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
        found = (float(row["ex-double"]), float(row["ex-threshold-for-fpr"]), float(row["raw_total"]), row["max"])
        assert found == (double, threshold, double + threshold, "3"), (student, row)
        if student != "late_correct":
            assert row["total"] == row["raw_total"] and row["penalty_percent"] == "0"


def test_late_submission_loses_the_penalty(graded):
    late, on_time = graded["rows"]["late_correct"], graded["rows"]["correct"]
    assert (late["late_days"], late["penalty_percent"], late["raw_total"], late["total"]) == ("2", "20", "3", "2.4")
    assert late["submitted_at"] == "2026-12-03T00:00:00+00:00"
    assert (on_time["late_days"], on_time["total"], on_time["submitted_at"]) == ("0", "3", "2026-12-01T20:00:00+01:00")
    assert "2 day(s) late" in (graded["root"] / "feedback" / "late_correct.md").read_text(encoding="utf-8")


def test_merge_command_joins_shard_tables(graded, tmp_path):
    lines = (graded["root"] / "grades.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "a.csv").write_text("".join([lines[0]] + lines[1::2]), encoding="utf-8")
    (tmp_path / "b.csv").write_text("".join([lines[0]] + lines[2::2]), encoding="utf-8")
    code = grader_main(["merge", str(tmp_path / "b.csv"), str(tmp_path / "a.csv"), "--source",
                        str(graded["source_dir"]), "--out", str(tmp_path / "merged.csv"),
                        "--canvas", str(tmp_path / "canvas.csv")])
    assert code == 0
    assert (tmp_path / "merged.csv").read_text(encoding="utf-8") == "".join(lines)
    assert (tmp_path / "canvas.csv").read_bytes() == (graded["root"] / "canvas.csv").read_bytes()
    assert grader_main(["merge", str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), "--source",
                        str(graded["source_dir"]), "--out", str(tmp_path / "bad.csv")]) == 2


def test_every_kind_of_tampering_is_named_in_the_notes(graded):
    for student in TAMPERING:
        if student == "os_exit_late":
            assert "os._exit" in graded["rows"][student]["notes"]
        assert "tampering: cell" in graded["rows"][student]["notes"], student
    for honest in ("correct", "partial", "wrong", "loop", "fake_success", "late_rebind", "marker"):
        assert "tampering" not in graded["rows"][honest]["notes"], honest


def test_csv_columns_and_statuses(graded):
    with open(graded["root"] / "grades.csv", encoding="utf-8") as handle:
        header = handle.readline().strip()
    assert header == ("student,notebook,ex-double,ex-threshold-for-fpr,raw_total,penalty_percent,total,max,"
                      "submitted_at,late_days,status,notes")
    rows = graded["rows"]
    assert rows["correct"]["status"] == "graded" and rows["correct"]["notes"] == ""
    assert rows["stub"]["submitted_at"] == "", "with --timestamps, a student without a time has none"
    assert rows["missing"]["status"] == "missing"
    assert rows["invalid_json"]["status"] == "invalid notebook"
    assert "not a readable notebook" in rows["invalid_json"]["notes"]
    assert rows["dead_kernel"]["status"] == "kernel died"
    assert rows["loop"]["status"] == "graded" and "TimeoutError" not in rows["loop"]["notes"]
    assert "not solved yet" in rows["stub"]["notes"]
    assert "4 of 4 hidden cases failed" in rows["wrong"]["notes"]
    assert ("3 of 4 hidden cases failed (0.25 of 1 points): negative numbers; numbers of both signs; "
            "a 10 x 10 array") in rows["partial"]["notes"]
    assert "had been deleted" in rows["tests_deleted"]["notes"]
    assert "`ex-double-check` had been edited" in rows["tests_edited"]["notes"]
    assert "`given-data` had been edited" in rows["tests_edited"]["notes"]
    assert "answer cell for this exercise is missing" in rows["no_answer_cell"]["notes"]
    assert "cell output beyond 2048 kB was not kept" in rows["flood"]["notes"]
    assert (graded["root"] / "work" / "flood" / "synthetic" / NAME).stat().st_size < 3 * 2**20


def test_feedback_says_why_points_were_lost(graded):
    feedback = graded["root"] / "feedback"
    assert sorted(p.stem for p in feedback.glob("*.md")) == sorted(STUDENTS)
    text = {student: (feedback / f"{student}.md").read_text(encoding="utf-8") for student in STUDENTS}
    assert "synthetic.ipynb: 3 / 3 points" in text["correct"] and "✗" not in text["correct"]
    assert "negative numbers: expected" in text["partial"] and "Hint: multiply every element by 2" in text["partial"]
    assert "found nan" in text["nan"]
    assert "RuntimeError: boom" in text["crash"]
    assert "did not finish within the time limit" in text["loop_in_function"]
    assert "DeadKernelError" in text["dead_kernel"] or "kernel died" in text["dead_kernel"]
    assert "changes the grading environment" in text["patch_checks"]
    assert "not a readable notebook" in text["invalid_json"]
    assert "not handed in" in text["missing"]


def test_the_kernel_is_sandboxed(graded):
    """bwrap (when it works here): the kernel writes only its own folder and cannot read the sources."""
    from course_grader.sandbox import bwrap_works

    kernel_dir = graded["root"] / "work" / "marker" / "synthetic"
    assert (kernel_dir / "marker.txt").read_text() == "written by the kernel"
    assert not (graded["cwd"] / "marker.txt").exists()
    assert not (graded["source_dir"] / "marker.txt").exists()
    executed = nbformat.read(graded["root"] / "work" / "reads_sources" / "synthetic" / NAME, as_version=4)
    outputs = "".join(out.get("text", "") + out.get("evalue", "")
                      for c in executed.cells if c.cell_type == "code" for out in c.outputs)
    if bwrap_works():
        assert "BEGIN SOLUTION" not in outputs and "cells" not in outputs
        assert any(text in outputs for text in ("SOURCE: not visible", "SOURCE: \n", "Permission denied")), outputs
        assert not (graded["root"] / "escaped.txt").exists()
    assert graded["rows"]["invalid_json"]["status"] == "invalid notebook"  # graded after dead_kernel


def test_canvas_gradebook_and_class_report(graded):
    root = graded["root"]
    lines = (root / "canvas.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Student,ID,SIS User ID,SIS Login ID,Section,synthetic"
    assert lines[1] == "Points Possible,,,,,3"
    assert "correct,,,correct,,3" in lines and "partial,,,partial,,2.25" in lines
    assert "late_correct,,,late_correct,,2.4" in lines
    report = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "| synthetic / ex-double |" in report and "wrong on 'negative numbers' (×" in report
    n_graded = len([s for s in STUDENTS if s != "missing"])
    n_full = sum(1 for s, (_, d, _) in STUDENTS.items() if s != "missing" and d == 1)
    assert f"| synthetic / ex-double | {n_full / n_graded:.0%} |" in report
    assert (root / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- notebook 00, end to end
def _exercises_only(nb: dict) -> dict:
    """Notebook 00 without its heavy cells: markdown, the setup cell and the exercise cells."""
    setup = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and not is_colab_cell(c))
    keep = {setup} | {i for e in grading.find_exercises(nb) for i in (e.solution_cell, e.check_cell)}
    nb["cells"] = [c for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown" or i in keep]
    return nb


def test_notebook_00_stub_scores_0_and_solution_scores_full_points(tmp_path):
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = source_dir / NOTEBOOK_00.name
    trimmed = _exercises_only(json.loads(NOTEBOOK_00.read_text(encoding="utf-8")))
    source.write_text(json.dumps(trimmed), encoding="utf-8")
    (released,) = grading.release([source], tmp_path / "release")
    for student, path in (("stub", released), ("solution", source)):
        (tmp_path / "submitted" / student).mkdir(parents=True)
        (tmp_path / "submitted" / student / NOTEBOOK_00.name).write_bytes(path.read_bytes())
    grades = grade_class([source_dir], tmp_path / "submitted", tmp_path / "grades.csv",
                         feedback_dir=tmp_path / "feedback", limits=Limits(cell_seconds=120))
    by_student = {g.student: g for g in grades}
    points = sum(e.points for e in grading.find_exercises(trimmed))   # 2 + 2 + 1 (the prediction)
    assert points == 5
    assert (by_student["stub"].total, by_student["stub"].max_points) == (0, points)
    assert (by_student["solution"].total, by_student["solution"].max_points) == (points, points)
    assert by_student["solution"].status == "graded" and not by_student["solution"].cell_errors
    feedback = (tmp_path / "feedback" / "stub.md").read_text(encoding="utf-8")
    assert feedback.count("not solved yet") >= 3


def test_grade_refuses_a_broken_source_before_running_anything(tmp_path):
    source = tmp_path / "source" / NAME
    source.parent.mkdir()
    nb = synthetic_source()
    del nb.cells[4]  # the check cell of ex-double
    source.write_text(nbformat.writes(nb), encoding="utf-8")
    (tmp_path / "submitted" / "someone").mkdir(parents=True)
    code = grader_main(["grade", "--source", str(source), "--submissions", str(tmp_path / "submitted"),
                        "--out", str(tmp_path / "grades.csv")])
    assert code == 2 and not (tmp_path / "grades.csv").exists()


def test_a_source_exercise_without_a_declaration_is_refused(tmp_path):
    source = tmp_path / "source" / NAME
    source.parent.mkdir()
    nb = synthetic_source()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id", "").startswith("ex-double"):
            meta["grade_id"] = meta["grade_id"].replace("ex-double", "ex-undeclared")
    source.write_text(nbformat.writes(nb), encoding="utf-8")
    (tmp_path / "submitted" / "someone").mkdir(parents=True)
    with pytest.raises(ValueError, match="no declaration for exercise 'ex-undeclared'"):
        grade_class([source], tmp_path / "submitted", tmp_path / "grades.csv")


def test_a_kernel_that_cannot_start_is_a_grader_error_not_a_zero(tmp_path):
    source = synthetic_source()
    submission = tmp_path / NAME
    submission.write_bytes(grading.notebook_bytes(grading.student_version(source)))
    result = grade_submission(source, submission, student="someone", work_dir=tmp_path / "work", seed=1,
                              kernel_name="no-such-kernel")
    assert result.status == "grader error" and result.total == 0
    assert "could not start a kernel" in " ".join(result.notes)


def test_a_choice_exercise_is_graded_by_its_value(tmp_path):
    """kind="value": the answer is a function without arguments; right 1 point, wrong and stub 0."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _code("from course_utils import checks"),
        _code(f'def larger_number() -> str:\n    """"2**10" or "10**3"."""\n    {grading.BEGIN_SOLUTION}\n'
              f'    return "2**10"\n    {grading.END_SOLUTION}\n', grade_id="ex-demo-larger", solution=True),
        _code('larger = checks.check_exercise("ex-demo-larger", larger_number)\nprint("using", larger)',
              grade_id="ex-demo-larger-check", grade=True, locked=True, points=1),
    ]
    source = tmp_path / "source" / "choice.ipynb"
    source.parent.mkdir()
    source.write_text(nbformat.writes(nb), encoding="utf-8")
    (released,) = grading.release([source], tmp_path / "release")
    for student, answer in (("right", "2 ** 10"), ("wrong", "10**3"), ("stub", None)):
        folder = tmp_path / "submitted" / student
        folder.mkdir(parents=True)
        text = json.loads(released.read_text(encoding="utf-8"))
        if answer is not None:
            text["cells"][2]["source"] = f"def larger_number():\n    return {answer!r}\n"
        (folder / "choice.ipynb").write_text(json.dumps(text), encoding="utf-8")
    grades = {g.student: g for g in grade_class([source], tmp_path / "submitted", tmp_path / "grades.csv",
                                                limits=Limits(cell_seconds=60), jobs=2)}
    assert {s: g.total for s, g in grades.items()} == {"right": 1, "wrong": 0, "stub": 0}
    assert "expected '2**10', found '10**3'" in grades["wrong"].exercises[0].message
    assert "not solved yet" in grades["stub"].exercises[0].message
