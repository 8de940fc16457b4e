"""Grading one submission: restore, scan, run sandboxed with probes, compare outside the kernel.

The verdict of an exercise never comes from the student's kernel saying "passed". It is::

    points = max_points * (cases whose output matches the reference) / (cases)

where the cases are drawn in the grader's process with a seed fresh per grading run, the
student's object is evaluated on them inside the sandboxed kernel right after its answer
cell (``course_grader.probe``), the outputs come back as JSON, and the reference and the
comparison run here. An exercise gets 0 when its answer cell is missing, or when a cell the
student wrote or changed at or before its answer cell tampers with the grading environment
(``course_grader.tamper``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from course_utils.files import atomic_write_bytes

from .contract import Case, ExerciseSpec, encode
from .exercises import get_spec
from .execution import Execution, Probe, execute, kernel_env, run_coroutine
from .markers import (cell_text, find_exercises, grade_id_of, notebook_bytes, remove_hidden_tests,
                      restore_locked_cells, stub_solutions)
from .sandbox import Limits
from .tamper import Finding, names_used, scan_cell

__all__ = ["ExerciseResult", "NotebookGrade", "grade_submission", "draw_cases", "specs_for", "first_line"]


@dataclass
class ExerciseResult:
    """One exercise of one submission: points earned and, when some were lost, why."""

    grade_id: str
    max_points: float
    points: float = 0.0
    message: str = ""     # why points were lost; empty when the exercise passed
    outcome: str = ""     # passed | partial | wrong | not solved | error | tampered | missing | not run
    cases_passed: int = 0
    n_cases: int = 0
    failed_cases: list[str] = field(default_factory=list)  # names of the cases it got wrong

    @property
    def passed(self) -> bool:
        return self.points >= self.max_points and not self.message


@dataclass
class NotebookGrade:
    """The grade of one student's notebook (points before and after a late penalty)."""

    student: str
    notebook: str
    exercises: list[ExerciseResult]
    status: str = "graded"  # graded | missing | invalid notebook | kernel died | timeout: ... | grader error
    notes: list[str] = field(default_factory=list)
    cell_errors: list[str] = field(default_factory=list)  # errors in cells that belong to no exercise
    seconds: float = 0.0
    submitted_at: datetime | None = None
    late_days: int = 0
    penalty_percent: float = 0.0

    @property
    def raw_total(self) -> float:
        return round(sum(exercise.points for exercise in self.exercises), 4)

    @property
    def total(self) -> float:
        return round(self.raw_total * (1 - self.penalty_percent / 100), 4)

    @property
    def max_points(self) -> float:
        return sum(exercise.max_points for exercise in self.exercises)


def first_line(text: str, width: int = 60) -> str:
    """The first non-empty line of ``text``, cut to ``width`` characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def specs_for(source: dict, name: str = "notebook") -> list[tuple[Any, ExerciseSpec]]:
    """Each exercise of a source notebook with its declaration.

    Raises:
        ValueError: an exercise without a declaration in ``course_grader.exercises``.
    """
    pairs = []
    for exercise in find_exercises(source):
        try:
            pairs.append((exercise, get_spec(exercise.grade_id)))
        except KeyError as error:
            raise ValueError(f"{name}: {error.args[0]}") from None
    return pairs


def draw_cases(spec: ExerciseSpec, seed: int, student: str) -> list[Case]:
    """The graded cases of one exercise for one student: drawn from (run seed, student, exercise)."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(student.encode()), zlib.crc32(spec.grade_id.encode())])
    return spec.draw(np.random.default_rng(sequence))


def _trusted_texts(source: dict) -> tuple[dict[str, set[str]], set[str]]:
    """The course's own version of each cell (full and as released), by cell id and overall."""
    by_id: dict[str, set[str]] = {}
    every: set[str] = set()
    for cell in source["cells"]:
        text = cell_text(cell.get("source"))
        versions = {text.strip(), remove_hidden_tests(stub_solutions(text)).strip()}
        by_id.setdefault(str(cell.get("id")), set()).update(versions)
        every |= versions
    return by_id, every


