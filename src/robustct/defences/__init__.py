"""Defence methods: one registry, ``METHODS``, from which every list of ``defend.method`` names is derived.

A method is a function ``train(base_model, train, val, cfg, log) -> (model, history)``:

- ``base_model``: the ``train`` stage's :class:`robustct.models.Classifier` (CPU or device), input
  (N, 1, H, W) float in [0, 1], output logits (N, 2).
- ``train``, ``val``: ``(x, y)`` with ``x`` uint8 (N, 1, H, W) and ``y`` int64 (N,).
- ``cfg``: the validated ``defend`` section of ``params.yaml`` (a dict).
- ``log``: ``None`` or a callable ``(metrics: dict, step: int)``; the tracker is never imported here.

It returns a model with the same input/output contract and a ``config`` dict that
``robustct.models.load_checkpoint`` can rebuild from, and one history row per epoch.
"""
from __future__ import annotations

from typing import Callable

from .adversarial import train_pgd_at
from .preprocessing import train_denoiser, train_input_transform
from .smoothing import train_gaussian

METHODS: dict[str, Callable] = {
    "pgd_at": train_pgd_at,
    "denoiser": train_denoiser,  # DnCNN in front of the frozen baseline (defend.denoiser)
    "input_transform": train_input_transform,  # bit depth / JPEG / median, BPDA + EOT (defend.input_transform)
    "gaussian_smoothing": train_gaussian,  # randomized smoothing, certified L2 radius (defend.smoothing)
}
"""``defend.method`` name -> training function."""
