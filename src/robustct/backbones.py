"""The one registry of backbones (torch-free, so reading ``params.yaml`` stays light).

``BACKBONES`` maps each valid ``train.backbone`` name to ``"module:function"``; the function takes
``weights`` (``imagenet``, ``none`` or a state-dict path; the ``efficientnet_lite*`` builders also take
``drop_path``, the stochastic depth rate) and returns ``(features, stage names, feature width,
normalisation mean, std)`` for :func:`robustct.models.build_model`.
"""
from __future__ import annotations

from typing import Callable

from .registry import load_entry

BACKBONES: dict[str, str] = {
    "efficientnet_lite0": "robustct.models:efficientnet_lite0_features",
    "efficientnet_lite1": "robustct.models:efficientnet_lite1_features",
    "efficientnet_lite2": "robustct.models:efficientnet_lite2_features",
    "resnet18": "robustct.models:resnet18_features",
    "resnet50": "robustct.models:resnet50_features",
    "small_cnn": "robustct.models:small_cnn_features",
    "small_cnn_bn": "robustct.models:small_cnn_bn_features",
    "small_cnn_bn_wide": "robustct.models:small_cnn_bn_wide_features",
    "small_cnn_bn_deep": "robustct.models:small_cnn_bn_deep_features",
}
"""Backbone name -> ``"module:function"`` building its features."""

DROP_PATH_BACKBONES: tuple[str, ...] = tuple(name for name in BACKBONES if name.startswith("efficientnet_lite"))
"""The backbones whose builder takes ``drop_path`` (stochastic depth in timm's residual blocks)."""


def backbone_builder(name: str) -> Callable:
    """The builder function of backbone ``name``.

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    return load_entry(BACKBONES, name, "backbone")
