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

from .adversarial import train_fast_at, train_pgd_at, train_trades

METHODS: dict[str, Callable] = {
    "pgd_at": train_pgd_at,
    "trades": train_trades,
    "fast_at": train_fast_at,
}
"""``defend.method`` name -> training function."""