def scan_submission(source: dict, notebook: dict, answer_names: set[str]) -> list[Finding]:
    """Tampering findings in the cells of ``notebook`` (restored) that differ from the course's."""
    by_id, every = _trusted_texts(source)
    locked = [cell_text(c.get("source")) for c in source["cells"]
              if c.get("cell_type") == "code" and (c.get("metadata", {}).get("nbgrader", {}).get("grade")
                                                   or c.get("metadata", {}).get("nbgrader", {}).get("locked"))]
    protected = names_used(locked) - answer_names
    findings: list[Finding] = []
    for index, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") != "code":
            continue
        text = cell_text(cell.get("source")).strip()
        if text in by_id.get(str(cell.get("id")), set()) or text in every:
            continue
        findings += scan_cell(index, cell_text(cell.get("source")), protected)
    return findings


def _judge(result: ExerciseResult, spec: ExerciseSpec, cases: list[Case], probe: Probe) -> None:
    """Compare the probe's records with the reference, case by case, in this process."""
    records = probe.records or []
    result.n_cases = len(cases)
    failures: list[str] = []
    counts: Counter = Counter()
    for position, case in enumerate(cases):
        record = records[position] if position < len(records) else {"status": "not run"}
        status = record.get("status")
        counts[status] += 1
        if status == "ok":
            message = spec.compare(case, spec.expected(case), record.get("output"))
            if message is None:
                result.cases_passed += 1
                counts["passed"] += 1
            else:
                failures.append(message)
                result.failed_cases.append(case.name)
        elif status == "error":
            failures.append(f"{case.name}: your code raised {record.get('error', 'an error')}")
        elif status == "timeout":
            failures.append(f"{case.name}: your code did not finish within the time limit")
        elif status not in ("not solved", "missing"):
            failures.append(f"{case.name}: not evaluated ({probe.problem or 'the kernel stopped'})")
        if status not in ("ok", "not solved", "missing"):
            result.failed_cases.append(case.name)
    passed_real = sum(1 for position, case in enumerate(cases) if not case.trivial
                      and case.name not in result.failed_cases and position < len(records)
                      and records[position].get("status") == "ok")
    if passed_real == 0 and any(not case.trivial for case in cases):
        result.cases_passed = 0  # only cases a constant answer passes: no points
    result.points = round(result.max_points * result.cases_passed / max(1, len(cases)), 2)
    if result.cases_passed == len(cases) and cases:
        result.outcome = "passed"
        return
    if counts["missing"] == len(cases):
        result.outcome = "missing"
        result.message = (f"`{spec.answer}` is not defined after its answer cell ran: keep the name of the "
                          "released notebook")
    elif counts["not solved"] == len(cases):
        result.outcome = "not solved"
        result.message = "not solved yet (the answer still raises NotImplementedError): 0 points"
    else:
        result.outcome = "partial" if result.cases_passed else (
            "error" if counts["error"] + counts["timeout"] == len(cases) else "wrong")
        shown = "\n".join(failures[:3]) + (f"\n... and {len(failures) - 3} more" if len(failures) > 3 else "")
        result.message = (f"{len(cases) - result.cases_passed} of {len(cases)} hidden cases failed "
                          f"({result.points:g} of {result.max_points:g} points): {'; '.join(result.failed_cases)}"
                          f"\n{shown}")


