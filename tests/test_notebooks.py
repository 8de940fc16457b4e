"""Notebook hygiene and exercises. (Execution of every notebook is done by nbval: `pytest --nbval-lax`.)"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from course_utils import grading
from course_utils.checks import ExerciseCheckError
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
def test_notebook_has_at_least_two_graded_exercises(path):
    exercises = grading.find_exercises(json.loads(path.read_text()))
    assert len(exercises) >= 2, f"{path.name} has {len(exercises)} exercises, needs >= 2"
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
def test_check_fails_on_stub_and_passes_on_solution(path, exercise):
    nb = nbformat.read(path, as_version=4)
    solution = nb.cells[exercise.solution_cell].source
    check = nb.cells[exercise.check_cell].source

    namespace = _setup_namespace(nb)
    exec(compile(solution, "<solution>", "exec"), namespace)
    exec(compile(check, "<check with hidden tests>", "exec"), namespace)  # the solution passes all tests

    namespace = _setup_namespace(nb)
    exec(compile(grading.stub_solutions(solution), "<stub>", "exec"), namespace)
    with pytest.raises(ExerciseCheckError, match="not implemented yet"):
        exec(compile(grading.remove_hidden_tests(check), "<visible check>", "exec"), namespace)
