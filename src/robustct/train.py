"""Training loops: clean transfer learning and PGD adversarial training.

PGD adversarial training follows Madry et al., "Towards Deep Learning Models Resistant
to Adversarial Attacks", ICLR 2018: each minibatch is replaced by PGD adversarial
examples generated against the current model, then a normal optimiser step is taken.

The tracker is not imported here: pass ``log`` (a callable ``(metrics: dict, step: int)``).
"""
from __future__ import annotations

import copy
import math
import random
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from .attacks import PGD
from .metrics import best_threshold, point_metrics
from .progress import format_seconds
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


class Objective:
    """Per-batch training loss. Subclasses implement :meth:`loss`; :meth:`begin_epoch` sets schedules.

    ``loss(model, xb, yb) -> (loss scalar, logits used for the training accuracy)``; ``xb`` float
    (N, C, H, W) in [0, 1] on the model's device, ``yb`` int64 (N,). Called with the model in training mode.
    """

    name = "clean"
    #: The same batch gives the same loss function of the weights (no fresh random draw per call), which SAM's
    #: second forward pass needs (:func:`sharpness_aware_gradient`).
    repeatable = True

    def begin_epoch(self, epoch: int) -> dict:
        """Set the schedules of epoch ``epoch`` (1-based); returns the values to record in the history."""
        return {}

    def loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        logits = model(xb)
        return F.cross_entropy(logits, yb), logits

    def finish(self) -> None:
        """Restore any attribute the schedules changed (called once after training)."""


class MixedAdversarialObjective(Objective):
    """``(1 - w) CE(clean) + w CE(adversary.perturb(x))``; w = 1 is Madry et al.'s PGD-AT.

    The adversary's epsilon and step size ramp linearly from 0 to their configured values over
    ``epsilon_warmup`` epochs (``ramp(epoch) = min(1, epoch / epsilon_warmup)``).
    """

    name = "pgd_at"
    repeatable = False  # every call attacks afresh

    def __init__(self, adversary, adv_weight: float = 1.0, epsilon_warmup: int = 0):
        self.adversary, self.adv_weight, self.epsilon_warmup = adversary, float(adv_weight), int(epsilon_warmup)
        self.target = (adversary.epsilon, adversary.step_size)

    def ramp(self, epoch: int) -> float:
        return min(1.0, epoch / self.epsilon_warmup) if self.epsilon_warmup else 1.0

    def begin_epoch(self, epoch):
        r = self.ramp(epoch)
        self.adversary.epsilon, self.adversary.step_size = self.target[0] * r, self.target[1] * r
        return {"train_epsilon": self.adversary.epsilon}

    def loss(self, model, xb, yb):
        logits = model(self.adversary.perturb(xb, yb))
        loss = self.adv_weight * F.cross_entropy(logits, yb)
        if self.adv_weight < 1.0:
            loss = loss + (1.0 - self.adv_weight) * F.cross_entropy(model(xb), yb)
        return loss, logits

    def finish(self):
        self.adversary.epsilon, self.adversary.step_size = self.target


