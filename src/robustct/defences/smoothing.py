"""Randomized smoothing with a certified L2 radius (Cohen, Rosenfeld & Kolter, "Certified Adversarial
Robustness via Randomized Smoothing", ICML 2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + delta) = c)``, ``delta ~ N(0, sigma^2 I)``.
CERTIFY (their Algorithm 1): guess the top class from ``n0`` noisy samples, count it in ``n`` fresh
samples, take the one-sided Clopper-Pearson lower bound ``pA`` at level ``1 - alpha`` (scipy's beta
quantile); abstain if ``pA <= 1/2``, else certify the radius ``sigma * Phi^-1(pA)``: with probability
at least ``1 - alpha`` no L2 perturbation smaller than it changes ``g(x)``.

An L-inf budget epsilon contains L2 perturbations of norm up to ``epsilon * sqrt(d)`` (d = number of
input pixels of the model), so an L2 certificate covers epsilon only when the radius reaches that
(:func:`linf_to_l2_radius`). With ``n`` samples the largest radius CERTIFY can ever return is
``sigma * Phi^-1(alpha ** (1 / n))`` (:func:`max_certifiable_radius`).

For gradient attacks, :class:`SmoothedClassifier` returns the log of the class probabilities of the
base model averaged over ``samples`` noise draws (the soft smoothed classifier of Salman et al.,
NeurIPS 2019), so an attack on it is an EOT attack.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import beta, norm
from torch import nn

from ..models import Classifier
from ..params import SmoothingParams, parse_epsilon
from ..train import choose_threshold, fit, make_augment
from .preprocessing import Composite, Draws, average_probabilities, section

ABSTAIN = -1
"""Prediction value of an abstention."""


class GaussianNoise(nn.Module):
    """``model(x + sigma * N(0, I))`` in every mode (training and evaluation); no clamping (Cohen et al.)."""

    def __init__(self, model: nn.Module, sigma: float, seed: int = 0):
        super().__init__()
        self.model = model
        self.sigma = float(sigma)
        self.draws = Draws(seed)

    def forward(self, x):
        g = self.draws.generator(x.device)
        return self.model(x + self.sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype))


class SmoothedClassifier(Composite):
    """Soft smoothed classifier: (N, 1, H, W) float in [0, 1] -> log mean softmax over ``samples`` noisy draws.

    ``base`` (= ``classifier``) is the classifier f certified by :func:`certify`; ``config["defence"]``
    records sigma and the CERTIFY parameters.
    """

    def __init__(self, base: Classifier, cfg: SmoothingParams):
        super().__init__()
        self.classifier = base
        self.noisy = GaussianNoise(base, cfg.sigma, cfg.seed)
        self.sigma = float(cfg.sigma)
        self.samples = int(cfg.samples)
        self.config = {**base.config, "defence": {"method": "gaussian_smoothing", **cfg.model_dump()}}

    @property
    def base(self) -> Classifier:
        return self.classifier

    def forward(self, x):
        return average_probabilities(self.noisy, x, self.samples)


def train_gaussian(base_model: Classifier, train, val, cfg: dict, log=None):
    """``defend.method: gaussian_smoothing``. Fine-tune the baseline on Gaussian-noise inputs (Cohen et al.).

    Uses :func:`robustct.train.fit` on ``GaussianNoise(base, sigma)``: the validation metrics that
    select the checkpoint are on noisy inputs (one draw), i.e. the base classifier the certificate uses.

    Returns:
        (:class:`SmoothedClassifier`, per-epoch history of ``fit``).
    """
    c = section(SmoothingParams, cfg, "smoothing")
    base_model.set_threshold(0.5)
    base_model.set_trainable_stages(c.trainable_stages if c.trainable_stages == "all" else int(c.trainable_stages))
    noisy = GaussianNoise(base_model, c.sigma, c.seed)
    _, history = fit(noisy, train, val, epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, seed=c.seed,
        augment=make_augment(cfg.get("augmentation")), schedule="cosine", log=log)
    smoothed = SmoothedClassifier(base_model.eval(), c)
    smoothed.set_threshold(choose_threshold(smoothed, val, cfg.get("threshold", "0.5")))
    return smoothed, history


# -- CERTIFY ------------------------------------------------------------------------------------
def clopper_pearson_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower confidence bound (level ``1 - alpha``) of a binomial proportion.

    ``Beta(alpha; k, n - k + 1)`` quantile; 0 when ``k == 0``; equals ``alpha ** (1 / n)`` when ``k == n``.
    """
    k = np.asarray(k, dtype=float)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(alpha, k, n - k + 1)
    return np.where(k > 0, lo, 0.0)


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """Largest radius CERTIFY can return with ``n`` samples (all ``n`` in the top class): ``sigma * Phi^-1(alpha^(1/n))``."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def linf_to_l2_radius(epsilon: float, num_pixels: int) -> float:
    """L2 radius that contains the L-inf ball of radius ``epsilon`` in ``num_pixels`` dimensions: ``epsilon * sqrt(d)``."""
    return float(epsilon) * math.sqrt(int(num_pixels))


@torch.no_grad()
def sample_counts(base: nn.Module, x: torch.Tensor, sigma: float, num: int, batch_size: int,
                  generator: torch.Generator, num_classes: int = 2) -> torch.Tensor:
    """Class counts (num_classes,) of ``argmax base(x + sigma * N(0, I))`` over ``num`` draws; x (1, C, H, W)."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    left = num
    while left > 0:
        b = min(batch_size, left)
        batch = x.repeat(b, *([1] * (x.dim() - 1)))
        noise = torch.randn(batch.shape, generator=generator, device="cpu").to(x.device, x.dtype)
        pred = base(batch + sigma * noise).argmax(1).cpu()
        counts += torch.bincount(pred, minlength=num_classes)
        left -= b
    return counts


