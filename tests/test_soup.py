"""Uniform model soup (robustct.train.uniform_soup) and the train stage's ``train.soup_size``."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustct.train import uniform_soup


class BNNet(nn.Module):
    """conv -> BN (trains) -> BN (frozen: stays in eval mode under train()) -> linear."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.frozen_bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def train(self, mode=True):
        super().train(mode)
        self.frozen_bn.eval()
        return self

    def forward(self, x):
        h = self.frozen_bn(self.bn(self.conv(x)))
        return self.fc(h.mean((2, 3)))


def test_soup_is_the_mean_of_every_float_weight_and_leaves_members_alone():
    a, b = BNNet(0), BNNet(1)
    with torch.no_grad():
        a.bn.running_mean.fill_(1.0), b.bn.running_mean.fill_(3.0)
    a.bn.num_batches_tracked.fill_(7), b.bn.num_batches_tracked.fill_(9)
    before = copy.deepcopy(a.state_dict())
    soup = uniform_soup([a, b])
    assert torch.allclose(soup.conv.weight, (a.conv.weight + b.conv.weight) / 2)
    assert torch.allclose(soup.fc.bias, (a.fc.bias + b.fc.bias) / 2)
    assert torch.equal(soup.bn.running_mean, torch.full((3,), 2.0))  # averaged, no images given
    assert int(soup.bn.num_batches_tracked) == 7  # integer buffers: the first member's
    assert not soup.training and soup is not a
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in before.items())
    one = uniform_soup([b])  # a soup of one is that model
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in one.state_dict().items())


def test_soup_of_linear_models_predicts_the_mean_logits():
    """For models linear in their weights (no hidden layer) the soup's logits are the members' mean logits."""
    ms = [nn.Linear(5, 2) for _ in range(3)]
    x = torch.randn(4, 5)
    soup = uniform_soup(ms)
    assert torch.allclose(soup(x), torch.stack([m(x) for m in ms]).mean(0), atol=1e-6)


def test_batchnorm_statistics_reestimated_for_layers_that_train_only():
    a, b = BNNet(0), BNNet(1)
    with torch.no_grad():
        a.frozen_bn.running_mean.fill_(5.0), b.frozen_bn.running_mean.fill_(5.0)
    x = torch.rand(10, 1, 6, 6)
    soup = uniform_soup([a, b], bn_images=(x * 255).round().to(torch.uint8), batch_size=3)  # uneven batches
    with torch.no_grad():
        h = soup.conv((x * 255).round() / 255)  # uint8 images are read as [0, 1]
    assert torch.allclose(soup.bn.running_mean, h.mean((0, 2, 3)), atol=1e-6)  # the mean over all 10 images
    sizes, var = [3, 3, 3, 1], [h[i:i + 3].var((0, 2, 3)) for i in range(0, 10, 3)]
    assert torch.allclose(soup.bn.running_var, sum(n * v for n, v in zip(sizes, var)) / 10, atol=1e-6)
    assert soup.bn.momentum == 0.1  # restored
    assert torch.equal(soup.frozen_bn.running_mean, torch.full((3,), 5.0))  # frozen layer untouched
    assert not soup.training


def test_soup_refuses_members_of_different_architectures():
    with pytest.raises(ValueError, match="at least one"):
        uniform_soup([])
    with pytest.raises(ValueError, match="member 1"):
        uniform_soup([nn.Linear(5, 2), nn.Linear(4, 2)])


@pytest.mark.parametrize("soup_bn", ["average", "reestimate"])
def test_train_stage_soup_trains_members_from_one_init_with_seeds_and_saves_their_soup(tmp_path, monkeypatch, soup_bn):
    import yaml
    from test_crossval import _tiny_split

    from conftest import REPO
    from robustct.models import load_checkpoint
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    calls, real_fit = [], train_stage.fit

    def spy(model, train, val, **kw):
        init = copy.deepcopy(model.state_dict())
        trained, hist = real_fit(model, train, val, **kw)
        calls.append({"seed": kw["seed"], "init": init, "model": copy.deepcopy(trained), "label": kw["progress"].label})
        return trained, hist

    monkeypatch.setattr(train_stage, "fit", spy)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=8, soup_size=2,
                           soup_bn=soup_bn)
    train_stage.run(params, root, split_dir, tmp_path / "train", track=False)
    assert [c["seed"] for c in calls] == [0, 1]
    assert [c["label"] for c in calls] == ["fit, soup member 1/2", "fit, soup member 2/2"]
    assert all(torch.equal(v, calls[1]["init"][k]) for k, v in calls[0]["init"].items())  # one initialisation
    fc = [c["model"].fc.weight for c in calls]
    assert not torch.equal(*fc)  # the seeds gave different members
    saved = load_checkpoint(tmp_path / "train" / "model.pt")
    assert torch.allclose(saved.fc.weight, (fc[0] + fc[1]) / 2)  # the saved model is their soup
    bn = [dict(c["model"].named_buffers())["features.1.running_mean"] for c in calls]
    averaged = torch.allclose(dict(saved.named_buffers())["features.1.running_mean"], (bn[0] + bn[1]) / 2)
    assert averaged == (soup_bn == "average")  # reestimate: recomputed on the training images
