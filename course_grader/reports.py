"""What grading writes: the plain grade table, a Canvas-style gradebook, feedback, a class report.

Also reads a grade table back (to merge shards or to re-grade one student into an existing
table) and applies a late penalty. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Sequence

from course_utils.files import atomic_write_bytes

from .verdict import ExerciseResult, NotebookGrade, first_line

__all__ = ["LatePolicy", "read_timestamps", "parse_time", "exercise_columns", "csv_bytes", "read_csv",
           "canvas_bytes", "feedback_markdown", "class_report", "write_class_report", "merge_csvs"]

_FAILED_CASES = "hidden cases failed"
FIXED_COLUMNS = ("raw_total", "penalty_percent", "total", "max", "submitted_at", "late_days", "status", "notes")


# --------------------------------------------------------------------------- late submissions
def parse_time(text: str, where: str = "") -> datetime:
    """An ISO 8601 time (``2026-12-01T23:59``, ``2026-12-01 23:59:00+01:00``, a trailing ``Z``);
    without a time zone it is UTC.

    Raises:
        ValueError: naming ``where`` and the expected format.
    """
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a time; write ISO 8601, e.g. 2026-12-01T23:59 "
                         "or 2026-12-01T23:59:00+01:00") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class LatePolicy:
    """``percent_per_day`` off for each started day after ``due`` (+ ``grace_minutes``), at most ``max_percent``."""

    def __init__(self, due: datetime | None, percent_per_day: float = 10.0, max_percent: float = 100.0,
                 grace_minutes: float = 0.0) -> None:
        if not 0 <= percent_per_day <= 100 or not 0 <= max_percent <= 100:
            raise ValueError("late penalties are percentages between 0 and 100")
        self.due, self.per_day, self.max, self.grace = due, percent_per_day, max_percent, grace_minutes

    def apply(self, grade: NotebookGrade, submitted_at: datetime | None) -> None:
        """Set ``grade``'s submission time, late days and penalty."""
        grade.submitted_at = submitted_at
        if self.due is None or submitted_at is None:
            return
        late = submitted_at - self.due - timedelta(minutes=self.grace)
        grade.late_days = max(0, math.ceil(late / timedelta(days=1)))
        grade.penalty_percent = min(self.max, self.per_day * grade.late_days)


def read_timestamps(path: str | os.PathLike) -> dict[tuple[str, str], datetime]:
    """Submission times from an LMS export: a CSV with columns ``student`` and ``submitted_at``
    (ISO 8601) and optionally ``notebook`` (file name; without it the time holds for every notebook,
    key ``(student, "")``).

    Raises:
        ValueError: a missing column or a bad time, naming the file and line.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"student", "submitted_at"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: needs the columns student and submitted_at (missing: {', '.join(sorted(missing))})")
        times = {}
        for line, row in enumerate(reader, start=2):
            times[(row["student"].strip(), (row.get("notebook") or "").strip())] = parse_time(
                row["submitted_at"], f"{path}, line {line}")
    return times


# --------------------------------------------------------------------------- the plain table
def exercise_columns(sources: dict[str, list[tuple[str, float]]]) -> list[tuple[str, str, str]]:
    """(notebook, grade_id, column name) for ``{notebook: [(grade_id, points)]}``; a grade id used by
    two notebooks is written ``<notebook stem>/<grade_id>``."""
    counts = Counter(gid for exercises in sources.values() for gid, _ in exercises)
    return [(name, gid, gid if counts[gid] == 1 else f"{Path(name).stem}/{gid}")
            for name, exercises in sources.items() for gid, _ in exercises]


def _points(value: float) -> str:
    return f"{round(value, 4):g}"


def csv_bytes(grades: Sequence[NotebookGrade], columns: list[tuple[str, str, str]]) -> bytes:
    """The grade table: one row per student x notebook."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "notebook", *[column for _, _, column in columns], *FIXED_COLUMNS])
    for grade in grades:
        points = {(grade.notebook, r.grade_id): _points(r.points) for r in grade.exercises}
        writer.writerow([grade.student, grade.notebook, *[points.get((name, gid), "") for name, gid, _ in columns],
                         _points(grade.raw_total), _points(grade.penalty_percent), _points(grade.total),
                         _points(grade.max_points),
                         grade.submitted_at.isoformat(timespec="seconds") if grade.submitted_at else "",
                         grade.late_days, grade.status, " | ".join(grade.notes)])
    return buffer.getvalue().encode("utf-8")