class WeightEMA:
    """Exponential moving average of a model's weights (Polyak averaging; as in timm's ModelEmaV2).

    After each optimiser step, every floating-point parameter and buffer ``v`` of the shadow model is
    updated ``v <- d * v + (1 - d) * w`` with ``d = min(decay, (1 + t) / (10 + t))`` when ``warmup``
    (t = updates so far, TensorFlow's ExponentialMovingAverage num_updates rule), else ``d = decay``.
    Integer buffers (BatchNorm batch counts) are copied.

    Args:
        model: the trained model; the shadow is a deep copy (same device), kept in eval mode.
        decay: in [0, 1).

    Raises:
        ValueError: decay outside [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float = 0.99, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        self.updates += 1
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


@torch.no_grad()
def uniform_soup(models: list[nn.Module], bn_images: torch.Tensor | None = None, batch_size: int = 64) -> nn.Module:
    """Average the weights of models fine-tuned from one initialisation (a uniform model soup).

    Uniform soup of Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models
    improves accuracy without increasing inference time", ICML 2022: every floating-point parameter and
    buffer is the mean over the members; integer buffers (BatchNorm batch counts) are taken from the first.
    With ``bn_images`` the BatchNorm running statistics of the layers that train (those in training mode
    under ``model.train()``; frozen stages keep theirs) are then re-estimated in one pass over those
    images, as SWA does after averaging (Izmailov et al., 2018; ``torch.optim.swa_utils.update_bn``,
    which would also reset frozen layers): the running mean is the mean over all images, the running
    variance the batch-size-weighted mean of the batches' unbiased variances.

    Args:
        models: >= 1 models of one architecture (identical state-dict keys and shapes); not modified.
        bn_images: uint8 or float (N, C, H, W) images in [0, 1] (no augmentation), or None to keep the
            averaged statistics.
        batch_size: images per forward pass of the re-estimation.

    Returns:
        A new model (deep copy of ``models[0]`` holding the mean weights), in eval mode, on its device.

    Raises:
        ValueError: no models, or members whose state-dict keys or shapes differ.
    """
    if not models:
        raise ValueError("a soup needs at least one model")
    states = [m.state_dict() for m in models]
    for i, st in enumerate(states[1:], start=1):
        if st.keys() != states[0].keys() or any(st[k].shape != v.shape for k, v in states[0].items()):
            raise ValueError(f"soup member {i} has other weights (keys or shapes) than member 0: not one architecture")
    soup = copy.deepcopy(models[0])
    for key, v in soup.state_dict().items():
        if v.dtype.is_floating_point:
            v.copy_(torch.stack([st[key].to(v.device, v.dtype) for st in states]).mean(0))
    if bn_images is not None:
        _reestimate_batchnorm(soup, bn_images, batch_size)
    return soup.eval()


@torch.no_grad()
def _reestimate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Recompute the running mean/variance of the BatchNorm layers that train, over one pass of ``x``."""
    was_training = model.training
    model.train()
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
              and m.track_running_stats]
    momenta = {m: m.momentum for m in layers}
    for m in layers:
        m.reset_running_stats()
    if layers:
        device = next(model.parameters()).device
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            for m in layers:  # weight each batch by its size: the running mean is the mean over all images
                m.momentum = len(xb) / (i + len(xb))
            model(as_float(xb).to(device))
    for m, mom in momenta.items():
        m.momentum = mom
    model.train(was_training)


def train_one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                    batch_size: int, generator: torch.Generator, augment: Callable | None = None,
                    adversary: PGD | None = None, bn_eval: bool = False, adv_weight: float = 1.0,
                    objective: Objective | None = None, ema: WeightEMA | None = None,
                    sam_rho: float = 0.0) -> dict:
    """One pass over ``(x, y)`` in shuffled minibatches.

    Args:
        x: uint8 or float (N, 1, H, W) images in [0, 1]; y: int64 (N,).
        objective: the per-batch loss (default: cross-entropy, or with ``adversary``
            :class:`MixedAdversarialObjective` (adversary, adv_weight)).
        adversary: if given (and no objective), each (augmented) batch is attacked by ``adversary.perturb``.
        bn_eval: keep every BatchNorm layer in eval mode (running statistics fixed).
        adv_weight: loss = (1 - w) * CE(clean) + w * CE(adversarial); 1.0 is Madry et al.'s
            objective, lower values trade robustness for clean accuracy (Goodfellow et al., 2015).
        ema: updated after every optimiser step.
        sam_rho: > 0: every step uses the sharpness-aware gradient of :func:`sharpness_aware_gradient` with this
            radius (two forward-backward passes per batch); 0: the plain gradient.

    Returns:
        ``{"loss", "accuracy"}`` averaged over the epoch (on the inputs trained on; with SAM the loss and accuracy
        of the first, unperturbed pass).

    Raises:
        ValueError: ``sam_rho`` < 0, or > 0 with an objective that is not :attr:`Objective.repeatable`.
    """
    if objective is None:
        objective = MixedAdversarialObjective(adversary, adv_weight) if adversary is not None else Objective()
    if sam_rho < 0 or (sam_rho and not objective.repeatable):
        raise ValueError(f"sam_rho must be >= 0 and needs a repeatable objective; got {sam_rho} with "
                         f"{type(objective).__name__} (mixup and adversarial objectives draw afresh on every call)")
    device = next(model.parameters()).device
    _train_mode(model, bn_eval)
    order = torch.randperm(len(x), generator=generator)
    total_loss, correct, seen = 0.0, 0, 0
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        xb, yb = as_float(x[idx]).to(device), y[idx].to(device)
        if augment is not None:
            xb = augment(xb)
        loss, logits = objective.loss(model, xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sam_rho:
            sharpness_aware_gradient(model, lambda: objective.loss(model, xb, yb)[0], sam_rho)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(idx)
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}


