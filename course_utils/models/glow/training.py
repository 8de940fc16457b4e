"""Training a Glow (bits per dimension through ``course_utils.training.train``) and batched evaluation:
log-likelihoods and test bits per dimension."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from ...images import check_images
from .config import GlowConfig
from .dequantization import bits_per_dim, dequantize
from .flow import GlowFlow

__all__ = ["glow_loss", "train_glow", "images_log_prob", "log_prob_in_chunks", "test_bits_per_image",
           "test_bits_per_dim", "importance_weighted_bits_per_image"]


def glow_loss(model: GlowFlow, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Training loss: mean bits per dimension of the dequantised batch (B, C, S, S) in [0, 1]
    (:meth:`GlowFlow.dequantized_log_prob`: uniform noise, or the learned q trained alongside)."""
    (x,) = batch
    bpd = bits_per_dim(model.dequantized_log_prob(x), model.n_dims).mean()
    return {"loss": bpd}


class _BudgetReached(Exception):
    pass


def _chunk_loader(images: Tensor, batch_size: int, steps_per_epoch: int, seed: int) -> DataLoader:
    """Each pass ("epoch") yields ``steps_per_epoch`` batches drawn without replacement (reshuffled
    when the images run out), from a generator seeded with ``seed``: same batches every run."""
    gen = torch.Generator().manual_seed(int(seed))
    dataset = TensorDataset(images)
    sampler = RandomSampler(dataset, num_samples=steps_per_epoch * batch_size, generator=gen)
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=True))


def train_glow(model: GlowFlow, images: Tensor, config: GlowConfig, *, seed: int = 0,
               device: torch.device | str | None = None, time_budget_s: float | None = None,
               on_epoch_end: Callable[[int, Any], None] | None = None, progress: bool = False):
    """Train ``model`` on images (N, C, S, S) in [0, 1] by minimising bits per dimension.

    Uses ``course_utils.training.train`` with Adam(lr), ``max_grad_norm`` clipping and its NaN
    guard; ``config.steps`` batches in epochs of ``config.steps_per_epoch``. ``time_budget_s``
    stops after the first epoch that ends past the budget (the budget counts training only, not
    ``on_epoch_end``). Returns the History (``losses``: training bpd per epoch).

    Raises:
        NonFiniteLossError: the bpd or a gradient became NaN / inf (message: what to try).
    """
    from ...training import NonFiniteLossError, train

    check_images(images, "images")
    config.validate(int(images.shape[-1]))
    epochs = max(1, math.ceil(config.steps / config.steps_per_epoch))
    loader = _chunk_loader(images, config.batch_size, config.steps_per_epoch, seed)
    state: dict[str, Any] = {"history": None, "extra": 0.0, "start": time.perf_counter()}

    def end_of_epoch(epoch: int, history) -> None:
        state["history"] = history
        t0 = time.perf_counter()
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
        state["extra"] += time.perf_counter() - t0
        if time_budget_s is not None and time.perf_counter() - state["start"] - state["extra"] >= time_budget_s:
            raise _BudgetReached

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = None
    if config.lr_schedule == "cosine":
        # stepped after each epoch: epoch e trains at lr_min + (lr - lr_min)(1 + cos(pi e / epochs)) / 2
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=config.lr / 100)
    # ActNorm initialises itself from the first batch it sees (data-dependent init, Glow Sec. 3.1)
    try:
        history = train(model, glow_loss, loader, epochs=epochs, optimizer=optimizer, batch_size=config.batch_size,
                        seed=seed, max_grad_norm=config.max_grad_norm, scheduler=scheduler, device=device,
                        progress=progress, desc="Glow", on_epoch_end=end_of_epoch)
    except _BudgetReached:
        history = state["history"]
        history.seconds = time.perf_counter() - state["start"] - state["extra"]
    except NonFiniteLossError as error:
        raise NonFiniteLossError(
            f"Glow training diverged: {error} For a flow, a NaN usually means a coupling scale exploded: "
            f"lower lr (now {config.lr:g}), lower the clamp (now {config.clamp:g}) or max_grad_norm "
            f"(now {config.max_grad_norm:g}).",
            epoch=error.epoch, step=error.step, quantity=error.quantity, value=error.value, history=error.history,
        ) from error
    model.eval()
    return history


