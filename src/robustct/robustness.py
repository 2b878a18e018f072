"""Robustness evaluation: attack sweeps over epsilon and their summary statistics.

Definitions (per sweep point, over the evaluated images):
- clean accuracy: fraction classified correctly without attack;
- robust accuracy: fraction classified correctly after the attack;
- attack success rate: fraction of the clean-correct images that the attack makes wrong;
- mean L-infinity / L2 norm of the perturbation ``x_adv - x`` (pixel units, [0, 1] scale).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .attacks import FGSM, PGD, eval_mode, fgsm_from_sign, input_gradient
from .models import LABELS


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class probabilities (N, 2) for images (N, C, H, W) in [0, 1] (float or uint8 /255)."""
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = _as_float(x[i:i + batch_size]).to(device)
            out.append(torch.softmax(model(xb), 1).cpu())
    return torch.cat(out) if out else torch.zeros((0, 2))


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def point_summary(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor,
                  delta: torch.Tensor) -> dict:
    """Summary of one (attack, epsilon) point; all inputs on CPU.

    Args:
        y, clean_pred, adv_pred: int64 (N,).
        delta: perturbation (N, C, H, W).
    """
    correct, robust = clean_pred == y, adv_pred == y
    flat = delta.flatten(1)
    out = {
        "n": int(len(y)),
        "clean_accuracy": float(correct.float().mean()) if len(y) else float("nan"),
        "robust_accuracy": float(robust.float().mean()) if len(y) else float("nan"),
        "attack_success_rate": float((correct & ~robust).sum() / max(int(correct.sum()), 1)),
        "mean_linf": float(flat.abs().amax(1).mean()) if len(y) else 0.0,
        "mean_l2": float(flat.norm(dim=1).mean()) if len(y) else 0.0,
    }
    for k, label in enumerate(LABELS):
        m = y == k
        out[f"robust_accuracy_{label}"] = float(robust[m].float().mean()) if m.any() else float("nan")
        out[f"correct_{label}"] = int(robust[m].sum())
        out[f"total_{label}"] = int(m.sum())
    return out


def fgsm_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: list[float],
               batch_size: int = 32, keep: int = 0) -> tuple[list[dict], dict]:
    """FGSM at many epsilons from ONE input gradient per image.

    The sign of the input gradient does not depend on epsilon, so it is computed once
    and reused: cost is one forward+backward per image plus one forward per epsilon.

    Args:
        x: (N, 1, H, W) uint8 or float in [0, 1]; y: int64 (N,).
        keep: number of leading images whose adversarial versions are returned (for plots).

    Returns:
        (list of point summaries with ``attack``/``epsilon`` keys, {epsilon: x_adv[:keep]}).
    """
    device = next(model.parameters()).device
    clean, adv = [], {e: [] for e in epsilons}
    deltas = {e: [] for e in epsilons}
    examples = {e: [] for e in epsilons}
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = _as_float(x[i:i + batch_size]).to(device), y[i:i + batch_size].to(device)
            sign = input_gradient(model, xb, yb).sign()
            with torch.no_grad():
                clean.append(model(xb).argmax(1).cpu())
                for e in epsilons:
                    xa = fgsm_from_sign(xb, sign, e)
                    adv[e].append(model(xa).argmax(1).cpu())
                    deltas[e].append((xa - xb).cpu())
                    if i < keep:
                        examples[e].append(xa[: max(keep - i, 0)].cpu())
    clean_pred = torch.cat(clean)
    points = []
    for e in epsilons:
        s = point_summary(y.cpu(), clean_pred, torch.cat(adv[e]), torch.cat(deltas[e]))
        points.append({"attack": "fgsm", "epsilon": float(e), **s})
    return points, {e: torch.cat(v)[:keep] if v else None for e, v in examples.items()}


def attack_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str,
                 make_attack: Callable[[float], object], epsilons: list[float],
                 batch_size: int = 32, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run ``make_attack(epsilon).perturb`` at each epsilon and summarise.

    Args:
        name: attack name recorded in each point.
        make_attack: epsilon -> attack object with ``perturb(x, y)`` and ``config()``.
    """
    device = next(model.parameters()).device
    clean_pred = predict(model, x, batch_size).argmax(1)
    points = []
    for e in epsilons:
        attack = make_attack(e)
        preds, deltas = [], []
        for i in range(0, len(x), batch_size):
            xb, yb = _as_float(x[i:i + batch_size]).to(device), y[i:i + batch_size].to(device)
            xa = attack.perturb(xb, yb)
            with torch.no_grad(), eval_mode(model):
                preds.append(model(xa).argmax(1).cpu())
            deltas.append((xa - xb).cpu())
        s = point_summary(y.cpu(), clean_pred, torch.cat(preds), torch.cat(deltas))
        points.append({"attack": name, "epsilon": float(e), **s, "config": attack.config()})
        if progress:
            progress(f"{name} eps={e:.4f} robust_accuracy={s['robust_accuracy']:.3f}")
    return points


def paper_table(points: list[dict], paper: dict[float, float], label: str = "non_covid") -> list[dict]:
    """Rows in the reference paper's form: epsilon, predicted correct, total, accuracy, paper accuracy."""
    rows = []
    for p in points:
        e = round(p["epsilon"], 4)
        rows.append({
            "epsilon": e, "correct": p[f"correct_{label}"], "total": p[f"total_{label}"],
            "accuracy": p[f"robust_accuracy_{label}"], "paper_accuracy": paper.get(e),
        })
    return rows


def standard_suite(model, x, y, cfg: dict, progress=None) -> dict:
    """The project's sweep: FGSM on the paper grid and the standard grid, PGD on the standard grid.

    Args:
        cfg: ``{"paper_epsilons", "standard_epsilons", "pgd": {...}, "batch_size", "seed", "grid_examples"}``
            with epsilons already parsed to floats.

    Returns:
        ``{"fgsm_paper": [...], "fgsm": [...], "pgd": [...], "examples": {...}}``.
    """
    bs = cfg.get("batch_size", 32)
    keep = cfg.get("grid_examples", 0)
    fgsm_paper, examples = fgsm_sweep(model, x, y, cfg["paper_epsilons"], bs, keep)
    fgsm_std, std_examples = fgsm_sweep(model, x, y, cfg["standard_epsilons"], bs, keep)
    pgd_cfg = cfg["pgd"]

    def make_pgd(e):
        return PGD(model, e, steps=pgd_cfg["steps"], step_size=pgd_cfg.get("step_size"),
                   restarts=pgd_cfg.get("restarts", 1), seed=cfg.get("seed", 0))

    pgd = attack_sweep(model, x, y, "pgd", make_pgd, cfg["standard_epsilons"], bs, progress)
    return {"fgsm_paper": fgsm_paper, "fgsm": fgsm_std, "pgd": pgd,
            "examples": {**examples, **std_examples}}


def lookup(points: list[dict], epsilon: float, key: str = "robust_accuracy") -> float:
    """Value of ``key`` at the sweep point whose epsilon matches (to 1e-6)."""
    for p in points:
        if abs(p["epsilon"] - epsilon) < 1e-6:
            return p[key]
    raise KeyError(f"epsilon {epsilon} not in the sweep ({[p['epsilon'] for p in points]})")


__all__ = ["FGSM", "PGD", "attack_sweep", "fgsm_sweep", "lookup", "paper_table", "point_summary",
           "predict", "standard_suite"]
