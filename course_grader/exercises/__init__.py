"""The course's exercise declarations, one module per notebook (see ``course_grader.contract``).

Importing this package registers every exercise. To add an exercise, add an ``ExerciseSpec``
to the module of its notebook (or a new module imported here); docs/teaching.md, "How an
exercise is written", walks through it.
"""

from . import aeflow, autoencoder, basics, demo, fanogan, glow  # noqa: F401  (registration happens on import)
from . import encoder_loss, predictions  # noqa: F401  (prediction exercises; the SSIM encoder loss)