@dataclass
class Certificate:
    """Per image: ``prediction`` int64 (N,) (``ABSTAIN`` = -1), ``radius`` float (N,) (0 when abstaining),
    ``p_lower`` float (N,) lower bound of the top-class probability."""

    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor


def certify(base: nn.Module, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float,
            batch_size: int = 100, seed: int = 0, progress: bool = False) -> Certificate:
    """Cohen et al.'s CERTIFY for each image of ``x`` (N, C, H, W), float in [0, 1] (or uint8 / 255).

    Noise is drawn on the CPU from a generator seeded with ``seed`` (same result on any device).
    """
    base_dev = next(base.parameters()).device
    g = torch.Generator().manual_seed(seed)
    preds, radii, lows = [], [], []
    was = base.training
    base.eval()
    it = range(len(x))
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        it = tqdm(it, desc="certify", unit="img")
    try:
        for i in it:
            xi = x[i:i + 1]
            xi = (xi.float() / 255.0 if xi.dtype == torch.uint8 else xi.float()).to(base_dev)
            c_a = int(sample_counts(base, xi, sigma, n0, batch_size, g).argmax())
            k = int(sample_counts(base, xi, sigma, n, batch_size, g)[c_a])
            p = float(clopper_pearson_lower(k, n, alpha))
            lows.append(p)
            if p <= 0.5:
                preds.append(ABSTAIN)
                radii.append(0.0)
            else:
                preds.append(c_a)
                radii.append(sigma * float(norm.ppf(p)))
    finally:
        base.train(was)
    return Certificate(torch.tensor(preds, dtype=torch.long), torch.tensor(radii, dtype=torch.float64),
                       torch.tensor(lows, dtype=torch.float64))


def certified_accuracy(cert: Certificate, y: torch.Tensor, radii: list[float]) -> list[float]:
    """Fraction of images predicted correctly with a certified radius >= r, for each r (abstentions count wrong)."""
    ok = cert.prediction == y.cpu()
    return [float((ok & (cert.radius >= r)).float().mean()) if len(y) else float("nan") for r in radii]


