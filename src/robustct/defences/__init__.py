"""Defence methods: one registry, ``METHODS``, from which every list of ``defend.method`` names is derived.

The registry maps each name to ``"module:function"`` and imports lazily (reading ``params.yaml`` imports no
torch). A method is a function ``train(base_model, train, val, cfg, log) -> (model, history)``:

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

from ..registry import load_entry

METHODS: dict[str, str] = {
    "pgd_at": "robustct.defences.adversarial:train_pgd_at",
    "trades": "robustct.defences.adversarial:train_trades",
    "fast_at": "robustct.defences.adversarial:train_fast_at",
    "denoiser": "robustct.defences.preprocessing:train_denoiser",  # DnCNN before the frozen baseline (defend.denoiser)
    "input_transform": "robustct.defences.preprocessing:train_input_transform",  # BPDA + EOT (defend.input_transform)
    "gaussian_smoothing": "robustct.defences.smoothing:train_gaussian",  # certified L2 radius (defend.smoothing)
}
"""``defend.method`` name -> ``"module:function"`` of its training function."""


def get_method(name: str) -> Callable:
    """The training function of defence ``name``.

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    return load_entry(METHODS, name, "defence method")
