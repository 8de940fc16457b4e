"""AE-FLOW's loss, image scores, pixel maps and the complexity correction (equations in
:mod:`course_utils.models.aeflow`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...metrics import finite_scores
from ...reconstruction import ssim_map, ssim_window_for
from .model import BETA, AEFlow, AEFlowOutput

__all__ = ["flow_nll_per_dim", "aeflow_loss", "flow_score", "recon_score", "standardise", "combine_scores",
           "aeflow_score", "anomaly_maps", "complexity_corrected", "S_FLOW_FORMS", "flow_likelihood_form",
           "paper_score", "compare_flow_forms"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# --------------------------------------------------------------------------------------
# Loss and scores
# --------------------------------------------------------------------------------------


def _log_normal_per_dim(z_prime: Tensor) -> Tensor:
    """(1/D) log N(z'; 0, I) per image, (N,), computed in float32."""
    z = z_prime.float().flatten(1)
    return -0.5 * z.square().mean(1) - _HALF_LOG_2PI


def flow_nll_per_dim(z_prime: Tensor, log_jac_det: Tensor) -> Tensor:
    """-(1/D) [log N(z'; 0, I) + log|det J|] per image, (N,): the NLL of the features z in nats/dim."""
    d = z_prime[0].numel()
    return -(_log_normal_per_dim(z_prime) + log_jac_det.float() / d)


def aeflow_loss(model: AEFlow, x: Tensor, alpha: float | None = None) -> dict[str, Tensor]:
    """L = alpha * L_flow + (1 - alpha) * L_recon on a batch (see the module docstring).

    Returns:
        ``{"loss", "flow", "recon"}`` scalars, the format ``course_utils.training.train`` logs.
    """
    alpha = model.config.alpha if alpha is None else alpha
    out = model(x)
    l_flow = flow_nll_per_dim(out.z_prime, out.log_jac_det).mean()
    l_recon = F.mse_loss(out.x_hat.float(), x.float())
    return {"loss": alpha * l_flow + (1 - alpha) * l_recon, "flow": l_flow, "recon": l_recon}


def flow_score(out: AEFlowOutput, kind: str = "z") -> Tensor:
    """S_flow per image, (N,), higher = less likely features.

    ``kind="z"``: -(1/D) log N(z'; 0, I) (default; see module docstring); ``kind="full"``: the
    per-dimension NLL of z including -log|det J| / D.
    """
    if kind == "z":
        return -_log_normal_per_dim(out.z_prime)
    if kind == "full":
        return flow_nll_per_dim(out.z_prime, out.log_jac_det)
    raise ValueError(f"flow score kind must be 'z' or 'full', got {kind!r}")


def _ssim_map(x: Tensor, y: Tensor, win_size: int) -> Tensor:
    return ssim_map(x.float().clamp(0, 1), y.float().clamp(0, 1), win_size=win_size, padding="same")


def recon_score(x: Tensor, x_hat: Tensor, kind: str = "ssim") -> Tensor:
    """S_recon per image, (N,): ``"ssim"``: 1 - mean SSIM(x, x') (paper: -SSIM); ``"mse"``: mean squared error."""
    if kind == "ssim":
        return 1.0 - _ssim_map(x, x_hat, ssim_window_for(x.shape[-1])).flatten(1).mean(1)
    if kind == "mse":
        return (x.float() - x_hat.float()).square().flatten(1).mean(1)
    raise ValueError(f"recon score kind must be 'ssim' or 'mse', got {kind!r}")


def standardise(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """(values - mean(reference)) / std(reference) (std 0: 1); ``reference`` None: values unchanged."""
    if reference is None:
        return values
    std = float(np.std(reference))
    return (values - float(np.mean(reference))) / (std if std > 0 else 1.0)


def combine_scores(s_flow: Any, s_recon: Any, beta: float = BETA, *, ref_flow: Any = None,
                   ref_recon: Any = None) -> np.ndarray:
    """S = beta * S_flow + (1 - beta) * S_recon, per image.

    With ``ref_flow`` / ``ref_recon`` (scores of NORMAL reference images, e.g. the training set)
    each term is first standardised, (s - mean(ref)) / std(ref), so that beta weighs terms of equal
    spread; without them the raw terms are combined, as written in the paper.
    """
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    flow = finite_scores(s_flow, "s_flow")
    recon = finite_scores(s_recon, "s_recon")
    if flow.shape != recon.shape:
        raise ValueError(f"s_flow and s_recon have different lengths {flow.shape} and {recon.shape}")
    if (ref_flow is None) != (ref_recon is None):
        raise ValueError("give both ref_flow and ref_recon (normal reference scores), or neither")
    if ref_flow is not None:
        flow = standardise(flow, finite_scores(ref_flow, "ref_flow"))
        recon = standardise(recon, finite_scores(ref_recon, "ref_recon"))
    return float(beta) * flow + (1.0 - float(beta)) * recon


def aeflow_score(model: AEFlow, x: Tensor, beta: float | None = None, *, flow_kind: str = "z",
                 recon_kind: str = "ssim") -> Tensor:
    """The paper's raw score S = beta * S_flow + (1 - beta) * S_recon for a batch, (N,)."""
    beta = model.config.beta if beta is None else beta
    with torch.no_grad():
        out = model(x)
        return beta * flow_score(out, flow_kind) + (1 - beta) * recon_score(x, out.x_hat, recon_kind)


# --------------------------------------------------------------------------------------
# The paper's score, both readings of S_flow
# --------------------------------------------------------------------------------------

S_FLOW_FORMS = ("log-density", "likelihood")
"""The two readings of the paper's S_flow ("the likelihood of z'", negated):

- ``"log-density"``: S_flow = -mean_d log p(z'_d) = -(1/D) log N(z'; 0, I) (the course and one public
  reproduction; :func:`flow_score` ``kind="z"``), about 1.42 for N(0, I) features;
- ``"likelihood"``: S_flow = -exp(mean_d log p(z'_d)), the per-dimension likelihood (the geometric
  mean of the per-dimension densities), in [-1/sqrt(2 pi), 0) (the other reproduction).

Both rank images identically on their own (exp is increasing); combined with 1 - SSIM they do not."""


def flow_likelihood_form(s_flow_log_density: Any) -> np.ndarray:
    """S_flow's likelihood form -exp(-S) from its log-density form S = -mean_d log p(z'), (N,) float64."""
    return -np.exp(-finite_scores(s_flow_log_density, "s_flow_log_density"))


def paper_score(s_flow_log_density: Any, s_recon: Any, form: str, beta: float = BETA) -> np.ndarray:
    """The paper's raw score beta * S_flow + (1 - beta) * (1 - SSIM) with S_flow in ``form`` (see
    :data:`S_FLOW_FORMS`), (N,) float64; ``s_flow_log_density`` is -mean_d log p(z') per image
    (:func:`flow_score` ``kind="z"``), ``s_recon`` is 1 - SSIM."""
    if form not in S_FLOW_FORMS:
        raise ValueError(f"S_flow form must be one of {S_FLOW_FORMS}, got {form!r}")
    s_flow = finite_scores(s_flow_log_density, "s_flow_log_density")
    return combine_scores(flow_likelihood_form(s_flow) if form == "likelihood" else s_flow, s_recon, beta)


def compare_flow_forms(s_flow_log_density: Any, s_recon: Any, beta: float = BETA) -> dict[str, float]:
    """How the two S_flow forms differ once combined with 1 - SSIM at ``beta``, from the scores of one
    split (the val split in ``benchmarks.aeflow``), as plain floats:

    - ``spread_ratio``: std(S_flow, log-density form) / std(S_flow, likelihood form) (> 1: the
      exponential shrinks S_flow's spread, so SSIM gets more weight);
    - ``flow_share_log_density``, ``flow_share_likelihood``: beta * std(S_flow) / (beta * std(S_flow) +
      (1 - beta) * std(1 - SSIM)), in [0, 1]: how much of the combined score's spread S_flow contributes;
    - ``spearman_combined``: Spearman rank correlation of the two combined scores, in [-1, 1]
      (1: the two readings rank every image alike).
    """
    from scipy.stats import spearmanr

    s_flow = finite_scores(s_flow_log_density, "s_flow_log_density")
    recon = finite_scores(s_recon, "s_recon")
    if len(s_flow) < 2 or s_flow.shape != recon.shape:
        raise ValueError(f"need two equally long score arrays of >= 2 images, got {s_flow.shape} and {recon.shape}")
    likelihood = flow_likelihood_form(s_flow)
    sd_log, sd_lik, sd_recon = float(np.std(s_flow)), float(np.std(likelihood)), float(np.std(recon))

    def share(sd_flow: float) -> float:
        total = beta * sd_flow + (1 - beta) * sd_recon
        return beta * sd_flow / total if total > 0 else float("nan")

    rho = spearmanr(paper_score(s_flow, recon, "log-density", beta), paper_score(s_flow, recon, "likelihood", beta))
    return {"spread_ratio": sd_log / sd_lik if sd_lik > 0 else float("inf"),
            "flow_share_log_density": share(sd_log), "flow_share_likelihood": share(sd_lik),
            "spearman_combined": float(rho.statistic if hasattr(rho, "statistic") else rho[0])}


def anomaly_maps(model: AEFlow, x: Tensor) -> dict[str, Tensor]:
    """Pixel-level maps (N, 1, S, S), higher = more anomalous, plus the reconstruction.

    ``"residual"``: mean over channels of |x - x'|; ``"ssim"``: 1 - SSIM(x, x')(p); ``"flow"``:
    the per-position -log N(z'; 0, I) / C (channel mean of z'^2 / 2 + log(2 pi) / 2), bilinearly
    upsampled from the feature grid; ``"x_hat"``: the reconstruction.
    """
    with torch.no_grad():
        out = model(x)
        x_hat = out.x_hat.float()
        residual = (x.float() - x_hat).abs().mean(1, keepdim=True)
        ssim = (1.0 - _ssim_map(x, x_hat, ssim_window_for(x.shape[-1]))).mean(1, keepdim=True)
        flow = (0.5 * out.z_prime.float().square().mean(1, keepdim=True) + _HALF_LOG_2PI)
        flow = F.interpolate(flow, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return {"residual": residual, "ssim": ssim, "flow": flow, "x_hat": x_hat}


# --------------------------------------------------------------------------------------
# Input complexity
# --------------------------------------------------------------------------------------


def complexity_corrected(scores: Any, bits: Any, *, ref_scores: Any, ref_bits: Any, weight: float = 1.0) -> np.ndarray:
    """Complexity-corrected score z(S) - weight * z(L), after Serra et al. (ICLR 2020).

    Serra et al. use S(x) = -log2 p(x) - L(x) with both terms in bits of the same image. An
    AE-FLOW score is not in bits of the image, so both terms are standardised with the mean / std
    over NORMAL reference images (``ref_scores``, ``ref_bits``; e.g. the training images) and
    subtracted: an image scores high when the model finds it unusual *for its complexity*.
    """
    s = standardise(finite_scores(scores, "scores"), finite_scores(ref_scores, "ref_scores"))
    b = standardise(finite_scores(bits, "bits"), finite_scores(ref_bits, "ref_bits"))
    if s.shape != b.shape:
        raise ValueError(f"scores and bits have different lengths {s.shape} and {b.shape}")
    return s - float(weight) * b


