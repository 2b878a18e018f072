"""Clean-training options of fit: discriminative learning rate and label smoothing (defaults unchanged)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustct.train import SmoothedObjective, backbone_head_param_groups, fit, train_one_epoch


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x)))


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 4, 4, generator=g), torch.randint(0, 2, (16,), generator=g)


def test_backbone_frozen_by_zero_backbone_lr_and_head_moves():
    m = Net()
    before_f, before_h = m.features[1].weight.clone(), m.fc.weight.clone()
    x, y = batch()
    fit(m, (x, y), (x, y), epochs=1, lr=1e-2, batch_size=8, seed=0,
        param_groups=backbone_head_param_groups(m, 1e-2, 0.0))
    assert backbone_head_param_groups(m, 1e-2, None) is None
    assert torch.equal(m.features[1].weight, before_f) and not torch.equal(m.fc.weight, before_h)


def test_label_smoothing_is_the_smoothed_cross_entropy():
    x, y = batch()
    losses = {}
    for ls in (0.0, 0.2):
        m = Net()
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the reported loss is the loss at the start
        with torch.no_grad():
            expected = F.cross_entropy(m(x), y, label_smoothing=ls)
        losses[ls] = train_one_epoch(m, x, y, opt, 16, torch.Generator().manual_seed(0),
                                     objective=SmoothedObjective(ls))["loss"]
        assert abs(losses[ls] - float(expected)) < 1e-6
    assert losses[0.2] != losses[0.0]


def test_fit_with_ema_returns_the_averaged_weights():
    from robustct.train import WeightEMA

    x, y = batch()
    m = Net()
    ema = WeightEMA(m, 0.9)
    trained, _ = fit(m, (x, y), (x, y), epochs=2, lr=1e-1, batch_size=4, seed=0, ema=ema, progress=None)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), ema.model.state_dict().values()))
    raw = Net()
    fit(raw, (x, y), (x, y), epochs=2, lr=1e-1, batch_size=4, seed=0, progress=None)
    assert not torch.equal(raw.fc.weight, trained.fc.weight)


def test_checkpoint_last_keeps_the_last_epoch_and_best_val_may_not():
    x, y = batch()
    histories = {}
    for select in ("robust", "last"):  # no val attack: "robust" selects on validation accuracy
        _, histories[select] = fit(Net(), (x, y), (x[:6], y[:6]), epochs=4, lr=0.5, batch_size=4, seed=0,
                                   select=select, progress=None)
    assert [h["epoch"] for h in histories["last"] if h.get("selected")][-1] == 4
    assert all(h.get("selected") for h in histories["last"])
    best = [h for h in histories["robust"] if h.get("selected")][-1]
    assert best["val_accuracy"] == max(h["val_accuracy"] for h in histories["robust"])