@dataclass
class CertifyReport:
    """What :func:`certify_report` returns (all radii L2, [0, 1] pixel units)."""

    sigma: float
    n0: int
    n: int
    alpha: float
    num_images: int
    num_pixels: int
    abstain_rate: float
    smoothed_accuracy: float                # prediction == label (abstain = wrong), i.e. certified accuracy at radius 0
    radii: list[float]
    certified_accuracy: list[float]         # at each of ``radii``
    max_certifiable_radius: float           # sigma * Phi^-1(alpha^(1/n))
    linf: list[dict]                        # per L-inf epsilon: l2_radius_needed, covered_possible, certified_accuracy
    median_radius_correct: float
    runtime_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def certify_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict | None = None) -> CertifyReport:
    """Certify a smoothing candidate on ``(x, y)`` and summarise.

    Args:
        model: a :class:`SmoothedClassifier` (its ``base`` and ``sigma`` are used), or a base classifier
            with ``cfg["sigma"]``.
        x: (N, 1, H, W) uint8 or float in [0, 1]; y: int64 (N,).
        cfg: ``{"n0", "n", "alpha", "subset", "seed", "batch_size", "radii", "epsilons", "progress"}``, all
            optional (defaults: ``robustct.params.SmoothingParams``, seed 0, batch 100, epsilons 0.5, 1, 2, 4 / 255;
            epsilons may be strings such as ``"1/255"``); ``"sigma"`` overrides the model's. ``None``: the
            model's own ``config["defence"]`` (the ``defend.smoothing`` section it was trained with).

    Returns:
        :class:`CertifyReport`; ``linf`` rows say, per epsilon, the L2 radius it needs on the model input
        (epsilon * sqrt(pixels)), whether CERTIFY could reach it at all with this n/alpha/sigma
        (``covered_possible``), and the certified accuracy at that radius.
    """
    d = SmoothingParams()
    if cfg is None:
        cfg = dict(model.config["defence"])
    base = getattr(model, "base", model)
    sigma = float(cfg.get("sigma", getattr(model, "sigma", d.sigma)))
    n0, n, alpha = int(cfg.get("n0", d.n0)), int(cfg.get("n", d.n)), float(cfg.get("alpha", d.alpha))
    radii = [float(r) for r in cfg.get("radii", d.radii)]
    eps = [parse_epsilon(e, "certify.epsilons") for e in cfg.get("epsilons", ["0.5/255", "1/255", "2/255", "4/255"])]
    subset = cfg.get("subset", d.subset)
    if subset is not None and int(subset) < len(x):
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(cfg.get("seed", 0))))[: int(subset)]
        x, y = x[idx.sort().values], y[idx.sort().values]
    t0 = time.perf_counter()
    cert = certify(base, x, sigma, n0, n, alpha, int(cfg.get("batch_size", 100)), int(cfg.get("seed", 0)),
                   progress=bool(cfg.get("progress", True)))
    runtime = time.perf_counter() - t0
    pixels = int(np.prod(x.shape[1:]))
    r_max = max_certifiable_radius(sigma, n, alpha)
    linf = []
    for e in eps:
        r = linf_to_l2_radius(e, pixels)
        linf.append({"epsilon": e, "l2_radius_needed": r, "covered_possible": r <= r_max,
                     "certified_accuracy": certified_accuracy(cert, y, [r])[0]})
    correct = cert.prediction == y.cpu()
    return CertifyReport(
        sigma=sigma, n0=n0, n=n, alpha=alpha, num_images=int(len(y)), num_pixels=pixels,
        abstain_rate=float((cert.prediction == ABSTAIN).float().mean()) if len(y) else float("nan"),
        smoothed_accuracy=float(correct.float().mean()) if len(y) else float("nan"),
        radii=radii, certified_accuracy=certified_accuracy(cert, y, radii), max_certifiable_radius=r_max,
        linf=linf, median_radius_correct=float(cert.radius[correct].median()) if correct.any() else 0.0,
        runtime_s=runtime)
