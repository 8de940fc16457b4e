"""Exercises of notebook 02 (f-AnoGAN): the WGAN-GP gradient penalty, an SSIM-based anomaly score."""

from __future__ import annotations

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register, to_plain


# --------------------------------------------------------------------------- ex-gradient-penalty
def gradient_penalty_reference(critic, real, fake, eps):
    """mean over images of (||grad_x D(x_hat)||_2 - 1)^2, x_hat = eps real + (1 - eps) fake; a scalar tensor."""
    from course_utils.models.fanogan import gradient_penalty

    return gradient_penalty(critic, real, fake, eps=eps)


def _critic(kind: str, image_size: int):
    """The critic architecture of a case: 'linear' (x . w), 'conv' (a small CNN) or the course's Critic."""
    import torch
    from torch import nn

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1, image_size, image_size))

        def forward(self, x):
            return (x.flatten(1) * self.weight.flatten()).sum(1)

    if kind == "linear":
        return Linear()
    if kind == "conv":
        side = (image_size + 1) // 2
        return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                             nn.Linear(4 * side * side, 1))
    from course_utils.models.fanogan import Critic

    return Critic(width=4, image_size=image_size)


def _gp_cases(rng: np.random.Generator) -> list[Case]:
    import torch

    def weights(kind: str, side: int, norm: float | None = None) -> dict:
        torch.manual_seed(int(rng.integers(2**31)))
        state = {k: v.numpy().astype(np.float64) for k, v in _critic(kind, side).state_dict().items()}
        if kind == "linear":
            w = rng.normal(size=(1, side, side))
            state["weight"] = w / np.linalg.norm(w) * norm
        return state

    real, fake, eps = rng.random((6, 1, 8, 8)), rng.random((6, 1, 8, 8)), rng.random(6)
    r28, f28 = rng.random((3, 1, 28, 28)), rng.random((3, 1, 28, 28))
    return [
        Case("linear critic with a unit-norm weight (penalty 0)", ("linear", 8, weights("linear", 8, 1.0), real, fake, eps),
             trivial=True),
        Case("linear critic with weight norm 3 (penalty 4)", ("linear", 8, weights("linear", 8, 3.0), real, fake, eps)),
        Case("small conv critic", ("conv", 8, weights("conv", 8), real, fake, eps)),
        Case("eps 0 and 1: the fake and the real images themselves",
             ("conv", 8, weights("conv", 8), real[:2], fake[:2], np.array([0.0, 1.0]))),
        Case("the course's Critic on 28 px images", ("critic", 28, weights("critic", 28), r28, f28, rng.random(3))),
        Case("one image", ("conv", 8, weights("conv", 8), real[:1], fake[:1], rng.random(1))),
    ]


def _gp_harness(spec: ExerciseSpec, fn, case: Case):
    """Builds the case's critic; returns the penalty, whether it is differentiable, and its weight gradients."""
    import torch

    kind, side, state, real, fake, eps = case.args
    critic = _critic(kind, int(side))
    critic.load_state_dict({k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in state.items()})
    as_tensor = [torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (real, fake, eps)]
    penalty = fn(critic, *as_tensor)
    if not isinstance(penalty, torch.Tensor) or penalty.numel() != 1:
        raise TypeError("the penalty must be a scalar tensor (average the per-image penalties with .mean()), "
                        f"found {type(penalty).__name__}"
                        + (f" of shape {tuple(penalty.shape)}" if isinstance(penalty, torch.Tensor) else ""))
    params = list(critic.parameters())
    differentiable = penalty.requires_grad
    grads = (torch.autograd.grad(penalty.reshape(()), params, allow_unused=True) if differentiable
             else [None] * len(params))
    flat = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])
    return {"penalty": to_plain(penalty.reshape(())), "differentiable": differentiable, "grads": to_plain(flat)}


