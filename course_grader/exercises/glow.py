"""Exercises of notebook 03 (Glow): log-likelihood to bits per dimension, the complexity-corrected score."""

from __future__ import annotations

import math

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register, to_plain


# --------------------------------------------------------------------------- ex-bits-per-dim
def bits_per_dim_reference(log_prob_nats, n_dims: int):
    """bpd = (-log p_Y(y) / ln 2 + 8 D) / D per image, for log p_Y in nats of y = (x + u) / 256."""
    return (-log_prob_nats / math.log(2) + 8 * n_dims) / n_dims


def _bpd_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("log p = 0, one pixel", (np.array([0.0]), 1), trivial=True),
        Case("standard normal at 0, 16 pixels", (np.array([-8 * math.log(2 * math.pi)]), 16)),
        Case("batch of MNIST-sized images", (-500.0 * rng.random(4) + 300.0, 784)),
        Case("32 x 32 images", (rng.uniform(-3000, 500, size=2), 1024)),
        Case("very likely images (log p > 0)", (rng.uniform(1000, 4000, size=2), 784)),
    ]


def _bpd_hint(case: Case, expected, found) -> str:
    try:
        if np.allclose(np.asarray(found, dtype=np.float64), np.asarray(expected) - 8, atol=1e-6):
            return "you forgot the 8 bits per dimension of the dequantization: p(x) = p_Y(y) / 256^D"
    except (TypeError, ValueError):
        pass
    return "divide by ln 2 to turn nats into bits, add log2(256) = 8 bits per dimension, divide by D"


BITS_PER_DIM = register(ExerciseSpec(
    grade_id="ex-bits-per-dim", answer="nll_to_bits_per_dim", draw=_bpd_cases, reference=bits_per_dim_reference,
    torch_args=(0,), compare=close_to(atol=1e-6, rtol=1e-9, hint=_bpd_hint), summary="agrees with the reference"))


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
