"""Shared plumbing for the image anomaly detection course.

One module per concern (see DESIGN.md): ``config`` (paths, fast mode, device, seeds),
``data`` (datasets, one-class splits, synthetic anomalies), ``metrics``, ``training``
(the one training loop and checkpoint cache), ``protocol`` (the one-class evaluation
used by notebooks and benchmarks alike), ``plots``, ``widgets`` and ``checks``.
"""

__version__ = "0.1.0"
