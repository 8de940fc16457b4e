"""The exercise contract: how an exercise declares what is graded, on which inputs, against what.

Every exercise of a notebook is declared once, here in the grader package (outside the
notebook), as an :class:`ExerciseSpec` registered under its ``grade_id``:

- ``answer``: the name the answer cell defines (a function, or a value for ``kind="value"``);
- ``draw(rng)``: the cases, drawn from a ``numpy.random.Generator``. The visible check in the
  student's kernel draws them with a fixed seed; the grader draws them with a fresh seed per
  grading run, so the graded inputs are unknown when the notebook is handed in;
- ``reference``: the course's implementation, with the same signature as the student's
  function (for ``kind="value"``: the right value, or a zero-argument function returning it);
- ``harness(spec, fn, case)``: calls ``fn`` (the student's function or the reference) on one
  case and returns **plain data** (numbers, strings, numpy arrays, lists / dicts of them);
  the default converts ``torch_args`` to tensors and the result to float64 arrays;
- ``compare(case, expected, found)``: ``None`` when ``found`` is right, else a message that
  says what was expected, what was found, and a hint.

The same declaration serves the visible check (``course_utils.checks``, in the student's
kernel, never raising), the fallback to the reference in later cells, and the grader
(``course_grader.verdict``), which runs the harness on the student's object inside the
sandboxed kernel (``course_grader.probe``), reads back JSON only, and computes the reference
and the comparison in its own process. Points are given per case (partial credit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = [
    "Case",
    "ExerciseSpec",
    "register",
    "registered_specs",
    "call_function",
    "read_value",
    "to_plain",
    "encode",
    "decode",
    "close_to",
    "equal_to",
    "describe",
    "VISIBLE_SEED",
]

VISIBLE_SEED = 20240601  # the visible check's cases; the grader draws with a fresh seed per run


@dataclass(frozen=True)
class Case:
    """One independent case: a short description a student can read, and the arguments.

    ``args`` holds plain data only (numpy arrays, Python numbers, strings, and lists / dicts
    of them), so that it can travel to the kernel as JSON. ``trivial`` marks a case that a
    constant answer can pass (all scores equal -> AUROC 0.5, a perfect reconstruction -> 0):
    it counts only when the answer also passes a case that is not trivial.
    """

    name: str
    args: tuple = ()
    trivial: bool = False


@dataclass(frozen=True)
class ExerciseSpec:
    """The declaration of one exercise (see the module docstring for each field)."""

    grade_id: str
    answer: str
    draw: Callable[[np.random.Generator], list[Case]]
    reference: Any
    compare: Callable[[Case, Any, Any], str | None]
    harness: Callable[["ExerciseSpec", Any, Case], Any] | None = None
    kind: str = "function"  # "function": answer is called on each case; "value": answer is a value
    torch_args: tuple[int, ...] = ()  # argument positions the default harness passes as torch tensors
    summary: str = ""  # one line for the ✓ message, e.g. "agrees with scikit-learn"
    extra: dict = field(default_factory=dict)

    def run(self, fn: Any, case: Case) -> Any:
        """``fn`` (student's or reference) on ``case``, as plain data."""
        if self.harness is not None:
            return self.harness(self, fn, case)
        return read_value(self, fn, case) if self.kind == "value" else call_function(self, fn, case)

    def expected(self, case: Case) -> Any:
        """The reference's plain result on ``case`` (computed where this runs: the grader's process)."""
        return self.run(self.reference, case)


_REGISTRY: dict[str, ExerciseSpec] = {}


def register(spec: ExerciseSpec) -> ExerciseSpec:
    """Add ``spec`` to the registry (an exercise module calls this at import time).

    Raises:
        ValueError: a second, different spec for the same grade id, or a bad kind.
    """
    if spec.kind not in ("function", "value"):
        raise ValueError(f"{spec.grade_id}: kind must be 'function' or 'value', not {spec.kind!r}")
    if spec.grade_id in _REGISTRY and _REGISTRY[spec.grade_id] is not spec:
        raise ValueError(f"two exercise declarations use the grade id {spec.grade_id!r}")
    _REGISTRY[spec.grade_id] = spec
    return spec


def registered_specs() -> dict[str, ExerciseSpec]:
    """The declarations registered so far, by grade id (``course_grader.exercises`` registers the course's)."""
    return dict(_REGISTRY)


# --------------------------------------------------------------------------- plain data
def to_plain(value: Any) -> Any:
    """A result as plain data: tensors and arrays become float64 numpy arrays (bool stays bool),
    numbers become float, strings stay, lists / tuples / dicts are converted element-wise.

    Raises:
        TypeError: anything else (a model, a generator, None), with what was found.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.copy() if value.dtype == bool else np.asarray(value, dtype=np.float64)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    raise TypeError(f"expected numbers, arrays or tensors, found a {type(value).__name__}")


def encode(value: Any) -> Any:
    """Plain data as JSON-ready objects (arrays as ``{"__array__": dtype, "shape", "data"}``)."""
    if isinstance(value, np.ndarray):
        kind = "bool" if value.dtype == bool else "int64" if np.issubdtype(value.dtype, np.integer) else "float64"
        return {"__array__": kind, "shape": list(value.shape), "data": value.astype(kind).reshape(-1).tolist()}
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    raise TypeError(f"cannot send a {type(value).__name__} as plain data")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (lists stay lists).

    Raises:
        ValueError: a malformed array record.
    """
    if isinstance(value, dict):
        if "__array__" in value:
            kind = value["__array__"]
            if kind not in ("bool", "int64", "float64"):
                raise ValueError(f"unknown array type {kind!r}")
            shape = [int(n) for n in value["shape"]]
            return np.asarray(value["data"], dtype=kind).reshape(shape)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON text of plain data (NaN and infinities allowed, as Python's json writes them)."""
    return json.dumps(encode(value))


# --------------------------------------------------------------------------- harnesses
def call_function(spec: ExerciseSpec, fn: Any, case: Case) -> Any:
    """The default harness: ``fn(*case.args)`` with copies of the arrays (``torch_args`` as
    tensors), the result as plain data."""
    args = []
    for position, arg in enumerate(case.args):
        if isinstance(arg, np.ndarray):
            arg = arg.copy()
            if position in spec.torch_args:
                import torch

                arg = torch.from_numpy(arg)
        args.append(arg)
    if not callable(fn):
        raise TypeError(f"`{spec.answer}` must be a function, it is a {type(fn).__name__}")
    return to_plain(fn(*args))


def read_value(spec: ExerciseSpec, value: Any, case: Case) -> Any:
    """The harness of ``kind="value"``: the answer itself (a zero-argument reference is called)."""
    if callable(value):
        value = value()
    return to_plain(value)


# --------------------------------------------------------------------------- comparisons
def describe(value: Any, digits: int = 6) -> str:
    """A short readable form of plain data for messages (arrays rounded, long ones cut)."""
    if isinstance(value, np.ndarray):
        if value.size > 8:
            return f"an array of shape {value.shape} starting {np.round(value.reshape(-1)[:4], digits).tolist()}"
        return str(np.round(value, digits).tolist()) if value.dtype != bool else str(value.tolist())
    if isinstance(value, float):
        return repr(round(value, digits)) if math.isfinite(value) else repr(value)
    return repr(value)


def _message(case: Case, expected: str, found: str, hint: str) -> str:
    text = f"{case.name}: expected {expected}, found {found}."
    return text + (f"\nHint: {hint}" if hint else "")


def close_to(*, atol: float, rtol: float = 0.0, hint: str | Callable[[Case, Any, Any], str] = "",
             key: str | None = None) -> Callable[[Case, Any, Any], str | None]:
    """A comparison: same shape, finite, and ``|found - expected| <= atol + rtol |expected|``.

    ``key`` compares one entry of dict results. ``hint`` may be a function of (case,
    expected, found) that recognises a typical mistake.
    """
    def compare(case: Case, expected: Any, found: Any) -> str | None:
        if key is not None:
            expected, found = expected[key], (found.get(key) if isinstance(found, dict) else found)
        exp = np.asarray(expected, dtype=np.float64)
        try:
            got = np.asarray(found, dtype=np.float64)
        except (TypeError, ValueError):
            return _message(case, describe(expected), repr(found), "return numbers")
        text = hint(case, expected, found) if callable(hint) else hint
        if got.shape != exp.shape:
            what = "one number" if exp.shape == () else f"shape {exp.shape}"
            return _message(case, what, "one number" if got.shape == () else f"shape {got.shape}", text)
        if not np.all(np.isfinite(got)) or not np.allclose(got, exp, atol=atol, rtol=rtol, equal_nan=False):
            return _message(case, describe(exp if exp.shape else float(exp)),
                            describe(got if got.shape else float(got)), text)
        return None

    return compare


def equal_to(*, hint: str = "", normalise: Callable[[Any], Any] = lambda v: v
             ) -> Callable[[Case, Any, Any], str | None]:
    """A comparison for choices and counts: ``normalise(found) == normalise(expected)``."""
    def compare(case: Case, expected: Any, found: Any) -> str | None:
        try:
            same = normalise(found) == normalise(expected)
        except Exception:  # a value of the wrong type cannot be normalised
            same = False
        return None if same else _message(case, describe(expected), describe(found), hint)

    return compare