@torch.no_grad()
def images_log_prob(flow: GlowFlow, images: Tensor, mode: str = "center", *, generator: torch.Generator | None = None,
                    batch_size: int = 500) -> Tensor:
    """log p_Y(y) in nats of the dequantised images (N, C, S, S) in [0, 1], (N,) float64 on the CPU.

    The flow is put in eval mode; dequantization noise (``mode="uniform"``) is drawn on the CPU
    from ``generator``, image after image, so the result does not depend on the device. It is
    uniform noise whatever ``flow.config.dequantization`` says: for a flow's own bound (with its
    learned q) use :func:`test_bits_per_image` / :meth:`GlowFlow.dequantized_log_prob`."""
    device = next(flow.parameters()).device
    return log_prob_in_chunks(flow, images, batch_size,
                      lambda chunk: flow.log_prob(dequantize(chunk, mode, generator=generator).to(device)))


@torch.no_grad()
def log_prob_in_chunks(flow: GlowFlow, images: Tensor, batch_size: int, log_prob: Callable[[Tensor], Tensor]) -> Tensor:
    """``log_prob`` of CPU chunks of ``batch_size`` images (N, C, S, S), in order, with the flow in eval
    mode: (N,) float64 on the CPU, or (N, L) for a per-level ``log_prob`` (chunk after chunk, so seeded
    noise does not depend on the device)."""
    check_images(images, "images")
    flow.eval()
    out = [log_prob(chunk.cpu()).double().cpu() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def test_bits_per_image(flow: GlowFlow, images: Tensor, *, seed: int = 0, batch_size: int = 500) -> Tensor:
    """Test bpd of each image (N, C, S, S) in [0, 1], (N,) float64: one draw of the flow's dequantization
    noise per image (uniform, or its learned q) from a generator seeded with ``seed`` (reproducible).
    In expectation over that draw, an upper bound on -log2 P(x) / D."""
    gen = torch.Generator().manual_seed(int(seed))
    log_p = log_prob_in_chunks(flow, images, batch_size, lambda chunk: flow.dequantized_log_prob(chunk, generator=gen))
    return bits_per_dim(log_p, int(np.prod(images.shape[1:])))


def test_bits_per_dim(flow: GlowFlow, images: Tensor, *, seed: int = 0, batch_size: int = 500) -> float:
    """Mean test bpd of images (N, C, S, S) in [0, 1] (the mean of :func:`test_bits_per_image`)."""
    return float(test_bits_per_image(flow, images, seed=seed, batch_size=batch_size).mean())


def importance_weighted_bits_per_image(flow: GlowFlow, images: Tensor, draws: int, *, seed: int = 0,
                                       batch_size: int = 500) -> Tensor:
    """Importance-weighted test bpd of each image (N, C, S, S) in [0, 1], (N,) float64, with ``draws`` = K
    draws u_1..u_K of the flow's dequantization q (uniform, or its learned q) per image::

        bpd_K(x) = -[log (1/K) sum_k p_Y(y_k) / q(u_k | x)] / (D log 2) + log2 256,   y_k = (x_bin + u_k) / 256

    (Burda et al. 2016; Ho et al. 2019, Flow++). In expectation it is an upper bound on -log2 P(x) / D
    for every K, never looser than the one-draw bound of :func:`test_bits_per_image` (K = 1: the same
    numbers for the same seed) and tighter as K grows. The noise comes from one generator seeded with
    ``seed``, K draws per chunk of images in turn."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    gen = torch.Generator().manual_seed(int(seed))

    def log_mean_weight(chunk: Tensor) -> Tensor:
        log_w = torch.stack([flow.dequantized_log_prob(chunk, generator=gen).double() for _ in range(draws)], 1)
        return torch.logsumexp(log_w, dim=1) - math.log(draws)

    log_p = log_prob_in_chunks(flow, images, batch_size, log_mean_weight)
    return bits_per_dim(log_p, int(np.prod(images.shape[1:])))


test_bits_per_image.__test__ = False  # not pytest tests
test_bits_per_dim.__test__ = False


