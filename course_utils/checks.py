"""Exercise checks, shared by students (visible checks), graders (hidden tests) and the test suite.

Each ``check_*`` function calls the student's function on cases with known answers and
raises ``AssertionError`` with a message that says what was expected and what was found;
on success it prints a short confirmation and returns True. Hidden tests call the same
functions with ``hidden=True``, which adds cases the student has not seen.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

__all__ = [
    "check_auroc_from_ranks",
    "check_threshold_from_normals",
    "check_ssim_training_step",
    "check_pixel_auroc",
    "check_aeflow_score",
    "check_val_threshold_best_f1",
    "check_bits_per_dim",
    "check_complexity_score",
    "check_gradient_penalty",
    "check_fanogan_ssim_score",
    "ExerciseCheckError",
]


class ExerciseCheckError(AssertionError):
    """An exercise check failed; the message says what was expected and found."""


def _fail(exercise: str, case: str, expected: Any, found: Any, hint: str = "") -> None:
    message = f"[{exercise}] {case}: expected {expected!r}, found {found!r}."
    if hint:
        message += f"\nHint: {hint}"
    raise ExerciseCheckError(message)


def _call(exercise: str, fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except NotImplementedError:
        raise ExerciseCheckError(f"[{exercise}] not implemented yet: replace the `raise NotImplementedError()` "
                                 "with your code, run that cell, then run this check again.") from None


def _as_float(exercise: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ExerciseCheckError(f"[{exercise}] your function must return one number, it returned {value!r}") from None


# --------------------------------------------------------------------------- exercise: AUROC from ranks
def _auroc_cases(hidden: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7 if not hidden else 1234)
    cases = [
        ("perfect separation", np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])),
        ("reversed scores", np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])),
        ("one tie across classes", np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])),
        ("random scores, 200 images", rng.normal(size=200), (rng.random(200) < 0.3).astype(int)),
    ]
    if hidden:
        cases += [
            ("all scores equal", np.full(10, 3.0), np.array([0] * 6 + [1] * 4)),
            ("many ties", np.round(rng.normal(size=500), 1), (rng.random(500) < 0.5).astype(int)),
            ("one anomaly", rng.normal(size=50), np.eye(50, dtype=int)[7]),
        ]
    return cases


def check_auroc_from_ranks(fn: Callable[[np.ndarray, np.ndarray], float], *, hidden: bool = False) -> bool:
    """Check ``fn(scores, labels) -> AUROC`` computed from ranks (Mann-Whitney U).

    The reference is scikit-learn's ``roc_auc_score``; agreement to 1e-9 is required,
    ties included (a tie between a normal and an anomaly counts one half).
    """
    from sklearn.metrics import roc_auc_score

    exercise = "auroc-from-ranks"
    for case, scores, labels in _auroc_cases(hidden):
        found = _as_float(exercise, _call(exercise, fn, scores.copy(), labels.copy()))
        expected = float(roc_auc_score(labels, scores))
        if not np.isfinite(found) or abs(found - expected) > 1e-9:
            hint = ("average the ranks of tied scores (scipy.stats.rankdata does this), so a tie counts 1/2"
                    if "tie" in case or "equal" in case else
                    "AUROC = (sum of anomaly ranks - n1 (n1 + 1) / 2) / (n1 n0), ranks starting at 1")
            _fail(exercise, case, round(expected, 6), found, hint)
    print(f"✓ {exercise}: all {len(_auroc_cases(hidden))} cases agree with scikit-learn")
    return True


# --------------------------------------------------------------------------- exercise: threshold from normal scores
def _threshold_cases(hidden: bool) -> list[tuple[str, np.ndarray, float]]:
    rng = np.random.default_rng(11 if not hidden else 4321)
    cases = [
        ("1000 normal validation scores, FPR 5 %", rng.normal(size=1000), 0.05),
        ("200 scores, FPR 10 %", rng.exponential(size=200), 0.10),
    ]
    if hidden:
        cases += [
            ("FPR 1 %", rng.normal(loc=5, size=5000), 0.01),
            ("shifted and scaled", 100 + 20 * rng.normal(size=300), 0.2),
        ]
    return cases


def check_threshold_from_normals(fn: Callable[[np.ndarray, float], float], *, hidden: bool = False) -> bool:
    """Check ``fn(normal_val_scores, target_fpr) -> threshold``.

    Predicting "anomaly" for ``score >= threshold`` must flag (about) ``target_fpr`` of the
    normal validation images: the threshold is the (1 - target_fpr) quantile of normal
    scores (``np.quantile``'s default linear interpolation). It takes no test data at all.
    """
    exercise = "threshold-from-normals"
    for case, scores, fpr in _threshold_cases(hidden):
        found = _as_float(exercise, _call(exercise, fn, scores.copy(), fpr))
        expected = float(np.quantile(scores, 1.0 - fpr))
        if not np.isfinite(found) or abs(found - expected) > 1e-6 * max(1.0, abs(expected)):
            flagged = float(np.mean(scores >= found)) if np.isfinite(found) else float("nan")
            _fail(exercise, case, round(expected, 6), found,
                  f"your threshold flags {flagged:.1%} of the normal images, the target is {fpr:.0%}: "
                  "use the (1 - target_fpr) quantile of the normal scores")
    print(f"✓ {exercise}: all {len(_threshold_cases(hidden))} cases flag the target fraction of normals")
    return True


# --------------------------------------------------------------------------- exercise: SSIM loss training step (notebook 01)
def _ssim_step_cases(hidden: bool) -> list[tuple[str, int, int, str]]:
    """(case, image side, batch size, optimiser)."""
    cases = [("SGD step on 8 images of 28 px", 28, 8, "sgd")]
    if hidden:
        cases += [("Adam step on 5 images of 32 px", 32, 5, "adam"), ("SGD step on 1 image", 28, 1, "sgd")]
    return cases


def check_ssim_training_step(fn: Callable, *, hidden: bool = False) -> bool:
    """Check ``fn(model, optimizer, batch) -> float``: one gradient step on the SSIM loss.

    The step must compute ``loss = 1 - pytorch_msssim.ssim(model(batch), batch,
    data_range=1)`` (window 11, sigma 1.5: the defaults), back-propagate it, update the
    parameters with ``optimizer`` and return the loss before the update as a float. The
    check runs the same step on a copy of the model and compares the returned loss and
    the updated weights.
    """
    import copy

    import torch
    from pytorch_msssim import ssim

    from .models.autoencoder import ConvAutoencoder

    exercise = "ssim-training-step"
    for case, side, n, opt_name in _ssim_step_cases(hidden):
        torch.manual_seed(side * 100 + n)
        model = ConvAutoencoder(latent_dim=4, width=4, image_size=side)
        model.train()
        reference = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(n)
        batch = torch.nn.functional.avg_pool2d(torch.rand(n, 1, side, side, generator=gen), 3, 1, 1)

        def make_opt(params):
            return torch.optim.SGD(params, lr=0.5) if opt_name == "sgd" else torch.optim.Adam(params, lr=1e-2)

        ref_opt = make_opt(reference.parameters())
        ref_opt.zero_grad()
        ref_loss = 1 - ssim(reference(batch), batch, data_range=1.0)
        ref_loss.backward()
        ref_opt.step()

        found = _as_float(exercise, _call(exercise, fn, model, make_opt(model.parameters()), batch.clone()))
        expected = ref_loss.item()
        if not np.isfinite(found) or abs(found - expected) > 1e-4:
            hint = "use 1 - ssim(x_hat, x, data_range=1.0): pytorch_msssim assumes data_range=255 by default"
            if np.isfinite(found) and abs(found - (1 - expected)) < 1e-4:
                hint = "return the loss 1 - SSIM, not the SSIM itself"
            _fail(exercise, f"{case}: returned loss", round(expected, 6), found, hint)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            if not torch.allclose(p, q, atol=1e-5):
                _fail(exercise, f"{case}: parameter {name} after the step", "the reference update", "other values",
                      "zero the gradients, call loss.backward() and optimizer.step() exactly once")
    print(f"✓ {exercise}: loss and update agree with the reference in all {len(_ssim_step_cases(hidden))} cases")
    return True


# --------------------------------------------------------------------------- exercise: pixel-level AUROC (notebook 01)
def _pixel_auroc_cases(hidden: bool) -> list[tuple[str, Any, Any]]:
    import torch

    rng = np.random.default_rng(21 if not hidden else 8765)
    masks = rng.random((6, 1, 8, 8)) < 0.1
    masks[0, 0, 0, 0] = True
    maps = rng.random((6, 1, 8, 8)) + 0.5 * masks
    cases: list[tuple[str, Any, Any]] = [("numpy maps (6, 1, 8, 8), boolean masks", maps, masks)]
    if hidden:
        tmask = torch.from_numpy(rng.random((4, 1, 28, 28)) < 0.02)
        tmask[0, 0, 3, 3] = True
        tmap = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3)) + tmask.float()
        cases += [
            ("torch maps with torch bool masks", tmap, tmask),
            ("maps that rank the defect lowest", -maps, masks),
            ("ties everywhere", np.round(maps, 1), masks.astype(np.int64)),
        ]
    return cases


def check_pixel_auroc(fn: Callable[[Any, Any], float], *, hidden: bool = False) -> bool:
    """Check ``fn(anomaly_maps, masks) -> float``: AUROC over all pixels of all images.

    Every pixel is one sample: its map value is the score, its mask value (True = defect)
    the label. The reference is scikit-learn's ``roc_auc_score`` on the flattened arrays.
    """
    from sklearn.metrics import roc_auc_score

    exercise = "pixel-auroc"
    for case, maps, masks in _pixel_auroc_cases(hidden):
        flat_maps = np.asarray(maps, dtype=np.float64).reshape(-1)
        flat_masks = np.asarray(masks).reshape(-1).astype(int)
        expected = float(roc_auc_score(flat_masks, flat_maps))
        found = _as_float(exercise, _call(exercise, fn, maps, masks))
        if not np.isfinite(found) or abs(found - expected) > 1e-9:
            _fail(exercise, case, round(expected, 6), found,
                  "flatten both to one value per pixel (reshape(-1)), masks as 0 / 1 labels, then metrics.auroc")
    print(f"✓ {exercise}: all {len(_pixel_auroc_cases(hidden))} cases agree with scikit-learn")
    return True


# --------------------------------------------------------------------------- exercise: the AE-FLOW anomaly score
def _aeflow_score_cases(hidden: bool) -> list[tuple[str, Any, Any, float]]:
    import torch

    gen = torch.Generator().manual_seed(5 if not hidden else 2024)
    cases = [
        ("z' = 0, perfect SSIM, beta 0.9", torch.zeros(2, 4, 3, 3), torch.ones(2), 0.9),
        ("random z', beta 0.9", torch.randn(5, 8, 4, 4, generator=gen), torch.rand(5, generator=gen), 0.9),
        ("random z', beta 0.5", 2 * torch.randn(3, 16, 2, 2, generator=gen), torch.rand(3, generator=gen), 0.5),
    ]
    if hidden:
        cases += [
            ("beta 0: reconstruction only", torch.randn(4, 2, 5, 5, generator=gen), torch.rand(4, generator=gen), 0.0),
            ("beta 1: flow only, non-square map", torch.randn(3, 6, 2, 7, generator=gen), torch.rand(3, generator=gen), 1.0),
            ("negative SSIM", torch.randn(2, 4, 4, 4, generator=gen), torch.tensor([-0.2, 0.3]), 0.9),
        ]
    return cases


def check_aeflow_score(fn: Callable[[Any, Any, float], Any], *, hidden: bool = False) -> bool:
    """Check ``fn(z_prime, ssim, beta) -> scores`` (one per image), the AE-FLOW score of notebook 04.

    Expected: S = beta * S_flow + (1 - beta) * S_recon with S_flow = mean over (C, H, W) of z'^2 / 2
    plus log(2 pi) / 2 (the negative log-density of z' under N(0, I), per dimension) and
    S_recon = 1 - SSIM(x, x'); agreement to 1e-5.
    """
    import math

    exercise = "aeflow-score"
    for case, z, ssim, beta in _aeflow_score_cases(hidden):
        found = _call(exercise, fn, z.clone(), ssim.clone(), beta)
        found_array = np.asarray(found.detach().cpu() if hasattr(found, "detach") else found, dtype=np.float64)
        s_flow = 0.5 * z.double().square().flatten(1).mean(1) + 0.5 * math.log(2 * math.pi)
        expected = (beta * s_flow + (1 - beta) * (1 - ssim.double())).numpy()
        if found_array.shape != expected.shape:
            _fail(exercise, case, f"one score per image, shape {expected.shape}", f"shape {found_array.shape}",
                  "average z'^2 over channels, height and width (dims 1, 2, 3), not over the batch")
        if not np.allclose(found_array, expected, atol=1e-5, rtol=1e-5):
            _fail(exercise, case, np.round(expected, 5).tolist(), np.round(found_array, 5).tolist(),
                  "S_flow = mean(z'^2) / 2 + log(2 pi) / 2 per image; S_recon = 1 - SSIM; S = beta S_flow + (1 - beta) S_recon")
    print(f"✓ {exercise}: all {len(_aeflow_score_cases(hidden))} cases agree with the reference")
    return True


# --------------------------------------------------------------------------- exercise: best-F1 threshold on val
def _f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0


def _best_f1_cases(hidden: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3 if not hidden else 777)
    labels = (rng.random(300) < 0.6).astype(int)
    cases = [
        ("separable", np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([0, 0, 0, 1, 1, 1])),
        ("overlapping, 300 images", rng.normal(size=300) + 1.5 * labels, labels),
    ]
    if hidden:
        labels2 = (rng.random(500) < 0.3).astype(int)
        cases += [
            ("ties", np.round(rng.normal(size=500) + labels2, 1), labels2),
            ("reversed score", -np.arange(10.0), np.array([1] * 5 + [0] * 5)),
        ]
    return cases


def check_val_threshold_best_f1(fn: Callable[[np.ndarray, np.ndarray], float], *, hidden: bool = False) -> bool:
    """Check ``fn(val_scores, val_labels) -> threshold``: predicting ``score >= threshold`` as anomalous
    must reach the best F1 achievable on the validation split (compared with
    ``course_utils.metrics.threshold_best_f1``; any threshold with the same F1 is accepted)."""
    from course_utils.metrics import threshold_best_f1

    exercise = "val-threshold-best-f1"
    for case, scores, labels in _best_f1_cases(hidden):
        found = _as_float(exercise, _call(exercise, fn, scores.copy(), labels.copy()))
        best = _f1_at(scores, labels, threshold_best_f1(scores, labels))
        got = _f1_at(scores, labels, found) if np.isfinite(found) else float("nan")
        if not np.isfinite(got) or got < best - 1e-12:
            _fail(exercise, case, f"a threshold with F1 = {best:.4f}", f"threshold {found!r} with F1 = {got:.4f}",
                  "try every distinct validation score as the threshold t (predict anomaly for score >= t) "
                  "and keep the one with the highest F1 = 2 TP / (2 TP + FP + FN)")
    print(f"✓ {exercise}: all {len(_best_f1_cases(hidden))} cases reach the best validation F1")
    return True


# --------------------------------------------------------------------------- exercise: NLL -> bits per dimension (Glow)
def _bpd_cases(hidden: bool) -> list[tuple[str, Any, int]]:
    import torch

    gen = torch.Generator().manual_seed(11 if not hidden else 4242)
    cases = [
        ("log p = 0, one pixel", torch.tensor([0.0]), 1),
        ("standard normal at 0, 16 pixels", torch.tensor([-8 * math.log(2 * math.pi)]), 16),
        ("batch of MNIST-sized images", -500.0 * torch.rand(4, generator=gen) + 300.0, 784),
    ]
    if hidden:
        cases += [
            ("float64 input", torch.tensor([-1000.0, 12.5], dtype=torch.float64), 1024),
            ("very likely images (log p > 0)", torch.tensor([2000.0, 3000.0]), 784),
        ]
    return cases


def check_bits_per_dim(fn: Callable[[Any, int], Any], *, hidden: bool = False) -> bool:
    """Check ``fn(log_prob_nats, n_dims) -> bpd`` (one value per image), notebook 03's exercise.

    ``log_prob_nats`` (N,) is log p_Y(y) in nats of images dequantised to y = (x + u) / 256 in
    [0, 1]; expected bpd = (-log p_Y(y) / ln 2 + 8 D) / D, agreement to 1e-6.
    """
    exercise = "bits-per-dim"
    for case, log_p, d in _bpd_cases(hidden):
        found = _call(exercise, fn, log_p.clone(), d)
        found_array = np.asarray(found.detach().cpu() if hasattr(found, "detach") else found, dtype=np.float64)
        expected = (-log_p.double().numpy() / math.log(2) + 8 * d) / d
        if found_array.shape != expected.shape:
            _fail(exercise, case, f"one value per image, shape {expected.shape}", f"shape {found_array.shape}")
        if not np.allclose(found_array, expected, atol=1e-6, rtol=1e-9):
            hint = "divide by ln 2 to turn nats into bits, add log2(256) = 8 bits per dimension, divide by D"
            if np.allclose(found_array, expected - 8, atol=1e-6):
                hint = "you forgot the 8 bits per dimension of the dequantization: p(x) = p_Y(y) / 256^D"
            _fail(exercise, case, np.round(expected, 6).tolist(), np.round(found_array, 6).tolist(), hint)
    print(f"✓ {exercise}: all {len(_bpd_cases(hidden))} cases agree with the reference")
    return True


# --------------------------------------------------------------------------- exercise: complexity-corrected score
def _complexity_cases(hidden: bool) -> list[tuple[str, Any, Any]]:
    import torch

    gen = torch.Generator().manual_seed(13 if not hidden else 999)
    noise = (torch.rand(3, 1, 28, 28, generator=gen) * 255).round() / 255
    flat = torch.zeros(2, 1, 28, 28)
    cases = [
        ("noise images", -1500.0 * torch.rand(3, generator=gen), noise),
        ("black images", torch.tensor([500.0, -20.0]), flat),
    ]
    if hidden:
        mixed = torch.cat([noise[:1], flat[:1], (noise[1:2] > 0.5).float()])
        cases += [
            ("mixed 28 px", -900.0 * torch.rand(3, generator=gen, dtype=torch.float64), mixed),
            ("32 px images", torch.tensor([-3000.0]), (torch.rand(1, 1, 32, 32, generator=gen) * 255).round() / 255),
        ]
    return cases


def check_complexity_score(fn: Callable[[Any, Any], Any], *, hidden: bool = False) -> bool:
    """Check ``fn(log_prob_nats, images) -> S`` of notebook 03: S(x) = NLL_bits(x) - L(x) (Serra et al. 2020).

    NLL_bits = -log p_Y(y) / ln 2 + 8 D (D = pixels per image) and L(x) = ``png_bits(images)``;
    one value per image, agreement to 1e-6.
    """
    from course_utils.complexity import png_bits

    exercise = "complexity-score"
    for case, log_p, images in _complexity_cases(hidden):
        found = _call(exercise, fn, log_p.clone(), images.clone())
        found_array = np.asarray(found.detach().cpu() if hasattr(found, "detach") else found, dtype=np.float64)
        d = int(np.prod(images.shape[1:]))
        expected = -log_p.double().numpy() / math.log(2) + 8 * d - png_bits(images)
        if found_array.shape != expected.shape:
            _fail(exercise, case, f"one value per image, shape {expected.shape}", f"shape {found_array.shape}")
        if not np.allclose(found_array, expected, atol=1e-6, rtol=1e-9):
            _fail(exercise, case, np.round(expected, 3).tolist(), np.round(found_array, 3).tolist(),
                  "NLL in bits of the whole image (-log p / ln 2 + 8 D, not per dimension) minus png_bits(images)")
    print(f"✓ {exercise}: all {len(_complexity_cases(hidden))} cases agree with the reference")
    return True


# --------------------------------------------------------------------------- exercise: WGAN-GP gradient penalty (notebook 02)
def _gp_cases(hidden: bool) -> list[tuple[str, Any, Any, Any, Any, float | None]]:
    """(case, critic, real, fake, eps, closed-form value or None)."""
    import torch
    from torch import nn

    class Linear(nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = nn.Parameter(weight)

        def forward(self, x):
            return (x.flatten(1) * self.weight.flatten()).sum(1)

    gen = torch.Generator().manual_seed(17 if not hidden else 4711)
    w = torch.randn(1, 8, 8, generator=gen)
    real, fake = torch.rand(6, 1, 8, 8, generator=gen), torch.rand(6, 1, 8, 8, generator=gen)
    eps = torch.rand(6, generator=gen)
    torch.manual_seed(3 if not hidden else 99)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1))
    cases = [
        ("linear critic with a unit-norm weight (penalty 0)", Linear(w / w.norm()), real, fake, eps, 0.0),
        ("linear critic with weight norm 3 (penalty 4)", Linear(3 * w / w.norm()), real, fake, eps, 4.0),
        ("small conv critic", conv, real, fake, eps, None),
    ]
    if hidden:
        from .models.fanogan import Critic

        torch.manual_seed(5)
        critic = Critic(width=4, image_size=28)
        r, f = torch.rand(3, 1, 28, 28, generator=gen), torch.rand(3, 1, 28, 28, generator=gen)
        cases += [
            ("eps 0 and 1: the fake and the real images themselves", conv, real[:2], fake[:2],
             torch.tensor([0.0, 1.0]), None),
            ("the course's Critic on 28 px images", critic, r, f, torch.rand(3, generator=gen), None),
            ("one image", conv, real[:1], fake[:1], torch.tensor([0.3]), None),
        ]
    return cases


def check_gradient_penalty(fn: Callable, *, hidden: bool = False) -> bool:
    """Check ``fn(critic, real, fake, eps) -> penalty``, the WGAN-GP gradient penalty.

    Expected: x_hat = eps x_real + (1 - eps) x_fake (one eps per image, broadcast over
    C, H, W), penalty = mean over images of (||grad_x D(x_hat)||_2 - 1)^2, as a scalar
    tensor that is differentiable with respect to the critic's parameters (so
    ``create_graph=True``); agreement of value and parameter gradients to 1e-5.
    """
    import torch

    from .models.fanogan import gradient_penalty

    exercise = "gradient-penalty"
    for case, critic, real, fake, eps, closed_form in _gp_cases(hidden):
        critic.zero_grad(set_to_none=True)
        expected_t = gradient_penalty(critic, real, fake, eps=eps)
        expected = float(expected_t.detach())
        params = list(critic.parameters())
        # (a bias of the last layer does not change the input gradient: its gradient is zero)
        expected_grads = [torch.zeros_like(p) if g is None else g
                          for p, g in zip(params, torch.autograd.grad(expected_t, params, allow_unused=True))]
        if closed_form is not None:
            assert abs(expected - closed_form) < 1e-5, "reference implementation disagrees with the closed form"
        found_t = _call(exercise, fn, critic, real.clone(), fake.clone(), eps.clone())
        if not isinstance(found_t, torch.Tensor) or found_t.numel() != 1:
            _fail(exercise, case, "a scalar tensor", type(found_t).__name__ if not isinstance(found_t, torch.Tensor)
                  else f"a tensor of shape {tuple(found_t.shape)}", "average the per-image penalties with .mean()")
        found = float(found_t.detach())
        if not np.isfinite(found) or abs(found - expected) > 1e-5 * max(1.0, abs(expected)):
            hint = ("the norm is taken per image over all pixels: grad.flatten(1).norm(dim=1); then (norm - 1)^2, "
                    "then the mean over images")
            if abs(found - expected) > 1e-5 and closed_form == 0.0:
                hint = ("a critic whose input gradient has norm 1 everywhere must get penalty 0: penalise "
                        "(||grad|| - 1)^2, not ||grad||^2")
            _fail(exercise, f"{case}: penalty", round(expected, 6), found, hint)
        if not found_t.requires_grad:
            _fail(exercise, f"{case}: gradient with respect to the critic's weights", "a differentiable penalty",
                  "a tensor without grad_fn",
                  "call torch.autograd.grad(..., create_graph=True) so the penalty can be back-propagated")
        found_grads = [torch.zeros_like(p) if g is None else g
                       for p, g in zip(params, torch.autograd.grad(found_t, params, allow_unused=True))]
        for g_found, g_expected in zip(found_grads, expected_grads):
            if not torch.allclose(g_found, g_expected, atol=1e-5, rtol=1e-4):
                _fail(exercise, f"{case}: gradient with respect to the critic's weights", "the reference gradient",
                      "other values", "interpolate with the given eps (one per image), detach nothing inside the "
                      "penalty except the fake images, and use create_graph=True")
    print(f"✓ {exercise}: value and weight gradients agree with the reference in all {len(_gp_cases(hidden))} cases")
    return True


# --------------------------------------------------------------------------- exercise: SSIM-based f-AnoGAN score (notebook 02)
def _fanogan_ssim_cases(hidden: bool) -> list[tuple[str, Any, Any, Any, Any, float]]:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(23 if not hidden else 2718)

    def smooth(n, side):
        return F.avg_pool2d(torch.rand(n, 1, side, side, generator=gen), 3, 1, 1)

    x = smooth(5, 28)
    x_rec = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    f_x, f_rec = torch.randn(5, 64, generator=gen), torch.randn(5, 64, generator=gen)
    cases = [
        ("perfect reconstruction, equal features", x, x.clone(), f_x, f_x.clone(), 1.0),
        ("noisy reconstruction, kappa 1", x, x_rec, f_x, f_rec, 1.0),
        ("noisy reconstruction, kappa 0.1", x, x_rec, f_x, f_rec, 0.1),
    ]
    if hidden:
        y = smooth(3, 32)
        cases += [
            ("kappa 0: image term only", x, x_rec, f_x, f_rec, 0.0),
            ("32 px images, 10 features", y, smooth(3, 32), torch.randn(3, 10, generator=gen),
             torch.randn(3, 10, generator=gen), 2.0),
            ("one image", x[:1], x_rec[:1], f_x[:1], f_rec[:1], 1.0),
        ]
    return cases


def check_fanogan_ssim_score(fn: Callable, *, hidden: bool = False) -> bool:
    """Check ``fn(x, x_rec, f_x, f_rec, kappa) -> scores`` (one per image): f-AnoGAN's score with
    the image MSE replaced by 1 - SSIM.

    Expected: (1 - SSIM(x, x_rec)) + kappa (1/n_d) ||f_x - f_rec||^2 per image, SSIM from
    ``pytorch_msssim.ssim(x, x_rec, data_range=1.0, size_average=False)`` (11 px Gaussian
    window, sigma 1.5: the defaults; one channel); agreement to 1e-5.
    """
    from pytorch_msssim import ssim

    exercise = "fanogan-ssim-score"
    for case, x, x_rec, f_x, f_rec, kappa in _fanogan_ssim_cases(hidden):
        image = 1 - ssim(x, x_rec, data_range=1.0, size_average=False)
        feature = (f_x - f_rec).square().mean(1)
        expected = (image + kappa * feature).double().numpy()
        found = _call(exercise, fn, x.clone(), x_rec.clone(), f_x.clone(), f_rec.clone(), kappa)
        found_array = np.asarray(found.detach().cpu() if hasattr(found, "detach") else found, dtype=np.float64)
        if found_array.shape != expected.shape:
            _fail(exercise, case, f"one score per image, shape {expected.shape}", f"shape {found_array.shape}",
                  "use size_average=False so SSIM is one value per image, and average the feature "
                  "differences over the feature dimension only (dim=1)")
        if not np.allclose(found_array, expected, atol=1e-5, rtol=1e-5):
            wrong_range = (1 - ssim(x, x_rec, data_range=255, size_average=False) + kappa * feature).double().numpy()
            hint = "score = (1 - SSIM(x, x_rec)) + kappa * mean((f_x - f_rec)^2 over features), per image"
            if np.allclose(found_array, wrong_range, atol=1e-5):
                hint = "pytorch_msssim assumes data_range=255; our images are in [0, 1]: pass data_range=1.0"
            _fail(exercise, case, np.round(expected, 5).tolist(), np.round(found_array, 5).tolist(), hint)
    print(f"✓ {exercise}: all {len(_fanogan_ssim_cases(hidden))} cases agree with the reference")
    return True
