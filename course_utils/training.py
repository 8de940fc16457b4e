"""The one training loop every method of the course uses.

:func:`train` runs mini-batch gradient descent for any model whose loss a small function can
compute: autoencoders, the f-AnoGAN encoder, Glow flows, AE-FLOW. It keeps a :class:`History`
of losses, shows a progress bar, clips gradients on request, uses mixed precision (float16) on
CUDA, and stops with :class:`NonFiniteLossError` as soon as a loss or gradient becomes NaN /
inf, *before* the bad update, so the model keeps its last good weights. Its companion,
:func:`course_utils.checkpoints.train_or_load`, is the "load the checkpoint if it is there,
else train and save it" step around it.

Adversarial training (f-AnoGAN's WGAN-GP) needs several losses, each minimised by its own
optimiser in an alternating schedule. For that, ``loss_fn`` may be a list of
:class:`Objective` s (for example a critic stepped at every batch and a generator stepped
at every fifth): the same loop, history, progress bar and NaN guard run them, and an
objective with ``max_abs_loss`` stops training with :class:`DivergenceError` when its loss
explodes. ``steps=`` gives a fixed budget of loader steps instead of ``epochs=``.

A typical notebook cell::

    def loss_fn(model, batch):
        (images,) = batch                      # (B, 1, 28, 28) in [0, 1]
        return F.mse_loss(model(images), images)

    history = train(model, loss_fn, x_train, epochs=EPOCHS, lr=1e-3)
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from course_utils import config as course_config

__all__ = [
    "LossFn",
    "History",
    "NonFiniteLossError",
    "DivergenceError",
    "Objective",
    "train",
]

LossFn = Callable[[nn.Module, tuple[Tensor, ...]], Union[Tensor, dict[str, Tensor]]]
"""``loss_fn(model, batch) -> loss``.