def sharpness_aware_gradient(model: nn.Module, closure: Callable[[], torch.Tensor], rho: float) -> None:
    """Replace the gradients in ``model`` by SAM's: the gradient at the worst weights within an L2 ball.

    Sharpness-Aware Minimization (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
    Generalization", ICLR 2021), first-order form: with ``g`` the gradients already in ``p.grad`` (the loss at
    the weights ``w``), the weights move to ``w + e``, ``e = rho * g / ||g||_2`` (one global L2 norm over every
    parameter that has a gradient), ``closure()`` is differentiated there, and the weights return to ``w``
    exactly (copied back, not subtracted). The caller's optimiser then steps with these gradients from ``w``.
    BatchNorm running statistics (and batch counters) are left as the first pass set them: the second pass
    must not count the batch twice (as in the reference implementation, github.com/davda54/sam).

    Args:
        model: in training mode, after ``loss.backward()`` at ``w``.
        closure: recomputes the same loss on the same batch (same augmentation; dropout and stochastic depth draw
            new masks) and returns it as a scalar tensor.
        rho: radius of the neighbourhood, > 0 (Foret et al.: 0.05 for most image tasks).

    Raises:
        ValueError: ``rho`` <= 0, or no parameter has a gradient.
    """
    if not rho > 0:
        raise ValueError(f"SAM rho must be > 0, got {rho}")
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        raise ValueError("sharpness_aware_gradient needs the gradients of a first backward pass; none found")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    scale = rho / (float(norm) + 1e-12)
    saved = [p.detach().clone() for p in params]
    bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    bn_state = [(m.momentum, m.num_batches_tracked.clone()) for m in bn]
    try:
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=scale)
                p.grad = None
        for m in bn:
            m.momentum = 0.0  # running = (1 - 0) * running: unchanged
        closure().backward()
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)
        for m, (momentum, count) in zip(bn, bn_state):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


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


COLLAPSE_RATE = (0.1, 0.9)
COLLAPSE_MIN_AUC = 0.6


def collapse_reasons(y: np.ndarray, p_covid: np.ndarray, rate: tuple[float, float] = COLLAPSE_RATE,
                     min_auc: float = COLLAPSE_MIN_AUC) -> list[str]:
    """Why a classifier counts as collapsed (empty list: it does not).

    Collapsed: the predicted-COVID rate (P(COVID) >= 0.5) lies outside ``rate`` (nearly constant
    predictions), or the AUC is below ``min_auc`` (or undefined). Such a checkpoint can never be
    selected, whatever its robust accuracy: a constant classifier is trivially "robust".

    Args:
        y: (N,) int labels (1 = COVID); p_covid: (N,) float in [0, 1].
    """
    out = []
    r = float(np.mean(np.asarray(p_covid) >= 0.5)) if len(p_covid) else float("nan")
    if not rate[0] <= r <= rate[1]:
        out.append(f"predicted-COVID rate {r:.3f} outside [{rate[0]}, {rate[1]}]")
    auc = point_metrics(np.asarray(y), np.asarray(p_covid), 0.5)["auc"] if len(set(np.asarray(y).tolist())) > 1 \
        else float("nan")
    if not auc >= min_auc:
        out.append(f"AUC {auc:.3f} < {min_auc}")
    return out