def read_csv(path: str | os.PathLike, sources: dict[str, list[tuple[str, float]]]) -> list[NotebookGrade]:
    """Read a grade table written by :func:`csv_bytes` back into grades (for merging and regrading).

    Raises:
        ValueError: a table whose columns do not match these source notebooks.
    """
    path = Path(path)
    columns = exercise_columns(sources)
    expected = ["student", "notebook", *[c for _, _, c in columns], *FIXED_COLUMNS]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != expected:
            raise ValueError(f"{path}: its columns {reader.fieldnames} are not those of these source notebooks "
                             f"({expected}); merge only tables graded with the same --source")
        grades = []
        for row in reader:
            name = row["notebook"]
            if name not in sources:
                raise ValueError(f"{path}: notebook {name!r} is not among the sources")
            column_of = {gid: column for nb, gid, column in columns if nb == name}
            exercises = [ExerciseResult(gid, points, float(row[column_of[gid]] or 0)) for gid, points in sources[name]]
            notes = [n for n in row["notes"].split(" | ") if n]
            for result in exercises:
                result.message = next((n.split(": ", 1)[1] for n in notes if n.startswith(result.grade_id + ": ")), "")
                result.outcome = "passed" if result.points >= result.max_points else "wrong"
                if _FAILED_CASES in result.message:  # "k of n hidden cases failed (p of m points): a; b"
                    result.failed_cases = result.message.split("): ", 1)[-1].split("; ")
            grade = NotebookGrade(row["student"], name, exercises, status=row["status"], notes=notes,
                                  late_days=int(row["late_days"] or 0), penalty_percent=float(row["penalty_percent"]))
            grade.submitted_at = parse_time(row["submitted_at"], str(path)) if row["submitted_at"] else None
            grades.append(grade)
    return grades


def merge_csvs(paths: Iterable[str | os.PathLike], sources: dict[str, list[tuple[str, float]]]
               ) -> list[NotebookGrade]:
    """The rows of several shard tables, sorted by student then notebook order.

    Raises:
        ValueError: a (student, notebook) row present in two tables (shards overlap).
    """
    seen: dict[tuple[str, str], str] = {}
    grades = []
    for path in paths:
        for grade in read_csv(path, sources):
            key = (grade.student, grade.notebook)
            if key in seen:
                raise ValueError(f"{grade.student} / {grade.notebook} is in both {seen[key]} and {path}: "
                                 "shards must not overlap")
            seen[key] = str(path)
            grades.append(grade)
    order = {name: i for i, name in enumerate(sources)}
    return sorted(grades, key=lambda g: (g.student, order[g.notebook]))


# --------------------------------------------------------------------------- LMS gradebook
def canvas_bytes(grades: Sequence[NotebookGrade], notebooks: Sequence[str]) -> bytes:
    """A Canvas-style gradebook import: ``Student, ID, SIS User ID, SIS Login ID, Section`` and one
    column per notebook (points after the late penalty), then a ``Points Possible`` row. Students
    are identified by ``SIS Login ID`` = the submission folder's name."""
    maxima = {g.notebook: g.max_points for g in grades}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *[Path(n).stem for n in notebooks]])
    writer.writerow(["Points Possible", "", "", "", "", *[_points(maxima.get(n, 0)) for n in notebooks]])
    by_student: dict[str, dict[str, float]] = defaultdict(dict)
    for grade in grades:
        by_student[grade.student][grade.notebook] = grade.total
    for student in sorted(by_student):
        writer.writerow([student, "", "", student, "",
                         *[_points(by_student[student][n]) if n in by_student[student] else "" for n in notebooks]])
    return buffer.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- feedback
