import torch

from robustct.attacks import PGD
from robustct.train import fit, make_augment, train_one_epoch

from conftest import TinyNet


def data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.4  # learnable: brighter = class 1
    return x, y


def test_same_seed_same_model_and_learns():
    runs = []
    for _ in range(2):
        model = TinyNet(seed=0)
        trained, history = fit(model, data(), data(24, 1), epochs=3, lr=1e-2, batch_size=16, seed=5,
                               augment=make_augment({"hflip": True}))
        runs.append((trained.state_dict(), history))
    (a, ha), (b, hb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ha == hb
    assert max(h["val_accuracy"] for h in ha) >= 0.9
    assert sum(bool(h.get("selected")) for h in ha) >= 1


def test_bn_eval_keeps_running_statistics():
    model = TinyNet()
    before = model.bn.running_mean.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, *data(), opt, 16, torch.Generator().manual_seed(0), bn_eval=True)
    assert torch.equal(model.bn.running_mean, before)
    train_one_epoch(model, *data(), opt, 16, torch.Generator().manual_seed(0), bn_eval=False)
    assert not torch.equal(model.bn.running_mean, before)


def test_adversarial_training_restores_epsilon_and_selects_on_robust_accuracy():
    model = TinyNet(seed=1)
    adv = PGD(model, 8 / 255, steps=2, early_stop=False)
    val_attack = PGD(model, 8 / 255, steps=3)
    _, history = fit(model, data(), data(24, 1), epochs=3, lr=1e-2, batch_size=16, seed=0, adversary=adv,
                     val_attack=val_attack, epsilon_warmup=2, adv_weight=0.5, select="mean")
    assert adv.epsilon == 8 / 255 and adv.step_size == 2.5 * (8 / 255) / 2
    assert all(0 <= h["val_robust_accuracy"] <= 1 for h in history)
    best = max(history, key=lambda h: ((h["val_robust_accuracy"] + h["val_accuracy"]) / 2, h["val_accuracy"],
                                       -h["val_loss"]))
    assert [h["epoch"] for h in history if h.get("selected")][-1] == best["epoch"]
