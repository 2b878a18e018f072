"""Adversarial training defences: PGD-AT, TRADES and Fast AT, with the options that keep them from collapsing.

- PGD-AT: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
- TRADES: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019:
  loss = CE(f(x), y) + beta * KL(p(x) || p(x')), x' maximising the KL term in the epsilon-ball.
- Fast AT: Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020
  (FGSM from a uniform random start, step 1.25 epsilon), with a PGD check each epoch against catastrophic
  overfitting (Andriushchenko & Flammarion, NeurIPS 2020, describe the failure).
- Separate clean/adversarial BatchNorm statistics: Xie et al., "Adversarial Examples Improve Image
  Recognition" (AdvProp), CVPR 2020. At test time the clean statistics are used.
- Weight EMA and selection of the best validation checkpoint (Rice, Wong & Kolter, "Overfitting in
  adversarially robust deep learning", ICML 2020), with a veto on collapsed checkpoints.

Every training attack draws its random starts from one advancing generator seeded by ``defend.seed``, so
each batch gets a fresh start and a run is reproducible; evaluation attacks stay deterministic.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD, eval_mode, project_linf
from ..models import build_model
from ..epsilon import parse_epsilon
from ..train import (EpochProgress, MixedAdversarialObjective, Objective, WeightEMA, choose_threshold,
                     discriminative_param_groups, fit, make_augment, seed_everything)

BATCHNORM_MODES = ("train", "eval", "dual")
INIT_MODES = ("baseline", "new")


@dataclass(frozen=True)
class AdvTrainSettings:
    """The ``defend`` params of the adversarial-training methods (meanings, ranges and defaults:
    :class:`robustct.params.DefendParams`, the one place). Epsilons and step sizes are L-inf budgets in
    [0, 1] pixel units.
    """

    method: str
    epsilon: float
    steps: int
    step_size: float | None
    epsilon_warmup: int
    beta: float
    adv_weight: float
    val_steps: int
    select_on: str
    init: str
    backbone: str | None
    weights: str
    resize_to: int | None
    resize_mode: str
    dropout: float
    prefit_epochs: int
    prefit_lr: float
    trainable_stages: int | str
    batchnorm: str
    ema_decay: float
    lr: float
    lr_decay: float
    weight_decay: float
    schedule: str
    epochs: int
    batch_size: int
    seed: int
    threshold: str
    augmentation: dict | None
    co_check_images: int
    co_check_drop: float
    distill_weight: float
    distill_temperature: float

    @classmethod
    def from_cfg(cls, cfg: dict, method: str) -> "AdvTrainSettings":
        """Read the ``defend`` section; keys it lacks take the schema's defaults (unknown keys are ignored
        here; the params schema rejects them).

        Raises:
            ValueError: a choice outside its allowed values.
        """
        from ..params import DefendParams  # noqa: PLC0415

        full = {**DefendParams().model_dump(), **cfg}
        kw = {k: full[k] for k in cls.__dataclass_fields__ if k in full}
        if "init" not in cfg and "warm_start" in cfg:
            kw["init"] = "baseline" if cfg["warm_start"] else "new"
        for k in ("epsilon", "step_size"):
            if kw.get(k) is not None:
                kw[k] = parse_epsilon(kw[k], f"defend.{k}")
        for k in ("beta", "adv_weight", "dropout", "prefit_lr", "ema_decay", "lr", "lr_decay", "weight_decay",
                  "co_check_drop"):
            kw[k] = float(kw[k])  # YAML 1.1 readers give "1e-3" as a string
        for k in ("steps", "epsilon_warmup", "val_steps", "prefit_epochs", "epochs", "batch_size", "seed",
                  "co_check_images", "resize_to"):
            if kw[k] is not None:
                kw[k] = int(kw[k])
        kw["method"] = method
        distill = {**DefendParams().distill.model_dump(), **(cfg.get("distill") or {})}  # a partial section too
        kw["distill_weight"], kw["distill_temperature"] = float(distill["weight"]), float(distill["temperature"])
        s = cls(**kw)
        if s.batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"defend.batchnorm {s.batchnorm!r}: valid {BATCHNORM_MODES}")
        if s.init not in INIT_MODES:
            raise ValueError(f"defend.init {s.init!r}: valid {INIT_MODES}")
        return s

    def attack_step(self) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        return 1.25 * self.epsilon if self.method == "fast_at" else 2.5 * self.epsilon / self.attack_steps()

    def attack_steps(self) -> int:
        return 1 if self.method == "fast_at" else int(self.steps)


# -- BatchNorm: separate clean / adversarial statistics (AdvProp) ---------------------------------------------

class DualBatchNorm(nn.Module):
    """Two copies of one BatchNorm layer: ``clean`` (used at test time) and ``adv`` (adversarial batches).

    ``route`` ("clean" or "adv") picks the copy; :func:`bn_route` sets it for a whole model.
    """

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.clean, self.adv, self.route = bn, copy.deepcopy(bn), "clean"

    def forward(self, x):
        return (self.adv if self.route == "adv" else self.clean)(x)


def split_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm module of ``model`` (in place) by a :class:`DualBatchNorm`; returns how many."""
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, DualBatchNorm(child))
            count += 1
        elif not isinstance(child, DualBatchNorm):
            count += split_batchnorm(child)
    return count