def _compare_gp(case: Case, expected, found) -> str | None:
    closed_form_zero = "penalty 0" in case.name
    message = close_to(atol=1e-5, rtol=1e-5, key="penalty", hint=(
        "a critic whose input gradient has norm 1 everywhere must get penalty 0: penalise (||grad|| - 1)^2, "
        "not ||grad||^2" if closed_form_zero else
        "the norm is taken per image over all pixels: grad.flatten(1).norm(dim=1); then (norm - 1)^2, then the "
        "mean over images"))(Case(f"{case.name}: penalty", case.args), expected, found)
    if message:
        return message
    if not found.get("differentiable"):
        return (f"{case.name}: expected a penalty that is differentiable with respect to the critic's weights, "
                "found a tensor without grad_fn.\nHint: call torch.autograd.grad(..., create_graph=True)")
    return close_to(atol=1e-5, rtol=1e-4, key="grads", hint=(
        "interpolate with the given eps (one per image), detach nothing inside the penalty, and use "
        "create_graph=True"))(Case(f"{case.name}: gradient with respect to the critic's weights", case.args),
                             expected, found)


GRADIENT_PENALTY = register(ExerciseSpec(
    grade_id="ex-gradient-penalty", answer="gradient_penalty_exercise", draw=_gp_cases,
    reference=gradient_penalty_reference, harness=_gp_harness, compare=_compare_gp,
    summary="value and weight gradients agree with the reference"))


# --------------------------------------------------------------------------- ex-fanogan-ssim-score
def fanogan_ssim_reference(x, x_rec, f_x, f_rec, kappa: float = 1.0):
    """(1 - SSIM(x, x_rec)) + kappa mean((f_x - f_rec)^2 over features), one value per image (N,)."""
    from pytorch_msssim import ssim

    return 1 - ssim(x, x_rec, data_range=1.0, size_average=False) + kappa * (f_x - f_rec).square().mean(1)


def _smooth(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    raw = rng.random((n, 1, side, side))
    return (raw + np.roll(raw, 1, axis=2) + np.roll(raw, 1, axis=3)) / 3


def _fanogan_ssim_cases(rng: np.random.Generator) -> list[Case]:
    x = _smooth(rng, 5, 28)
    x_rec = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1)
    f_x, f_rec = rng.normal(size=(5, 64)), rng.normal(size=(5, 64))
    return [
        Case("perfect reconstruction, equal features", (x, x.copy(), f_x, f_x.copy(), 1.0), trivial=True),
        Case("noisy reconstruction, kappa 1", (x, x_rec, f_x, f_rec, 1.0)),
        Case("noisy reconstruction, kappa 0.1", (x, x_rec, f_x, f_rec, 0.1)),
        Case("kappa 0: image term only", (x, x_rec, f_x, f_rec, 0.0)),
        Case("32 px images, 10 features", (_smooth(rng, 3, 32), _smooth(rng, 3, 32), rng.normal(size=(3, 10)),
                                           rng.normal(size=(3, 10)), 2.0)),
        Case("one image", (x[:1], x_rec[:1], f_x[:1], f_rec[:1], 1.0)),
    ]


def _fanogan_ssim_harness(spec: ExerciseSpec, fn, case: Case):
    import torch

    *tensors, kappa = case.args
    return to_plain(fn(*[torch.as_tensor(np.asarray(t), dtype=torch.float32) for t in tensors], float(kappa)))


FANOGAN_SSIM_SCORE = register(ExerciseSpec(
    grade_id="ex-fanogan-ssim-score", answer="fanogan_ssim_score", draw=_fanogan_ssim_cases,
    reference=fanogan_ssim_reference, harness=_fanogan_ssim_harness, compare=close_to(atol=1e-5, rtol=1e-5, hint=(
        "score = (1 - SSIM(x, x_rec)) + kappa * mean((f_x - f_rec)^2 over features), per image: SSIM with "
        "size_average=False and data_range=1.0 (pytorch_msssim assumes 255)")),
    summary="agrees with the reference"))
