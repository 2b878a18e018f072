"""Pre-processing defences: BPDA identity backward, EOT averaging, transforms, the DnCNN composite,
the METHODS entries and checkpoint round trips."""
from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustct.defences import get_method
from robustct.defences.preprocessing import (
    EOT, DenoisedClassifier, DnCNN, InputTransform, TransformedClassifier,
    adversarial_pairs, average_probabilities, bit_depth, jpeg, median_filter,
)
from robustct.models import build_model, load_checkpoint, save_checkpoint
from robustct.params import DenoiserParams, InputTransformParams

torch.set_num_threads(1)


def _grad(f, x, y):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(f(x), y, reduction="sum"), x)
    return g


@pytest.mark.parametrize("cfg", [dict(kind="bit_depth", bits=3), dict(kind="jpeg", quality=50),
                                 dict(kind="median", size=3)])
def test_bpda_backward_is_the_gradient_at_the_transformed_point(tiny_model, tiny_batch, cfg):
    x, y = tiny_batch
    t = InputTransform(InputTransformParams(**cfg))
    through = _grad(lambda z: tiny_model(t(z)), x, y)
    with torch.no_grad():
        z = t.apply(x)
    assert not torch.equal(z, x)  # the transform really changes the input
    at_z = _grad(tiny_model, z, y)
    assert torch.allclose(through, at_z, atol=1e-6)
    assert through.abs().sum() > 0


def test_naive_backward_is_zero_for_bit_depth_and_jpeg_and_not_for_median(tiny_model, tiny_batch):
    x, y = tiny_batch
    for kind in ("bit_depth", "jpeg"):
        t = InputTransform(InputTransformParams(kind=kind, bpda=False))
        assert _grad(lambda z: tiny_model(t(z)), x, y).abs().sum() == 0  # gradient masking: naive attacks see nothing
    t = InputTransform(InputTransformParams(kind="median", bpda=False))
    naive = _grad(lambda z: tiny_model(t(z)), x, y)
    t.cfg.bpda = True
    honest = _grad(lambda z: tiny_model(t(z)), x, y)
    assert naive.abs().sum() > 0 and not torch.allclose(naive, honest)


def test_transforms_known_values():
    x = torch.tensor([0.0, 0.2, 0.26, 0.74, 1.0]).view(1, 1, 1, 5)
    assert torch.allclose(bit_depth(x, 1), torch.tensor([0.0, 0.0, 1.0 * 0, 1.0, 1.0]).view(1, 1, 1, 5))
    assert torch.allclose(bit_depth(x, 2), torch.tensor([0.0, 1 / 3, 1 / 3, 2 / 3, 1.0]).view(1, 1, 1, 5))
    img = torch.full((1, 1, 7, 7), 0.3)
    img[0, 0, 3, 3] = 1.0  # salt pixel
    assert torch.allclose(median_filter(img, 3), torch.full_like(img, 0.3))
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 1, 32, 32).contiguous()
    j = jpeg(smooth, 95)
    assert j.shape == smooth.shape and (j - smooth).abs().max() < 3 / 255
    assert (jpeg(smooth, [95, 5])[1] - smooth[1]).abs().mean() > (j[0] - smooth[0]).abs().mean()


