"""Worst-case robust accuracy over an attack cascade (robustness.worst_case)."""
import pytest
import torch
from torch import nn

from robustct.attacks import BIM, FGSM
from robustct.robustness import attack_sweep, predict, threat_model_violation, worst_case


class Threshold(nn.Module):
    """Logits (0, x.mean() - 0.5): class 1 iff the mean pixel is above 0.5."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True) * self.w - 0.5
        return torch.cat([torch.zeros_like(m), m], 1)


class Scripted:
    """A fake fixed-budget attack that breaks exactly the images whose index it is told, within epsilon."""

    def __init__(self, breaks: set, index: torch.Tensor, eps: float, name: str):
        self.breaks, self.index, self.epsilon, self.name = breaks, index, eps, name
        self.seen = []

    def perturb(self, x, y):
        self.seen.append(len(x))
        ids = self.index_of(x)
        out = x.clone()
        for i, k in enumerate(ids):
            if k in self.breaks:  # push the mean across 0.5 by epsilon
                out[i] = (x[i] + (self.epsilon if y[i] == 0 else -self.epsilon)).clamp(0, 1)
        return out

    def index_of(self, x):
        return [int(torch.argmin((self.index - v[0, 0, 0]).abs())) for v in x]

    def config(self):
        return {"attack": self.name}


def test_cascade_known_answer():
    # image k has all pixels at 0.5 +/- small, labelled by the model's clean prediction, except image 3 (wrong)
    base = torch.tensor([0.40, 0.60, 0.45, 0.505, 0.42, 0.58])
    x = base.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    y = torch.tensor([0, 1, 0, 0, 0, 1])  # image 3 is clean-misclassified (mean 0.505 -> class 1)
    model = Threshold()
    made = {}

    def make(name, e):
        made[name] = Scripted({"a": {0, 1}, "b": {1, 2}}[name], base, e, name)
        return made[name]

    pts, robust = worst_case(model, x, y, ["a", "b"], make, [0.2])
    p = pts[0]
    assert p["clean_accuracy"] == pytest.approx(5 / 6)
    assert robust[0].tolist() == [False, False, False, False, True, True]
    assert p["robust_accuracy"] == pytest.approx(2 / 6)
    assert p["broken_by"] == {"a": 2, "b": 1} and p["attacked"] == {"a": 5, "b": 3}
    assert made["b"].seen == [3]  # the later attack ran only on the images still robust
    assert p["robust_after"] == {"a": pytest.approx(3 / 6), "b": pytest.approx(2 / 6)}


def test_cascade_equals_per_image_minimum_of_independent_runs(tiny_model):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 16, 16, generator=g)
    y = predict(tiny_model, x).argmax(1)
    y[:4] = 1 - y[:4]  # some clean errors
    eps = [1 / 255, 4 / 255]
    makers = {"fgsm": lambda e: FGSM(tiny_model, e), "bim": lambda e: BIM(tiny_model, e, steps=5)}
    pts, robust = worst_case(tiny_model, x, y, ["fgsm", "bim"], lambda n, e: makers[n](e), eps)
    for k, e in enumerate(eps):
        indep = torch.ones(len(y), dtype=torch.bool) & (predict(tiny_model, x).argmax(1) == y)
        for n, mk in makers.items():
            out = {}
            attack_sweep(tiny_model, x, y, n, mk, [e], adv_out=out)
            indep &= predict(tiny_model, out[e]).argmax(1) == y
        assert robust[k].tolist() == indep.tolist()
        assert pts[k]["robust_accuracy"] == pytest.approx(float(indep.float().mean()))
    assert pts[0]["robust_accuracy"] >= pts[1]["robust_accuracy"]


def test_reused_full_set_results_are_not_rerun():
    x = torch.full((4, 1, 2, 2), 0.4)
    y = torch.zeros(4, dtype=torch.long)

    def make(name, e):
        raise AssertionError("should have been reused")

    known = {"a": {0.1: torch.tensor([1, 0, 0, 0])}}
    pts, robust = worst_case(Threshold(), x, y, ["a"], make, [0.1], known=known)
    assert robust[0].tolist() == [False, True, True, True] and pts[0]["broken_by"] == {"a": 1}


def test_threat_model_is_enforced():
    x = torch.full((2, 1, 2, 2), 0.5)
    assert threat_model_violation(x, x + 0.01, 0.01) is None
    assert "exceeds epsilon" in threat_model_violation(x, x + 0.02, 0.01)
    assert "outside [0, 1]" in threat_model_violation(x * 0 + 1, x * 0 + 1.001, 0.01)

    class Cheater(Scripted):
        def perturb(self, x, y):
            return (x + 0.5).clamp(0, 1)

    with pytest.raises(RuntimeError, match="broke its threat model"):
        worst_case(Threshold(), x, torch.zeros(2, dtype=torch.long), ["c"],
                   lambda n, e: Cheater(set(), torch.zeros(1), e, n), [1 / 255])
