"""``python -m course_grader release|grade|merge``: the command line (docs/teaching.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .batch import exercise_points, grade, load_sources, parse_shard, write_outputs
from .markers import release
from .reports import LatePolicy, merge_csvs, parse_time
from .sandbox import MODES, Limits

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_grader",
                                     description="Make student versions of the notebooks, grade submissions, "
                                                 "merge shard tables (docs/teaching.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write student versions (stubs, no hidden tests, no outputs)")
    rel.add_argument("sources", nargs="+", metavar="SRC", help="solution notebooks or folders of them")
    rel.add_argument("--out", required=True, type=Path, help="folder for the student versions")

    grd = commands.add_parser("grade", help="grade DIR/<student>/<notebook>.ipynb; write a CSV and more")
    grd.add_argument("--source", nargs="+", required=True, metavar="SRC", help="solution notebooks or folders of them")
    grd.add_argument("--submissions", required=True, type=Path, metavar="DIR",
                     help="folder with one subfolder per student holding that student's notebooks")
    grd.add_argument("--out", required=True, type=Path, metavar="CSV", help="grade table to write")
    grd.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded at once (default 1)")
    grd.add_argument("--seed", type=int, help="seed of the graded cases (default: a fresh one, printed)")
    grd.add_argument("--student", action="append", metavar="NAME",
                     help="grade only this student (repeatable); other rows of an existing --out are kept")
    grd.add_argument("--shard", metavar="K/N", help="grade only the K-th of N slices of the students")
    grd.add_argument("--feedback-dir", type=Path, metavar="DIR", help="write DIR/<student>.md")
    grd.add_argument("--canvas", type=Path, metavar="CSV", help="also write a Canvas-style gradebook CSV")
    grd.add_argument("--report", type=Path, metavar="DIR", help="write DIR/report.md and DIR/report.png")
    grd.add_argument("--due", metavar="TIME", help="due date, ISO 8601 (e.g. 2026-12-01T23:59+01:00)")
    grd.add_argument("--timestamps", type=Path, metavar="CSV",
                     help="submission times (columns student, submitted_at[, notebook]); default: file times")
    grd.add_argument("--late-penalty", type=float, default=10.0, metavar="PERCENT",
                     help="percent off per started day late (default 10)")
    grd.add_argument("--max-late-penalty", type=float, default=100.0, metavar="PERCENT", help="cap (default 100)")
    grd.add_argument("--grace-minutes", type=float, default=0.0, help="minutes after --due still on time")
    grd.add_argument("--sandbox", choices=MODES, default="auto", help="isolation of the kernels (default auto)")
    grd.add_argument("--timeout", type=int, default=60, help="seconds one cell may run (default 60)")
    grd.add_argument("--notebook-timeout", type=int, default=1800, help="seconds one notebook may run")
    grd.add_argument("--memory-mb", type=int, default=6144, help="address-space limit of a kernel")
    grd.add_argument("--cpu-seconds", type=int, default=1800, help="CPU-time limit of a kernel")
    grd.add_argument("--max-processes", type=int, default=512, help="process limit (sandbox 'user' only)")
    grd.add_argument("--output-kb", type=int, default=2048, help="cell output kept per notebook")
    grd.add_argument("--work-dir", type=Path, metavar="DIR",
                     help="keep the executed notebooks in DIR/<student>/<notebook>/ (default: a temporary folder)")
    grd.add_argument("--full", action="store_true", help="run in full mode instead of fast mode (COURSE_FAST=1)")

    mrg = commands.add_parser("merge", help="merge the grade tables of several shards")
    mrg.add_argument("tables", nargs="+", type=Path, metavar="CSV", help="shard tables")
    mrg.add_argument("--source", nargs="+", required=True, metavar="SRC", help="the same --source as for grading")
    mrg.add_argument("--out", required=True, type=Path, metavar="CSV", help="merged table to write")
    mrg.add_argument("--canvas", type=Path, metavar="CSV", help="also write a Canvas-style gradebook CSV")
    mrg.add_argument("--report", type=Path, metavar="DIR", help="write DIR/report.md and DIR/report.png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit codes: 0 done, 1 a grader error in some notebook, 2 bad input, 130 Ctrl-C."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            for path in release(args.sources, args.out):
                print(f"wrote {path}")
            return 0
        if args.command == "merge":
            points = exercise_points(load_sources(args.source))
            grades = merge_csvs(args.tables, points)
            write_outputs(grades, points, args.out, canvas_csv=args.canvas, report_dir=args.report)
            print(f"wrote {args.out} ({len(grades)} rows from {len(args.tables)} tables)")
            return 0
        if args.timeout <= 0 or args.jobs <= 0:
            parser.error("--timeout and --jobs must be positive")
        limits = Limits(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds, processes=args.max_processes,
                        cell_seconds=args.timeout, notebook_seconds=args.notebook_timeout, output_kb=args.output_kb)
        late = LatePolicy(parse_time(args.due, "--due") if args.due else None, args.late_penalty,
                          args.max_late_penalty, args.grace_minutes)
        grades = grade(args.source, args.submissions, args.out, limits=limits, sandbox=args.sandbox, jobs=args.jobs,
                       seed=args.seed, feedback_dir=args.feedback_dir, work_dir=args.work_dir, fast=not args.full,
                       students=args.student, shard=parse_shard(args.shard) if args.shard else None, late=late,
                       timestamps=args.timestamps, canvas_csv=args.canvas, report_dir=args.report)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no grade table was written", file=sys.stderr)
        return 130
    print(f"wrote {args.out} ({len(grades)} rows)")
    failed = [f"{g.student}/{g.notebook}" for g in grades if g.status == "grader error"]
    if failed:
        print(f"error: the grader itself failed for {', '.join(failed)} (see the notes column); grade them again",
              file=sys.stderr)
        return 1
    return 0