class _ToyRandom(nn.Module):
    """Logits [0, s]: s = 0 or log(9) with probability 1/2 each, per row -> P(class 1) = 0.5 or 0.9."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.g = torch.Generator().manual_seed(0)

    def forward(self, x):
        s = torch.randint(0, 2, (len(x),), generator=self.g).float() * math.log(9) + 0 * self.w
        return torch.stack([torch.zeros_like(s), s], 1) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_eot_averages_probabilities_known_answer():
    x = torch.zeros(3, 1, 2, 2)
    p = EOT(_ToyRandom(), samples=20000)(x).exp()
    # E[P(class 1)] = (0.5 + 0.9) / 2 = 0.7 (averaging logits instead would give sigmoid(log 3) = 0.75)
    assert torch.allclose(p[:, 1], torch.full((3,), 0.7), atol=0.01)
    assert torch.allclose(p.sum(1), torch.ones(3), atol=1e-6)
    det = nn.Linear(4, 2)
    flat = lambda z: det(z.flatten(1))  # noqa: E731
    assert torch.allclose(average_probabilities(flat, x + 0.3, 5), torch.log_softmax(flat(x + 0.3), 1), atol=1e-6)


def test_random_jpeg_composite_gradient_is_the_eot_gradient_of_bpda(tiny_model, tiny_batch):
    x, y = tiny_batch
    k = 4
    tiny_model.config = {"threshold": 0.5}
    comp = TransformedClassifier(InputTransform(InputTransformParams(kind="jpeg", quality_range=[10, 90], eot_samples=k)),
                                 tiny_model)
    assert comp.eot_samples == k
    calls = comp.transform.draws.calls
    got = _grad(comp, x, y)
    comp.transform.draws.calls = calls  # replay the same draws by hand
    with torch.no_grad():
        z = comp.transform.apply(x.repeat(k, 1, 1, 1))
    z.requires_grad_(True)
    probs = torch.softmax(tiny_model(z), 1).view(k, len(x), 2).mean(0)
    (gz,) = torch.autograd.grad(F.nll_loss(torch.log(probs), y, reduction="sum"), z)
    want = gz.view(k, *x.shape).sum(0)  # BPDA: each copy's gradient goes straight back to x
    assert torch.allclose(got, want, atol=1e-6)
    assert got.abs().sum() > 0


def test_dncnn_starts_as_identity_and_composite_contract():
    d = DnCNN(1, depth=4, width=8)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(d(x), x)
    clf = build_model("resnet18", "none", 16, 0.5)
    comp = DenoisedClassifier(d, clf, DenoiserParams(depth=4, width=8)).eval()
    out = comp(x)
    assert out.shape == (2, 2) and torch.allclose(out, clf.eval()(x))
    comp.set_threshold(0.3)
    assert comp.config["threshold"] == 0.3 == clf.config["threshold"]
    assert comp.config["image_size"] == 16 and comp.config["defence"]["method"] == "denoiser"


def _uint8_data(n, size=16, seed=0):
    """Smooth images (bilinear upsampling of 4x4 noise): a perturbation is distinguishable from the image."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    x = (F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True) * 255).round().to(torch.uint8)
    return x, torch.arange(n) % 2


def test_denoiser_method_trains_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    base = build_model("resnet18", "none", 16, 0.5).eval()
    train, val = _uint8_data(32), _uint8_data(8, seed=1)
    cfg = {"threshold": "0.5", "denoiser": {"depth": 3, "width": 8, "loss": "pixel", "epsilons": ["16/255"],
                                            "attack_steps": 2, "clean_pairs": False, "epochs": 12, "lr": 3e-3,
                                            "batch_size": 4}}
    model, history = get_method("denoiser")(base, train, val, cfg, None)
    assert isinstance(model, DenoisedClassifier) and len(history) == 12
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "val_auc", "val_transfer_accuracy"} <= set(history[0])
    # the same validation pairs (same seed, frozen base): the trained denoiser beats the identity's pixel loss
    xa, xc = adversarial_pairs(base, *val, [16 / 255], 2, seed=100, batch_size=4, clean=False)
    with torch.no_grad():
        trained = F.mse_loss(model.denoiser(xa), xc)
    identity = F.mse_loss(xa, xc)
    assert math.isclose(min(h["val_loss"] for h in history), float(trained), rel_tol=1e-4)
    assert trained < 0.9 * identity
    path = tmp_path / "m.pt"
    save_checkpoint(model, path)
    again = load_checkpoint(path)
    assert isinstance(again, DenoisedClassifier) and again.config == model.config
    xf = val[0].float() / 255
    assert torch.allclose(again(xf), model.eval()(xf), atol=1e-5)


def test_input_transform_method_and_checkpoint(tmp_path):
    base = build_model("resnet18", "none", 16, 0.5).eval()
    val = _uint8_data(8, seed=1)
    cfg = {"threshold": "0.5", "input_transform": {"kind": "bit_depth", "bits": 3}}
    model, history = get_method("input_transform")(base, None, val, cfg, None)
    xf = val[0].float() / 255
    assert torch.allclose(model(xf), base(bit_depth(xf, 3)), atol=1e-6)
    assert len(history) == 1 and history[0]["val_accuracy"] >= 0
    save_checkpoint(model, tmp_path / "t.pt")
    again = load_checkpoint(tmp_path / "t.pt")
    assert isinstance(again, TransformedClassifier) and again.config["defence"]["bits"] == 3
    assert torch.allclose(pickle.loads(pickle.dumps(again))(xf), model(xf), atol=1e-6)  # MLflow pickles the module
    assert torch.allclose(again(xf), model(xf), atol=1e-6)
    with pytest.raises(ValueError, match="qualty"):
        get_method("input_transform")(base, None, val, {"input_transform": {"kind": "jpeg", "qualty": 3}}, None)
    with pytest.raises(ValueError, match="'bit_depth', 'jpeg' or 'median'"):
        InputTransformParams(kind="blur")
