"""Adversarial training defences.

PGD adversarial training: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018.
"""
from __future__ import annotations

from ..attacks import PGD
from ..models import build_model
from ..epsilon import parse_epsilon
from ..train import choose_threshold, fit, make_augment


def adversaries(model, cfg: dict) -> tuple[PGD, PGD]:
    """The training adversary (no early stop) and the validation attack used for selection."""
    eps = parse_epsilon(cfg["epsilon"], "defend.epsilon")
    step = parse_epsilon(cfg["step_size"], "defend.step_size") if cfg.get("step_size") is not None else None
    train_adv = PGD(model, eps, steps=int(cfg["steps"]), step_size=step, early_stop=False, seed=int(cfg["seed"]))
    val_adv = PGD(model, eps, steps=int(cfg.get("val_steps", cfg["steps"])), step_size=None, seed=int(cfg["seed"]) + 1)
    return train_adv, val_adv


def train_pgd_at(base_model, train, val, cfg: dict, log=None):
    """PGD adversarial training from the baseline (or a fresh backbone); threshold chosen on validation."""
    model = base_model
    if not cfg.get("warm_start", True):
        c = model.config
        model = build_model(c["backbone"], cfg.get("weights", "imagenet"), c["image_size"], c["dropout"])
        model.to(next(base_model.parameters()).device)
    model.set_threshold(0.5)  # re-chosen on validation after training
    trainable = cfg["trainable_stages"]
    model.set_trainable_stages(trainable if trainable == "all" else int(trainable))
    train_adv, val_adv = adversaries(model, cfg)
    trained, history = fit(model, train, val, epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                           batch_size=int(cfg["batch_size"]), seed=int(cfg["seed"]),
                           augment=make_augment(cfg.get("augmentation")), adversary=train_adv,
                           val_attack=val_adv, schedule=cfg.get("schedule", "cosine"),
                           bn_eval=cfg.get("batchnorm", "eval") == "eval",
                           weight_decay=float(cfg.get("weight_decay", 0.0)),
                           adv_weight=float(cfg.get("adv_weight", 1.0)),
                           epsilon_warmup=int(cfg.get("epsilon_warmup", 0)),
                           select=cfg.get("select_on", "robust"), log=log)
    trained.set_threshold(choose_threshold(trained, val, cfg.get("threshold", "0.5")))
    return trained, history
