"""Exercise markers: find the exercises of a solution notebook and make their student stubs.

Solution notebooks mark exercises nbgrader-style:

- a solution cell (nbgrader metadata ``solution: true``) whose answer lies between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
- a check cell (``grade: true``, ``locked: true``, ``points``) that calls
  ``course_utils.checks`` and holds hidden tests between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS``.

The solution cell's ``grade_id`` is the exercise id; its check cell's id is the same id
plus ``-check``. This module is the one place that knows these markers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "BEGIN_HIDDEN",
    "END_HIDDEN",
    "STUB",
    "Exercise",
    "find_exercises",
    "stub_solutions",
    "remove_hidden_tests",
]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: its id, points and the indices of its two cells."""

    grade_id: str
    points: float
    solution_cell: int
    check_cell: int


def _block_pattern(begin: str, end: str) -> re.Pattern:
    # the indentation of the BEGIN line is kept for the replacement
    return re.compile(rf"^([ \t]*){re.escape(begin)}[^\n]*\n.*?^[ \t]*{re.escape(end)}[^\n]*(\n|$)", re.S | re.M)


def stub_solutions(source: str) -> str:
    """Replace every solution region by an indented ``# YOUR CODE HERE`` / ``raise NotImplementedError()``.

    Raises:
        ValueError: a BEGIN without END (or the reverse), so a broken marker cannot leak a solution.
    """
    _check_balanced(source, BEGIN_SOLUTION, END_SOLUTION)

    def replace(match: re.Match) -> str:
        indent = match.group(1)
        return "\n".join(indent + line for line in STUB.splitlines()) + match.group(2)

    return _block_pattern(BEGIN_SOLUTION, END_SOLUTION).sub(replace, source)


def remove_hidden_tests(source: str) -> str:
    """Delete every hidden-test region, markers included."""
    _check_balanced(source, BEGIN_HIDDEN, END_HIDDEN)
    return _block_pattern(BEGIN_HIDDEN, END_HIDDEN).sub("", source).rstrip() + ("\n" if source.endswith("\n") else "")


def _check_balanced(source: str, begin: str, end: str) -> None:
    n_begin, n_end = source.count(begin), source.count(end)
    if n_begin != n_end:
        raise ValueError(f"unbalanced exercise markers: {n_begin} x '{begin}' but {n_end} x '{end}'")


def _nbgrader(cell: Any) -> dict:
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def find_exercises(notebook: Any) -> list[Exercise]:
    """The exercises of a notebook (an nbformat notebook or its JSON dict), in order.

    Raises:
        ValueError: a solution cell without markers or without its check cell, a
            duplicated grade id, or a check cell without points.
    """
    cells = notebook["cells"]
    by_id: dict[str, int] = {}
    for index, cell in enumerate(cells):
        grade_id = _nbgrader(cell).get("grade_id")
        if grade_id is None:
            continue
        if grade_id in by_id:
            raise ValueError(f"grade_id {grade_id!r} is used by cells {by_id[grade_id]} and {index}")
        by_id[grade_id] = index
    exercises = []
    for grade_id, index in by_id.items():
        meta = _nbgrader(cells[index])
        if not meta.get("solution"):
            continue
        if BEGIN_SOLUTION not in "".join(cells[index]["source"]):
            raise ValueError(f"solution cell {grade_id!r} has no '{BEGIN_SOLUTION}' marker")
        check_id = f"{grade_id}-check"
        if check_id not in by_id:
            raise ValueError(f"exercise {grade_id!r} has no check cell with grade_id {check_id!r}")
        check_meta = _nbgrader(cells[by_id[check_id]])
        if not check_meta.get("grade") or "points" not in check_meta:
            raise ValueError(f"check cell {check_id!r} must have nbgrader grade: true and points")
        exercises.append(Exercise(grade_id, float(check_meta["points"]), index, by_id[check_id]))
    return exercises
