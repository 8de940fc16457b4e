"""The course's exercise declarations, one module per notebook (see ``course_grader.contract``).

Importing this package registers every exercise. To add an exercise, add an ``ExerciseSpec``
to the module of its notebook (or a new module imported here); docs/teaching.md, "How an
exercise is written", walks through it.
"""

from ..contract import ExerciseSpec, registered_specs
from . import aeflow, autoencoder, basics, demo, fanogan, glow, likelihood  # noqa: F401  (registration happens on import)
from . import encoder_loss, predictions  # noqa: F401  (prediction exercises; the SSIM encoder loss)

__all__ = ["get_spec", "all_specs"]


def get_spec(grade_id: str) -> ExerciseSpec:
    """The declaration of exercise ``grade_id``.

    Raises:
        KeyError: no exercise module declares it (the message says where declarations go).
    """
    specs = registered_specs()
    if grade_id not in specs:
        raise KeyError(f"no declaration for exercise {grade_id!r}: add an ExerciseSpec to a module of "
                       "course_grader/exercises/ (docs/teaching.md, 'How an exercise is written')")
    return specs[grade_id]


def all_specs() -> dict[str, ExerciseSpec]:
    """Every declared exercise by grade id."""
    return registered_specs()
