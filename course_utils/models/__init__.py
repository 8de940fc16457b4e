"""Anomaly detectors. Models never load data: they take tensors of shape (N, C, H, W) in [0, 1].

``base`` holds the :class:`~course_utils.models.base.Detector` base class every detector subclasses;
``backbones`` the pretrained feature extractors; one module (or, when it grows, one package split by
role, like ``glow/``) per method: ``baselines`` (PCA, k-NN), ``autoencoder``, ``fanogan``, ``glow``,
``aeflow``. Method names and factories are registered in ``course_utils.protocol.METHODS``.
"""
