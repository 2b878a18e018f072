"""Adversarial training: TRADES loss, EMA, fresh random starts, collapse veto, resize invariant,
catastrophic-overfitting detector, dual BatchNorm, discriminative learning rates, progress lines."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustct.attacks import PGD
from robustct.defences import get_method
from robustct.defences.adversarial import (CatastrophicOverfittingDetector, Teacher, TradesAdversary, bn_route,
                                           distillation_loss, merge_batchnorm, split_batchnorm, trades_loss)
from robustct.backbones import BACKBONES
from robustct.models import InputResize, WeightsUnavailableError, build_model
from robustct.train import (EpochProgress, Objective, WeightEMA, collapse_reasons, discriminative_param_groups,
                            fit)

from conftest import TinyNet


def data(n=48, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.4
    return x, y


# -- TRADES ------------------------------------------------------------------------------------------------

def test_trades_loss_identical_distributions_is_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.7]])
    y = torch.tensor([0, 1])
    ce = nn.functional.cross_entropy(logits, y)
    assert torch.allclose(trades_loss(logits, logits.clone(), y, beta=6.0), ce, atol=1e-7)


def test_trades_loss_hand_computed():
    # p_clean = (1/2, 1/2), p_adv = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3); CE(y=0) = ln 2
    clean = torch.tensor([[0.0, 0.0]])
    adv = torch.tensor([[0.0, math.log(3.0)]])
    got = trades_loss(clean, adv, torch.tensor([0]), beta=2.0)
    assert got.item() == pytest.approx(math.log(2) + 2.0 * 0.5 * math.log(4 / 3), abs=1e-6)


def test_trades_loss_natural_term_replaces_cross_entropy():
    clean, adv, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([0])
    got = trades_loss(clean, adv, y, beta=2.0, natural=torch.tensor(0.25))
    assert got.item() == pytest.approx(0.25 + 2.0 * 0.5 * math.log(4 / 3), abs=1e-6)


# -- distillation (Hinton et al. 2015; ARD, Goldblum et al. 2020) -----------------------------------------------

def test_distillation_loss_known_answers():
    student, teacher, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([1])
    ce = math.log(2)  # p = (1/2, 1/2)
    assert distillation_loss(student, y, None, 0.0).item() == pytest.approx(ce, abs=1e-6)
    # q = (3/4, 1/4): KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2)
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert distillation_loss(student, y, teacher, 1.0).item() == pytest.approx(kl1, abs=1e-6)
    assert distillation_loss(student, y, teacher, 0.5).item() == pytest.approx(0.5 * ce + 0.5 * kl1, abs=1e-6)
    # T = 2: q_T = (sqrt3, 1) / (1 + sqrt3), p_T = (1/2, 1/2), scaled by T^2 = 4
    a = math.sqrt(3) / (1 + math.sqrt(3))
    kl2 = a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))
    assert distillation_loss(student, y, teacher, 1.0, 2.0).item() == pytest.approx(4 * kl2, abs=1e-6)
    # a student equal to its teacher pays only the (1 - w) cross-entropy
    assert distillation_loss(teacher, y, teacher.clone(), 0.3).item() == pytest.approx(
        0.7 * nn.functional.cross_entropy(teacher, y).item(), abs=1e-6)
    with pytest.raises(ValueError, match="needs teacher logits"):
        distillation_loss(student, y, None, 0.5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        distillation_loss(student, y, teacher, 1.5)


def test_teacher_is_frozen_and_off_at_weight_zero():
    t = Teacher(TinyNet(), 0.5)
    assert all(not p.requires_grad for p in t.model.parameters()) and not t.model.training
    assert t.logits(torch.rand(3, 1, 16, 16)).shape == (3, 2)
    assert Teacher(TinyNet(), 0.0).logits(torch.rand(3, 1, 16, 16)) is None
    with pytest.raises(ValueError, match="needs a teacher"):
        Teacher(None, 0.5)


@pytest.mark.parametrize("method", ["trades", "pgd_at"])
def test_distillation_changes_training_and_leaves_the_teacher_untouched(method):
    base = build_model("small_cnn", "none", image_size=16, dropout=0.0)
    flags, before = [p.requires_grad for p in base.parameters()], [v.clone() for v in base.state_dict().values()]
    cfg = {"epsilon": "2/255", "steps": 1, "epochs": 2, "batch_size": 16, "seed": 0, "init": "new",
           "prefit_epochs": 1, "ema_decay": 0.0, "val_steps": 1, "lr": 1e-2, "batchnorm": "dual",
           "threshold": "0.5"}
    plain, _ = get_method(method)(base, data(), data(24, 1), cfg, None)
    distilled, hist = get_method(method)(base, data(), data(24, 1), {**cfg, "distill": {"weight": 1.0}}, None)
    assert not all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), distilled.state_dict().values()))
    assert [h["phase"] for h in hist] == ["prefit", method, method]
    assert [p.requires_grad for p in base.parameters()] == flags  # the teacher is a frozen copy
    assert all(torch.equal(a, b) for a, b in zip(before, base.state_dict().values()))


# -- EMA ---------------------------------------------------------------------------------------------------

def test_ema_update_known_answer():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = WeightEMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # 0.9 * 1 + 0.1 * 3
    assert ema.model.weight.item() == pytest.approx(1.2)
    ema.update(model)  # 0.9 * 1.2 + 0.1 * 3
    assert ema.model.weight.item() == pytest.approx(1.38)
    assert model.weight.item() == 3.0


def test_ema_warmup_uses_smaller_decay_first():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.99, warmup=True)
    with torch.no_grad():
        model.weight.fill_(10.0)
    ema.update(model)  # d = min(0.99, 1/10) = 0.1 -> 0.1 * 0 + 0.9 * 10
    assert ema.model.weight.item() == pytest.approx(9.0)


# -- random starts -----------------------------------------------------------------------------------------

def test_training_attack_fresh_start_per_batch_reproducible_per_seed(tiny_model, tiny_batch):
    x, y = tiny_batch
    runs = []
    for _ in range(2):
        adv = PGD(tiny_model, 8 / 255, steps=1, step_size=1e-6, early_stop=False,
                  generator=torch.Generator().manual_seed(7))
        runs.append([adv.perturb(x, y) for _ in range(3)])
    first, second = runs
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])  # fresh per batch
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # same seed, same sequence
    other = PGD(tiny_model, 8 / 255, steps=1, step_size=1e-6, early_stop=False,
                generator=torch.Generator().manual_seed(8)).perturb(x, y)
    assert not torch.equal(other, first[0])


def test_trades_adversary_fresh_start_per_batch_reproducible_per_seed(tiny_model, tiny_batch):
    x, _ = tiny_batch
    outs = [[TradesAdversary(tiny_model, 8 / 255, 0, 0.0, gen).perturb(x) for _ in range(2)]
            for gen in (torch.Generator().manual_seed(3), torch.Generator().manual_seed(3))]
    assert not torch.equal(outs[0][0], outs[0][1])
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert (outs[0][0] - x).abs().max() <= 8 / 255 + 1e-7


def test_evaluation_attack_is_deterministic(tiny_model, tiny_batch):
    x, y = tiny_batch
    adv = PGD(tiny_model, 8 / 255, steps=3, restarts=2)
    assert torch.equal(adv.perturb(x, y), adv.perturb(x, y))


# -- collapse veto -----------------------------------------------------------------------------------------

def test_collapse_reasons_constant_and_useless_classifiers():
    y = np.array([0, 1] * 20)
    assert collapse_reasons(y, np.full(40, 0.9))  # always COVID
    assert collapse_reasons(y, np.full(40, 0.1))  # never COVID
    rng = np.random.default_rng(0)
    assert any("AUC" in r for r in collapse_reasons(y, 1 - (0.2 + 0.6 * y + rng.uniform(-.1, .1, 40))))  # inverted
    assert collapse_reasons(y, 0.2 + 0.6 * y + rng.uniform(-.1, .1, 40)) == []


class _Switchable(nn.Module):
    """A good linear classifier that a flag turns into a constant 'always COVID' one."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.constant = False

    def forward(self, x):
        s = (x.flatten(1).mean(1) - 0.45) * 40 + 0 * self.dummy
        if self.constant:
            s = torch.full_like(s, 5.0) + 0 * x.flatten(1).mean(1) + 0 * self.dummy
        return torch.stack([-s, s], 1)


