"""Randomized smoothing: CERTIFY on a linear classifier whose certified radius is known in closed form,
the Clopper-Pearson bound, the soft smoothed model, the defend method and checkpoints."""
from __future__ import annotations

import math
import pickle

import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

from robustct.defences import get_method
from robustct.defences.smoothing import (
    ABSTAIN, SmoothedClassifier, certified_accuracy, certify, certify_report,
    clopper_pearson_lower, linf_to_l2_radius, max_certifiable_radius,
)
from robustct.models import build_model, load_checkpoint, save_checkpoint
from robustct.params import SmoothingParams

torch.set_num_threads(1)


class Linear2(nn.Module):
    """f(x) = class 1 iff w.x + b > 0 (logits [0, scale * (w.x + b)]); x (N, 1, 2, 2)."""

    def __init__(self, w, b, scale=1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(float(b)))
        self.scale = scale

    def forward(self, x):
        s = self.scale * (x.flatten(1) @ self.w + self.b)
        return torch.stack([torch.zeros_like(s), s], 1)


W = [3.0, -1.0, 2.0, 1.0]  # ||w|| = sqrt(15)


def _point(margin):
    """x with w.x + b = margin * ||w|| (b = 0): true smoothed radius |margin| (Cohen et al., linear case)."""
    w = torch.tensor(W)
    return (margin * w / w.norm()).view(1, 1, 2, 2)


def test_clopper_pearson_lower_bound_known_answers():
    assert math.isclose(float(clopper_pearson_lower(50, 50, 0.01)), 0.01 ** (1 / 50), rel_tol=1e-9)
    assert float(clopper_pearson_lower(0, 50, 0.01)) == 0.0
    for k in (10, 37, 49):  # definition: P(Binomial(n, p_lo) >= k) = alpha
        p = float(clopper_pearson_lower(k, 50, 0.05))
        assert math.isclose(binom.sf(k - 1, 50, p), 0.05, rel_tol=1e-6)


@pytest.mark.parametrize("margin", [0.3, 0.6])
def test_certified_radius_lower_bounds_and_approaches_the_linear_closed_form(margin):
    sigma = 0.5
    f = Linear2(W, 0.0)
    x = torch.cat([_point(margin), _point(-margin)])
    gaps = []
    for n in (500, 50000):
        cert = certify(f, x, sigma, n0=100, n=n, alpha=0.001, batch_size=5000, seed=1)
        assert cert.prediction.tolist() == [1, 0]
        assert (cert.radius <= margin + 1e-9).all()  # a lower bound (holds w.p. >= 1 - alpha; seeded)
        gaps.append(float((margin - cert.radius).max()))
    assert gaps[1] < gaps[0] and gaps[1] < 0.03  # approaches the closed form |w.x + b| / ||w||
    # pA = Phi(margin / sigma) exactly; the bound sits below it
    assert (cert.p_lower < norm.cdf(margin / sigma)).all()


def test_certify_abstains_on_the_boundary_and_caps_at_the_max_radius():
    sigma = 0.25
    cert = certify(Linear2(W, 0.0), _point(0.0), sigma, n0=100, n=2000, alpha=0.001, seed=0)
    assert cert.prediction.tolist() == [ABSTAIN] and float(cert.radius[0]) == 0.0
    const = Linear2([0.0] * 4, 1.0)  # always class 1: every sample agrees
    cert = certify(const, torch.zeros(2, 1, 2, 2), sigma, n0=10, n=1000, alpha=0.001, seed=0)
    assert torch.allclose(cert.radius, torch.full((2,), max_certifiable_radius(sigma, 1000, 0.001), dtype=torch.float64))
    assert math.isclose(max_certifiable_radius(sigma, 1000, 0.001), sigma * norm.ppf(0.001 ** (1 / 1000)))