def merge_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`split_batchnorm` keeping the clean copies (the deployed model has plain BatchNorm)."""
    for name, child in list(model.named_children()):
        if isinstance(child, DualBatchNorm):
            setattr(model, name, child.clean)
        else:
            merge_batchnorm(child)
    return model


@contextmanager
def bn_route(model: nn.Module, route: str):
    """Route every :class:`DualBatchNorm` of ``model`` to ``route`` inside the block (then back to clean)."""
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    for m in duals:
        m.route = route
    try:
        yield
    finally:
        for m in duals:
            m.route = "clean"


# -- objectives ----------------------------------------------------------------------------------------------

def distillation_loss(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None,
                      weight: float, temperature: float = 1.0) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean, 2015): ``(1 - w) CE(logits, y) + w T^2 KL(q_T || p_T)``,
    ``q_T = softmax(teacher_logits / T)``, ``p_T = softmax(logits / T)``, KL averaged over the batch.

    With ``logits`` of adversarial inputs and teacher logits of the clean ones this is the ARD objective
    (Goldblum et al., "Adversarially Robust Distillation", AAAI 2020).

    Args:
        logits: (N, K) float student logits; y: (N,) int64; teacher_logits: (N, K) float or None (then plain CE).
        weight: w in [0, 1]; temperature: T > 0.

    Raises:
        ValueError: weight outside [0, 1], temperature <= 0, or weight > 0 without teacher logits.
    """
    if not 0.0 <= weight <= 1.0 or temperature <= 0:
        raise ValueError(f"distillation weight must be in [0, 1] and temperature > 0, got {weight}, {temperature}")
    ce = F.cross_entropy(logits, y)
    if weight == 0.0:
        return ce
    if teacher_logits is None:
        raise ValueError("distillation weight > 0 needs teacher logits")
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits.detach() / t, 1), reduction="batchmean")
    return (1.0 - weight) * ce + weight * t * t * kl


