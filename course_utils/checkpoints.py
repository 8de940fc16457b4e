"""The checkpoint cache: a trained model is saved once and loaded instead of trained again.

:func:`train_or_load` is the "load the checkpoint if it is there, else train and save it" step
around :func:`course_utils.training.train`. A checkpoint file is named after the model and a
hash of the configuration that produced it (:func:`config_key`), so changing a hyperparameter
trains a new model instead of silently loading a stale one; :func:`data_fingerprint` puts the
identity of the training images into that configuration. Files are written atomically: an
interrupted save never leaves a half-written checkpoint behind.

A typical notebook cell::

    config = {"method": "ae", "dataset": "mnist", "normal_class": 0, "epochs": EPOCHS,
              "data": data_fingerprint(x_train)}
    history, cached = train_or_load(
        model, "ae-mnist-0", config,
        lambda: train(model, loss_fn, x_train, epochs=EPOCHS, lr=1e-3),
    )
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from course_utils import config as course_config
from course_utils.files import atomic_write, exclusive_lock
from course_utils.images import check_images
from course_utils.training import History

__all__ = [
    "CHECKPOINT_FORMAT",
    "data_fingerprint",
    "config_key",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "train_or_load",
    "lock_path",
    "CHECKPOINT_FILE",
    "model_versions",
]

CHECKPOINT_FORMAT = 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: a checkpoint file name, ``<name>-<first 16 hex digits of config_key>.pt`` (see checkpoint_path)
CHECKPOINT_FILE = re.compile(r"(?P<name>[A-Za-z0-9_.-]+)-(?P<key>[0-9a-f]{16})\.pt")


def data_fingerprint(images: Tensor) -> str:
    """Cheap identity of a training set: ``"<N>x<C>x<H>x<W>-<16 hex digits of SHA-256>"``.

    The hash runs over the images quantised to 8 bits (exact for images that came from
    uint8 files): about 10 ms for 6,000 MNIST images. Used in checkpoint-cache keys, so a
    model trained on other data is never loaded by mistake.
    """
    check_images(images, "images")
    quantised = (images.detach().cpu().float() * 255.0).round().to(torch.uint8).contiguous().numpy()
    digest = hashlib.sha256(quantised.tobytes()).hexdigest()[:16]
    return "x".join(str(s) for s in images.shape) + "-" + digest


def _check_json_value(value: Any, where: str) -> None:
    """Raise ValueError unless ``value`` is a JSON scalar, or a list / dict of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"config key {key!r} inside {where!r} is not a string; use string keys.")
            _check_json_value(item, f"{where}.{key}")
        return
    raise ValueError(
        f"config value at {where!r} is a {type(value).__name__} ({value!r}); config values must be numbers, "
        "strings, booleans, None, or lists / dicts of them. Convert it, e.g. with int(), float() or str()."
    )


def _normalised_config(config: Mapping) -> dict[str, Any]:
    """``config`` validated and as plain JSON types (tuples become lists)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict of hyperparameters, got {type(config).__name__}.")
    for key, value in config.items():
        if not isinstance(key, str):
            raise ValueError(f"config key {key!r} is not a string; use string keys.")
        _check_json_value(value, key)
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def config_key(config: Mapping) -> str:
    """SHA-256 hex digest (64 chars) of the configuration, independent of key order.

    Raises:
        ValueError: if a value is not JSON-able (the message names the key).
    """
    normalised = _normalised_config(config)
    text = json.dumps(normalised, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_path(name: str, config: Mapping, directory: Path | None = None) -> Path:
    """Where the checkpoint for ``name`` trained with ``config`` lives.

    Args:
        name: a file stem of letters, digits, ``_``, ``.`` and ``-``, e.g. ``"ae-mnist-0"``.
        config: the hyperparameters that determine the trained weights.
        directory: default ``config.cache_dir()`` (``COURSE_CACHE_DIR``).

    Returns:
        ``directory / f"{name}-{config_key(config)[:16]}.pt"`` (the folder may not exist yet).
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"checkpoint name {name!r} is not a safe file name; use letters, digits, '_', '.' and '-' only."
        )
    folder = course_config.cache_dir() if directory is None else Path(directory)
    return folder / f"{name}-{config_key(config)[:16]}.pt"


def model_versions(config: Mapping) -> list[str]:
    """Every model version string (the ``"model"`` values, e.g. ``"ConvAutoencoder-v2"``) in a
    cache config, nested configs included (f-AnoGAN's encoder config holds its GAN's), sorted."""
    found: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, Mapping):
            if isinstance(value.get("model"), str):
                found.add(value["model"])
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    collect(config)
    return sorted(found)


