"""Attack invariants, known answers, and cross-checks against ART."""
import numpy as np
import pytest
import torch
from torch import nn

from robustct.attacks import FGSM, PGD, eval_mode, project_linf
from robustct.robustness import attack_sweep, fgsm_sweep, predict

EPS = [0.0, 1 / 255, 4 / 255, 16 / 255, 0.1]


def accuracy(model, x, y):
    return float((predict(model, x).argmax(1) == y).float().mean())


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make", [lambda m, e: FGSM(m, e), lambda m, e: PGD(m, e, steps=5, seed=0),
                                  lambda m, e: PGD(m, e, steps=3, restarts=3, early_stop=False, seed=1)])
def test_inside_ball_and_valid_range(tiny_model, tiny_batch, make):
    x, y = tiny_batch
    x = x.clone()
    x[0] = 0.0
    x[1] = 1.0  # saturated images: clamping must hold the range
    for eps in EPS:
        xa = make(tiny_model, eps).perturb(x, y)
        assert xa.shape == x.shape and xa.dtype == x.dtype
        assert xa.min() >= 0 and xa.max() <= 1
        assert (xa - x).abs().max() <= eps + 1e-6


def test_random_start_is_inside_ball():
    x = torch.rand(50, 1, 8, 8)
    start = project_linf(x + 0.3 * (torch.rand_like(x) * 2 - 1), x, 0.1)
    assert (start - x).abs().max() <= 0.1 + 1e-7 and start.min() >= 0 and start.max() <= 1


@pytest.mark.parametrize("attack_cls", [FGSM, PGD])
@pytest.mark.parametrize("start_training", [True, False])
def test_mode_bn_stats_and_grads_unchanged(tiny_model, tiny_batch, attack_cls, start_training):
    x, y = tiny_batch
    tiny_model.train(start_training)
    before = state(tiny_model)
    attack_cls(tiny_model, 8 / 255).perturb(x, y)
    assert tiny_model.training is start_training
    assert all(m.training is start_training for m in tiny_model.modules())
    after = state(tiny_model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny_model.parameters())


def test_eval_mode_restores_mixed_modes(tiny_model):
    tiny_model.train()
    tiny_model.bn.eval()
    with eval_mode(tiny_model):
        assert not any(m.training for m in tiny_model.modules())
    assert tiny_model.training and not tiny_model.bn.training and tiny_model.conv.training


def test_fgsm_known_answer_on_linear_model():
    # logits = [0, w.x]; for y=1 the loss decreases in w.x, so FGSM moves x by -eps*sign(w)
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, -0.1]]))
    model = nn.Sequential(nn.Flatten(), lin, Pad0())
    x = torch.full((1, 1, 2, 2), 0.5)
    xa = FGSM(model, 0.1).perturb(x, torch.tensor([1]))
    np.testing.assert_allclose(xa.flatten().numpy(), [0.4, 0.6, 0.4, 0.6], atol=1e-6)


class Pad0(nn.Module):
    def forward(self, z):
        return torch.cat([torch.zeros_like(z), z], 1)


def test_fgsm_sweep_reuses_one_gradient_and_matches_per_epsilon(tiny_model, tiny_batch):
    x, y = tiny_batch
    points, examples = fgsm_sweep(tiny_model, x, y, EPS, batch_size=5, keep=3)
    for p in points:
        xa = FGSM(tiny_model, p["epsilon"]).perturb(x, y)
        assert p["robust_accuracy"] == pytest.approx(accuracy(tiny_model, xa, y))
        assert torch.allclose(examples[p["epsilon"]], xa[:3])
    assert points[0]["robust_accuracy"] == pytest.approx(accuracy(tiny_model, x, y))


def test_pgd_not_weaker_than_fgsm_and_monotone(tiny_model, tiny_batch):
    x, y = tiny_batch
    fgsm, _ = fgsm_sweep(tiny_model, x, y, EPS)
    pgd = attack_sweep(tiny_model, x, y, "pgd", lambda e: PGD(tiny_model, e, steps=10, seed=0), EPS)
    clean = accuracy(tiny_model, x, y)
    accs = [p["robust_accuracy"] for p in pgd]
    assert all(a <= clean for a in accs)
    assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:]))
    assert all(p["robust_accuracy"] <= f["robust_accuracy"] + 1e-9 for p, f in zip(pgd, fgsm))


def test_success_rate_and_norms(tiny_model, tiny_batch):
    x, y = tiny_batch
    p = attack_sweep(tiny_model, x, y, "pgd", lambda e: PGD(tiny_model, e, steps=5), [8 / 255])[0]
    clean_correct = (predict(tiny_model, x).argmax(1) == y)
    broken = p["clean_accuracy"] - p["robust_accuracy"]
    assert p["attack_success_rate"] == pytest.approx(broken * len(y) / int(clean_correct.sum()))
    assert 0 < p["mean_linf"] <= 8 / 255 + 1e-6
    assert p["mean_l2"] <= 8 / 255 * np.sqrt(16 * 16) + 1e-6


def test_fixed_seed_is_deterministic(tiny_model, tiny_batch):
    x, y = tiny_batch
    a = PGD(tiny_model, 4 / 255, steps=3, seed=7).perturb(x, y)
    b = PGD(tiny_model, 4 / 255, steps=3, seed=7).perturb(x, y)
    assert torch.equal(a, b)


def test_epsilon_out_of_range():
    with pytest.raises(ValueError, match="use e.g. 2/255"):
        FGSM(nn.Identity(), 8)


def _art(model, shape):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=2,
                             clip_values=(0.0, 1.0), device_type="cpu")


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255, 0.05])
def test_fgsm_matches_art(tiny_model, eps):
    from art.attacks.evasion import FastGradientMethod

    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(40, 1, 16, 16, generator=g), torch.randint(0, 2, (40,), generator=g)
    ours = FGSM(tiny_model, eps).perturb(x, y)
    theirs = FastGradientMethod(_art(tiny_model.eval(), (1, 16, 16)), eps=eps, batch_size=64).generate(
        x.numpy(), y=np.eye(2)[y.numpy()])
    assert abs(accuracy(tiny_model, ours, y) * 40 - accuracy(tiny_model, torch.from_numpy(theirs), y) * 40) <= 1
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_pgd_matches_art(tiny_model, eps):
    from art.attacks.evasion import ProjectedGradientDescent

    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(40, 1, 16, 16, generator=g), torch.randint(0, 2, (40,), generator=g)
    ours = PGD(tiny_model, eps, steps=10, step_size=eps / 4, random_start=False).perturb(x, y)
    theirs = ProjectedGradientDescent(_art(tiny_model.eval(), (1, 16, 16)), norm=np.inf, eps=eps, eps_step=eps / 4,
                                      max_iter=10, num_random_init=0, batch_size=64, verbose=False).generate(
        x.numpy(), y=np.eye(2)[y.numpy()])
    a, b = accuracy(tiny_model, ours, y), accuracy(tiny_model, torch.from_numpy(theirs), y)
    assert abs(a - b) * 40 <= 1
