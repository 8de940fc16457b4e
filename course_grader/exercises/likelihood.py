"""Exercises of notebook 04 (when likelihood fails): the complexity-corrected score. (Its prediction exercises,
decided by the committed benchmarks, are in ``predictions``.)"""

from __future__ import annotations

import math

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register, to_plain


# --------------------------------------------------------------------------- ex-complexity-score
def complexity_reference(log_prob_nats, images):
    """S(x) = NLL_bits(x) - L(x) (Serra et al. 2020): -log p / ln 2 + 8 D minus ``png_bits(images)``; (N,)."""
    from course_utils.complexity import png_bits

    n_dims = int(np.prod(images.shape[1:]))
    return -log_prob_nats.double().numpy() / math.log(2) + 8 * n_dims - png_bits(images)


def _complexity_cases(rng: np.random.Generator) -> list[Case]:
    noise = np.round(rng.random((3, 1, 28, 28)) * 255) / 255
    flat = np.zeros((2, 1, 28, 28))
    mixed = np.concatenate([noise[:1], flat[:1], (noise[1:2] > 0.5).astype(np.float64)])
    return [
        Case("noise images", (-1500.0 * rng.random(3), noise)),
        Case("black images", (np.array([500.0, -20.0]), flat)),
        Case("mixed 28 px", (-900.0 * rng.random(3), mixed)),
        Case("32 px images", (np.array([-3000.0]), np.round(rng.random((1, 1, 32, 32)) * 255) / 255)),
    ]


def _complexity_harness(spec: ExerciseSpec, fn, case: Case):
    import torch

    log_p, images = case.args
    return to_plain(fn(torch.as_tensor(np.asarray(log_p), dtype=torch.float64),
                       torch.as_tensor(np.asarray(images), dtype=torch.float32)))


COMPLEXITY_SCORE = register(ExerciseSpec(
    grade_id="ex-complexity-score", answer="complexity_corrected", draw=_complexity_cases,
    reference=complexity_reference, harness=_complexity_harness, compare=close_to(atol=1e-6, rtol=1e-9, hint=(
        "NLL in bits of the whole image (-log p / ln 2 + 8 D, not per dimension) minus png_bits(images)")),
    summary="agrees with the reference"))
