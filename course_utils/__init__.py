"""Shared plumbing for the image anomaly detection course.

One module per concern (see docs/design.md, section architecture): ``config`` (paths, fast
mode, device, seeds), ``data`` (datasets, one-class splits, synthetic anomalies), ``images``
(image validation), ``metrics`` and ``tables`` (scores -> numbers -> markdown), ``training``
(the one training loop), ``checkpoints`` (the checkpoint cache and its keys),
``reconstruction`` (SSIM and residual maps), ``models`` (the detectors on one base class),
``protocol`` (the one-class evaluation used by notebooks and benchmarks alike), ``results``
(committed benchmark tables for the notebooks), ``plots``,
``widgets`` and ``checks``.
"""

__version__ = "0.1.0"
