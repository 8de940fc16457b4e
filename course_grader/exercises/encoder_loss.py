"""Notebook 02's lecture exercise: the izif encoder loss with a 1 - SSIM image term.

The student writes the loss on given tensors; the notebook then retrains the izif encoder
with it (``FAnoGANDetector(encoder_image_loss="ssim")``, the course's version of the same
loss) and compares the AUROC with the MSE-trained encoder. The harness checks the value *and*
the gradients with respect to the reconstruction and its critic features, so a loss that
is right but cut from the graph (``.item()``, ``.detach()``) or summed instead of averaged
fails.
"""

from __future__ import annotations

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register, to_plain
from .fanogan import FANOGAN_SSIM_SCORE


def izif_ssim_loss_reference(x, x_rec, f_x, f_rec, kappa: float = 1.0):
    """Batch mean of (1 - SSIM(x, x_rec)) + kappa mean((f_x - f_rec)^2 over features); a scalar tensor.

    x, x_rec: images (N, C, S, S) in [0, 1]; f_x, f_rec: critic features (N, n_d).
    """
    from course_utils.models.autoencoder import ssim_score

    return (ssim_score(x, x_rec) + kappa * (f_x - f_rec).square().mean(1)).mean()


def _harness(spec: ExerciseSpec, fn, case: Case):
    """The loss, whether it is differentiable, and its gradients with respect to x_rec and f_rec."""
    import torch

    x, x_rec, f_x, f_rec, kappa = case.args
    as_tensor = [torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (x, x_rec, f_x, f_rec)]
    x, x_rec, f_x, f_rec = as_tensor
    x_rec.requires_grad_(True)
    f_rec.requires_grad_(True)
    loss = fn(x, x_rec, f_x, f_rec, float(kappa))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("the loss must be a scalar tensor (the batch mean, .mean()), found "
                        f"{type(loss).__name__}" + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)
                                                    else ""))
    differentiable = loss.requires_grad
    grads = (torch.autograd.grad(loss.reshape(()), [x_rec, f_rec], allow_unused=True) if differentiable
             else (None, None))
    image_grad, feature_grad = [torch.zeros_like(t) if g is None else g for t, g in zip((x_rec, f_rec), grads)]
    return {"loss": to_plain(loss.reshape(())), "differentiable": differentiable,
            "grad_reconstruction": to_plain(image_grad), "grad_features": to_plain(feature_grad)}


def _loss_hint(case: Case, expected, found) -> str:
    x = case.args[0]
    try:  # close_to passes the "loss" entries
        value, target = float(found), float(expected)
    except (TypeError, ValueError):
        return "return one scalar tensor"
    if target and np.isclose(value, target * len(x), rtol=1e-4):
        return "you summed over the images: take the mean over the batch (.mean())"
    return ("loss = mean over images of (1 - SSIM(x, x_rec)) + kappa * mean((f_x - f_rec)^2 over features); SSIM "
            "per image with size_average=False and data_range=1.0 (pytorch_msssim assumes 255)")


def _compare(case: Case, expected, found) -> str | None:
    if not isinstance(found, dict):
        return f"{case.name}: expected a scalar tensor, found something else"
    message = close_to(atol=1e-5, rtol=1e-5, key="loss", hint=_loss_hint)(
        Case(f"{case.name}: loss", case.args), expected, found)
    if message:
        return message
    if not found.get("differentiable"):
        return (f"{case.name}: expected a loss that gradients flow through, found a tensor without grad_fn.\n"
                "Hint: no .item(), .detach() or torch.no_grad() inside the loss; the encoder is trained through it")
    for key, what in (("grad_reconstruction", "the reconstruction x_rec"), ("grad_features", "the features f_rec")):
        message = close_to(atol=1e-7, rtol=1e-3, key=key, hint=(
            "the value is right but its gradient is not: compute the loss with torch operations on the given "
            "tensors (no numpy round trip), averaging over images and features"))(
            Case(f"{case.name}: gradient with respect to {what}", case.args), expected, found)
        if message:
            return message
    return None


IZIF_SSIM_LOSS = register(ExerciseSpec(
    # the same arguments as the SSIM score of exercise 2, so the same cases (the loss is their batch mean)
    grade_id="ex-izif-ssim-loss", answer="izif_ssim_loss", draw=FANOGAN_SSIM_SCORE.draw,
    reference=izif_ssim_loss_reference,
    harness=_harness, compare=_compare, summary="value and gradients agree with the reference"))