def grade_submission(source: Any, submission: str | os.PathLike, *, student: str, work_dir: str | os.PathLike,
                     seed: int, limits: Limits = Limits(), mode: str = "none", hide: Sequence[Path] = (),
                     fast: bool = True, kernel_name: str | None = None) -> NotebookGrade:
    """Grade one submitted notebook against its source (solution) notebook.

    The submission is read as JSON only; its locked cells are restored from the source;
    its own cells are scanned for tampering; it then runs in a new sandboxed kernel in
    ``work_dir`` (which receives the executed notebook), with each exercise's answer
    evaluated on freshly drawn cases right after its answer cell. Never raises for a broken
    submission: the reason goes into the grade.
    """
    import nbformat

    started = time.monotonic()
    source = json.loads(json.dumps(source))
    pairs = specs_for(source)
    submission = Path(submission)
    grade = NotebookGrade(student, submission.name, [ExerciseResult(e.grade_id, e.points) for e, _ in pairs])
    try:
        text = submission.read_bytes().decode("utf-8")
        notebook, notes = restore_locked_cells(source, nbformat.reads(text, as_version=4))
    except Exception as error:
        reason = f"the file is not a readable notebook ({type(error).__name__}: {first_line(str(error), 200)})"
        grade.status = "invalid notebook"
        grade.notes.append(reason)
        for result in grade.exercises:
            result.message, result.outcome = reason + "; no exercise could be graded", "not run"
        grade.seconds = time.monotonic() - started
        return grade
    grade.notes += notes

    position = {grade_id_of(cell): i for i, cell in enumerate(notebook["cells"]) if grade_id_of(cell)}
    findings = scan_submission(source, notebook, {spec.answer for _, spec in pairs})
    cases = {spec.grade_id: draw_cases(spec, seed, student) for _, spec in pairs}
    probes = {}
    for exercise, spec in pairs:
        at = position.get(exercise.grade_id)
        if at is not None:
            drawn = cases[spec.grade_id]
            probes[spec.grade_id] = Probe(spec.grade_id, at, n_cases=len(drawn), cases=lambda drawn=drawn: json.dumps(
                [{"name": c.name, "args": encode(list(c.args))} for c in drawn]))

    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    node = nbformat.from_dict(notebook)
    execution: Execution = run_coroutine(lambda: execute(
        node, work_dir, limits=limits, env=kernel_env(work_dir, fast=fast), mode=mode, hide=list(hide),
        probes=list(probes.values()), kernel_name=kernel_name))
    atomic_write_bytes(work_dir / submission.name, notebook_bytes(node))
    grade.status = execution.status
    if execution.status == "grader error":
        grade.notes.append(f"{execution.stopped}; nothing was run: grade this notebook again")
    elif execution.stopped:
        grade.notes.append(f"the cells after that were not run: {execution.stopped}")
    if execution.output_truncated:
        grade.notes.append(f"cell output beyond {limits.output_kb} kB was not kept")

    exercise_cells: set[int] = set()
    for (exercise, spec), result in zip(pairs, grade.exercises):
        answer, check = position.get(exercise.grade_id), position.get(f"{exercise.grade_id}-check")
        exercise_cells |= {answer, check}
        tampered = [f for f in findings if answer is not None and f.cell <= answer]
        if answer is None:
            result.outcome = "missing"
            result.message = ("your answer cell for this exercise is missing: it was deleted, or its cell metadata "
                              "was changed. Only the original answer cell is graded; put your answer back into it "
                              "(a fresh copy of the released notebook has it).")
        elif tampered:
            result.outcome = "tampered"
            result.message = ("0 points: code that changes the grading environment ran before this exercise was "
                              "graded: " + "; ".join(f.describe() for f in tampered[:3]))
        elif probes[spec.grade_id].records is None:
            result.outcome = "not run"
            result.message = f"your answer was not evaluated: {execution.stopped or 'the kernel stopped'}"
        else:
            _judge(result, spec, cases[spec.grade_id], probes[spec.grade_id])
    if findings:
        grade.notes.append("tampering: " + "; ".join(f.describe() for f in findings[:3]))
    for index, run in sorted(execution.runs.items()):
        if not run.ok and index not in exercise_cells:
            grade.cell_errors.append(f"cell {index + 1} (`{first_line(notebook['cells'][index]['source'])}`): "
                                     f"{first_line(run.message, 200)}")
    for result in grade.exercises:
        if result.message:
            grade.notes.append(f"{result.grade_id}: {first_line(result.message, 300)}")
    grade.seconds = time.monotonic() - started
    return grade