class EpochProgress:
    """One progress line per reported epoch (loss, accuracy, validation numbers, time per epoch, time left).

    At most about ``max_lines`` lines per run (every k-th epoch, plus the first and the last), so CI
    logs stay short. ``write`` defaults to printing to stderr.
    """

    def __init__(self, epochs: int, label: str = "fit", max_lines: int = 25, write: Callable[[str], None] | None = None,
                 val_label: str = "val"):
        self.epochs, self.label, self.val_label = int(epochs), label, val_label  # "val (in-sample)" for a refit
        self.every = max(1, math.ceil(self.epochs / max(max_lines, 1)))
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.start = time.perf_counter()

    def __call__(self, epoch: int, row: dict) -> None:
        if not (epoch == 1 or epoch == self.epochs or epoch % self.every == 0):
            return
        per_epoch = (time.perf_counter() - self.start) / epoch
        parts = [f"[{self.label}] epoch {epoch}/{self.epochs}", f"loss {row['train_loss']:.3f}",
                 f"acc {row['train_accuracy']:.3f}", f"| {self.val_label} acc {row['val_accuracy']:.3f}", f"auc {row['val_auc']:.3f}"]
        if "val_robust_accuracy" in row:
            parts.append(f"robust {row['val_robust_accuracy']:.3f}")
        if "train_epsilon" in row:
            parts.append(f"| eps {row['train_epsilon'] * 255:.2f}/255")
        parts.append(f"| {per_epoch:.1f} s/epoch, {format_seconds(per_epoch * (self.epochs - epoch))} left"
                     + (" *" if row.get("selected") else ""))
        self.write(" ".join(parts))


