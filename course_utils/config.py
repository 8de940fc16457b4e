"""Paths, fast mode, device choice and seeding: everything a notebook's setup cell needs.

Environment variables (all optional):

- ``COURSE_DATA_DIR``: where full datasets live (default ``<repo>/data``).
- ``COURSE_CACHE_DIR``: where trained checkpoints are cached (default ``<repo>/cache``).
- ``COURSE_FAST=1``: fast mode (bundled data sample, tiny models, one or two epochs);
  the test suite sets it. Full mode is the default.
- ``COURSE_DEVICE``: force a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "REPO_ROOT",
    "data_dir",
    "cache_dir",
    "is_fast",
    "get_device",
    "seed_everything",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def _find_repo_root() -> Path:
    """The course checkout (folder holding ``pyproject.toml``), else a per-user folder.

    An editable install (the README's way) finds the checkout; a plain ``pip install``
    lands in site-packages, where writing data would be wrong, so it uses
    ``~/.cache/anomaly-course`` instead.
    """
    candidate = _PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.home() / ".cache" / "anomaly-course"


REPO_ROOT: Path = _find_repo_root()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def data_dir() -> Path:
    """Folder with the full datasets (``COURSE_DATA_DIR``, default ``<repo>/data``).

    Read at every call, so a notebook or test may change the variable at run time.
    """
    return Path(os.environ.get("COURSE_DATA_DIR") or REPO_ROOT / "data").expanduser()


def cache_dir() -> Path:
    """Folder for cached checkpoints (``COURSE_CACHE_DIR``, default ``<repo>/cache``)."""
    return Path(os.environ.get("COURSE_CACHE_DIR") or REPO_ROOT / "cache").expanduser()


def is_fast() -> bool:
    """True when ``COURSE_FAST`` is set to a true value (``1``, ``true``, ``yes``, ``on``).

    Raises:
        ValueError: for any other value, so a typo such as ``COURSE_FAST=ture`` does not
            silently start a long full-mode run.
    """
    raw = os.environ.get("COURSE_FAST", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(
        f"COURSE_FAST={raw!r} is not understood: use COURSE_FAST=1 for fast mode "
        "or unset it (or COURSE_FAST=0) for full mode."
    )


_announced_device: str | None = None


def get_device(verbose: bool = True) -> torch.device:
    """The best available device: ``COURSE_DEVICE`` if set, else cuda > mps > cpu.

    The choice is printed once per process (``verbose=False`` silences it).

    Raises:
        ValueError: if ``COURSE_DEVICE`` names a device that is not available.
    """
    global _announced_device
    forced = os.environ.get("COURSE_DEVICE", "").strip()
    if forced:
        device = torch.device(forced)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"COURSE_DEVICE={forced!r} but CUDA is not available here; unset it or use cpu.")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"COURSE_DEVICE={forced!r} but MPS is not available here; unset it or use cpu.")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif _mps_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if verbose and _announced_device != str(device):
        detail = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
        print(f"[course_utils] using device: {device}{detail}")
        _announced_device = str(device)
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and all GPUs); return a seeded torch Generator.

    Seeded runs on the same machine and software give identical numbers on CPU. On GPU,
    some cuDNN kernels are not deterministic, and ``torch.backends.cudnn.benchmark`` (which
    picks kernels by timing them) is left off here: code that wants speed over bit-for-bit
    repeatability turns it on itself and says so.

    Args:
        seed: a non-negative integer.

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for shuffling and sampling that must not
        depend on how many random numbers other code drew before.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