class Teacher:
    """A frozen model whose clean logits on each training batch are the soft targets of distillation.

    Args:
        model: the teacher (e.g. the train stage's clean model), same input as the student; kept in eval mode.
        weight, temperature: as in :func:`distillation_loss`; weight 0 disables the teacher (no forward pass).

    Raises:
        ValueError: ``weight > 0`` without a model.
    """

    def __init__(self, model: nn.Module | None, weight: float = 0.0, temperature: float = 1.0):
        if weight > 0 and model is None:
            raise ValueError("defend.distill.weight > 0 needs a teacher model (the train stage's model)")
        self.model = model.eval().requires_grad_(False) if (model is not None and weight > 0) else None
        self.weight, self.temperature = float(weight), float(temperature)

    def logits(self, xb: torch.Tensor) -> torch.Tensor | None:
        if self.model is None:
            return None
        with torch.no_grad():
            return self.model(xb)

    def loss(self, logits: torch.Tensor, yb: torch.Tensor, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        return distillation_loss(logits, yb, teacher_logits, self.weight, self.temperature)


NO_TEACHER = Teacher(None)


class DistilledObjective(Objective):
    """Clean training loss with distillation from ``teacher`` (the clean prefit of a distilled defence)."""

    name = "clean_distilled"

    def __init__(self, teacher: Teacher):
        self.teacher = teacher

    def loss(self, model, xb, yb):
        logits = model(xb)
        return self.teacher.loss(logits, yb, self.teacher.logits(xb)), logits


class PGDATObjective(MixedAdversarialObjective):
    """PGD-AT / Fast AT loss with the adversarial batch through the ``adv`` BatchNorm copy (when split)."""

    def __init__(self, adversary, adv_weight=1.0, epsilon_warmup=0, name="pgd_at", teacher: Teacher = NO_TEACHER):
        super().__init__(adversary, adv_weight, epsilon_warmup)
        self.name, self.teacher = name, teacher

    def loss(self, model, xb, yb):
        t_logits = self.teacher.logits(xb)
        with bn_route(model, "adv"):
            logits = model(self.adversary.perturb(xb, yb))
        loss = self.adv_weight * self.teacher.loss(logits, yb, t_logits)
        if self.adv_weight < 1.0:
            loss = loss + (1.0 - self.adv_weight) * self.teacher.loss(model(xb), yb, t_logits)
        return loss, logits


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                natural: torch.Tensor | None = None) -> torch.Tensor:
    """TRADES objective ``CE(logits_clean, y) + beta * mean_i KL(p_clean_i || p_adv_i)`` (Zhang et al., 2019).

    Args:
        logits_clean, logits_adv: (N, K) float; y: (N,) int64; beta >= 0.
        natural: replaces the ``CE(logits_clean, y)`` term when given (e.g. :func:`distillation_loss`).

    Returns:
        scalar tensor (differentiable through both logits, as in the reference implementation).
    """
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")
    return (F.cross_entropy(logits_clean, y) if natural is None else natural) + beta * kl