def fit(model: nn.Module, train: tuple, val: tuple, *, epochs: int, lr: float, batch_size: int, seed: int,
        augment: Callable | None = None, weight_decay: float = 0.0, adversary: PGD | None = None,
        val_attack: PGD | None = None, schedule: str = "constant", bn_eval: bool = False,
        adv_weight: float = 1.0, epsilon_warmup: int = 0, select: str = "robust",
        log: Callable[[dict, int], None] | None = None, objective: Objective | None = None,
        ema: WeightEMA | None = None, param_groups: list[dict] | None = None, veto: bool | None = None,
        epoch_end: Callable[[nn.Module, int, dict], bool] | None = None,
        progress: EpochProgress | bool | None = True, sam_rho: float = 0.0) -> tuple[nn.Module, list[dict]]:
    """Train with Adam and keep the checkpoint that is best on the validation split.

    Objective: ``objective`` if given; else with an ``adversary`` :class:`MixedAdversarialObjective`
    (its epsilon and step size ramp up linearly over the first ``epsilon_warmup`` epochs); else
    cross-entropy.

    Selection: validation accuracy; with ``val_attack``, ``select="robust"`` uses the
    validation robust accuracy and ``select="mean"`` the mean of clean and robust accuracy;
    ``select="last"`` keeps the last epoch (a fixed training length, no choice made on validation).
    Ties are broken by clean accuracy, then lower validation loss. With ``veto`` (default: on when
    there is a ``val_attack``) a collapsed epoch (:func:`collapse_reasons`) is never selected; if every
    epoch collapses, the best-scoring one is kept and every row says ``collapsed``.
    With ``ema`` the shadow weights are evaluated, selected and returned (Rice et al., 2020 on
    robust overfitting: select the best checkpoint, not the last).

    Args:
        train, val: ``(x, y)`` tensors as in :func:`train_one_epoch`.
        schedule: ``constant`` or ``cosine`` learning rate.
        param_groups: optimiser parameter groups (discriminative learning rates); default all
            trainable parameters at ``lr``.
        epoch_end: ``(model, epoch, row) -> stop``; may add keys to ``row``; True ends training and the
            epoch cannot be selected (catastrophic overfitting).
        progress: True (one line per epoch on stderr, see :class:`EpochProgress`), an instance, or None/False.
        sam_rho: > 0: sharpness-aware minimisation with this radius (:func:`train_one_epoch`); 0: off.

    Returns:
        (model with the best weights loaded, per-epoch history).
    """
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    if objective is None:
        objective = MixedAdversarialObjective(adversary, adv_weight, epsilon_warmup) if adversary is not None \
            else Objective()
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs) if schedule == "cosine" else None
    veto = val_attack is not None if veto is None else veto
    report = EpochProgress(epochs) if progress is True else (progress or None)
    best_key, best_state, history = None, None, []
    try:
        for epoch in range(1, epochs + 1):
            sched_row = objective.begin_epoch(epoch)
            tr = train_one_epoch(model, *train, optimizer, batch_size, gen, augment, bn_eval=bn_eval,
                                 objective=objective, ema=ema, sam_rho=sam_rho)
            judged = ema.model if ema is not None else model
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": tr["loss"],
                   "train_accuracy": tr["accuracy"], **sched_row}
            score, ev = _validate(judged, val, val_attack, select, row)
            if select == "last":
                score = epoch
            stop = bool(epoch_end(model, epoch, row)) if epoch_end is not None else False
            reasons = collapse_reasons(val[1].numpy(), ev["p_covid"]) if veto else []
            row["collapsed"] = bool(reasons)
            key = (not reasons and not stop, score, ev["accuracy"], -ev["loss"])
            if best_key is None or key > best_key:
                best_key, best_state = key, copy.deepcopy(judged.state_dict())
                row["selected"] = True
            history.append(row)
            if report:
                report(epoch, row)
            if log:
                log({k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}, epoch)
            if sched:
                sched.step()
            if stop:
                break
    finally:
        objective.finish()
    model.load_state_dict(best_state)
    return model.eval(), history


def _validate(model: nn.Module, val: tuple, val_attack, select: str, row: dict) -> tuple[float, dict]:
    """Fill ``row`` with the validation numbers; returns (selection score, clean evaluation)."""
    ev = evaluate(model, *val)
    row.update({"val_loss": ev["loss"], "val_accuracy": ev["accuracy"], "val_auc": ev["auc"]})
    score = ev["accuracy"]
    if val_attack is not None:
        clean_pred = torch.as_tensor((ev["p_covid"] > 0.5).astype("int64"))  # argmax of 2 classes
        old = val_attack.model
        val_attack.model = model
        try:
            row["val_robust_accuracy"] = attack_sweep(model, *val, "val", lambda e: val_attack, [val_attack.epsilon],
                                                      clean_pred=clean_pred)[0]["robust_accuracy"]
        finally:
            val_attack.model = old
        score = row["val_robust_accuracy"] if select == "robust" else (row["val_robust_accuracy"] + ev["accuracy"]) / 2
    return score, ev


