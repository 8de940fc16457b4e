"""The kernel side of grading: run one exercise's harness on the student's object, write JSON.

The grader calls :func:`run` inside the submission's kernel through an ``execute_request``'s
``user_expressions`` (evaluated by the kernel without IPython's input or AST transformers),
right after the exercise's answer cell ran. It reads the cases the grader drew from
``cases_path`` and writes one record per case to ``out_path`` (JSON, rewritten after every
case, so a case that hangs or kills the kernel still leaves the earlier ones):

    {"status": "ok", "output": <plain data>} | {"status": "not solved"} |
    {"status": "missing"} | {"status": "error", "error": "TypeError: ..."} |
    {"status": "timeout"}

Nothing here decides a grade: the grader compares the outputs with the reference in its
own process. A submission that tampers with this module only changes its own outputs.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

__all__ = ["run"]

_MAX_ERROR = 400


class _CaseTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _CaseTimeout()


def _write(path: str, records: list[dict]) -> None:
    from .contract import encode

    temporary = f"{path}.part"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump([{**r, "output": encode(r["output"])} if "output" in r else r for r in records], handle)
    os.replace(temporary, path)


def run(namespace: dict, grade_id: str, cases_path: str, out_path: str, seconds_per_case: float = 30.0) -> str:
    """Evaluate ``namespace[spec.answer]`` on every case of ``cases_path``; returns ``"done"``."""
    from .contract import Case, decode
    from .exercises import get_spec

    spec = get_spec(grade_id)
    with open(cases_path, encoding="utf-8") as handle:
        cases = [Case(item["name"], tuple(decode(item["args"]))) for item in json.load(handle)]
    records: list[dict] = []
    missing = object()
    answer = namespace.get(spec.answer, missing)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for case in cases:
            if answer is missing:
                records.append({"status": "missing"})
                continue
            signal.setitimer(signal.ITIMER_REAL, seconds_per_case)
            try:
                records.append({"status": "ok", "output": spec.run(answer, case)})
            except NotImplementedError:
                records.append({"status": "not solved"})
            except _CaseTimeout:
                records.append({"status": "timeout"})
            except Exception as error:
                records.append({"status": "error", "error": f"{type(error).__name__}: {error}"[:_MAX_ERROR]})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            _write(out_path, records)
        _write(out_path, records)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return "done"