def test_linf_to_l2_radius_and_certified_accuracy():
    assert math.isclose(linf_to_l2_radius(1 / 255, 96 * 96), 96 / 255)
    from robustct.defences.smoothing import Certificate
    cert = Certificate(torch.tensor([1, 0, ABSTAIN, 1]), torch.tensor([0.5, 0.1, 0.0, 0.2], dtype=torch.float64),
                       torch.zeros(4, dtype=torch.float64))
    y = torch.tensor([1, 0, 0, 0])
    assert certified_accuracy(cert, y, [0.0, 0.1, 0.3, 0.6]) == [0.5, 0.5, 0.25, 0.0]


def test_soft_smoothed_model_matches_phi_for_a_hard_linear_classifier():
    sigma, margin = 0.5, 0.4
    f = Linear2(W, 0.0, scale=1e4)  # softmax ~ hard decision
    f.config = {"threshold": 0.5}
    f.set_threshold = lambda t: None
    g = SmoothedClassifier(f, SmoothingParams(sigma=sigma, samples=20000))
    with torch.no_grad():
        p = g(_point(margin)).exp()[0, 1]
    assert abs(float(p) - norm.cdf(margin / sigma)) < 0.015  # P(f(x + noise) = 1) = Phi(margin / sigma)


def test_certify_report_fields_and_linf_coverage():
    f = Linear2(W, 0.0)
    x = torch.cat([_point(0.6), _point(-0.6), _point(0.05)])
    y = torch.tensor([1, 0, 0])
    rep = certify_report(f, x, y, {"sigma": 0.5, "n0": 50, "n": 400, "alpha": 0.01, "radii": [0.0, 0.25, 1.0],
                                   "epsilons": ["1/255", "64/255"], "progress": False})
    assert rep.num_images == 3 and rep.num_pixels == 4
    assert rep.certified_accuracy[0] == rep.smoothed_accuracy
    assert rep.certified_accuracy == sorted(rep.certified_accuracy, reverse=True)
    assert rep.certified_accuracy[-1] == 0.0  # no radius exceeds the true 0.6
    assert rep.linf[0]["l2_radius_needed"] == pytest.approx(2 / 255)
    assert rep.linf[1]["l2_radius_needed"] == pytest.approx(128 / 255)
    assert rep.linf[0]["covered_possible"] and rep.max_certifiable_radius > 0
    assert rep.runtime_s > 0 and 0 <= rep.abstain_rate <= 1
    assert set(rep.as_dict()) >= {"sigma", "certified_accuracy", "linf", "abstain_rate", "runtime_s"}


def test_gaussian_smoothing_method_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    base = build_model("resnet18", "none", 16, 0.5, freeze_backbone=False)
    x = (torch.rand(16, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    y = torch.arange(16) % 2
    cfg = {"threshold": "0.5", "smoothing": {"sigma": 0.25, "samples": 4, "epochs": 2, "batch_size": 8, "n": 50, "n0": 10}}
    model, history = get_method("gaussian_smoothing")(base, (x, y), (x[:8], y[:8]), cfg, None)
    assert isinstance(model, SmoothedClassifier) and len(history) == 2
    assert model.config["defence"]["sigma"] == 0.25 and model.config["image_size"] == 16
    save_checkpoint(model, tmp_path / "s.pt")
    again = load_checkpoint(tmp_path / "s.pt")
    assert isinstance(again, SmoothedClassifier) and again.sigma == 0.25 and again.samples == 4
    assert isinstance(pickle.loads(pickle.dumps(again)), SmoothedClassifier)  # MLflow pickles the module
    xf = x[:3].float() / 255
    with torch.no_grad():
        assert torch.allclose(again.base(xf), model.base.eval()(xf), atol=1e-5)
    rep = certify_report(again, x[:2], y[:2], None)  # parameters from the model's config["defence"]
    assert rep.sigma == 0.25 and rep.n == 50 and rep.n0 == 10 and rep.num_images == 2
    with pytest.raises(ValueError, match="sigma"):
        SmoothingParams(sigma=0)