def discriminative_param_groups(model: nn.Module, lr: float, decay: float = 1.0) -> list[dict]:
    """Optimiser groups with learning rates that shrink towards the input (Howard & Ruder, 2018, ULMFiT).

    The head (every trainable parameter outside ``model.features``) gets ``lr``; backbone stage k
    counted from the top (k = 1 for the last stage) gets ``lr * decay**k``; backbone parameters
    outside every stage (the stem) get ``lr * decay**(n_stages + 1)``. Frozen parameters are left out.

    Args:
        model: a :class:`robustct.models.Classifier` (``stages()`` and ``features``).
        decay: in (0, 1]; 1 gives one learning rate.
    """
    stages = model.stages()
    seen, groups = set(), []

    def add(params, rate):
        ps = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in ps)
        if ps:
            groups.append({"params": ps, "lr": rate})

    seen.update(id(p) for p in model.features.parameters())
    add(model.parameters(), lr)  # head first: the history's "lr" column is the head's
    seen.difference_update(id(p) for p in model.features.parameters())
    for k, stage in enumerate(reversed(stages), start=1):
        add(stage.parameters(), lr * decay ** k)
    add(model.features.parameters(), lr * decay ** (len(stages) + 1))
    return groups


def choose_threshold(model, val, rule: str) -> float:
    """``0.5`` or ``val_youden`` (balanced accuracy on the validation split)."""
    if rule == "val_youden":
        ev = evaluate(model, *val)
        return best_threshold(val[1].numpy(), ev["p_covid"])
    return 0.5


class SmoothedObjective(Objective):
    """Clean cross-entropy with label smoothing (Szegedy et al., 2016); ``label_smoothing=0`` is :class:`Objective`."""

    name = "clean_smoothed"

    def __init__(self, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        logits = model(xb)
        return F.cross_entropy(logits, yb, label_smoothing=self.label_smoothing), logits


class MixupObjective(SmoothedObjective):
    """Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) with label smoothing.

    Per batch, ``lam ~ Beta(alpha, alpha)`` and each image is mixed with its partner in the reversed batch
    (timm's ``Mixup(mode="batch")`` pairing; the batch order is already shuffled)::

        x_mix = lam * x + (1 - lam) * x.flip(0)
        loss  = lam * CE_ls(model(x_mix), y) + (1 - lam) * CE_ls(model(x_mix), y.flip(0))

    which equals timm's soft-target cross-entropy on the mixed, smoothed one-hot targets. Pixel values stay
    in [0, 1] (a convex combination). The training accuracy that :func:`train_one_epoch` reports compares the
    logits of the mixed images with the un-flipped labels.

    Args:
        alpha: Beta concentration, > 0 (Zhang et al. use 0.1-0.4 on ImageNet).
        label_smoothing: in [0, 1), as :class:`SmoothedObjective`.
        seed: seeds the ``numpy`` generator that draws ``lam`` (one draw per batch), so a run is reproducible.

    Raises:
        ValueError: ``alpha <= 0`` or ``label_smoothing`` outside [0, 1).
    """

    name = "clean_mixup"
    repeatable = False  # every call draws a new lam

    def __init__(self, alpha: float, label_smoothing: float = 0.0, seed: int = 0):
        if not alpha > 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        super().__init__(label_smoothing)
        self.alpha, self.seed = float(alpha), int(seed)
        self.rng = np.random.default_rng(seed)
        self.last_lam: float | None = None

    def loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        lam = float(self.rng.beta(self.alpha, self.alpha))
        self.last_lam = lam
        logits = model(lam * xb + (1.0 - lam) * xb.flip(0))
        ce = lambda target: F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)  # noqa: E731
        return lam * ce(yb) + (1.0 - lam) * ce(yb.flip(0)), logits


def backbone_head_param_groups(model: nn.Module, lr: float, lr_backbone: float | None) -> list[dict] | None:
    """Two optimiser groups: trainable ``model.features`` parameters at ``lr_backbone``, the rest at ``lr``
    (discriminative fine-tuning, Howard & Ruder, 2018). None when ``lr_backbone`` is None (one rate for all)."""
    if lr_backbone is None:
        return None
    body = {id(p) for p in model.features.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) in body], "lr": float(lr_backbone)},
              {"params": [p for p in trainable if id(p) not in body], "lr": float(lr)}]
    return [g for g in groups if g["params"]]