class TradesAdversary:
    """TRADES inner maximisation: x' = x + 0.001 N(0, 1) (from ``generator``), then ``steps`` signed-gradient
    steps on KL(p(x) || p(x')), each projected onto the L-inf ball of radius ``epsilon`` and [0, 1].

    Runs with the model in eval mode (as Zhang et al.'s code). Training only: ``generator`` advances.
    """

    def __init__(self, model, epsilon: float, steps: int, step_size: float, generator: torch.Generator):
        self.model, self.epsilon, self.steps, self.step_size = model, float(epsilon), int(steps), float(step_size)
        self.generator = generator

    def perturb(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = x.detach()
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        if self.epsilon <= 0:
            return x.clone()
        with eval_mode(self.model):
            with torch.no_grad():
                p_clean = F.softmax(self.model(x), 1)
            x_adv = project_linf(x + 0.001 * noise, x, self.epsilon)
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(self.model(x_adv), 1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(kl, x_adv)
                x_adv = project_linf(x_adv.detach() + self.step_size * grad.sign(), x, self.epsilon)
        return x_adv.detach()


class TRADESObjective(Objective):
    """TRADES loss; epsilon, step size and beta ramp linearly over ``warmup`` epochs."""

    name = "trades"
    repeatable = False  # the adversary draws a new random start on every call

    def __init__(self, adversary: TradesAdversary, beta: float, warmup: int = 0, teacher: Teacher = NO_TEACHER):
        self.adversary, self.beta_target, self.warmup = adversary, float(beta), int(warmup)
        self.teacher = teacher
        self.target = (adversary.epsilon, adversary.step_size)
        self.beta = self.beta_target

    def begin_epoch(self, epoch):
        r = min(1.0, epoch / self.warmup) if self.warmup else 1.0
        self.adversary.epsilon, self.adversary.step_size = self.target[0] * r, self.target[1] * r
        self.beta = self.beta_target * r
        return {"train_epsilon": self.adversary.epsilon, "train_beta": self.beta}

    def loss(self, model, xb, yb):
        with bn_route(model, "adv"):
            x_adv = self.adversary.perturb(xb)
            logits_adv = model(x_adv)
        logits = model(xb)
        natural = self.teacher.loss(logits, yb, self.teacher.logits(xb)) if self.teacher.weight > 0 else None
        return trades_loss(logits, logits_adv, yb, self.beta, natural), logits

    def finish(self):
        self.adversary.epsilon, self.adversary.step_size = self.target
        self.beta = self.beta_target


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float in [0, 1]; float input is returned as float32."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


# -- catastrophic overfitting (Fast AT) --------------------------------------------------------------------

class CatastrophicOverfittingDetector:
    """Fires when the PGD robust accuracy of a check set falls more than ``drop`` below its best so far.

    Catastrophic overfitting of FGSM training: within an epoch, PGD accuracy collapses to about 0 while
    FGSM accuracy stays high (Wong et al., 2020 stop when PGD accuracy drops by 0.2; Andriushchenko &
    Flammarion, 2020).
    """

    def __init__(self, drop: float = 0.2):
        self.drop, self.best = float(drop), -math.inf

    def update(self, pgd_accuracy: float) -> bool:
        fired = pgd_accuracy < self.best - self.drop
        self.best = max(self.best, pgd_accuracy)
        return fired


class PGDCheck:
    """``epoch_end`` hook for :func:`robustct.train.fit`: PGD-10 accuracy at the target epsilon on a fixed
    subset of training images; stops training (the epoch is not selected) when the detector fires."""

    def __init__(self, x, y, epsilon: float, drop: float, images: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x), generator=g)[:images]
        self.x, self.y, self.epsilon = x[idx], y[idx], float(epsilon)
        self.detector, self.seed = CatastrophicOverfittingDetector(drop), seed

    def __call__(self, model, epoch: int, row: dict) -> bool:
        dev = next(model.parameters()).device
        xb, yb = to_unit_float(self.x).to(dev), self.y.to(dev)
        x_adv = PGD(model, self.epsilon, steps=10, seed=self.seed).perturb(xb, yb)
        with eval_mode(model), torch.no_grad():
            acc = float((model(x_adv).argmax(1) == yb).float().mean())
        row["co_check_pgd_accuracy"] = acc
        row["catastrophic_overfitting"] = self.detector.update(acc)
        return row["catastrophic_overfitting"]


# -- methods -----------------------------------------------------------------------------------------------

def initial_model(base_model, s: AdvTrainSettings):
    """The baseline (``init: baseline``) or a new model on the same input size (``init: new``; ImageNet or no weights)."""
    if s.init == "baseline":
        model = copy.deepcopy(base_model)
    else:
        c = base_model.config
        seed_everything(s.seed)
        model = build_model(s.backbone or c["backbone"], s.weights, c["image_size"], s.dropout,
                            freeze_backbone=False, resize_to=s.resize_to, resize_mode=s.resize_mode)
        model.to(next(base_model.parameters()).device)
    model.set_threshold(0.5)  # re-chosen on validation after training
    return model


def clean_prefit(model, train, val, s: AdvTrainSettings, log=None, teacher: Teacher = NO_TEACHER):
    """Clean full fine-tune (every parameter, BatchNorm in training mode) selected on validation accuracy;
    distilled from ``teacher`` when its weight is > 0."""
    model.set_trainable_stages("all")
    model, history = fit(model, train, val, epochs=s.prefit_epochs, lr=s.prefit_lr, batch_size=s.batch_size,
                         seed=s.seed, augment=make_augment(s.augmentation), weight_decay=s.weight_decay,
                         schedule=s.schedule, log=log, progress=EpochProgress(s.prefit_epochs, "defend prefit"),
                         objective=DistilledObjective(teacher) if teacher.weight > 0 else None)
    return model, [{**h, "phase": "prefit"} for h in history]


def make_objective(model, s: AdvTrainSettings, generator: torch.Generator,
                   teacher: Teacher = NO_TEACHER) -> Objective:
    """The training objective of ``s.method`` with its adversary drawing from ``generator`` (and the
    distillation ``teacher``: TRADES distils its natural term, PGD-AT/Fast AT their cross-entropy terms)."""
    if s.method == "trades":
        adv = TradesAdversary(model, s.epsilon, s.attack_steps(), s.attack_step(), generator)
        return TRADESObjective(adv, s.beta, s.epsilon_warmup, teacher)
    adv = PGD(model, s.epsilon, steps=s.attack_steps(), step_size=s.attack_step(), early_stop=False,
              generator=generator)
    return PGDATObjective(adv, s.adv_weight, s.epsilon_warmup, name=s.method, teacher=teacher)


def train_adversarial(base_model, train, val, cfg: dict, log=None, method: str = "pgd_at"):
    """Adversarial training of ``method`` (pgd_at | trades | fast_at); see :class:`AdvTrainSettings`.

    Returns:
        (model with the clean BatchNorm statistics and a validation-chosen threshold, per-epoch history;
        prefit rows have ``phase == "prefit"``, adversarial rows ``phase == method``).
    """
    s = AdvTrainSettings.from_cfg(cfg, method)
    teacher = Teacher(copy.deepcopy(base_model) if s.distill_weight > 0 else None, s.distill_weight,
                      s.distill_temperature)
    model = initial_model(base_model, s)
    history = []
    if s.prefit_epochs > 0:
        model, history = clean_prefit(model, train, val, s, log, teacher)
    model.set_trainable_stages(s.trainable_stages if s.trainable_stages == "all" else int(s.trainable_stages))
    if s.batchnorm == "dual":
        split_batchnorm(model)
    generator = torch.Generator().manual_seed(s.seed + 1000)  # training attacks: fresh starts, reproducible
    objective = make_objective(model, s, generator, teacher)
    val_attack = PGD(model, s.epsilon, steps=s.val_steps, seed=s.seed + 1)
    ema = WeightEMA(model, s.ema_decay) if s.ema_decay > 0 else None
    check = PGDCheck(*train, s.epsilon, s.co_check_drop, s.co_check_images, s.seed + 2) \
        if s.method == "fast_at" else None
    offset = len(history)
    log_adv = (lambda m, step: log(m, step + offset)) if log else None
    trained, adv_history = fit(model, train, val, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, seed=s.seed,
                               augment=make_augment(s.augmentation), weight_decay=s.weight_decay,
                               val_attack=val_attack, schedule=s.schedule, bn_eval=s.batchnorm == "eval",
                               select=s.select_on, log=log_adv, objective=objective, ema=ema,
                               param_groups=discriminative_param_groups(model, s.lr, s.lr_decay),
                               veto=True, epoch_end=check, progress=EpochProgress(s.epochs, f"defend {method}"))
    merge_batchnorm(trained)
    history += [{**h, "epoch": h["epoch"] + offset, "phase": method} for h in adv_history]
    trained.set_threshold(choose_threshold(trained, val, s.threshold))
    return trained, history


def train_pgd_at(base_model, train, val, cfg: dict, log=None):
    """PGD adversarial training (Madry et al., 2018); ``cfg`` as in :class:`AdvTrainSettings`."""
    return train_adversarial(base_model, train, val, cfg, log, "pgd_at")


def train_trades(base_model, train, val, cfg: dict, log=None):
    """TRADES (Zhang et al., 2019); ``cfg`` as in :class:`AdvTrainSettings`."""
    return train_adversarial(base_model, train, val, cfg, log, "trades")


def train_fast_at(base_model, train, val, cfg: dict, log=None):
    """Fast AT: FGSM from a random start with a per-epoch PGD check (Wong et al., 2020)."""
    return train_adversarial(base_model, train, val, cfg, log, "fast_at")