def feedback_markdown(student: str, grades: Sequence[NotebookGrade], warnings: Sequence[str], limits_text: str) -> str:
    """One student's feedback over all notebooks: points, each lost point's reason, notes."""
    fence = "~~~"
    lines = [f"# Feedback for {student}", "",
             "Each exercise was graded on new random cases, drawn when grading: points are given per case "
             f"that matches the course's reference. Your notebook ran from top to bottom in fast mode "
             f"({limits_text}), with the check cells restored from the original.", ""]
    lines += [f"- note: {warning}" for warning in warnings] + ([""] if warnings else [])
    for grade in grades:
        lines += [f"## {grade.notebook}: {_points(grade.total)} / {_points(grade.max_points)} points", ""]
        if grade.penalty_percent:
            lines += [f"Handed in {grade.late_days} day(s) late: {_points(grade.raw_total)} points minus "
                      f"{_points(grade.penalty_percent)} %.", ""]
        if grade.status != "graded":
            lines += [f"Status: **{grade.status}**.", ""]
        lines += ["| exercise | points | result |", "|---|---|---|"]
        for result in grade.exercises:
            mark = "✓ passed" if result.passed else "✗ " + first_line(result.message, 80).replace("|", "\\|")
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


# --------------------------------------------------------------------------- class report
def class_report(grades: Sequence[NotebookGrade], top: int = 3) -> tuple[str, list[tuple[str, float]]]:
    """A markdown report: per exercise the share of submissions with full points, the mean points,
    and the most common failure messages (first line, counted). Also returns (exercise, pass rate)."""
    by_exercise: dict[str, list[ExerciseResult]] = defaultdict(list)
    for grade in grades:
        if grade.status == "missing":
            continue
        for result in grade.exercises:
            by_exercise[f"{Path(grade.notebook).stem} / {result.grade_id}"].append(result)
    handed_in = sorted({(g.student, g.notebook) for g in grades if g.status != "missing"})
    lines = ["# Class report", "",
             f"{len({s for s, _ in handed_in})} students, {len(handed_in)} notebooks handed in "
             f"({sum(g.status == 'missing' for g in grades)} missing).", "",
             "| exercise | full points | mean points | most common failures |", "|---|---|---|---|"]
    rates = []
    for name, results in by_exercise.items():
        passed = sum(r.points >= r.max_points for r in results) / len(results)
        mean = sum(r.points for r in results) / len(results)
        failures: Counter = Counter()
        for r in results:
            if r.points >= r.max_points or not r.message:
                continue
            if r.failed_cases and _FAILED_CASES in r.message:  # count which cases are wrong across the class
                failures.update(f"wrong on '{case}'" for case in r.failed_cases)
            else:
                failures[first_line(r.message, 70)] += 1
        common = "; ".join(f"{text.replace('|', '/')} (×{count})" for text, count in failures.most_common(top))
        lines.append(f"| {name} | {passed:.0%} | {mean:.2f} / {_points(results[0].max_points)} | {common or '-'} |")
        rates.append((name, passed))
    return "\n".join(lines) + "\n", rates


def write_class_report(grades: Sequence[NotebookGrade], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``report.md`` and ``report.png`` (pass rate per exercise) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    text, rates = class_report(grades)
    atomic_write_bytes(out_dir / "report.md", (text + "\n![pass rate per exercise](report.png)\n").encode("utf-8"))
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(3, len(rates)) + 1))
    names = [name for name, _ in rates]
    ax.barh(range(len(rates)), [100 * rate for _, rate in rates], color="tab:blue")
    ax.set_yticks(range(len(rates)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("submissions with full points (%)")
    ax.set_title("pass rate per exercise")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(out_dir / "report.png", buffer.getvalue())
    return [out_dir / "report.md", out_dir / "report.png"]
