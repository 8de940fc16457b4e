"""Exercise markers: find the exercises of a solution notebook and make their student stubs.

Solution notebooks mark exercises nbgrader-style:

- a solution cell (nbgrader metadata ``solution: true``) whose answer lies between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
- a check cell (``grade: true``, ``locked: true``, ``points``) that calls
  ``course_utils.checks`` and holds hidden tests between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS``.

The solution cell's ``grade_id`` is the exercise id; its check cell's id is the same id
plus ``-check``. This module is the one place that knows these markers.

It also makes the student versions and grades submissions (``docs/teaching.md``)::

    python -m course_utils.grading release notebooks/ --out release/
    python -m course_utils.grading grade --source notebooks/ --submissions submitted/ \
        --out grades.csv --feedback-dir feedback/ [--timeout 60]

Submissions are laid out ``submitted/<student>/<notebook>.ipynb``. Student code only ever
runs in a separate Jupyter kernel (nbclient), never in the grader's process.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .files import atomic_write_bytes

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
    "kernel_env",
    "student_version",
    "notebook_bytes",
    "release",
    "restore_locked_cells",
    "ExerciseResult",
    "NotebookGrade",
    "find_submissions",
    "grade_submission",
    "grade",
    "main",
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


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _as_dict(notebook: Any) -> dict:
    """A plain-dict deep copy of an nbformat notebook (or of its JSON dict)."""
    return json.loads(json.dumps(notebook))


def _grade_id(cell: Any) -> str | None:
    grade_id = _nbgrader(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) and grade_id else None


def notebook_bytes(notebook: Any) -> bytes:
    """The notebook as UTF-8 JSON in one fixed format (same input, same bytes)."""
    nb = _as_dict(notebook)
    for cell in nb.get("cells", []):
        cell["source"] = _text(cell.get("source", "")).splitlines(keepends=True)
    return (json.dumps(nb, **_JSON_FORMAT) + "\n").encode("utf-8")


def _collect_notebooks(sources: Iterable[str | os.PathLike]) -> list[Path]:
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


def _load_source(path: Path) -> dict:
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
        text, meta = _text(cell.get("source")), _nbgrader(cell)
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
> - **Run the check cell** right below each exercise after your answer cell. It calls
>   `course_utils.checks` on cases with known answers.
> - **✓** followed by a short message means your answer passed the visible checks. When grading,
>   the same checks run again together with a few **hidden cases**, so make your answer correct in
>   general, not only for the cases you see. A red `ExerciseCheckError` says which case failed,
>   what was expected, what your code returned, and usually gives a hint.
> - **Do not edit or delete the check cells** (they are locked). The grader restores them from the
>   original before it runs your notebook, so an edited or deleted check changes nothing.
> - **Keep each answer in its own answer cell** (the one that held `raise NotImplementedError()`):
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
        cell["source"] = _text(cell.get("source"))
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
    paths = _collect_notebooks(sources)
    out_dir = Path(out_dir)
    resolved_sources = {path.resolve() for path in paths}
    versions = []
    for path in paths:
        target = out_dir / path.name
        if target.resolve() in resolved_sources:
            raise ValueError(f"{target}: releasing there would overwrite a solution notebook; "
                             "choose another --out folder")
        versions.append((target, notebook_bytes(student_version(_load_source(path), str(path)))))
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
        clean = {"cell_type": cell["cell_type"], "id": cell.get("id"), "source": _text(cell.get("source")),
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
    cell["source"] = _text(cell.get("source"))
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
        if _grade_id(cell) and (meta.get("locked") or meta.get("grade")):
            locked[_grade_id(cell)] = cell
    cells = notebook["cells"]
    seen: set[str] = set()
    for cell in cells:
        grade_id = _grade_id(cell)
        if grade_id is None:
            continue
        if grade_id in seen:
            cell["metadata"].pop("nbgrader", None)
            notes.append(f"a second cell with the grade id `{grade_id}` (a copied cell?) was run as an ordinary cell")
        seen.add(grade_id)
    for index, cell in enumerate(cells):
        grade_id = _grade_id(cell)
        if grade_id in locked:
            original = locked[grade_id]
            full = _text(original.get("source"))
            as_released = {full.strip(), remove_hidden_tests(stub_solutions(full)).strip()}
            if cell["cell_type"] != original["cell_type"] or cell["source"].strip() not in as_released:
                notes.append(f"the locked cell `{grade_id}` had been edited; it was restored from the original")
            cells[index] = _restored_cell(original)
    def key(cell: dict, index: int) -> tuple[str, Any]:  # cells are recognised by grade id, else by cell id
        grade_id = _grade_id(cell)
        return ("grade_id", grade_id) if grade_id else ("id", cell.get("id") or f"cell-{index:02d}")

    source_keys = [key(cell, index) for index, cell in enumerate(source["cells"])]
    for source_index, (kind, grade_id) in enumerate(source_keys):
        if kind != "grade_id" or grade_id not in locked or grade_id in {_grade_id(cell) for cell in cells}:
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


# =========================================================================== grading
@dataclass
class ExerciseResult:
    """One exercise of one submission: points earned and, when it failed, why."""

    grade_id: str
    max_points: float
    points: float = 0.0
    message: str = ""  # the check's message or the error; empty when the exercise passed

    @property
    def passed(self) -> bool:
        return self.points >= self.max_points and not self.message


@dataclass
class NotebookGrade:
    """The grade of one student's notebook."""

    student: str
    notebook: str
    exercises: list[ExerciseResult]
    status: str = "graded"  # graded | missing | invalid notebook | kernel died | timeout: kernel killed | grader error
    notes: list[str] = field(default_factory=list)
    cell_errors: list[str] = field(default_factory=list)  # errors in cells that belong to no exercise
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(exercise.points for exercise in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(exercise.max_points for exercise in self.exercises)


@dataclass
class _CellRun:
    ok: bool
    message: str = ""


@dataclass
class _Execution:
    runs: dict[int, _CellRun] = field(default_factory=dict)
    status: str = "graded"
    stopped: str = ""  # why the remaining cells were not run


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_MESSAGE = 2000


def _error_message(ename: Any, evalue: Any, traceback: Any) -> str:
    """The check's own text for a failed check, else the error name and the last line of the traceback."""
    ename = str(ename or "Error")
    evalue = _ANSI.sub("", str(evalue or "")).strip()
    if ename == "ExerciseCheckError" and evalue:
        message = evalue
    else:
        text = _ANSI.sub("", "\n".join(map(str, traceback or [])))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        message = lines[-1] if lines else (f"{ename}: {evalue}" if evalue else ename)
        if not message.startswith(ename):
            message = f"{ename}: {message}"
        message = message.rstrip(":")  # `raise NotImplementedError()` has an empty message
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + " [...]"


def _cell_run(cell: Any, reply: dict | None) -> _CellRun:
    content = (reply or {}).get("content", {})
    errors = [output for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    if content.get("status", "ok") == "ok" and not errors:
        return _CellRun(True)
    # the kernel's reply is what counts; an error output alone (a cell that hides its
    # traceback, or prints a fake one) also fails the cell
    error = content if content.get("status") == "error" and content.get("ename") else (errors[-1] if errors else {})
    if not error:
        return _CellRun(False, f"the cell did not finish normally (status {content.get('status')!r})")
    return _CellRun(False, _error_message(error.get("ename"), error.get("evalue"), error.get("traceback")))


async def _kernel_responds(client: Any, grace: float) -> bool:
    """After an interrupt: does the kernel answer a trivial request within ``grace`` seconds?"""
    from queue import Empty

    from nbclient.util import ensure_async

    try:
        msg_id = client.kc.execute("pass", silent=True, store_history=False, stop_on_error=False)
        deadline = time.monotonic() + grace
        while (remaining := deadline - time.monotonic()) > 0:
            msg = await ensure_async(client.kc.shell_channel.get_msg(timeout=remaining))
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return True
    except (Empty, RuntimeError, OSError):
        pass
    return False


async def _run_cell(client: Any, cell: Any, index: int, timeout: int, replies: dict[int, dict]
                    ) -> tuple[_CellRun, tuple[str, str] | None]:
    """Run one cell. Returns how it went and, when the notebook cannot go on, (status, why)."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async

    try:
        await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    except DeadKernelError:
        if await ensure_async(client.km.is_alive()):  # nbclient reports a cancelled wait (Ctrl-C) this way
            raise asyncio.CancelledError() from None
        return (_CellRun(False, "DeadKernelError: the kernel died while running this cell (the Python process "
                                "exited or crashed: os._exit(), a segfault, or out of memory)"),
                ("kernel died", "the kernel died"))
    except CellTimeoutError:
        message = f"TimeoutError: the cell was still running after {timeout} s"
        cell.outputs.append(nbformat.v4.new_output("error", ename="TimeoutError", evalue=message, traceback=[message]))
        await ensure_async(client.km.interrupt_kernel())
        if await _kernel_responds(client, grace=max(2.0, min(float(timeout), 10.0))):
            return _CellRun(False, message + " and was interrupted"), None
        await ensure_async(client.km.shutdown_kernel(now=True))
        return (_CellRun(False, message + "; it ignored the interrupt, so the kernel was shut down"),
                ("timeout: kernel killed", "a cell never finished and the kernel was shut down"))
    return _cell_run(cell, replies.get(index)), None


async def _execute(notebook: Any, cwd: Path, *, timeout: int, env: dict, kernel_name: str) -> _Execution:
    """Run every code cell in a new kernel (cwd ``cwd``), going on after errors.

    A cell that runs past ``timeout`` seconds is interrupted (KeyboardInterrupt in the
    kernel) and recorded as failed; the next cells then run in the same kernel. A kernel
    that ignores the interrupt is shut down and, like a kernel that died, leaves the
    remaining cells of the notebook unrun. The kernel process's own output (not the
    cells': those arrive as messages) goes to ``cwd/kernel.log``.
    """
    from nbclient import NotebookClient

    replies: dict[int, dict] = {}

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict) -> None:
        replies[cell_index] = execute_reply

    client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=False, record_timing=False, shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(cwd)}}, on_cell_executed=on_cell_executed)
    result = _Execution()
    with open(cwd / "kernel.log", "wb") as log:
        # nbclient's setup_kernel() is not used: it turns Ctrl-C into "shut the kernel down",
        # which would record a dead kernel for this student and go on with the next one
        client.km = client.create_kernel_manager()
        try:
            await client.async_start_new_kernel(env=env, stdout=log, stderr=log)
            await client.async_start_new_kernel_client()
        except Exception as error:
            await _shutdown(client)
            result.status = "grader error"
            result.stopped = f"the grader could not start a kernel ({type(error).__name__}: {error})"
            return result
        try:
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type == "code":
                    result.runs[index], stop = await _run_cell(client, cell, index, timeout, replies)
                    if stop:
                        result.status, result.stopped = stop
                        break
        except Exception as error:  # anything else that broke the connection to the kernel
            result.status = "kernel died"
            result.stopped = f"the kernel failed ({type(error).__name__}: {error})"
        finally:
            await _shutdown(client)
    return result


async def _shutdown(client: Any) -> None:
    """Stop the kernel now and release its ports and files; never raises."""
    from nbclient.util import ensure_async

    try:
        if client.kc is not None:
            await ensure_async(client.kc.stop_channels())
        if client.km is not None and client.km.has_kernel:
            await ensure_async(client.km.shutdown_kernel(now=True))
    except Exception:  # already gone
        pass
    finally:
        client.kc = None


def _run_coroutine(factory: Any) -> Any:
    """Run a coroutine to completion, also when called from a running event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _first_line(text: str, width: int = 60) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def kernel_env(work_dir: Path, *, fast: bool = True) -> dict[str, str]:
    """The environment of a grading kernel: the grader's own, in fast mode by default, with a
    checkpoint cache of its own (no submission loads a model another one trained)."""
    env = dict(os.environ)
    if fast:
        env["COURSE_FAST"] = "1"
    else:
        env.pop("COURSE_FAST", None)
    env["COURSE_CACHE_DIR"] = str(Path(work_dir) / ".course-cache")
    return env


def grade_submission(source: Any, submission: str | os.PathLike, *, student: str, work_dir: str | os.PathLike,
                     timeout: int = 60, fast: bool = True, kernel_name: str = "python3") -> NotebookGrade:
    """Grade one submitted notebook against its source (solution) notebook.

    The submission is read as JSON only; its locked cells are restored from the source
    (hidden tests included); it is then executed in a new kernel whose working directory
    is ``work_dir`` (which receives the executed notebook). An exercise earns its points
    iff its answer cell and its check cell both ran without error. Never raises for a
    broken submission: the reason goes into the grade.
    """
    import nbformat

    started = time.monotonic()
    source = _as_dict(source)
    exercises = find_exercises(source)
    submission = Path(submission)
    grade = NotebookGrade(student, submission.name, [ExerciseResult(e.grade_id, e.points) for e in exercises])
    try:
        text = submission.read_bytes().decode("utf-8")
        notebook, notes = restore_locked_cells(source, nbformat.reads(text, as_version=4))
    except Exception as error:
        reason = f"the file is not a readable notebook ({type(error).__name__}: {_first_line(str(error), 200)})"
        grade.status = "invalid notebook"
        grade.notes.append(reason)
        for result in grade.exercises:
            result.message = reason + "; no exercise could be graded"
        grade.seconds = time.monotonic() - started
        return grade
    grade.notes += notes

    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    node = nbformat.from_dict(notebook)
    execution = _run_coroutine(lambda: _execute(node, work_dir, timeout=int(timeout),
                                                env=kernel_env(work_dir, fast=fast), kernel_name=kernel_name))
    atomic_write_bytes(work_dir / submission.name, notebook_bytes(node))
    grade.status = execution.status
    if execution.status == "grader error":
        grade.notes.append(f"{execution.stopped}; nothing was run: grade this notebook again")
    elif execution.stopped:
        grade.notes.append(f"the cells after that were not run: {execution.stopped}")

    position = {_grade_id(cell): i for i, cell in enumerate(notebook["cells"]) if _grade_id(cell)}
    exercise_cells = set()
    for exercise, result in zip(exercises, grade.exercises):
        answer, check = position.get(exercise.grade_id), position[f"{exercise.grade_id}-check"]
        exercise_cells |= {answer, check}
        answer_run, check_run = execution.runs.get(answer), execution.runs.get(check)
        not_run = f"the check cell was not run: {execution.stopped or 'unknown reason'}"
        if answer is None:
            result.message = ("your answer cell for this exercise is missing: it was deleted, or its cell metadata "
                              "was changed. Only the original answer cell is graded; put your answer back into it "
                              "(a fresh copy of the released notebook has it).")
        elif answer_run is not None and not answer_run.ok:
            result.message = (f"your answer cell failed: {answer_run.message}\n(an exercise earns its points "
                              "only when its answer cell runs without error)")
            if check_run is None:
                result.message += f"\n{not_run}"
            elif not check_run.ok:
                result.message += f"\nThe check then failed with:\n{check_run.message}"
        elif check_run is None:
            result.message = not_run
        elif not check_run.ok:
            result.message = check_run.message
        else:
            result.points = exercise.points
    for index, run in sorted(execution.runs.items()):
        if not run.ok and index not in exercise_cells:
            first = _first_line(notebook["cells"][index]["source"])
            grade.cell_errors.append(f"cell {index + 1} (`{first}`): {_first_line(run.message, 200)}")
    for result in grade.exercises:
        if result.message:
            grade.notes.append(f"{result.grade_id}: {_first_line(result.message, 120)}")
    grade.seconds = time.monotonic() - started
    return grade


def find_submissions(submissions_dir: str | os.PathLike, names: Sequence[str]
                     ) -> tuple[dict[str, dict[str, Path]], dict[str, list[str]]]:
    """The submitted notebooks, laid out ``submissions_dir/<student>/<notebook>.ipynb``.

    A notebook not directly in the student's folder is also found in a subfolder of it
    (an unpacked archive), ignoring ``.ipynb_checkpoints``. Returns ``{student: {name:
    path}}`` for every student folder (also those with no notebook) and warnings by student
    (key ``""`` for the submissions folder itself).
    """
    root = Path(submissions_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such submissions folder (expected {root}/<student>/<notebook>.ipynb)")
    students: dict[str, dict[str, Path]] = {}
    warnings: dict[str, list[str]] = {}
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.name.startswith((".", "__")):
            continue
        if child.is_dir():
            files, notes = {}, []
            for name in names:
                if (child / name).is_file():
                    files[name] = child / name
                    continue
                nested = sorted(p for p in child.rglob(name) if p.is_file() and ".ipynb_checkpoints" not in p.parts)
                if nested:
                    files[name] = nested[0]
                    notes.append(f"{name} was found at {nested[0].relative_to(child)}"
                                 + (f" (one of {len(nested)} copies)" if len(nested) > 1 else ""))
            extra = sorted(p.name for p in child.glob("*.ipynb") if p.name not in names)
            if extra:
                notes.append("not graded (no source notebook has this name): " + ", ".join(extra))
            students[child.name] = files
            if notes:
                warnings[child.name] = notes
        elif child.suffix == ".ipynb":
            warnings.setdefault("", []).append(f"{child.name}: ignored; each student's notebooks go in "
                                               f"{root}/<student>/")
    return students, warnings


def _points(value: float) -> str:
    return f"{value:g}"


def _exercise_columns(sources: dict[str, tuple[dict, list[Exercise]]]) -> list[tuple[str, str, str]]:
    """(notebook, grade_id, column name); a grade id used by two notebooks is qualified by notebook stem."""
    pairs = [(name, exercise.grade_id) for name, (_, exercises) in sources.items() for exercise in exercises]
    counts: dict[str, int] = {}
    for _, grade_id in pairs:
        counts[grade_id] = counts.get(grade_id, 0) + 1
    return [(name, gid, gid if counts[gid] == 1 else f"{Path(name).stem}/{gid}") for name, gid in pairs]


def _csv_bytes(grades: list[NotebookGrade], columns: list[tuple[str, str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "notebook", *[column for _, _, column in columns], "total", "max", "status", "notes"])
    for grade in grades:
        points = {(grade.notebook, r.grade_id): _points(r.points) for r in grade.exercises}
        writer.writerow([grade.student, grade.notebook,
                         *[points.get((name, gid), "") for name, gid, _ in columns],
                         _points(grade.total), _points(grade.max_points), grade.status, " | ".join(grade.notes)])
    return buffer.getvalue().encode("utf-8")


def _feedback_markdown(student: str, grades: list[NotebookGrade], warnings: list[str], timeout: int) -> str:
    fence = "~~~"
    lines = [f"# Feedback for {student}", "",
             "Each exercise earns its points when its answer cell and its check cell (with the hidden tests) "
             f"both run without error. Your notebook ran from top to bottom in fast mode, each cell limited "
             f"to {timeout} s, with the check cells restored from the original.", ""]
    for warning in warnings:
        lines.append(f"- note: {warning}")
    if warnings:
        lines.append("")
    for grade in grades:
        lines += [f"## {grade.notebook}: {_points(grade.total)} / {_points(grade.max_points)} points", ""]
        if grade.status != "graded":
            lines += [f"Status: **{grade.status}**.", ""]
        lines += ["| exercise | points | result |", "|---|---|---|"]
        for result in grade.exercises:
            mark = "✓ passed" if result.passed else "✗ " + _first_line(result.message, 80).replace("|", "\\|")
            lines.append(f"| `{result.grade_id}` | {_points(result.points)} / {_points(result.max_points)} | {mark} |")
        lines.append("")
        for result in grade.exercises:
            if not result.passed:
                lines += [f"### `{result.grade_id}`: {_points(result.points)} / {_points(result.max_points)}", "",
                          fence + "text", result.message.replace(fence, "~ ~ ~"), fence, ""]
        notes = [note for note in grade.notes if not any(note.startswith(r.grade_id + ":") for r in grade.exercises)]
        if notes:
            lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
        if grade.cell_errors:
            lines += ["Other cells that raised an error (they cost no points by themselves, but check them):", ""]
            lines += [f"- {error}" for error in grade.cell_errors] + [""]
    return "\n".join(lines).rstrip() + "\n"


def grade(sources: Iterable[str | os.PathLike], submissions_dir: str | os.PathLike, out_csv: str | os.PathLike, *,
          timeout: int = 60, feedback_dir: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None,
          fast: bool = True, kernel_name: str = "python3", students: Sequence[str] | None = None,
          log: Any = sys.stderr) -> list[NotebookGrade]:
    """Grade every student's submissions against the source notebooks; write the CSV (and feedback).

    One row per student x source notebook, also for a notebook the student did not hand
    in (status ``missing``, 0 points). Each submission runs in its own kernel with working
    directory ``work_dir/<student>/<notebook stem>/`` (a temporary folder, deleted at the
    end, unless ``work_dir`` is given: then the executed notebooks stay there).

    Raises:
        ValueError / FileNotFoundError: a refused source notebook, a missing folder, an unknown student.
    """
    sources_by_name: dict[str, tuple[dict, list[Exercise]]] = {}
    for path in _collect_notebooks(sources):
        notebook = _load_source(path)
        sources_by_name[path.name] = (notebook, check_source_notebook(notebook, str(path)))
    found, warnings = find_submissions(submissions_dir, list(sources_by_name))
    if students:
        unknown = sorted(set(students) - set(found))
        if unknown:
            raise ValueError(f"no submission folder for {', '.join(unknown)} in {submissions_dir}")
        found = {student: files for student, files in found.items() if student in students}
    for warning in warnings.get("", []):
        print(f"warning: {warning}", file=log)

    temporary = (tempfile.TemporaryDirectory(prefix="course-grading-", ignore_cleanup_errors=True)
                 if work_dir is None else None)
    base = Path(temporary.name if temporary else work_dir)
    grades: list[NotebookGrade] = []
    n_total, n_done = len(found) * len(sources_by_name), 0
    try:
        for student, files in found.items():
            for warning in warnings.get(student, []):
                print(f"warning: {student}: {warning}", file=log)
            for name, (source, exercises) in sources_by_name.items():
                n_done += 1
                if name in files:
                    result = grade_submission(source, files[name], student=student, timeout=timeout, fast=fast,
                                              work_dir=base / student / Path(name).stem, kernel_name=kernel_name)
                else:
                    result = NotebookGrade(student, name, [ExerciseResult(e.grade_id, e.points, 0.0, "not handed in")
                                                           for e in exercises], status="missing",
                                           notes=["not handed in"])
                grades.append(result)
                print(f"[{n_done}/{n_total}] {student} / {name}: {_points(result.total)} / "
                      f"{_points(result.max_points)} ({result.status}, {result.seconds:.1f} s)", file=log, flush=True)
    finally:
        if temporary is not None:
            temporary.cleanup()

    atomic_write_bytes(Path(out_csv), _csv_bytes(grades, _exercise_columns(sources_by_name)))
    if feedback_dir is not None:
        for student in found:
            mine = [g for g in grades if g.student == student]
            atomic_write_bytes(Path(feedback_dir) / f"{student}.md",
                          _feedback_markdown(student, mine, warnings.get(student, []), int(timeout)).encode("utf-8"))
    return grades


# =========================================================================== command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_utils.grading release|grade ...``; see ``--help`` and docs/teaching.md."""
    parser = argparse.ArgumentParser(prog="python -m course_utils.grading",
                                     description="Make student versions of the notebooks and grade submissions.")
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write student versions (stubs, no hidden tests, no outputs)")
    rel.add_argument("sources", nargs="+", metavar="SRC", help="solution notebooks or folders of them")
    rel.add_argument("--out", required=True, type=Path, help="folder for the student versions")
    grd = commands.add_parser("grade", help="grade DIR/<student>/<notebook>.ipynb; write a CSV and feedback")
    grd.add_argument("--source", nargs="+", required=True, metavar="SRC", help="solution notebooks or folders of them")
    grd.add_argument("--submissions", required=True, type=Path, metavar="DIR",
                     help="folder with one subfolder per student holding that student's notebooks")
    grd.add_argument("--out", required=True, type=Path, metavar="CSV", help="grade table to write")
    grd.add_argument("--timeout", type=int, default=60, help="seconds one cell may run (default 60)")
    grd.add_argument("--feedback-dir", type=Path, metavar="DIR", help="write DIR/<student>.md")
    grd.add_argument("--work-dir", type=Path, metavar="DIR",
                     help="keep the executed notebooks in DIR/<student>/<notebook>/ (default: a temporary folder)")
    grd.add_argument("--full", action="store_true", help="run in full mode instead of fast mode (COURSE_FAST=1)")
    grd.add_argument("--kernel", default="python3", help="Jupyter kernel to run submissions in (default python3)")
    grd.add_argument("--student", action="append", metavar="NAME", help="grade only this student (repeatable)")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            for path in release(args.sources, args.out):
                print(f"wrote {path}")
            return 0
        if args.timeout <= 0:
            parser.error("--timeout must be a positive number of seconds")
        grades = grade(args.source, args.submissions, args.out, timeout=args.timeout, feedback_dir=args.feedback_dir,
                       work_dir=args.work_dir, fast=not args.full, kernel_name=args.kernel, students=args.student)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no grade table was written", file=sys.stderr)
        return 130
    feedback = f" and feedback in {args.feedback_dir}" if args.feedback_dir else ""
    print(f"wrote {args.out} ({len(grades)} rows){feedback}")
    failed = [f"{g.student}/{g.notebook}" for g in grades if g.status == "grader error"]
    if failed:
        print(f"error: the grader itself failed for {', '.join(failed)} (see the notes column); grade them again",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
