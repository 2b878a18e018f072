"""Every attack behind one interface: invariants, known answers, cross-checks against ART."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustct.attacks import (APGD, BIM, DLR_NOT_APPLICABLE, FGSM, MIM, PGD, CarliniL2, DeepFool,
                              IterativeEpsilonFGSM, Square)
from robustct.robustness import predict

EPS = [0.0, 2 / 255, 8 / 255, 0.1]

LINF = {
    "fgsm": lambda m, e, **k: FGSM(m, e, **k),
    "bim": lambda m, e, **k: BIM(m, e, steps=5, **k),
    "pgd": lambda m, e, **k: PGD(m, e, steps=5, restarts=2, seed=3, **k),
    "mim": lambda m, e, **k: MIM(m, e, steps=5, **k),
    "apgd_ce": lambda m, e, **k: APGD(m, e, steps=10, seed=3, **k),
    "square": lambda m, e, **k: Square(m, e, max_iter=20, seed=3, **k),
}
MINIMAL = {
    "cw_l2": lambda m, **k: CarliniL2(m, max_iter=20, binary_search_steps=5, learning_rate=0.05, initial_const=1.0,
                                      **k),
    "deepfool": lambda m, **k: DeepFool(m, max_iter=20, **k),
}
WHITE_BOX = ["bim", "pgd", "mim", "apgd_ce"]


def acc(model, x, y):
    return float((predict(model, x).argmax(1) == y).float().mean())


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(24, 1, 16, 16, generator=g)
    x[0] = 0.0
    x[1] = 1.0  # saturated images: clamping must hold the range
    return x, torch.randint(0, 2, (24,), generator=g)


@pytest.mark.parametrize("name", list(LINF))
def test_linf_attacks_in_range_and_ball(tiny_model, batch, name):
    x, y = batch
    for eps in EPS:
        xa = LINF[name](tiny_model, eps).perturb(x, y)
        assert xa.shape == x.shape and xa.dtype == x.dtype
        assert xa.min() >= 0 and xa.max() <= 1
        assert (xa - x).abs().max() <= eps + 1e-6
    if name in ("pgd", "apgd_ce"):  # right after the random start (zero steps taken: 1 step, tiny step size)
        a = PGD(tiny_model, 0.05, steps=1, step_size=1e-9, early_stop=False, seed=2)
        xa = a.perturb(x, y)
        assert (xa - x).abs().max() <= 0.05 + 1e-6 and (xa - x).abs().max() > 0.04 and xa.min() >= 0 and xa.max() <= 1


@pytest.mark.parametrize("name", list(LINF) + list(MINIMAL) + ["fgsm_min_eps"])
@pytest.mark.parametrize("start_training", [True, False])
def test_mode_and_bn_statistics_unchanged(tiny_model, batch, name, start_training):
    x, y = batch
    tiny_model.train(start_training)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    if name in LINF:
        LINF[name](tiny_model, 8 / 255).perturb(x, y)
    elif name in MINIMAL:
        MINIMAL[name](tiny_model).perturb(x, y)
    else:
        IterativeEpsilonFGSM(tiny_model, 0.1).perturb(x, y)
    assert all(m.training is start_training for m in tiny_model.modules())
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny_model.parameters())


@pytest.mark.parametrize("name", list(LINF))
def test_batch_size_independent_and_seeded(tiny_model, batch, name):
    x, y = batch
    full = LINF[name](tiny_model, 8 / 255).perturb(x, y)
    again = LINF[name](tiny_model, 8 / 255).perturb(x, y)
    assert torch.equal(full, again)  # fixed seed: identical
    if name == "square":  # ART gets the whole input in one call; batch_size only chunks ART's forward passes
        chunked = Square(tiny_model, 8 / 255, max_iter=20, seed=3, batch_size=5).perturb(x, y)
    else:
        chunked = LINF[name](tiny_model, 8 / 255, batch_size=5).perturb(x, y)
    assert torch.equal(predict(tiny_model, full).argmax(1), predict(tiny_model, chunked).argmax(1))
    assert ((full - chunked).abs() > 1e-5).float().mean() < 0.01


@pytest.mark.parametrize("name", ["pgd", "apgd_ce", "square"])
def test_other_seed_differs(tiny_model, batch, name):
    x, y = batch
    make = {"pgd": PGD, "apgd_ce": APGD, "square": Square}[name]
    kw = {"max_iter": 20} if name == "square" else {"steps": 2, "early_stop": False}
    a = make(tiny_model, 8 / 255, seed=0, **kw).perturb(x, y)
    b = make(tiny_model, 8 / 255, seed=1, **kw).perturb(x, y)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", list(LINF))
def test_robust_accuracy_below_clean_and_monotone(tiny_model, batch, name):
    x, y = batch
    clean = acc(tiny_model, x, y)
    accs = [acc(tiny_model, LINF[name](tiny_model, e).perturb(x, y), y) for e in EPS + [0.3]]
    assert accs[0] == pytest.approx(clean)
    assert all(a <= clean + 1e-9 for a in accs)
    assert all(b <= a + 1 / len(y) + 1e-9 for a, b in zip(accs, accs[1:]))  # Square is random: one image slack
    if name != "square":
        assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:]))
    assert accs[-1] < clean  # the attack does something


def test_iterative_at_least_as_strong_as_fgsm_and_black_box_not_stronger(tiny_model, batch):
    x, y = batch
    for e in EPS[1:]:
        fgsm = acc(tiny_model, FGSM(tiny_model, e).perturb(x, y), y)
        pgd = acc(tiny_model, LINF["pgd"](tiny_model, e).perturb(x, y), y)
        for name in WHITE_BOX:
            assert acc(tiny_model, LINF[name](tiny_model, e).perturb(x, y), y) <= fgsm + 1e-9, name
        assert acc(tiny_model, LINF["square"](tiny_model, e).perturb(x, y), y) >= pgd - 1e-9


def test_early_stop_skips_broken_samples(tiny_model, batch):
    x, y = batch
    calls = []
    hook = tiny_model.conv.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    PGD(tiny_model, 0.3, steps=5, random_start=False).perturb(x, y)
    hook.remove()
    assert max(calls) == len(x) and min(calls) < len(x)  # later steps only see the unbroken samples


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "mim", "apgd_ce"])
def test_targeted_reaches_the_target(tiny_model, batch, name):
    x, _ = batch
    target = torch.ones(len(x), dtype=torch.long)
    before = float((predict(tiny_model, x).argmax(1) == 1).float().mean())
    xa = LINF[name](tiny_model, 0.3, targeted=True).perturb(x, target)
    after = float((predict(tiny_model, xa).argmax(1) == 1).float().mean())
    assert after >= before and after > before or before == 1.0
    assert (xa - x).abs().max() <= 0.3 + 1e-6


def test_targeted_linear_known_answer():
    # logits = [0, w.x]; target 0 pushes w.x down: x moves by -eps*sign(w)
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, -0.1]]))
    model = nn.Sequential(nn.Flatten(), lin, Pad0())
    x = torch.full((1, 1, 2, 2), 0.5)
    for a in (FGSM(model, 0.1, targeted=True), BIM(model, 0.1, steps=4, early_stop=False, targeted=True)):
        np.testing.assert_allclose(a.perturb(x, torch.tensor([0])).flatten().numpy(), [0.4, 0.6, 0.4, 0.6], atol=1e-6)


class Pad0(nn.Module):
    def forward(self, z):
        return torch.cat([torch.zeros_like(z), z], 1)


def linear_model(w, b):
    lin = nn.Linear(len(w), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
        lin.bias.fill_(b)
    return nn.Sequential(nn.Flatten(), lin, Pad0())


def test_minimal_epsilon_known_answer_on_linear_model():
    # logit margin w.x + b with w = [1, -1, 1, -1]: FGSM at eps lowers it by eps * ||w||_1 = 4 eps
    model = linear_model([1.0, -1.0, 1.0, -1.0], 0.0)
    x = torch.tensor([0.5, 0.5, 0.5, 0.5]).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
    x[1] += torch.tensor([0.1, 0, 0, 0]).view(1, 2, 2)  # margin 0.1: flips above eps = 0.025
    x[2] += torch.tensor([0.3, 0, 0, 0]).view(1, 2, 2)  # margin 0.3: flips above eps = 0.075
    x[0] -= torch.tensor([0.1, 0, 0, 0]).view(1, 2, 2)  # margin -0.1: already class 0
    y = torch.ones(3, dtype=torch.long)
    e, xa = IterativeEpsilonFGSM(model, 0.2, epsilon_step=0.01).minimal_epsilon(x, y)
    np.testing.assert_allclose(e.numpy(), [0.0, 0.03, 0.08], atol=1e-9)
    assert torch.equal(xa[0], x[0])
    e2, _ = IterativeEpsilonFGSM(model, 0.05, epsilon_step=0.01).minimal_epsilon(x, y)
    assert math.isinf(float(e2[2]))


def test_minimal_epsilon_curve_matches_fixed_fgsm(tiny_model, batch):
    from robustct.robustness import curve_from_minimal

    x, y = batch
    e, _ = IterativeEpsilonFGSM(tiny_model, 40 / 255, epsilon_step=1 / 255).minimal_epsilon(x, y)
    correct = predict(tiny_model, x).argmax(1) == y
    for k in (0, 1, 2, 4, 8, 16, 40):
        fixed = acc(tiny_model, FGSM(tiny_model, k / 255).perturb(x, y), y)
        curve = curve_from_minimal(e, correct, [k / 255])[0]
        assert curve <= fixed + 1e-9  # union over smaller epsilons is at least as strong
        # equality unless some image flips at a smaller epsilon and flips back at k/255
        assert curve >= fixed - 2 / len(y)


def test_dlr_says_why_not_applicable(tiny_model):
    with pytest.raises(ValueError, match="at least 3 classes"):
        APGD(tiny_model, 8 / 255, loss="dlr")
    assert "2 classes" in DLR_NOT_APPLICABLE


def test_untargeted_only_attacks_refuse_targeted(tiny_model):
    with pytest.raises(ValueError, match="untargeted"):
        DeepFool(tiny_model, targeted=True)
    with pytest.raises(ValueError, match="untargeted"):
        Square(tiny_model, 0.1, targeted=True)


@pytest.mark.parametrize("name", list(MINIMAL))
def test_minimal_perturbation_attacks(tiny_model, batch, name):
    x, y = batch
    xa = MINIMAL[name](tiny_model).perturb(x, y)
    assert xa.min() >= 0 and xa.max() <= 1 and xa.shape == x.shape
    correct = predict(tiny_model, x).argmax(1) == y
    ok = (predict(tiny_model, xa).argmax(1) != y) & correct
    assert ok.sum() >= 0.8 * correct.sum()  # unbounded attacks break most correctly classified images
    assert torch.equal(xa, MINIMAL[name](tiny_model).perturb(x, y))  # deterministic


@pytest.mark.parametrize("name", list(MINIMAL))
def test_minimal_perturbation_batch_size_independent(tiny_model, batch, name):
    x, y = batch
    a = MINIMAL[name](tiny_model).perturb(x, y)
    b = MINIMAL[name](tiny_model, batch_size=5).perturb(x, y)
    assert torch.equal(predict(tiny_model, a).argmax(1), predict(tiny_model, b).argmax(1))
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


@pytest.mark.parametrize("name", list(MINIMAL))
def test_minimal_perturbation_known_answer_on_linear_model(name):
    # margin w.x + b = 0.1 with ||w||_2 = 2: the closest boundary point is 0.05 away in L2
    model = linear_model([1.0, -1.0, 1.0, -1.0], -0.1)
    x = torch.full((2, 1, 2, 2), 0.5)
    x[:, 0, 0, 0] += 0.2  # margin 0.2 - 0.1 = 0.1
    xa = MINIMAL[name](model).perturb(x, torch.ones(2, dtype=torch.long))
    assert (predict(model, xa).argmax(1) == 0).all()
    l2 = (xa - x).flatten(1).norm(dim=1)
    assert (l2 >= 0.05 - 1e-4).all() and (l2 <= 0.05 * 1.3).all(), l2


# ---------------------------------------------------------------- cross-checks against ART

def _art(model, shape=(1, 16, 16)):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=2,
                             clip_values=(0.0, 1.0), device_type="cpu")


def _xy(seed=6, n=40):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_bim_matches_art(tiny_model, eps):
    from art.attacks.evasion import BasicIterativeMethod

    x, y = _xy()
    ours = BIM(tiny_model, eps, steps=10, step_size=eps / 4, early_stop=False).perturb(x, y)
    theirs = BasicIterativeMethod(_art(tiny_model.eval()), eps=eps, eps_step=eps / 4, max_iter=10, batch_size=64,
                                  verbose=False).generate(x.numpy(), y=np.eye(2)[y.numpy()])
    assert abs(acc(tiny_model, ours, y) - acc(tiny_model, torch.from_numpy(theirs), y)) * len(y) <= 1
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_mim_matches_art(tiny_model, eps):
    from art.attacks.evasion import MomentumIterativeMethod

    x, y = _xy(7)
    ours = MIM(tiny_model, eps, steps=10, step_size=eps / 10, decay=1.0).perturb(x, y)
    theirs = MomentumIterativeMethod(_art(tiny_model.eval()), eps=eps, eps_step=eps / 10, max_iter=10, decay=1.0,
                                     batch_size=64, verbose=False).generate(x.numpy(), y=np.eye(2)[y.numpy()])
    assert abs(acc(tiny_model, ours, y) - acc(tiny_model, torch.from_numpy(theirs), y)) * len(y) <= 1


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_apgd_ce_matches_art(tiny_model, eps):
    from art.attacks.evasion import AutoProjectedGradientDescent

    x, y = _xy(8)
    ours = APGD(tiny_model, eps, steps=20, random_start=False).perturb(x, y)
    theirs = AutoProjectedGradientDescent(_art(tiny_model.eval()), norm=np.inf, eps=eps, eps_step=2 * eps,
                                          max_iter=20, targeted=False, nb_random_init=1, batch_size=64,
                                          loss_type="cross_entropy", verbose=False).generate(
        x.numpy(), y=np.eye(2)[y.numpy()])
    assert abs(acc(tiny_model, ours, y) - acc(tiny_model, torch.from_numpy(theirs), y)) * len(y) <= 1


@pytest.mark.parametrize("eps", [8 / 255])
def test_targeted_pgd_matches_art(tiny_model, eps):
    from art.attacks.evasion import ProjectedGradientDescent

    x, _ = _xy(9)
    t = torch.ones(len(x), dtype=torch.long)
    ours = PGD(tiny_model, eps, steps=10, step_size=eps / 4, random_start=False, targeted=True).perturb(x, t)
    theirs = ProjectedGradientDescent(_art(tiny_model.eval()), norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=10,
                                      targeted=True, num_random_init=0, batch_size=64, verbose=False).generate(
        x.numpy(), y=np.eye(2)[t.numpy()])
    hit = lambda xa: int((predict(tiny_model, xa).argmax(1) == 1).sum())  # noqa: E731
    assert abs(hit(ours) - hit(torch.from_numpy(theirs))) <= 1