class _ConstantAtEpoch2(Objective):
    def __init__(self, model):
        self.model = model

    def begin_epoch(self, epoch):
        self.model.constant = epoch == 2
        return {}

    def loss(self, model, xb, yb):
        logits = model(xb)
        return 0 * model.dummy.sum() + 0 * logits.sum(), logits


def test_collapse_veto_rejects_constant_classifier():
    y = torch.tensor([1] * 20 + [0] * 4)
    x = (0.2 + 0.5 * y).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    results = {}
    for veto in (False, True):
        model = _Switchable()
        attack = PGD(model, 0.5, steps=5)  # breaks the good classifier, cannot move a constant one
        _, history = fit(model, (x, y), (x, y), epochs=3, lr=1e-3, batch_size=8, seed=0, val_attack=attack,
                         objective=_ConstantAtEpoch2(model), veto=veto, progress=False)
        results[veto] = history
    no_veto, with_veto = results[False], results[True]
    assert no_veto[1]["val_robust_accuracy"] == pytest.approx(20 / 24)  # constant: majority class "robust"
    assert no_veto[1].get("selected") and not no_veto[2].get("selected")
    assert with_veto[1]["collapsed"] and not with_veto[1].get("selected")
    assert with_veto[0].get("selected")


# -- resolution lever --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["area", "bilinear"])
@pytest.mark.parametrize("size", [64, 96, 37])
def test_resize_inside_model_cannot_enlarge_linf_perturbation(mode, size):
    g = torch.Generator().manual_seed(size)
    x = torch.rand(4, 1, 160, 160, generator=g)
    eps = 2 / 255
    d = eps * torch.sign(torch.randn(4, 1, 160, 160, generator=g))  # extreme corners of the ball
    r = InputResize(size, mode)
    out = r(x + d) - r(x)
    assert out.shape == (4, 1, size, size)
    assert out.abs().max().item() <= eps + 1e-6
    const = r(x + eps) - r(x)  # a constant shift passes unchanged: the bound is tight
    assert torch.allclose(const, torch.full_like(const, eps), atol=1e-6)


