"""FlowGMM in AE-FLOW: the flow's base distribution becomes a Gaussian mixture with one component per class
(after Izmailov, Kirichenko, Finzi & Wilson, "Semi-Supervised Learning with Normalizing Flows", ICML 2020).

The one-class AE-FLOW maps encoder features z to z' = g(z) and makes z' standard normal. Here the base
density of z' (D = C*H*W dimensions) is a mixture of two unit-covariance Gaussians::

    p(z') = pi_0 N(z'; mu_0, I) + pi_1 N(z'; mu_1, I)       component 0: normal, component 1: pneumonia
    mu_0 = 0                                                 (fixed: the one-class model's base)
    mu_1 = mean_scale * v,  v ~ N(0, I_D) drawn once (seeded) ; fixed, or learned from there ("learned")

The flow term of the loss, per image, in nats per dimension (log|det J| as in AE-FLOW)::

    labelled, class y:  -(1/D) [log N(z'; mu_y, I) + log|det J|]                 (class-conditional)
    unlabelled:         -(1/D) [log sum_c pi_c N(z'; mu_c, I) + log|det J|]     (marginal likelihood)

and the reconstruction term is the MSE on the images labelled normal only, so the decoder stays a model
of normal images (1 - SSIM keeps its one-class meaning). L = alpha * L_flow + (1 - alpha) * L_recon.
With no pneumonia labels and no unlabelled images (k = 0) every image is labelled normal and the loss is
AE-FLOW's :func:`~course_utils.models.aeflow.scores.aeflow_loss` exactly: the model is the one-class model.

Scores (higher = more pneumonia-like)::

    gmm_llr       = (1/D) [log N(z'; mu_1, I) - log N(z'; mu_0, I)]     log-likelihood ratio per dimension
    gmm_posterior = p(y = 1 | z') = sigmoid(D * gmm_llr + log pi_1 / pi_0)

Both rank images the same way; the posterior saturates at 0 or 1 in float64 for large D (ties), so the
benchmark also keeps the ratio. The mixing weights pi are fixed (default 1/2 each); they only enter the
unlabelled term and the posterior.

What :class:`FlowGMMDetector` implements: training on the normal training images plus ``k`` labelled
anomalous images (repeated so that they make up at least ``min_anomaly_fraction`` of the training rows,
so a batch sees them), and optionally further UNLABELLED images through the marginal term.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...checkpoints import data_fingerprint
from ...images import check_images
from .detector import AEFlowDetector, resize_square
from .model import AEFlow, AEFlowConfig, AEFlowOutput
from .scores import combine_scores

__all__ = ["MODEL_VERSION", "UNLABELLED", "FlowGMMSettings", "GaussianMixtureBase", "AEFlowGMM", "flowgmm_loss",
           "FlowGMMDetector", "FLOWGMM_VARIANTS", "flowgmm_variants", "draw_labelled", "anomaly_posterior"]

# the checkpoint-cache model version (see course_utils.bundles): bump it when a change the cache config
# does not capture changes the trained weights
MODEL_VERSION = "AEFlowGMM-v1"

UNLABELLED = -1
"""The label of an image whose class is unknown (it enters the loss through the marginal likelihood)."""

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class FlowGMMSettings:
    """The mixture and how the labelled images enter training.

    Attributes:
        means: ``"fixed"`` (mu_1 stays where it was drawn) or ``"learned"`` (mu_1 is trained; mu_0 = 0
            always: a shift of both means is absorbed by the flow).
        mean_scale: mu_1 = mean_scale * v with v ~ N(0, I_D) (the separation of the two components).
        mean_seed: seeds the draw of v (part of the cache key through these settings).
        anomaly_prior: pi_1, the mixing weight of the anomaly component, in (0, 1).
        min_anomaly_fraction: the labelled anomalies are repeated until they make up at least this
            fraction of the training rows (0: each once), in [0, 1).
    """

    means: str = "fixed"
    mean_scale: float = 1.0
    mean_seed: int = 0
    anomaly_prior: float = 0.5
    min_anomaly_fraction: float = 0.25

    def validate(self) -> "FlowGMMSettings":
        if self.means not in ("fixed", "learned"):
            raise ValueError(f"means must be 'fixed' or 'learned', got {self.means!r}")
        if not self.mean_scale > 0:
            raise ValueError(f"mean_scale must be > 0, got {self.mean_scale}")
        if not 0.0 < self.anomaly_prior < 1.0:
            raise ValueError(f"anomaly_prior must lie in (0, 1), got {self.anomaly_prior}")
        if not 0.0 <= self.min_anomaly_fraction < 1.0:
            raise ValueError(f"min_anomaly_fraction must lie in [0, 1), got {self.min_anomaly_fraction}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> "FlowGMMSettings":
        return replace(self, **changes)


class GaussianMixtureBase(nn.Module):
    """p(z') = sum_c pi_c N(z'; mu_c, I) on R^D, c = 0 (normal, mu_0 = 0) and 1 (anomaly); see the module doc.

    Args:
        dim: D, the number of dimensions of the flattened z'.
        settings: :class:`FlowGMMSettings` (means fixed or learned, their scale and seed, pi_1).
    """

    n_components = 2

    def __init__(self, dim: int, settings: FlowGMMSettings) -> None:
        super().__init__()
        settings.validate()
        self.dim = int(dim)
        direction = torch.randn(self.dim, generator=torch.Generator().manual_seed(settings.mean_seed))
        anomaly_mean = settings.mean_scale * direction
        if settings.means == "learned":
            self.anomaly_mean = nn.Parameter(anomaly_mean)
        else:
            self.register_buffer("anomaly_mean", anomaly_mean)
        prior = torch.tensor([1.0 - settings.anomaly_prior, settings.anomaly_prior])
        self.register_buffer("log_weights", prior.log())

    @property
    def means(self) -> Tensor:
        """(2, D): mu_0 = 0 and mu_1."""
        return torch.stack([torch.zeros_like(self.anomaly_mean), self.anomaly_mean])

    def component_log_density(self, z_flat: Tensor) -> Tensor:
        """log N(z'; mu_c, I) in nats (summed over the D dimensions), (N, 2) float32, for z' (N, D)."""
        if z_flat.ndim != 2 or z_flat.shape[1] != self.dim:
            raise ValueError(f"expected z' flattened to (N, {self.dim}), got {tuple(z_flat.shape)}")
        z = z_flat.float()
        # ||z - mu||^2 expanded: exact for mu_0 = 0 and cheaper than (N, 2, D) differences
        sq = z.square().sum(1, keepdim=True) - 2 * z @ self.means.T + self.means.square().sum(1)
        return -0.5 * sq - 0.5 * self.dim * _LOG_2PI

    def log_density(self, z_flat: Tensor) -> Tensor:
        """log p(z') = log sum_c pi_c N(z'; mu_c, I), (N,): the marginal of an unlabelled image."""
        return torch.logsumexp(self.component_log_density(z_flat) + self.log_weights, dim=1)

    def posterior(self, z_flat: Tensor) -> Tensor:
        """p(c | z'), (N, 2) float64 (it saturates later than float32), rows sum to 1."""
        return torch.softmax(self.component_log_density(z_flat).double() + self.log_weights.double(), dim=1)

    def log_likelihood_ratio(self, z_flat: Tensor) -> Tensor:
        """(1/D) [log N(z'; mu_1, I) - log N(z'; mu_0, I)], (N,): per dimension, higher = more anomalous."""
        log_density = self.component_log_density(z_flat)
        return (log_density[:, 1] - log_density[:, 0]) / self.dim


class AEFlowGMM(AEFlow):
    """:class:`AEFlow` with a :class:`GaussianMixtureBase` for z' (``self.mixture``; saved with the weights)."""

    def __init__(self, config: AEFlowConfig, settings: FlowGMMSettings, in_channels: int = 1) -> None:
        super().__init__(config, in_channels)
        side = config.image_size // config.downsampling
        self.mixture = GaussianMixtureBase(config.feature_channels * side * side, settings)


def flowgmm_loss(model: AEFlowGMM, x: Tensor, labels: Tensor, alpha: float | None = None) -> dict[str, Tensor]:
    """L = alpha * L_flow + (1 - alpha) * L_recon on a batch x (N, C, S, S) with labels (N,) in
    {0 (normal), 1 (anomaly), UNLABELLED}; see the module doc. ``"recon"`` is the MSE of the images
    labelled normal (0 when the batch has none).

    Returns:
        ``{"loss", "flow", "recon", "labelled", "unlabelled"}`` scalars (the last two: the mean flow term
        of the labelled / unlabelled images of the batch, 0 when there are none).
    """
    alpha = model.config.alpha if alpha is None else alpha
    labels = labels.to(x.device).long()
    if labels.shape != (x.shape[0],) or not ((labels >= UNLABELLED) & (labels <= 1)).all():
        raise ValueError(f"labels must be (N,) with values 0, 1 or {UNLABELLED} (unlabelled), got {labels.tolist()}")
    out = model(x)
    z = out.z_prime.flatten(1)
    log_density = model.mixture.component_log_density(z)
    labelled = labels != UNLABELLED
    conditional = log_density.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    marginal = torch.logsumexp(log_density + model.mixture.log_weights, dim=1)
    nll = -(torch.where(labelled, conditional, marginal) + out.log_jac_det.float()) / z.shape[1]
    normal = labels == 0
    per_image_mse = (out.x_hat.float() - x.float()).square().flatten(1).mean(1)
    l_recon = (per_image_mse * normal).sum() / normal.sum().clamp(min=1)
    l_flow = nll.mean()
    zero = nll.new_zeros(())
    return {"loss": alpha * l_flow + (1 - alpha) * l_recon, "flow": l_flow, "recon": l_recon,
            "labelled": nll[labelled].mean() if labelled.any() else zero,
            "unlabelled": nll[~labelled].mean() if (~labelled).any() else zero}


class FlowGMMDetector(AEFlowDetector):
    """AE-FLOW with a two-component mixture base, trained on normal images plus a few labelled anomalies.

    ``fit(train_images)`` takes the NORMAL training images, as every detector; the labelled anomalous
    images (and optional unlabelled ones) are given to the constructor, so the fit recipe stays the
    base's. Scores: everything :class:`AEFlowDetector` gives (S_flow is now the normal component's
    -(1/D) log N(z'; 0, I)) plus ``"gmm_llr"`` and ``"gmm_posterior"`` (module doc).

    Args:
        config: the AE-FLOW settings.
        labelled_anomalies: (k, C, H, W) in [0, 1], the k labelled anomalous training images (k may be 0).
        label_seed: the seed of the draw that picked them (recorded in the cache key: another draw of the
            same k is another model).
        unlabelled_images: (U, C, H, W) in [0, 1] of unknown class, or None (the marginal term).
        gmm: :class:`FlowGMMSettings`.
        other arguments: as :class:`AEFlowDetector`.
    """

    score_kinds = AEFlowDetector.score_kinds + ("gmm_llr", "gmm_posterior")
    checkpoint_prefix = "aeflow-gmm"

    def __init__(self, config: AEFlowConfig | None = None, *, labelled_anomalies: Tensor | None = None,
                 label_seed: int = 0, unlabelled_images: Tensor | None = None,
                 gmm: FlowGMMSettings | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.gmm = (gmm or FlowGMMSettings()).validate()
        self.labelled_anomalies = labelled_anomalies
        self.unlabelled_images = unlabelled_images
        self.label_seed = int(label_seed)

    @property
    def k(self) -> int:
        """The number of labelled anomalous images."""
        return 0 if self.labelled_anomalies is None else int(self.labelled_anomalies.shape[0])

    def validate(self, train_images: Tensor) -> None:
        super().validate(train_images)
        for name, extra in (("labelled_anomalies", self.labelled_anomalies), ("unlabelled_images", self.unlabelled_images)):
            if extra is None or len(extra) == 0:
                continue
            check_images(extra, name)
            if extra.shape[1:] != train_images.shape[1:]:
                raise ValueError(f"{name} must have the training images' shape (C, H, W) = "
                                 f"{tuple(train_images.shape[1:])}, got {tuple(extra.shape[1:])}")

    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict[str, Any]:
        """AE-FLOW's key plus the mixture settings, k, the label draw's seed and the extra images' fingerprints."""
        key = super().cache_config(train_images, part)
        fingerprint = lambda t: None if t is None or len(t) == 0 else data_fingerprint(t)  # noqa: E731
        return {**key, "model": MODEL_VERSION, "gmm": self.gmm.to_dict(), "k": self.k, "label_seed": self.label_seed,
                "labelled": fingerprint(self.labelled_anomalies), "unlabelled": fingerprint(self.unlabelled_images)}

    def new_model(self, in_channels: int) -> AEFlowGMM:
        # the mixture draws mu_1 from its own generator, so the networks' initial weights are the
        # one-class AE-FLOW's for the same seed
        return AEFlowGMM(self.config, self.gmm, in_channels=in_channels)

    def training_data(self, train_images: Tensor) -> tuple[Tensor, ...]:
        """(images (M, C, S, S), labels (M,)): the normals (0), the labelled anomalies (1) repeated to at
        least ``min_anomaly_fraction`` of the rows, and the unlabelled images (``UNLABELLED``)."""
        size = self.config.image_size
        images, labels = [resize_square(train_images, size)], [torch.zeros(len(train_images), dtype=torch.long)]
        if self.k:
            n_normal, fraction = len(train_images), self.gmm.min_anomaly_fraction
            repeats = max(1, math.ceil(fraction * n_normal / ((1 - fraction) * self.k)))
            images.append(resize_square(self.labelled_anomalies, size).repeat(repeats, 1, 1, 1))
            labels.append(torch.ones(self.k * repeats, dtype=torch.long))
        if self.unlabelled_images is not None and len(self.unlabelled_images):
            images.append(resize_square(self.unlabelled_images, size))
            labels.append(torch.full((len(self.unlabelled_images),), UNLABELLED, dtype=torch.long))
        return torch.cat(images), torch.cat(labels)

    def batch_loss(self, model: AEFlowGMM, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return flowgmm_loss(model, batch[0], batch[1])

    def batch_parts(self, x: Tensor, out: AEFlowOutput) -> dict[str, Tensor]:
        """AE-FLOW's terms plus ``gmm_llr``, ``gmm_posterior`` (the anomaly component's posterior) and the two
        component log-densities log N(z'; mu_c, I) in nats, ``gmm_log_normal`` (c = 0) and ``gmm_log_anomaly``."""
        z = out.z_prime.flatten(1)
        mixture = self.model.mixture
        log_density = mixture.component_log_density(z)
        return {**super().batch_parts(x, out), "gmm_llr": mixture.log_likelihood_ratio(z),
                "gmm_posterior": mixture.posterior(z)[:, 1], "gmm_log_normal": log_density[:, 0],
                "gmm_log_anomaly": log_density[:, 1]}


# --------------------------------------------------------------------------------------
# Shared by notebook 05 and benchmarks/aeflow_flowgmm.py
# --------------------------------------------------------------------------------------

FLOWGMM_VARIANTS = ("FlowGMM log-likelihood ratio", "FlowGMM posterior", "FlowGMM ratio + 1 - SSIM (z-scored)")
"""The FlowGMM scores the val split may choose (k > 0), beside the one-class ``SELECTABLE_VARIANTS``."""


def flowgmm_variants(detector: FlowGMMDetector, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The FlowGMM scores by name (higher = more pneumonia-like) from ``score_parts`` output: the
    per-dimension log-likelihood ratio, the anomaly posterior, and the ratio combined with 1 - SSIM at
    the model's beta, each term z-scored on the normal training images."""
    ref = detector.train_parts
    return {
        FLOWGMM_VARIANTS[0]: parts["gmm_llr"],
        FLOWGMM_VARIANTS[1]: parts["gmm_posterior"],
        FLOWGMM_VARIANTS[2]: combine_scores(parts["gmm_llr"], parts["ssim"], detector.config.beta,
                                            ref_flow=ref["gmm_llr"], ref_recon=ref["ssim"]),
    }


def draw_labelled(anomalies: Tensor, k: int | None, seed: int) -> Tensor:
    """k of the anomalous training images (N, C, H, W), drawn without replacement with
    ``numpy.random.default_rng(seed)``; ``k=None``: all of them; k = 0: an empty (0, C, H, W) tensor."""
    n = len(anomalies)
    if k is None:
        return anomalies
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, {n}] (the anomalous training images), got {k}")
    index = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    return anomalies[torch.from_numpy(index)]


def anomaly_posterior(log_density_normal: Any, log_density_anomaly: Any, anomaly_prior: float = 0.5) -> np.ndarray:
    """p(y = 1 | z') = pi_1 N_1 / (pi_0 N_0 + pi_1 N_1) from the two component log-densities log N(z'; mu_c, I)
    (nats, summed over the D dimensions), (N,) float64.

    Computed as sigmoid(log N_1 - log N_0 + log(pi_1 / pi_0)) without overflow: for D in the thousands the
    log-densities differ by hundreds of nats, where exp() of either one overflows or underflows.
    """
    from scipy.special import expit

    if not 0.0 < float(anomaly_prior) < 1.0:
        raise ValueError(f"anomaly_prior must lie in (0, 1), got {anomaly_prior}")
    log_0 = np.asarray(log_density_normal, dtype=np.float64)
    log_1 = np.asarray(log_density_anomaly, dtype=np.float64)
    if log_0.shape != log_1.shape:
        raise ValueError(f"the two log-densities have different shapes {log_0.shape} and {log_1.shape}")
    return expit(log_1 - log_0 + math.log(anomaly_prior / (1.0 - anomaly_prior)))
