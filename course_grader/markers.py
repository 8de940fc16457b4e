"""Exercise markers, student versions and locked-cell restoring: the notebook side of the grader.

Solution notebooks mark exercises nbgrader-style:

- an answer cell (nbgrader metadata ``solution: true``) whose answer lies between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
- a check cell (``grade: true``, ``locked: true``, ``points``) right below it that calls
  ``course_utils.checks`` (optionally with hidden tests between ``### BEGIN HIDDEN TESTS``
  and ``### END HIDDEN TESTS``, which the release removes).

The answer cell's ``grade_id`` is the exercise id; its check cell's id is the same id plus
``-check``. This module is the one place that knows these markers. It reads and writes
notebooks as JSON only: it never runs a cell.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from course_utils.files import atomic_write_bytes

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
    "INSTRUCTIONS_CELL_ID",
    "check_source_notebook",
    "student_version",
    "notebook_bytes",
    "collect_notebooks",
    "load_source",
    "release",
    "restore_locked_cells",
    "grade_id_of",
    "cell_text",
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


# =========================================================================== notebook files
# nbformat's own on-disk format (indent 1, sorted keys, sources as lists of lines), written
# by json.dumps with these fixed settings so that the bytes never depend on a library version.
_JSON_FORMAT: dict[str, Any] = {"indent": 1, "sort_keys": True, "ensure_ascii": False, "separators": (",", ": ")}
_MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)


def cell_text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _as_dict(notebook: Any) -> dict:
    """A plain-dict deep copy of an nbformat notebook (or of its JSON dict)."""
    return json.loads(json.dumps(notebook))


def grade_id_of(cell: Any) -> str | None:
    grade_id = _nbgrader(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) and grade_id else None


def notebook_bytes(notebook: Any) -> bytes:
    """The notebook as UTF-8 JSON in one fixed format (same input, same bytes)."""
    nb = _as_dict(notebook)
    for cell in nb.get("cells", []):
        cell["source"] = cell_text(cell.get("source", "")).splitlines(keepends=True)
    return (json.dumps(nb, **_JSON_FORMAT) + "\n").encode("utf-8")


def collect_notebooks(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Notebook files named directly, plus the ``*.ipynb`` files of named folders (not recursive)."""
    paths: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = sorted(p for p in source.glob("*.ipynb") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise FileNotFoundError(f"{source}: this folder holds no .ipynb notebook")
            paths += found
        elif source.is_file():
            if source.suffix != ".ipynb":
                raise ValueError(f"{source}: not a notebook (expected a .ipynb file or a folder of them)")
            paths.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such notebook or folder")
    names: dict[str, Path] = {}
    for path in paths:
        if path.name in names and names[path.name].resolve() != path.resolve():
            raise ValueError(f"two source notebooks are both named {path.name!r} ({names[path.name]} and {path}); "
                             "submissions are matched by file name, so names must be unique")
        names[path.name] = path
    return list(dict.fromkeys(names.values()))


def load_source(path: Path) -> dict:
    import nbformat

    try:
        return _as_dict(nbformat.read(str(path), as_version=4))
    except FileNotFoundError:
        raise
    except Exception as error:  # invalid JSON, not a notebook
        raise ValueError(f"{path}: not a readable notebook ({type(error).__name__}: {error})") from None


def check_source_notebook(notebook: Any, name: str = "notebook") -> list[Exercise]:
    """Validate a solution notebook's markers and nbgrader metadata; return its exercises.

    Raises:
        ValueError: listing every problem: unbalanced markers, solution markers outside a
            solution cell, hidden tests outside a graded cell, markers in a markdown cell, a
            locked or graded cell without ``grade_id``, an exercise without its check cell,
            duplicated grade ids. Nothing is released or graded from such a notebook.
    """
    problems: list[str] = []
    for index, cell in enumerate(notebook["cells"]):
        text, meta = cell_text(cell.get("source")), _nbgrader(cell)
        where = f"cell {index} (id {cell.get('id', '?')})"
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
            try:
                _check_balanced(text, begin, end)
            except ValueError as error:
                problems.append(f"{where}: {error}")
        has_markers = any(marker in text for marker in _MARKERS)
        if has_markers and cell.get("cell_type") != "code":
            problems.append(f"{where}: exercise markers in a {cell.get('cell_type')} cell "
                            "(only code cells are supported)")
        elif BEGIN_SOLUTION in text and not meta.get("solution"):
            problems.append(f"{where}: '{BEGIN_SOLUTION}' in a cell without nbgrader `solution: true`; "
                            "the grader would not know this exercise")
        if BEGIN_HIDDEN in text and not meta.get("grade"):
            problems.append(f"{where}: '{BEGIN_HIDDEN}' in a cell without nbgrader `grade: true`; "
                            "hidden tests belong in a check cell")
        if (meta.get("locked") or meta.get("grade")) and not meta.get("grade_id"):
            problems.append(f"{where}: a locked or graded cell without nbgrader `grade_id`; "
                            "the grader could not restore it")
    exercises: list[Exercise] = []
    try:
        exercises = find_exercises(notebook)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise ValueError(f"{name}: refusing this source notebook:\n  - " + "\n  - ".join(problems))
    return exercises


# =========================================================================== student versions
INSTRUCTIONS_CELL_ID = "how-to-check-your-work"
INSTRUCTIONS = """\
> **How to check your work**
>
> This is the exercise version of the notebook. In each exercise, replace
> `# YOUR CODE HERE` / `raise NotImplementedError()` with your answer and run that cell.
>
> - **Run the check cell** right below each exercise after your answer cell. It tries your
>   answer on a few visible cases and prints **✓** when they all pass, or which case failed,
>   what was expected, what your code returned, and a hint. An unsolved exercise says
>   "not solved yet, 0 points". The check never stops the notebook: when your answer is
>   missing or wrong, the next cells use the course's reference implementation and say so.
> - **Grading** runs your answer again on new random cases of the same kinds, outside your
>   notebook: points are given per case that matches the reference. Printing "✓" yourself,
>   changing the checks or the notebook's machinery does not help: such a cell costs the
>   points of every exercise graded after it.
> - **Do not edit or delete the check cells** (they are locked). The grader restores them from the
>   original before it runs your notebook, so an edited or deleted check changes nothing.
> - **Keep each answer in its own answer cell**, under the name the released notebook uses:
>   an answer written in another cell, or in a cell whose metadata was changed, is not graded.
> - Before you hand it in: *Kernel → Restart Kernel and Run All Cells*, and check that the whole
>   notebook runs from top to bottom. The grader runs it in fast mode (`COURSE_FAST=1`) and stops
>   any cell that runs longer than a minute.
"""


def student_version(notebook: Any, name: str = "notebook") -> dict:
    """The student version of a solution notebook, as a plain dict.

    Solution regions become the stub, hidden tests are removed, outputs and execution counts
    are cleared, cell ids and nbgrader metadata are kept (locked cells are also marked
    ``editable: false`` and answer cells ``deletable: false`` for Jupyter's editor, as
    ``nbgrader generate_assignment`` does), and a markdown cell that explains
    how to check one's work is inserted first. A pure function: same input, same output.

    Raises:
        ValueError: the source notebook is refused (see :func:`check_source_notebook`), or a
            marker would survive into the student version.
    """
    import nbformat

    nb = _as_dict(notebook)
    check_source_notebook(nb, name)
    nb["metadata"] = {key: value for key, value in nb.get("metadata", {}).items() if key != "widgets"}
    cells = []
    for index, cell in enumerate(nb["cells"]):
        cell = dict(cell)
        cell.setdefault("id", f"cell-{index:02d}")
        cell["source"] = cell_text(cell.get("source"))
        if cell["cell_type"] == "code":
            cell["source"] = remove_hidden_tests(stub_solutions(cell["source"]))
            cell["outputs"], cell["execution_count"] = [], None
        metadata = dict(cell.get("metadata", {}))
        metadata.pop("execution", None)
        nbgrader = metadata.get("nbgrader", {})
        if nbgrader.get("locked") or nbgrader.get("grade"):  # JupyterLab then refuses edits and deletion,
            metadata["editable"], metadata["deletable"] = False, False  # as nbgrader's own release does
        elif nbgrader.get("solution"):
            metadata["deletable"] = False
        cell["metadata"] = metadata
        cells.append(cell)
    leaked = [i for i, cell in enumerate(cells) if any(marker in cell["source"] for marker in _MARKERS)]
    if leaked:
        raise ValueError(f"{name}: markers left in cells {leaked} after stubbing (a marker out of order?); "
                         "refusing to write a student version that could leak a solution")
    if any(cell["id"] == INSTRUCTIONS_CELL_ID for cell in cells):
        raise ValueError(f"{name}: a cell already has the id {INSTRUCTIONS_CELL_ID!r}; "
                         "release takes a solution notebook, not a student version")
    cells.insert(0, {"cell_type": "markdown", "id": INSTRUCTIONS_CELL_ID, "metadata": {}, "source": INSTRUCTIONS})
    nb["cells"] = cells
    nb["nbformat"], nb["nbformat_minor"] = 4, max(5, int(nb.get("nbformat_minor", 5)))
    nbformat.validate(nbformat.from_dict(nb))
    return nb


def release(sources: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Write the student version of every source notebook into ``out_dir`` (same file names).

    All sources are checked before anything is written, so one refused notebook writes
    nothing. Files are written atomically and byte-for-byte reproducibly.

    Raises:
        ValueError: a refused source notebook, or an output that would overwrite a source.
        FileNotFoundError: a source that does not exist.
    """
    paths = collect_notebooks(sources)
    out_dir = Path(out_dir)
    resolved_sources = {path.resolve() for path in paths}
    versions = []
    for path in paths:
        target = out_dir / path.name
        if target.resolve() in resolved_sources:
            raise ValueError(f"{target}: releasing there would overwrite a solution notebook; "
                             "choose another --out folder")
        versions.append((target, notebook_bytes(student_version(load_source(path), str(path)))))
    for target, data in versions:
        atomic_write_bytes(target, data)
    return [target for target, _ in versions]


# =========================================================================== restoring locked cells
def _sanitize_submission(notebook: Any) -> dict:
    """A clean copy of a submitted notebook: only code / markdown / raw cells with string
    sources, no outputs, unique ids, and of the cell metadata only the nbgrader part (tags
    such as ``skip-execution`` or ``raises-exception`` would change how cells run)."""
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError("the notebook has no list of cells")
    cells, used_ids = [], set()
    for index, cell in enumerate(notebook["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        nbgrader = metadata.get("nbgrader")
        clean = {"cell_type": cell["cell_type"], "id": cell.get("id"), "source": cell_text(cell.get("source")),
                 "metadata": {"nbgrader": copy.deepcopy(nbgrader)} if isinstance(nbgrader, dict) else {}}
        if not isinstance(clean["id"], str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", clean["id"]) \
                or clean["id"] in used_ids:
            clean["id"] = f"submitted-{index}"
        used_ids.add(clean["id"])
        if clean["cell_type"] == "code":
            clean["outputs"], clean["execution_count"] = [], None
        cells.append(clean)
    metadata = notebook.get("metadata") if isinstance(notebook.get("metadata"), dict) else {}
    return {"cells": cells, "metadata": {k: v for k, v in metadata.items() if k in ("kernelspec", "language_info")},
            "nbformat": 4, "nbformat_minor": 5}


def _restored_cell(source_cell: dict) -> dict:
    cell = copy.deepcopy(source_cell)
    cell["source"] = cell_text(cell.get("source"))
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
    cell.get("metadata", {}).pop("execution", None)
    return cell


def restore_locked_cells(source: Any, submission: Any) -> tuple[dict, list[str]]:
    """Put the source version of every locked cell back into a submitted notebook.

    Locked cells are the check cells and any cell with nbgrader ``locked: true`` or
    ``grade: true``; they are matched by ``grade_id`` and restored *with* their hidden
    tests. An edited one is replaced where it is; a deleted one is inserted after the
    nearest earlier cell of the source that the submission still has (recognised by grade
    id, else by cell id), so a check cell comes back right below its answer cell. A second cell with an already used
    ``grade_id`` (a copy) loses its nbgrader metadata and is run as an ordinary cell.

    Returns:
        The restored notebook (a plain dict) and notes for the student's feedback.
    """
    source = _as_dict(source)
    notebook = _sanitize_submission(_as_dict(submission))
    notes: list[str] = []
    locked = {}
    for cell in source["cells"]:
        meta = _nbgrader(cell)
        if grade_id_of(cell) and (meta.get("locked") or meta.get("grade")):
            locked[grade_id_of(cell)] = cell
    cells = notebook["cells"]
    seen: set[str] = set()
    for cell in cells:
        grade_id = grade_id_of(cell)
        if grade_id is None:
            continue
        if grade_id in seen:
            cell["metadata"].pop("nbgrader", None)
            notes.append(f"a second cell with the grade id `{grade_id}` (a copied cell?) was run as an ordinary cell")
        seen.add(grade_id)
    for index, cell in enumerate(cells):
        grade_id = grade_id_of(cell)
        if grade_id in locked:
            original = locked[grade_id]
            full = cell_text(original.get("source"))
            as_released = {full.strip(), remove_hidden_tests(stub_solutions(full)).strip()}
            if cell["cell_type"] != original["cell_type"] or cell["source"].strip() not in as_released:
                notes.append(f"the locked cell `{grade_id}` had been edited; it was restored from the original")
            cells[index] = _restored_cell(original)
    def key(cell: dict, index: int) -> tuple[str, Any]:  # cells are recognised by grade id, else by cell id
        grade_id = grade_id_of(cell)
        return ("grade_id", grade_id) if grade_id else ("id", cell.get("id") or f"cell-{index:02d}")

    source_keys = [key(cell, index) for index, cell in enumerate(source["cells"])]
    for source_index, (kind, grade_id) in enumerate(source_keys):
        if kind != "grade_id" or grade_id not in locked or grade_id in {grade_id_of(cell) for cell in cells}:
            continue
        position = {key(cell, -1): i for i, cell in enumerate(cells)}
        before = [position[k] + 1 for k in reversed(source_keys[:source_index]) if k in position]
        after = [position[k] for k in source_keys[source_index + 1:] if k in position]
        insert_at = before[0] if before else after[0] if after else len(cells)
        cells.insert(insert_at, _restored_cell(locked[grade_id]))
        notes.append(f"the locked cell `{grade_id}` had been deleted; it was restored from the original")
    used: set[str] = set()
    for index, cell in enumerate(cells):  # a restored id may clash with a student's cell id
        if cell.get("id") in used:
            cell["id"] = f"restored-{index}"
        used.add(cell["id"])
    return notebook, notes