def _cpu_state_dict(model: nn.Module) -> dict[str, Any]:
    # CPU copies, so a checkpoint written on a GPU machine loads on a laptop.
    return {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, history: History | None, config: Mapping) -> None:
    """Save ``model``'s weights, its training history and config to ``path``, atomically.

    The data go to a temporary file in the same folder, are flushed to disk, and only then
    renamed to ``path``: an interrupted or failed save leaves any previous file at ``path``
    untouched and no partial file behind. The file holds ``{"format": 1, "state_dict",
    "history", "config", "torch_version"}``: plain tensors and types, loadable with
    ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": _cpu_state_dict(model),
        "history": None if history is None else history.to_dict(),
        "config": _normalised_config(config),
        "torch_version": str(torch.__version__),
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))


def _describe_keys(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _check_state_dict_fits(path: Path, model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    expected = model.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    wrong_shape = [
        f"{key} (file {tuple(state_dict[key].shape)}, model {tuple(expected[key].shape)})"
        for key in sorted(set(expected) & set(state_dict))
        if isinstance(expected[key], Tensor) and isinstance(state_dict[key], Tensor)
        and expected[key].shape != state_dict[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe_keys(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {'; '.join(wrong_shape[:8])}")
    if problems:
        raise ValueError(
            f"the weights in {path} do not fit this model ({'; '.join(problems)}). The cached file was made "
            "by another model version: delete it to retrain (or pass retrain=True)."
        )


def load_checkpoint(
    path: Path,
    model: nn.Module,
    *,
    expected_config: Mapping | None = None,
    map_location: Any = "cpu",
) -> History | None:
    """Load weights saved by :func:`save_checkpoint` into ``model``; return the saved history.

    Tensors are copied into the model's existing parameters, so the model stays on its
    device whatever ``map_location`` is.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        RuntimeError: if the file is corrupt or not a course checkpoint (delete it to retrain).
        ValueError: if its config differs from ``expected_config``, or its weights do not
            fit ``model`` (missing / unexpected keys, other shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train the model first (see train_or_load).")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean: unusable file
        raise RuntimeError(
            f"could not read checkpoint {path} ({type(error).__name__}: {error}). The file is corrupt, "
            "incomplete or not a course checkpoint: delete it to retrain."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "state_dict" not in payload:
        raise RuntimeError(
            f"{path} is not a course checkpoint (format {CHECKPOINT_FORMAT}): delete it to retrain."
        )
    if expected_config is not None:
        expected = _normalised_config(expected_config)
        saved = payload.get("config")
        if saved != expected:
            differing = sorted(
                k for k in set(expected) | set(saved or {}) if (saved or {}).get(k) != expected.get(k)
            )
            raise ValueError(
                f"{path} was trained with another config (differing keys: {differing}); "
                "delete it or use the matching config."
            )
    _check_state_dict_fits(path, model, payload["state_dict"])
    model.load_state_dict(payload["state_dict"])
    history = payload.get("history")
    return None if history is None else History.from_dict(history)


def train_or_load(
    model: nn.Module,
    name: str,
    config: Mapping,
    train_fn: Callable[[], History | None],
    *,
    directory: Path | None = None,
    retrain: bool = False,
    verbose: bool = True,
) -> tuple[History | None, bool]:
    """Load the cached checkpoint for (``name``, ``config``) into ``model``, else train and cache it.

    Args:
        model: the (freshly built) model; weights are loaded into it, or ``train_fn``
            trains it in place.
        name: checkpoint file stem, e.g. ``"ae-mnist-0"`` (letters, digits, ``_.-``).
        config: every hyperparameter that changes the trained weights (JSON-able values);
            another config means another file.
        train_fn: no-argument function that trains ``model`` in place and returns its
            :class:`History` (e.g. ``lambda: train(model, loss_fn, x, epochs=5)``).
        directory: cache folder; default ``config.cache_dir()``.
        retrain: train even if a checkpoint exists (and overwrite it).
        verbose: print whether the checkpoint was loaded or where it was saved.

    Returns:
        ``(history, loaded_from_cache)``. The model is left in ``eval()`` mode.
    """
    path = checkpoint_path(name, config, directory)
    if path.is_file() and not retrain:  # a read-only shared cache needs no lock to be read
        return _load_cached(path, model, config, verbose), True
    # Another process (a parallel benchmark job) may be training the same checkpoint: take turns,
    # and load what it saved instead of training it a second time.
    with exclusive_lock(lock_path(path)):
        if path.is_file() and not retrain:
            return _load_cached(path, model, config, verbose), True
        history = train_fn()
        if history is not None and not isinstance(history, History):
            raise ValueError(
                f"train_fn returned a {type(history).__name__}; it must return the History from train() (or None)."
            )
        save_checkpoint(path, model, history, config)
    model.eval()
    if verbose:
        print(f"saved checkpoint to {path}")
    return history, False


def lock_path(path: Path) -> Path:
    """The lock file that guards the training of checkpoint ``path``: ``.<file name>.lock`` next to it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _load_cached(path: Path, model: nn.Module, config: Mapping, verbose: bool) -> History | None:
    history = load_checkpoint(path, model, expected_config=config)
    model.eval()
    if verbose:
        print(f"loaded cached checkpoint {path}")
    return history
