"""Anomaly detectors. Models never load data: they take tensors of shape (N, C, H, W) in [0, 1]."""
