"""Notebook format and exercises. (Every notebook is executed in fast mode by the first pass of
``tests/test_notebook_hygiene.py::test_every_cell_can_be_run_again``.)"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from course_grader import markers as grading
from course_grader.exercises import get_spec
from docs.site.launch import is_colab_cell

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, (
        f"{path.name}: cells {with_outputs} have outputs; strip them with "
        f"`jupyter nbconvert --clear-output --inplace {path.relative_to(path.parents[1])}`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_template(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: title"
    assert "learning goals" in nb.cells[0].source.lower(), "first cell states the learning goals"
    first_code = next(c for c in nb.cells if c.cell_type == "code" and not is_colab_cell(c))
    assert "config.is_fast()" in first_code.source, "the setup cell reads fast mode once (FAST = config.is_fast())"
    assert "seed_everything" in first_code.source, "the setup cell seeds everything"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "## summary" in text and "## references" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_at_least_three_graded_exercises_one_a_prediction(path):
    exercises = grading.find_exercises(json.loads(path.read_text()))
    assert len(exercises) >= 3, f"{path.name} has {len(exercises)} exercises, needs >= 3"
    assert any(get_spec(e.grade_id).kind == "value" for e in exercises), \
        f"{path.name} needs a prediction or choice exercise (kind='value'), graded automatically"
    for exercise in exercises:
        assert exercise.points > 0
        assert exercise.check_cell > exercise.solution_cell


def _setup_namespace(nb) -> dict:
    """Run the notebook's setup cell (imports, knobs, seeds) in a fresh namespace."""
    namespace: dict = {"__name__": "__exercise_test__"}
    setup = next(c for c in nb.cells if c.cell_type == "code" and not is_colab_cell(c))
    exec(compile(_without_magics(setup.source), "<setup>", "exec"), namespace)
    return namespace


def _without_magics(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


EXERCISES = [
    (path, exercise)
    for path in NOTEBOOKS
    for exercise in grading.find_exercises(json.loads(path.read_text()))
]


@pytest.mark.parametrize("path,exercise", EXERCISES, ids=lambda v: getattr(v, "grade_id", getattr(v, "name", "")))
def test_answer_is_inside_a_function_so_the_stub_never_stops_run_all(path, exercise):
    nb = nbformat.read(path, as_version=4)
    for line in nb.cells[exercise.solution_cell].source.splitlines():
        if grading.BEGIN_SOLUTION in line:
            assert line.startswith((" ", "\t")), (
                f"{exercise.grade_id}: the solution region must be inside a function body; at the top level the "
                "released `raise NotImplementedError()` would stop Run All")


@pytest.mark.parametrize("path,exercise", EXERCISES, ids=lambda v: getattr(v, "grade_id", getattr(v, "name", "")))
def test_check_passes_the_solution_and_never_raises_on_the_stub(path, exercise, capsys):
    """The check cell prints ✓ for the solution and returns it; for the stub it says 'not solved
    yet, 0 points' and returns the course's reference, which later cells then use. It never raises."""
    nb = nbformat.read(path, as_version=4)
    spec = get_spec(exercise.grade_id)
    solution = nb.cells[exercise.solution_cell].source
    check = nb.cells[exercise.check_cell].source
    assert f'checks.check_exercise("{exercise.grade_id}", {spec.answer})' in check, \
        "the check cell calls checks.check_exercise with the exercise's grade id and answer name"

    namespace = _setup_namespace(nb)
    exec(compile(solution, "<solution>", "exec"), namespace)
    capsys.readouterr()
    exec(compile(grading.remove_hidden_tests(check), "<check>", "exec"), namespace)
    assert f"✓ {exercise.grade_id}" in capsys.readouterr().out
    used = namespace[check.split("=")[0].split("\n")[-1].strip()]
    assert used is not spec.reference

    namespace = _setup_namespace(nb)
    exec(compile(grading.stub_solutions(solution), "<stub>", "exec"), namespace)
    capsys.readouterr()
    exec(compile(grading.remove_hidden_tests(check), "<check>", "exec"), namespace)
    out = capsys.readouterr().out
    assert "not solved yet, 0 points" in out and "reference implementation" in out
    _assert_falls_back_to_the_reference(namespace, check, spec)

    namespace = _setup_namespace(nb)  # a wrong answer: the check shows the failing cases, never raises
    wrong = grading.stub_solutions(solution).replace("raise NotImplementedError()", "return 0")
    exec(compile(wrong, "<wrong>", "exec"), namespace)
    capsys.readouterr()
    exec(compile(grading.remove_hidden_tests(check), "<check>", "exec"), namespace)
    out = capsys.readouterr().out
    assert f"✗ {exercise.grade_id}: " in out and "visible cases are wrong" in out and "reference implementation" in out
    _assert_falls_back_to_the_reference(namespace, check, spec)


def _assert_falls_back_to_the_reference(namespace: dict, check: str, spec) -> None:
    """The name the check cell binds holds the course's reference (a prediction's: the right answer itself)."""
    fallback = namespace[check.split("=")[0].split("\n")[-1].strip()]
    if spec.kind == "value":
        assert fallback == (spec.reference() if callable(spec.reference) else spec.reference)
    else:
        assert fallback is spec.reference
