"""The smallest complete exercises: ``ex-double`` (a function) and ``ex-demo-larger`` (a choice).

No notebook of the course uses them.

They are the templates of docs/teaching.md ("How an exercise is written") and the exercises of
the grader's own tests (tests/test_grading.py), whose kernels must find them in the registry.
"""

from __future__ import annotations

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, equal_to, register


def double_reference(x: np.ndarray) -> np.ndarray:
    """2 x, element-wise (any shape)."""
    return 2 * np.asarray(x)


def _double_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("small positive integers", (np.arange(1, 4),)),
        Case("negative numbers", (-rng.integers(1, 100, size=5).astype(np.float64),)),
        Case("numbers of both signs", (np.concatenate([[-1.5], rng.normal(size=6), [2.5]]),)),
        Case("a 10 x 10 array", (rng.normal(size=(10, 10)),)),
    ]


DOUBLE = register(ExerciseSpec(
    grade_id="ex-double", answer="double", draw=_double_cases, reference=double_reference,
    compare=close_to(atol=1e-12, hint="multiply every element by 2, keep the shape and the signs"),
    summary="twice the input"))


# --------------------------------------------------------------------------- a choice: kind="value"
def _choice_case(rng: np.random.Generator) -> list[Case]:
    return [Case("your choice")]


LARGER = register(ExerciseSpec(
    grade_id="ex-demo-larger", answer="larger_number", kind="value", draw=_choice_case,
    reference="2**10", compare=equal_to(normalise=lambda v: str(v).replace(" ", "").lower(),
                                         hint="compute both: 2**10 = 1024, 10**3 = 1000"),
    summary="the right choice"))
