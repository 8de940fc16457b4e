"""Exercises of notebook 03 (normalizing flows): log-likelihood to bits per dimension, the importance-weighted
bits per dimension, and a prediction about it."""

from __future__ import annotations

import math

from typing import Any

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, equal_to, register


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


# --------------------------------------------------------------------------- ex-iw-bits-per-dim
def iw_bits_per_dim_reference(log_weights_nats, n_dims: int):
    """Importance-weighted bpd per image from K log-weights log p_Y(y_k) - log q(u_k | x) in nats, shape (K, N):
    bpd_K = (-[logsumexp_k(log w_k) - log K] / ln 2 + 8 D) / D (a log-mean-exp over the K draws)."""
    import torch

    log_w = torch.as_tensor(log_weights_nats).double()
    log_mean_w = torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
    return (-log_mean_w / math.log(2) + 8 * n_dims) / n_dims


def _iw_cases(rng: np.random.Generator) -> list[Case]:
    one_draw = rng.uniform(-900.0, 300.0, size=(1, 3))
    equal = np.repeat(rng.uniform(-600.0, 0.0, size=(1, 2)), 4, axis=0)
    return [
        Case("K = 1: the one-draw bpd", (one_draw, 784)),
        Case("K = 4 equal weights: the same as one draw", (equal, 784)),
        Case("K = 8, MNIST-sized log-weights", (rng.uniform(-1200.0, -200.0, size=(8, 3)), 784)),
        Case("K = 8, log-weights near -5000 (exp underflows)", (rng.uniform(-5200.0, -4800.0, size=(8, 2)), 1024)),
        Case("K = 2, one draw far better than the other", (np.array([[-400.0, -50.0], [-10.0, -900.0]]), 16)),
    ]


def _iw_hint(case: Case, expected, found) -> str:
    try:
        log_w = np.asarray(case.args[0], dtype=np.float64)
        n_dims = case.args[1]
        mean_of_bounds = ((-log_w / math.log(2) + 8 * n_dims) / n_dims).mean(0)
        if np.allclose(np.asarray(found, dtype=np.float64), mean_of_bounds, atol=1e-6):
            return ("you averaged the K one-draw bounds; average the weights w_k = exp(log w_k) instead, "
                    "in log space: log-mean-exp = logsumexp - log K")
    except (TypeError, ValueError, IndexError):
        pass
    return ("log-mean-exp over the draws (axis 0: torch.logsumexp(log_w, 0) - log K, never exp() of numbers near "
            "-5000), then nats -> bits per dimension as in exercise 1")


IW_BITS_PER_DIM = register(ExerciseSpec(
    grade_id="ex-iw-bits-per-dim", answer="importance_weighted_bpd", draw=_iw_cases,
    reference=iw_bits_per_dim_reference, torch_args=(0,),
    compare=close_to(atol=1e-6, rtol=1e-9, hint=_iw_hint), summary="agrees with the reference"))


# --------------------------------------------------------------------------- ex-predict-iw-change
IW_CHANGE_OPTIONS = ("lower", "the same", "higher")


def _iw_change(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in IW_CHANGE_OPTIONS:
        raise ValueError(f"not one of {IW_CHANGE_OPTIONS}")
    return value.strip().lower()


def iw_change_from_jensen() -> str:
    """How bpd_K compares with bpd_1, decided by the mathematics, not by a measurement: E[log mean_k w_k] >=
    E[log w_1] (Jensen's inequality; Burda et al. 2016 show the bound tightens as K grows), so the K-draw
    estimate of the bits is lower, in expectation, than one draw's."""
    return "lower"


IW_CHANGE = register(ExerciseSpec(
    grade_id="ex-predict-iw-change", answer="predicted_iw_change", draw=lambda rng: [Case("your prediction", ())],
    reference=iw_change_from_jensen, kind="value",
    compare=equal_to(normalise=_iw_change, hint=(
        'one of "lower", "the same", "higher". The log of a mean of weights versus the mean of their logs: '
        "which is larger (Jensen's inequality, log is concave)? More log-likelihood means fewer bits")),
    summary="that follows from Jensen's inequality"))
