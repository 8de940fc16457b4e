"""Grading a class: find the submissions, grade them (in parallel, or one shard), write the outputs."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from course_utils.files import atomic_write_bytes

from .markers import check_source_notebook, collect_notebooks, load_source
from .reports import (LatePolicy, canvas_bytes, csv_bytes, exercise_columns, feedback_markdown, read_csv,
                      read_timestamps, write_class_report)
from .sandbox import Limits, choose_mode
from .verdict import ExerciseResult, NotebookGrade, grade_submission, specs_for

__all__ = ["find_submissions", "load_sources", "parse_shard", "shard_students", "grade", "write_outputs"]


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


def load_sources(sources: Sequence[str | os.PathLike]) -> dict[str, tuple[Path, dict]]:
    """The source notebooks by file name, each checked (markers and exercise declarations).

    Raises:
        ValueError / FileNotFoundError: a refused or missing source notebook.
    """
    loaded = {}
    for path in collect_notebooks(sources):
        notebook = load_source(path)
        check_source_notebook(notebook, str(path))
        specs_for(notebook, str(path))
        loaded[path.name] = (path, notebook)
    return loaded


def exercise_points(loaded: dict[str, tuple[Path, dict]]) -> dict[str, list[tuple[str, float]]]:
    """``{notebook: [(grade_id, points)]}`` of the loaded sources."""
    return {name: [(e.grade_id, e.points) for e, _ in specs_for(nb)] for name, (_, nb) in loaded.items()}


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8): the third of eight shards (1-based).

    Raises:
        ValueError: not ``K/N`` with 1 <= K <= N.
    """
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: write K/N, e.g. 3/8 (shard 3 of 8)") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def shard_students(students: Sequence[str], k: int, n: int) -> list[str]:
    """The students of shard ``k`` of ``n`` (1-based): every n-th of the sorted names, from the k-th."""
    return [student for i, student in enumerate(sorted(students)) if i % n == k - 1]


def grade(sources: Sequence[str | os.PathLike], submissions_dir: str | os.PathLike, out_csv: str | os.PathLike, *,
          limits: Limits = Limits(), sandbox: str = "auto", jobs: int = 1, seed: int | None = None,
          feedback_dir: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None,
          fast: bool = True, students: Sequence[str] | None = None, shard: tuple[int, int] | None = None,
          late: LatePolicy | None = None, timestamps: str | os.PathLike | None = None,
          canvas_csv: str | os.PathLike | None = None, report_dir: str | os.PathLike | None = None,
          kernel_name: str | None = None, log: Any = sys.stderr) -> list[NotebookGrade]:
    """Grade every student's submissions against the source notebooks; write the table and extras.

    One row per student x source notebook, also for a notebook not handed in (status
    ``missing``). ``students`` re-grades only those students: when ``out_csv`` exists, its
    other rows are kept. ``shard=(k, n)`` grades the k-th of n interleaved slices of the
    sorted students (merge the shard tables with ``python -m course_grader merge``).
    ``jobs`` submissions are graded at once (threads; each runs its own kernel process).

    Raises:
        ValueError / FileNotFoundError: a refused source notebook, a missing folder, an unknown student.
    """
    loaded = load_sources(sources)
    points = exercise_points(loaded)
    mode = choose_mode(sandbox)
    found, warnings = find_submissions(submissions_dir, list(loaded))
    if students:
        unknown = sorted(set(students) - set(found))
        if unknown:
            raise ValueError(f"no submission folder for {', '.join(unknown)} in {submissions_dir}")
        found = {student: files for student, files in found.items() if student in students}
    if shard is not None:
        mine = set(shard_students(found, *shard))
        found = {student: files for student, files in found.items() if student in mine}
    times = read_timestamps(timestamps) if timestamps else {}
    seed = secrets.randbits(32) if seed is None else int(seed)
    print(f"grading seed {seed} (pass --seed {seed} to draw the same cases again); sandbox: {mode}", file=log)
    for warning in warnings.get("", []):
        print(f"warning: {warning}", file=log)

    temporary = (tempfile.TemporaryDirectory(prefix="course-grading-", ignore_cleanup_errors=True)
                 if work_dir is None else None)
    base = Path(temporary.name if temporary else work_dir).resolve()
    hide = [path.resolve() for path, _ in loaded.values()] + [Path(submissions_dir).resolve(), base]
    hide += [Path(p).resolve() for p in (out_csv, canvas_csv) if p is not None and Path(p).exists()]
    hide += [Path(p).resolve() for p in (feedback_dir, report_dir) if p is not None and Path(p).is_dir()]
    tasks = [(student, name) for student in found for name in loaded]
    lock, done = threading.Lock(), [0]

    def one(task: tuple[str, str]) -> NotebookGrade:
        student, name = task
        path, source = loaded[name]
        if name in found[student]:
            result = grade_submission(source, found[student][name], student=student, seed=seed, limits=limits,
                                      mode=mode, hide=hide, fast=fast, kernel_name=kernel_name,
                                      work_dir=base / student / Path(name).stem)
            submitted = times.get((student, name), times.get((student, "")))
            if submitted is None and not times:
                submitted = datetime.fromtimestamp(found[student][name].stat().st_mtime, tz=timezone.utc)
        else:
            result = NotebookGrade(student, name, [ExerciseResult(gid, p, 0.0, "not handed in", "missing")
                                                   for gid, p in points[name]], status="missing",
                                   notes=["not handed in"])
            submitted = None
        (late or LatePolicy(None)).apply(result, submitted)
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{len(tasks)}] {student} / {name}: {result.total:g} / {result.max_points:g} "
                  f"({result.status}, {result.seconds:.1f} s)", file=log, flush=True)
        return result

    try:
        if jobs <= 1:
            grades = [one(task) for task in tasks]
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                grades = list(pool.map(one, tasks))
    finally:
        if temporary is not None:
            temporary.cleanup()

    if students and Path(out_csv).exists():  # regrading some students: keep the others' rows
        kept = [g for g in read_csv(out_csv, points) if g.student not in set(students)]
        order = {name: i for i, name in enumerate(loaded)}
        grades = sorted(kept + grades, key=lambda g: (g.student, order[g.notebook]))
    write_outputs(grades, points, out_csv, canvas_csv=canvas_csv, report_dir=report_dir)
    if feedback_dir is not None:
        limits_text = f"each cell limited to {limits.cell_seconds} s"
        for student in found:
            mine = [g for g in grades if g.student == student]
            atomic_write_bytes(Path(feedback_dir) / f"{student}.md",
                               feedback_markdown(student, mine, warnings.get(student, []), limits_text).encode())
    return grades


def write_outputs(grades: list[NotebookGrade], points: dict[str, list[tuple[str, float]]],
                  out_csv: str | os.PathLike, *, canvas_csv: str | os.PathLike | None = None,
                  report_dir: str | os.PathLike | None = None) -> None:
    """The grade table, and the gradebook and class report when asked for."""
    atomic_write_bytes(Path(out_csv), csv_bytes(grades, exercise_columns(points)))
    if canvas_csv is not None:
        atomic_write_bytes(Path(canvas_csv), canvas_bytes(grades, list(points)))
    if report_dir is not None:
        write_class_report(grades, report_dir)
