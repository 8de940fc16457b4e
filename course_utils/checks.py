"""The visible exercise checks that the notebooks' check cells call (the student's side).

A check cell reads::

    auroc_fn = checks.check_exercise("ex-auroc-from-ranks", auroc_from_ranks)

:func:`check_exercise` runs the student's answer on the exercise's visible cases (drawn
with a fixed seed from the exercise's declaration in ``course_grader.exercises``), compares
each with the course's reference and prints the outcome. It **never raises**, so *Run All*
always reaches the end of the notebook:

- solved: ``✓`` and the student's answer is returned (guarded: should it raise on the
  notebook's own data later, that cell falls back to the reference and says so);
- not solved yet (the stub raises ``NotImplementedError``): one line saying so and that it
  is worth 0 points, and the course's reference implementation is returned;
- wrong: which case, what was expected, what was found, a hint; the reference is returned.

Later cells use the returned object, so they run in every case, and a one-line note says
when they use the reference. Grading does not use this function: the grader evaluates the
answer on fresh hidden cases from outside the kernel (``course_grader``, docs/teaching.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_exercise"]

_MAX_SHOWN = 2  # failing cases shown in full; the rest are counted


class _Guarded:
    """The student's (checked) function; on an exception it answers with the reference, once noted."""

    def __init__(self, answer: Any, reference: Any, name: str) -> None:
        self._answer, self._reference, self._name, self._warned = answer, reference, name, False
        self.__doc__ = getattr(answer, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._answer(*args, **kwargs)
        except Exception as error:  # the notebook goes on with the reference instead of stopping
            if not self._warned:
                print(f"→ your `{self._name}` raised {type(error).__name__}: {error}; "
                      "this and later cells use the course's reference implementation instead.")
                self._warned = True
            return self._reference(*args, **kwargs)


def _reference_object(spec: Any) -> Any:
    if spec.kind == "value":
        return spec.reference() if callable(spec.reference) else spec.reference
    return spec.reference


def check_exercise(grade_id: str, answer: Any) -> Any:
    """Check ``answer`` (what the answer cell defined) on the visible cases of exercise ``grade_id``.

    Prints ✓ or what is wrong; never raises (an unknown ``grade_id`` is reported too).

    Returns:
        What later cells should use: the answer when every visible case passes (a function
        is wrapped so that an exception falls back to the reference), else the course's
        reference implementation (function or value), announced in one line.
    """
    try:
        from course_grader.contract import VISIBLE_SEED, get_spec

        spec = get_spec(grade_id)
        cases = spec.draw(np.random.default_rng(VISIBLE_SEED))
    except Exception as error:  # a broken installation must not stop the notebook either
        print(f"✗ {grade_id}: the check could not run ({type(error).__name__}: {error}). "
              "Is the course installed (pip install -e .)?")
        return answer
    fallback = (f"→ the next cells use the course's reference implementation of `{spec.answer}`, "
                "so the notebook runs on.")
    failures: list[str] = []
    for case in cases:
        try:
            found = spec.run(answer, case)
        except NotImplementedError:
            print(f"✗ {grade_id}: not solved yet, 0 points. Replace `raise NotImplementedError()` in the answer "
                  "cell with your code, run it, then run this cell again.")
            print(fallback)
            return _reference_object(spec)
        except Exception as error:
            failures.append(f"{case.name}: your code raised {type(error).__name__}: {error}")
            continue
        message = spec.compare(case, spec.expected(case), found)
        if message:
            failures.append(message)
    if failures:
        print(f"✗ {grade_id}: {len(failures)} of {len(cases)} visible cases are wrong, so this answer would "
              "lose points.")
        for message in failures[:_MAX_SHOWN]:
            print("  " + message.replace("\n", "\n  "))
        if len(failures) > _MAX_SHOWN:
            print(f"  ... and {len(failures) - _MAX_SHOWN} more.")
        print(fallback)
        return _reference_object(spec)
    summary = f" ({spec.summary})" if spec.summary else ""
    print(f"✓ {grade_id}: all {len(cases)} visible cases pass{summary}. Grading runs new random cases of the "
          "same kinds.")
    if spec.kind == "value":
        return answer() if callable(answer) else answer
    return _Guarded(answer, spec.reference, spec.answer)