``batch`` is a tuple of tensors already on the training device (for tensor data: one
tensor per tensor given to :func:`train`, each of shape ``(B, ...)``). The function returns
either a scalar loss tensor, or a dict with key ``"loss"`` (the scalar that is optimised)
plus further scalar tensors or floats to log, e.g. ``{"loss": l, "nll": nll, "recon": r}``.
"""

# Under AMP the GradScaler skips steps whose gradients overflowed float16 and lowers its
# scale; a handful of skips (mostly at the start) is normal. This many in a row means the
# gradients are genuinely non-finite, not just too large for float16.
MAX_CONSECUTIVE_SKIPPED_STEPS = 20



# --------------------------------------------------------------------------------------
# History and errors
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """What happened during :func:`train`.

    Attributes:
        losses: mean optimised loss of each epoch (mean over the epoch's steps).
        logs: per-epoch means of every logged key, including ``"loss"``; each list has
            one value per epoch in which the key was logged.
        step_losses: the loss of every optimiser step, in order.
        epochs_run: number of completed epochs.
        seconds: wall-clock training time.
    """

    losses: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    step_losses: list[float] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, floats, ints and strings only: safe for JSON and ``weights_only`` loads."""
        return {
            "losses": [float(v) for v in self.losses],
            "logs": {str(k): [float(v) for v in vs] for k, vs in self.logs.items()},
            "step_losses": [float(v) for v in self.step_losses],
            "epochs_run": int(self.epochs_run),
            "seconds": float(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if a field is missing or has the wrong kind of value.
        """
        required = ("losses", "logs", "step_losses", "epochs_run", "seconds")
        if not isinstance(data, Mapping):
            raise ValueError(f"History.from_dict needs a mapping, got {type(data).__name__}.")
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"History.from_dict: missing fields {missing}; pass a dict made by History.to_dict().")
        try:
            return cls(
                losses=[float(v) for v in data["losses"]],
                logs={str(k): [float(v) for v in vs] for k, vs in dict(data["logs"]).items()},
                step_losses=[float(v) for v in data["step_losses"]],
                epochs_run=int(data["epochs_run"]),
                seconds=float(data["seconds"]),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"History.from_dict: malformed field ({error}); pass a dict made by History.to_dict()."
            ) from error


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss, logged term or gradient norm.

    Raised *before* the optimiser step that would have used it, so the model keeps the
    weights of the last good step.

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: 1-based step within that epoch.
        quantity: what was not finite: ``"loss"``, ``"logged term 'nll'"``, ``"gradient norm"``.
        value: the offending value.
        history: the history up to the last completed epoch, plus the step losses so far.
    """

    def __init__(self, message: str, *, epoch: int, step: int, quantity: str, value: float, history: History):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.quantity = quantity
        self.value = value
        self.history = history


class DivergenceError(NonFiniteLossError):
    """A finite loss left the range an :class:`Objective` declared healthy (``|loss| > max_abs_loss``).

    A subclass of :class:`NonFiniteLossError` (code that catches that catches this too), with
    the same attributes; ``quantity`` names the objective, e.g. ``"critic loss"``. Raised before
    the optimiser step, so the model keeps the weights of the last good step.
    """


@dataclass
class Objective:
    """One loss minimised by its own optimiser inside :func:`train` (e.g. a GAN's critic or generator).

    Attributes:
        name: a short label (``"critic"``); logged terms are stored as ``"<name>/<key>"``.
        loss_fn: ``loss_fn(model, batch)`` -> scalar loss or dict with ``"loss"`` (:data:`LossFn`).
            Only the parameters held by ``optimizer`` are updated; gradients that the loss
            leaves on other parameters are cleared by their own objective before use.
        optimizer: the optimiser of this objective's parameters.
        every: take a step on this objective at every ``every``-th loader step (1 = each
            batch). Steps are counted over the whole run, across epochs.
        max_abs_loss: divergence bound: ``|loss| > max_abs_loss`` raises :class:`DivergenceError`
            before the step (``None``: only non-finite losses stop training).
        hint: extra advice appended to this objective's error messages.
    """

    name: str
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    every: int = 1
    max_abs_loss: float | None = None
    hint: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"Objective name must be a non-empty string without '/', got {self.name!r}.")
        if not callable(self.loss_fn):
            raise ValueError(f"Objective {self.name!r}: loss_fn must be a function loss_fn(model, batch) -> loss.")
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise ValueError(f"Objective {self.name!r}: optimizer must be a torch.optim.Optimizer, "
                             f"got {type(self.optimizer).__name__}.")
        _check_positive_int(f"Objective {self.name!r}: every", self.every)
        if self.max_abs_loss is not None:
            _check_positive_float(f"Objective {self.name!r}: max_abs_loss", self.max_abs_loss)


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return value


def _check_positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return course_config.get_device(verbose=False)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a valid torch device; use 'cpu', 'cuda' or 'mps'.") from error


def _resolve_amp(amp: bool | None, device: torch.device) -> bool:
    """AMP only where it helps and is safe: float16 autocast with a GradScaler, on CUDA."""
    if amp is None:
        return device.type == "cuda"
    if amp and device.type != "cuda":
        # bfloat16 autocast on CPU is slow on most laptops and changes results; not used.
        warnings.warn(f"amp=True is only used on CUDA; training on {device} in float32.", stacklevel=3)
        return False
    return bool(amp)


def _as_tensor_tuple(data: Tensor | tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, ...]:
    """Validate tensor data: at least one tensor, each with the same non-zero first dim."""
    tensors = (data,) if isinstance(data, Tensor) else tuple(data)
    if not tensors:
        raise ValueError("data is an empty tuple; pass a tensor (N, ...) or a tuple of tensors with N rows each.")
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, Tensor):
            raise ValueError(
                f"data[{index}] is a {type(tensor).__name__}, not a tensor; convert it with torch.as_tensor "
                "or pass a DataLoader."
            )
        if tensor.dim() == 0:
            raise ValueError(f"data[{index}] is a 0-dim tensor; tensor data need a first (sample) dimension.")
    lengths = [tensor.shape[0] for tensor in tensors]
    if len(set(lengths)) != 1:
        raise ValueError(f"data tensors have different first dimensions {lengths}; they must all have N rows.")
    if lengths[0] == 0:
        raise ValueError("data are empty (0 samples); check the data split or class selection.")
    return tensors


def _make_loader(
    data: Tensor | tuple[Tensor, ...] | DataLoader, batch_size: int, seed: int | None, device: torch.device
) -> DataLoader:
    """A DataLoader for ``data``: used as is if it is one, else a shuffling loader over the tensors.

    For tensors, whole batches are fetched with one fancy index (``BatchSampler`` with
    ``batch_size=None``) instead of one ``__getitem__`` per sample: the same shuffling order
    as ``DataLoader(shuffle=True, generator=g)``, many times faster for 60 000 MNIST images.
    """
    if isinstance(data, DataLoader):
        try:
            n_batches = len(data)
        except TypeError:  # an IterableDataset without __len__: checked after the first epoch
            n_batches = None
        if n_batches == 0:
            raise ValueError("the DataLoader yields no batches (empty dataset, or drop_last with too few samples).")
        return data
    if isinstance(data, (Tensor, tuple, list)):
        tensors = _as_tensor_tuple(data)
    else:
        raise ValueError(
            f"data must be a tensor, a tuple of tensors or a DataLoader, got {type(data).__name__}."
        )
    dataset = TensorDataset(*tensors)
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    sampler = BatchSampler(RandomSampler(dataset, generator=generator), batch_size=batch_size, drop_last=False)
    # Pinned host memory makes the non_blocking copy truly asynchronous; only for CPU tensors.
    pin = device.type == "cuda" and all(t.device.type == "cpu" for t in tensors)
    return DataLoader(dataset, batch_size=None, sampler=sampler, pin_memory=pin)


def _batch_to_device(batch: Any, device: torch.device) -> tuple[Any, ...]:
    """Normalise a batch to a tuple and move its tensors to ``device``."""
    if isinstance(batch, Tensor):
        batch = (batch,)
    elif isinstance(batch, (tuple, list)):
        batch = tuple(batch)
    else:
        raise ValueError(
            f"a batch from the DataLoader is a {type(batch).__name__}; batches must be a tensor or a tuple/list "
            "of tensors."
        )
    return tuple(t.to(device, non_blocking=True) if isinstance(t, Tensor) else t for t in batch)


def _split_loss(output: Tensor | Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """(loss to optimise, all terms to log incl. "loss"), from what ``loss_fn`` returned."""
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(f"loss_fn returned a dict without a 'loss' key (keys: {sorted(output)}); add 'loss'.")
        loss = output["loss"]
        terms = {str(k): (v.detach() if isinstance(v, Tensor) else torch.as_tensor(v)) for k, v in output.items()}
    else:
        loss = output
        terms = {}
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar loss tensor, got {shape}; reduce it with .mean() or .sum().")
    for key, value in terms.items():
        if value.numel() != 1:
            raise ValueError(f"logged term {key!r} has shape {tuple(value.shape)}; logged terms must be scalars.")
    terms["loss"] = loss.detach()
    return loss.reshape(()), terms


def _optimised_parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """Parameters the optimiser updates (the model may have frozen parts, e.g. f-AnoGAN's generator)."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def _where(epoch: int, epochs: int, step: int, n_steps: int | None) -> str:
    """"epoch 3/10, step 12/94": where in the run a failure happened."""
    return f"epoch {epoch}/{epochs}, step {f'{step}/{n_steps}' if n_steps else step}"


def _non_finite_error(
    *, epoch: int, epochs: int, step: int, n_steps: int | None, quantity: str, value: float, lr: float,
    history: History, extra: str = "",
) -> NonFiniteLossError:
    message = (
        f"non-finite {quantity} ({value}) at {_where(epoch, epochs, step, n_steps)}. {extra}"
        "The model keeps the weights of the last good step. Things to try: a lower learning rate "
        f"(lr={lr:g} now, e.g. lr={lr / 10:g}), gradient clipping via max_grad_norm=1.0, and checking that "
        "the inputs are finite and scaled to [0, 1]."
    )
    return NonFiniteLossError(message, epoch=epoch, step=step, quantity=quantity, value=value, history=history)


def _divergence_error(
    *, epoch: int, epochs: int, step: int, n_steps: int | None, name: str, value: float, bound: float, lr: float,
    history: History, hint: str = "",
) -> DivergenceError:
    message = (
        f"training diverged: the {name} loss is {value:.4g} at {_where(epoch, epochs, step, n_steps)}, beyond the "
        f"bound |loss| <= {bound:g} of a healthy run. {hint}"
        "The model keeps the weights of the last good step; training stopped instead of continuing with a broken "
        f"model. Things to try: a lower learning rate (lr={lr:g} now, e.g. lr={lr / 10:g}), and checking that the "
        "inputs are finite and scaled to [0, 1]."
    )
    return DivergenceError(message, epoch=epoch, step=step, quantity=f"{name} loss", value=value, history=history)


# --------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    loss_fn: LossFn | Sequence[Objective],
    data: Tensor | tuple[Tensor, ...] | DataLoader,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int = 128,
    seed: int | None = 0,
    max_grad_norm: float | None = None,
    scheduler: Any = None,
    device: torch.device | str | None = None,
    amp: bool | None = None,
    progress: bool = True,
    desc: str = "training",
    on_epoch_end: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` in place by minimising ``loss_fn`` over ``data``.

    Args:
        model: any module; it is moved to ``device``, put in ``train()`` mode during
            training and left in ``eval()`` mode afterwards (also after an error).
        loss_fn: ``loss_fn(model, batch)`` -> scalar loss tensor, or a dict with key
            ``"loss"`` plus scalar terms to log (see :data:`LossFn`). Or a list of
            :class:`Objective` s, each with its own loss function, optimiser and schedule
            (``every``), run in list order at each loader step: e.g. a GAN's critic
            (``every=1``) and generator (``every=5``). Then ``lr`` and ``optimizer`` are
            not used (each objective has its optimiser), AMP is off, the history's
            ``"loss"`` and ``step_losses`` are the *first* objective's loss, and every
            objective's terms are logged as ``"<name>/<key>"`` (its epoch mean is over the
            steps it took).
        data: a tensor ``(N, ...)`` (e.g. images ``(N, C, H, W)`` in [0, 1]), a tuple of
            tensors with ``N`` rows each (batches are then tuples in the same order), or a
            ``DataLoader`` used as is (its batches: a tensor or a tuple/list).
        epochs: number of passes over the data, >= 1.
        steps: instead of ``epochs``: a fixed budget of loader steps (batches), >= 1; the
            data are cycled as often as needed and the last epoch may be partial (it is
            counted as an epoch in the history). Give exactly one of ``epochs`` and ``steps``.
        lr: learning rate of the default optimiser ``Adam(model.parameters(), lr)``;
            ignored when ``optimizer`` is given.
        optimizer: your own optimiser, e.g. for a subset of parameters or other betas.
        batch_size: samples per step; only used for tensor data (the last batch may be smaller).
        seed: seeds the shuffling order of tensor data (its own ``torch.Generator``, so it
            does not depend on other random draws); ``None`` uses the global RNG. Seed the
            model's initialisation yourself (``config.seed_everything``) before building it.
        max_grad_norm: clip the global gradient norm to this value (``clip_grad_norm_``);
            ``None`` does not clip.
        scheduler: an LR scheduler stepped once per epoch (``ReduceLROnPlateau`` gets the
            epoch's mean loss).
        device: default ``config.get_device()``: cuda > mps > cpu.
        amp: mixed precision (float16 autocast + GradScaler); ``None`` means on for CUDA,
            off elsewhere. Never used off CUDA, nor with several objectives.
        progress: show a tqdm bar over epochs with the last epoch's loss.
        desc: label of the progress bar.
        on_epoch_end: called as ``on_epoch_end(epoch, history)`` after each epoch, with the
            1-based number of the epoch just finished; e.g. to draw samples. The model is
            in ``train()`` mode again after it returns.

    Returns:
        The :class:`History`. Epoch means are plain means over the epoch's steps.

    Raises:
        ValueError: for invalid arguments, empty data, or a malformed loss.
        NonFiniteLossError: if the loss, a logged term or (without AMP) the gradient norm
            is NaN / inf, or under AMP more than 20 steps in a row were skipped. The
            offending step is not applied.
        DivergenceError: (a ``NonFiniteLossError``) an objective's ``|loss|`` exceeded its
            ``max_abs_loss``; the offending step is not applied.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs= (passes over the data) and steps= (a budget of batches).")
    budget_steps = None if steps is None else _check_positive_int("steps", steps)
    epochs = _check_positive_int("epochs", epochs) if epochs is not None else None
    lr = _check_positive_float("lr", lr)
    batch_size = _check_positive_int("batch_size", batch_size)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")
    clip_norm = math.inf if max_grad_norm is None else _check_positive_float("max_grad_norm", max_grad_norm)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")

    multi = isinstance(loss_fn, (list, tuple))
    if multi:
        objectives = list(loss_fn)
        if not objectives or not all(isinstance(o, Objective) for o in objectives):
            raise ValueError("loss_fn as a list must hold one or more Objective(name, loss_fn, optimizer, ...).")
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"Objective names must be distinct, got {names}.")
        if optimizer is not None:
            raise ValueError("with a list of Objectives each objective brings its optimizer; do not pass optimizer=.")
        if amp:
            raise ValueError("amp=True is not supported with several objectives; adversarial training runs in float32.")
    elif not callable(loss_fn):
        raise ValueError("loss_fn must be a function loss_fn(model, batch) -> loss, or a list of Objectives.")

    device = _resolve_device(device)
    use_amp = False if multi else _resolve_amp(amp, device)
    loader = _make_loader(data, batch_size, seed, device)
    model.to(device)
    if not multi:
        if optimizer is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        objectives = [Objective("loss", loss_fn, optimizer)]
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    try:
        n_steps: int | None = len(loader)
    except TypeError:
        n_steps = None
    if budget_steps is not None:
        if n_steps is None:
            raise ValueError("steps= needs a DataLoader with a length (len(loader)); use epochs= instead.")
        epochs = math.ceil(budget_steps / n_steps)
    assert epochs is not None

    history = History()
    start = time.perf_counter()
    consecutive_skipped = 0
    global_step = 0
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, unit="epoch")
    try:
        for epoch in bar:
            model.train()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            step = 0
            for step, raw_batch in enumerate(loader, start=1):
                if budget_steps is not None and global_step >= budget_steps:
                    step -= 1
                    break
                global_step += 1
                batch = _batch_to_device(raw_batch, device)
                for index, objective in enumerate(objectives):
                    if global_step % objective.every:
                        continue
                    opt = objective.optimizer
                    current_lr = opt.param_groups[0]["lr"]
                    opt.zero_grad(set_to_none=True)
                    autocast = torch.amp.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
                    with autocast:
                        loss, terms = _split_loss(objective.loss_fn(model, batch))

                    # One device sync for all terms; check them before backward so a bad step never happens.
                    stacked = torch.stack([t.float().reshape(()).to(device) for t in terms.values()])
                    values = dict(zip(terms, stacked.tolist()))
                    prefix = f"{objective.name} " if multi else ""
                    for key in ["loss", *(k for k in values if k != "loss")]:
                        if not math.isfinite(values[key]):
                            quantity = f"{prefix}loss" if key == "loss" else f"{prefix}logged term {key!r}"
                            raise _non_finite_error(
                                epoch=epoch, epochs=epochs, step=step, n_steps=n_steps, quantity=quantity,
                                value=values[key], lr=current_lr, history=history, extra=objective.hint,
                            )
                    if objective.max_abs_loss is not None and abs(values["loss"]) > objective.max_abs_loss:
                        raise _divergence_error(
                            epoch=epoch, epochs=epochs, step=step, n_steps=n_steps, name=objective.name,
                            value=values["loss"], bound=objective.max_abs_loss, lr=current_lr, history=history,
                            hint=objective.hint,
                        )
                    if not loss.requires_grad:
                        raise ValueError(
                            "the loss does not depend on any trainable parameter (requires_grad=False); "
                            "was it computed under torch.no_grad() or detached?"
                        )

                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(opt)  # so clipping and the norm see true gradients
                    else:
                        loss.backward()
                    # clip_grad_norm_ returns the norm before clipping; with max_norm=inf it only measures.
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(_optimised_parameters(opt), clip_norm))

                    if scaler is not None:
                        # A non-finite norm under AMP: the scaler skips this step and lowers its scale.
                        consecutive_skipped = consecutive_skipped + 1 if not math.isfinite(grad_norm) else 0
                        if consecutive_skipped > MAX_CONSECUTIVE_SKIPPED_STEPS:
                            raise _non_finite_error(
                                epoch=epoch, epochs=epochs, step=step, n_steps=n_steps, quantity="gradient norm",
                                value=grad_norm, lr=current_lr, history=history,
                                extra=f"Mixed precision skipped {consecutive_skipped} steps in a row (try amp=False). ",
                            )
                        scaler.step(opt)
                        scaler.update()
                    else:
                        if not math.isfinite(grad_norm):
                            raise _non_finite_error(
                                epoch=epoch, epochs=epochs, step=step, n_steps=n_steps,
                                quantity=f"{prefix}gradient norm", value=grad_norm, lr=current_lr, history=history,
                                extra=objective.hint,
                            )
                        opt.step()

                    if index == 0:
                        history.step_losses.append(values["loss"])
                    logged = {f"{objective.name}/{k}": v for k, v in values.items()} if multi else values
                    if multi and index == 0:
                        logged["loss"] = values["loss"]
                    for key, value in logged.items():
                        sums[key] = sums.get(key, 0.0) + value
                        counts[key] = counts.get(key, 0) + 1

            if step == 0:
                raise ValueError("the DataLoader yielded no batches; check the dataset and drop_last.")
            _record_epoch(history, sums, counts, seconds=time.perf_counter() - start)
            if scheduler is not None:
                _step_scheduler(scheduler, history.losses[-1])
            bar.set_postfix(loss=f"{history.losses[-1]:.4g}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
    finally:
        bar.close()
        history.seconds = time.perf_counter() - start
        model.eval()
    return history


def _record_epoch(history: History, sums: dict[str, float], counts: dict[str, int], *, seconds: float) -> None:
    for key, total in sums.items():
        history.logs.setdefault(key, []).append(total / counts[key])
    history.losses.append(history.logs["loss"][-1])
    history.epochs_run += 1
    history.seconds = seconds


def _step_scheduler(scheduler: Any, epoch_loss: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(epoch_loss)
    else:
        scheduler.step()
