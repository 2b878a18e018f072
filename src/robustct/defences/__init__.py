"""Defence methods: one registry, ``METHODS``, from which every list of ``defend.method`` names is derived.

The registry maps each name to ``"module:function"`` and imports lazily (reading ``params.yaml`` imports no
torch). A method is a function ``train(base_model, train, val, cfg, log) -> (model, history)``:

- ``base_model``: the ``train`` stage's model (CPU or device), a :class:`robustct.models.Classifier` or, with
  ``train.ensemble_size`` > 1, a :class:`robustct.models.Ensemble` (which no method may fine-tune:
  :func:`fine_tunes_baseline`); input (N, 1, H, W) float in [0, 1], output logits (N, 2).
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

INIT_METHODS = ("pgd_at", "trades", "fast_at")
"""Methods that read ``defend.init`` (``baseline``: they fine-tune the train stage's model)."""
FINE_TUNES_BASELINE = ("gaussian_smoothing",)
"""Methods that always fine-tune the train stage's model."""


def fine_tunes_baseline(method: str, init: str) -> bool:
    """Whether ``defend.method`` with ``defend.init`` trains the train stage's own model further (which an
    ensemble baseline, ``train.ensemble_size`` > 1, cannot be)."""
    return method in FINE_TUNES_BASELINE or (method in INIT_METHODS and init == "baseline")


def get_method(name: str) -> Callable:
    """The training function of defence ``name``.

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    return load_entry(METHODS, name, "defence method")
