"""Training loops: clean transfer learning and PGD adversarial training.

PGD adversarial training follows Madry et al., "Towards Deep Learning Models Resistant
to Adversarial Attacks", ICLR 2018: each minibatch is replaced by PGD adversarial
examples generated against the current model, then a normal optimiser step is taken.

The tracker is not imported here: pass ``log`` (a callable ``(metrics: dict, step: int)``).
"""
from __future__ import annotations

import copy
import random
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from .attacks import PGD
from .metrics import best_threshold, point_metrics
from .robustness import as_float, attack_sweep, predict


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_augment(cfg: dict | None) -> Callable | None:
    """Per-image augmentation on tensors in [0, 1]: flips, small rotations, scale/translation.

    Args:
        cfg: ``{"hflip": bool, "rotation_deg": float, "translate": float, "scale": [lo, hi]}``
            or None / empty for no augmentation.
    """
    if not cfg:
        return None
    ops = []
    if cfg.get("hflip"):
        ops.append(v2.RandomHorizontalFlip())
    deg, tr = float(cfg.get("rotation_deg", 0)), float(cfg.get("translate", 0))
    scale = cfg.get("scale")
    if deg or tr or scale:
        ops.append(v2.RandomAffine(degrees=deg, translate=(tr, tr) if tr else None,
                                   scale=tuple(scale) if scale else None))
    if not ops:
        return None
    tf = v2.Compose(ops)
    return lambda xb: torch.stack([tf(img) for img in xb])


def train_one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                    batch_size: int, generator: torch.Generator, augment: Callable | None = None,
                    adversary: PGD | None = None, bn_eval: bool = False, adv_weight: float = 1.0,
                    label_smoothing: float = 0.0) -> dict:
    """One pass over ``(x, y)`` in shuffled minibatches.

    Args:
        x: uint8 or float (N, 1, H, W) images in [0, 1]; y: int64 (N,).
        adversary: if given, each (augmented) batch is replaced by ``adversary.perturb``.
        bn_eval: keep every BatchNorm layer in eval mode (running statistics fixed).
        adv_weight: loss = (1 - w) * CE(clean) + w * CE(adversarial); 1.0 is Madry et al.'s
            objective, lower values trade robustness for clean accuracy (Goodfellow et al., 2015).
        label_smoothing: of the clean cross-entropy (Szegedy et al., 2016); 0 = none.

    Returns:
        ``{"loss", "accuracy"}`` averaged over the epoch (on the inputs trained on).
    """
    device = next(model.parameters()).device
    _train_mode(model, bn_eval)
    order = torch.randperm(len(x), generator=generator)
    total_loss, correct, seen = 0.0, 0, 0
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        xb, yb = as_float(x[idx]).to(device), y[idx].to(device)
        if augment is not None:
            xb = augment(xb)
        if adversary is not None:
            x_adv = adversary.perturb(xb, yb)
            logits = model(x_adv)
            loss = adv_weight * F.cross_entropy(logits, yb)
            if adv_weight < 1.0:
                loss = loss + (1.0 - adv_weight) * F.cross_entropy(model(xb), yb)
        else:
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(idx)
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}


def _train_mode(model: nn.Module, bn_eval: bool) -> None:
    model.train()
    if bn_eval:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> dict:
    """Clean loss, accuracy and AUC (eval mode), plus P(COVID) per image."""
    probs = predict(model, x, batch_size)
    p = probs[:, 1].numpy()
    loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), y.cpu()))
    m = point_metrics(y.cpu().numpy(), p, 0.5)
    return {"loss": loss, "accuracy": m["accuracy"], "auc": m["auc"], "p_covid": p}


def fit(model: nn.Module, train: tuple, val: tuple, *, epochs: int, lr: float, batch_size: int, seed: int,
        augment: Callable | None = None, weight_decay: float = 0.0, adversary: PGD | None = None,
        val_attack: PGD | None = None, schedule: str = "constant", bn_eval: bool = False,
        adv_weight: float = 1.0, epsilon_warmup: int = 0, select: str = "robust",
        log: Callable[[dict, int], None] | None = None, lr_backbone: float | None = None,
        label_smoothing: float = 0.0) -> tuple[nn.Module, list[dict]]:
    """Train with Adam and keep the checkpoint that is best on the validation split.

    With an ``adversary``, its epsilon (and step size) ramp up linearly over the first
    ``epsilon_warmup`` epochs to their configured values.

    Selection: validation accuracy; with ``val_attack``, ``select="robust"`` uses the
    validation robust accuracy and ``select="mean"`` the mean of clean and robust accuracy.
    Ties are broken by clean accuracy, then lower validation loss.

    Args:
        train, val: ``(x, y)`` tensors as in :func:`train_one_epoch`.
        schedule: ``constant`` or ``cosine`` learning rate.
        lr_backbone: discriminative learning rate for trainable parameters under ``model.features``
            (Howard & Ruder, 2018); None = ``lr`` for all.
        label_smoothing: of the clean training loss; 0 = none.

    Returns:
        (model with the best weights loaded, per-epoch history).
    """
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if lr_backbone is not None and hasattr(model, "features"):
        body = {id(p) for p in model.features.parameters()}
        groups = [{"params": [p for p in params if id(p) in body], "lr": lr_backbone},
                  {"params": [p for p in params if id(p) not in body], "lr": lr}]
        params = [g for g in groups if g["params"]]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs) if schedule == "cosine" else None
    best_key, best_state, history = None, None, []
    target = (adversary.epsilon, adversary.step_size) if adversary is not None else None
    for epoch in range(1, epochs + 1):
        if adversary is not None:
            ramp = min(1.0, epoch / epsilon_warmup) if epsilon_warmup else 1.0
            adversary.epsilon, adversary.step_size = target[0] * ramp, target[1] * ramp
        tr = train_one_epoch(model, *train, optimizer, batch_size, gen, augment, adversary, bn_eval, adv_weight,
                             label_smoothing)
        ev = evaluate(model, *val)
        row = {"epoch": epoch, "lr": optimizer.param_groups[-1]["lr"], "train_loss": tr["loss"],
               "train_accuracy": tr["accuracy"], "val_loss": ev["loss"], "val_accuracy": ev["accuracy"],
               "val_auc": ev["auc"]}
        score = ev["accuracy"]
        if val_attack is not None:
            clean_pred = torch.as_tensor((ev["p_covid"] > 0.5).astype("int64"))  # argmax of 2 classes
            row["val_robust_accuracy"] = attack_sweep(model, *val, "val", lambda e: val_attack, [val_attack.epsilon],
                                                      clean_pred=clean_pred)[0]["robust_accuracy"]
            score = row["val_robust_accuracy"] if select == "robust" else (row["val_robust_accuracy"] + ev["accuracy"]) / 2
        key = (score, ev["accuracy"], -ev["loss"])
        if best_key is None or key > best_key:
            best_key, best_state = key, copy.deepcopy(model.state_dict())
            row["selected"] = True
        history.append(row)
        if log:
            log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}, epoch)
        if sched:
            sched.step()
    if adversary is not None:
        adversary.epsilon, adversary.step_size = target
    model.load_state_dict(best_state)
    return model.eval(), history


def choose_threshold(model, val, rule: str) -> float:
    """``0.5`` or ``val_youden`` (balanced accuracy on the validation split)."""
    if rule == "val_youden":
        ev = evaluate(model, *val)
        return best_threshold(val[1].numpy(), ev["p_covid"])
    return 0.5