def test_resize_rejects_negative_weight_interpolation():
    with pytest.raises(ValueError, match="non-negative"):
        InputResize(64, "bicubic")


@pytest.mark.parametrize("name,width", [("small_cnn_bn_wide", 256), ("small_cnn_bn_deep", 256)])
def test_small_cnn_variants_registered(name, width):
    m = build_model(name, "none", image_size=64, dropout=0.0, freeze_backbone=False)
    assert name in BACKBONES and m.fc.in_features == width
    assert m(torch.rand(2, 1, 64, 64)).shape == (2, 2)


def test_small_cnn_registered_and_takes_full_size_input():
    assert "small_cnn" in BACKBONES
    model = build_model("small_cnn", "none", image_size=32, dropout=0.0, freeze_backbone=False, resize_to=16)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with pytest.raises(WeightsUnavailableError):
        build_model("small_cnn", "imagenet", 32)


# -- catastrophic overfitting ------------------------------------------------------------------------------

def test_catastrophic_overfitting_detector_fires_on_collapse_only():
    det = CatastrophicOverfittingDetector(drop=0.2)
    fired = [det.update(a) for a in (0.30, 0.40, 0.35, 0.45, 0.20, 0.02)]
    assert fired == [False, False, False, False, True, True]


def test_fit_stops_and_never_selects_the_stopping_epoch():
    x, y = data()
    calls = []

    def hook(model, epoch, row):
        calls.append(epoch)
        return epoch == 2

    model = TinyNet(seed=0)
    _, history = fit(model, (x, y), data(24, 1), epochs=5, lr=1e-2, batch_size=16, seed=0, epoch_end=hook,
                     progress=False)
    assert calls == [1, 2] and len(history) == 2 and not history[1].get("selected")


# -- dual BatchNorm, learning rates, progress --------------------------------------------------------------

def test_dual_batchnorm_keeps_clean_statistics_for_adversarial_batches():
    model = TinyNet()
    assert split_batchnorm(model) == 1
    before = model.bn.clean.running_mean.clone()
    model.train()
    with bn_route(model, "adv"):
        model(torch.rand(8, 1, 16, 16) + 1.0)
    assert torch.equal(model.bn.clean.running_mean, before)
    assert not torch.equal(model.bn.adv.running_mean, before)
    assert model.bn.route == "clean"
    merge_batchnorm(model)
    assert isinstance(model.bn, nn.BatchNorm2d) and torch.equal(model.bn.running_mean, before)


def test_discriminative_learning_rates():
    model = build_model("small_cnn", "none", image_size=16, freeze_backbone=False)
    groups = discriminative_param_groups(model, 1e-3, 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert groups[0]["params"] == list(model.fc.parameters())


def test_progress_lines_are_bounded_and_show_time_left():
    lines = []
    report = EpochProgress(100, label="t", max_lines=10, write=lines.append)
    row = {"train_loss": 0.5, "train_accuracy": 0.7, "val_accuracy": 0.6, "val_auc": 0.65}
    for e in range(1, 101):
        report(e, row)
    assert 10 <= len(lines) <= 11 and all("left" in ln for ln in lines)
    assert lines[0].startswith("[t] epoch 1/100") and "0s left" in lines[-1]
    refit = []
    EpochProgress(1, write=refit.append, val_label="val (in-sample)")(1, row)
    assert "| val (in-sample) acc 0.600 auc 0.650" in refit[0]


# -- methods end to end (tiny) -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pgd_at", "trades", "fast_at"])
def test_methods_train_reproducibly_without_collapse_flag_errors(method):
    base = build_model("small_cnn", "none", image_size=16, dropout=0.0)
    cfg = {"epsilon": "8/255", "steps": 2, "epsilon_warmup": 2, "epochs": 2, "batch_size": 16, "seed": 0,
           "init": "new", "prefit_epochs": 1, "ema_decay": 0.9, "val_steps": 2, "lr": 1e-2,
           "batchnorm": "dual", "threshold": "0.5", "co_check_images": 8}
    runs = [get_method(method)(base, data(), data(24, 1), cfg, None) for _ in range(2)]
    (m1, h1), (m2, h2) = runs
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert [h["phase"] for h in h1] == ["prefit", method, method]
    assert [h["epoch"] for h in h1] == [1, 2, 3]
    assert h1[1]["train_epsilon"] == pytest.approx(4 / 255) and h1[2]["train_epsilon"] == pytest.approx(8 / 255)
    if method == "fast_at":
        assert "co_check_pgd_accuracy" in h1[1]
