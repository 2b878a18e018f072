"""Stage `train`: transfer learning on the train split, checkpoint chosen on val (or, with
``train.fit_on: train_val``, refitted on train + val with a fixed schedule)."""
from __future__ import annotations

import copy
import re
from pathlib import Path


import pandas as pd
import torch

from .. import plots
from ..crossval import cross_validate
from ..metrics import point_metrics
from ..robustness import predict
from ..models import Ensemble, build_model, save_checkpoint
from ..train import (EpochProgress, MixupObjective, SmoothedObjective, WeightEMA, backbone_head_param_groups, choose_threshold,
                     evaluate, fit, make_augment, seed_everything, uniform_soup)
from ..io import OUT, device, load_split_tensors, read_split, write_csv, write_json


def train_members(cfg: dict, init, train: tuple, val: tuple, log=None, val_label: str = "val",
                  label: str = "fit") -> tuple[list, list[dict]]:
    """Fine-tune the ``train.soup_size`` members of the recipe in ``cfg`` (the ``train`` section of params.yaml).

    With ``train.head_warmup_epochs`` the head is first warmed up once on ``init`` (:func:`warm_up_head`), so every
    member starts from the same warmed-up model (the shared LP initialisation of Wortsman et al.'s soups). Member k
    starts from a copy of ``init`` (the last one trains ``init`` itself) with data order, augmentation and dropout
    seeded ``train.seed + k``; member 0 is the single model of ``soup_size: 1``, bit for bit.

    Args:
        init: the initial :class:`robustct.models.Classifier` (pretrained backbone, new head), on its device.
        train, val: ``(x, y)`` as :func:`robustct.train.fit` takes them (val is scored every epoch and, with
            ``checkpoint: best_val``, chooses the epoch).
        log: ``(metrics, step)`` for member 0's per-epoch numbers; member k > 0 logs them prefixed
            ``soup_member_k_``. None: nothing logged.

    Returns:
        (trained members, member 0's per-epoch history).
    """
    k_soup = int(cfg.get("soup_size", 1))
    warm_up_head(init, cfg, train, val, seed=int(cfg["seed"]))
    members, history = [], None
    for k in range(k_soup):
        model = init if k == k_soup - 1 else copy.deepcopy(init)
        member_label = label if k_soup == 1 else f"{label}, soup member {k + 1}/{k_soup}"
        member_log = log if k == 0 or log is None else \
            (lambda m, step, k=k: log({f"soup_member_{k}_{key}": v for key, v in m.items()}, step))
        trained, hist = fit(model, train, val, epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                            batch_size=int(cfg["batch_size"]), seed=int(cfg["seed"]) + k,
                            augment=make_augment(cfg.get("augmentation")),
                            weight_decay=float(cfg.get("weight_decay", 0.0)),
                            schedule=cfg.get("schedule", "constant"), log=member_log,
                            objective=_objective(cfg, seed=int(cfg["seed"]) + k),
                            param_groups=backbone_head_param_groups(model, float(cfg["lr"]), cfg.get("lr_backbone")),
                            ema=WeightEMA(model, float(cfg["ema_decay"])) if cfg.get("ema_decay") else None,
                            select="last" if cfg.get("checkpoint") == "last" else "robust",
                            bn_eval=cfg.get("batchnorm", "train") == "eval",
                            sam_rho=float(cfg.get("sam_rho", 0.0)),
                            progress=EpochProgress(int(cfg["epochs"]), label=member_label, val_label=val_label))
        members.append(trained)
        history = history or hist  # the stage's history and curves are member 0's
    return members, history


def fit_ensemble(cfg: dict, train: tuple, val: tuple, log=None, val_label: str = "val",
                 dev: torch.device | str = "cpu") -> tuple[list, list[dict]]:
    """Train the recipe in ``cfg`` (the ``train`` section) ``train.ensemble_size`` times on the same images.

    Member k is the whole recipe with ``train.seed + k``: the new head's initialisation, the data order, the
    augmentation and dropout (and a soup's members, ``train.soup_size``) all come from that seed, so member k is
    bit for bit the single model that ``train.seed: seed + k`` trains, and member 0 is the model of
    ``ensemble_size: 1``. This is the "same folds, other seed" estimate of ``robustct cv-ensemble``
    (docs/models.md, round 11). Each member gets ``train.tta``; the members' thresholds stay at 0.5 (the caller
    chooses the deployed model's). With ``train.soup_size`` S > 1 too, member k's soup trains with seeds
    seed + k ... seed + k + S - 1, so neighbouring members share S - 1 data-order seeds (from different heads).

    Args:
        cfg: the validated ``train`` section of params.yaml.
        train, val: ``(x, y)``, x float (N, 1, H, W) in [0, 1] or uint8, y int64 (N,) (see :func:`robustct.train.fit`).
        log: ``(metrics, step)`` for member 0's per-epoch numbers; member k > 0 logs them prefixed
            ``ensemble_member_k_``. None: nothing logged.
        val_label: what the progress lines call the validation numbers (``val (in-sample)`` after a refit).
        dev: the device the members train on.

    Returns:
        (the members, each a :class:`robustct.models.Classifier`, member 0's per-epoch history).
    """
    k_ens, seed0, models, history = int(cfg.get("ensemble_size", 1)), int(cfg["seed"]), [], None
    for k in range(k_ens):
        member_cfg = {**cfg, "seed": seed0 + k}
        seed_everything(seed0 + k)  # the new head's initialisation depends on it
        init = build_model(cfg["backbone"], str(cfg["weights"]), int(cfg["image_size"]), float(cfg["dropout"]),
                           bool(cfg["freeze_backbone"]), drop_path=float(cfg.get("drop_path", 0.0))).to(dev)
        member_log = log if k == 0 or log is None else \
            (lambda m, step, k=k: log({f"ensemble_member_{k}_{key}": v for key, v in m.items()}, step))
        label = "fit" if k_ens == 1 else f"fit, ensemble member {k + 1}/{k_ens}"
        members, hist = train_members(member_cfg, init, train, val, member_log, val_label, label)
        model = members[0] if len(members) == 1 else \
            uniform_soup(members, bn_images=train[0] if cfg.get("soup_bn") == "reestimate" else None)
        model.set_tta(cfg.get("tta", "none"))  # before the threshold: it is chosen for the deployed model
        models.append(model)
        history = history or hist  # the stage's history and curves are member 0's
    return models, history


def in_sample_names(key: str) -> str:
    """A refit's metric name: ``val_*`` -> ``val_in_sample_*``, also behind an ensemble or soup member's prefix
    (``ensemble_member_1_val_auc`` -> ``ensemble_member_1_val_in_sample_auc``), since its val images were trained on."""
    return re.sub(r"(^|_member_\d+_)val_", r"\1val_in_sample_", key)


def _objective(cfg: dict, seed: int):
    """The recipe's loss: mixup (``train.mixup_alpha`` > 0, its Beta draws seeded ``seed``) with the recipe's
    label smoothing, else label-smoothed cross-entropy, or None (fit's plain cross-entropy) without smoothing."""
    if cfg.get("mixup_alpha"):
        return MixupObjective(float(cfg["mixup_alpha"]), float(cfg.get("label_smoothing", 0.0)), seed=seed)
    return SmoothedObjective(float(cfg["label_smoothing"])) if cfg.get("label_smoothing") else None


def warm_up_head(model, cfg: dict, train: tuple, val: tuple, seed: int) -> None:
    """LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
    ICLR 2022): train only the new head of ``model`` for ``train.head_warmup_epochs`` epochs (backbone frozen,
    its BatchNorm statistics fixed, constant ``train.lr``, same objective and augmentation as the recipe), then
    make the backbone trainable again. Nothing happens when ``head_warmup_epochs`` is 0.

    With ``train.sam_rho`` the warm-up steps are sharpness-aware too. Validation is scored but chooses nothing
    (the last warm-up epoch is kept); the warm-up epochs are not part of the returned history of the fine-tuning.
    """
    epochs = int(cfg.get("head_warmup_epochs", 0))
    if not epochs:
        return
    model.set_trainable_stages(0)
    fit(model, train, val, epochs=epochs, lr=float(cfg["lr"]), batch_size=int(cfg["batch_size"]), seed=seed,
        augment=make_augment(cfg.get("augmentation")), schedule="constant", select="last",
        objective=_objective(cfg, seed=seed), sam_rho=float(cfg.get("sam_rho", 0.0)),
        progress=EpochProgress(epochs, label="head warm-up"))
    model.set_trainable_stages("all")


def run(params: dict, data_root: Path, split_dir: Path = OUT / "split", out_dir: Path = OUT / "train",
        track: bool = True) -> dict:
    cfg = params["train"]
    out_dir = Path(out_dir)
    dev = device()
    size = int(cfg["image_size"])
    train = load_split_tensors(data_root, split_dir, "train", size)
    val = load_split_tensors(data_root, split_dir, "val", size)

    refit = cfg.get("fit_on", "train") == "train_val"  # the schema ensures checkpoint last and threshold 0.5

    def recipe(train, val, log):
        if refit:  # val is still scored every epoch (in-sample), but chooses nothing
            train = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
        models, history = fit_ensemble(cfg, train, val, log, "val (in-sample)" if refit else "val", dev)
        trained = models[0] if len(models) == 1 else Ensemble(models)
        trained.set_threshold(choose_threshold(trained, val, cfg.get("threshold", "0.5")))
        return trained, history

    def cv(tracker):  # train.cv_folds > 0: the same recipe on patient-grouped folds of train + val
        k = int(cfg.get("cv_folds", 0))
        if not k:
            write_json(out_dir / "cv.json", {"k": 0, "skipped": "train.cv_folds is 0"})
        else:
            table = pd.concat([read_split(split_dir, "train"), read_split(split_dir, "val")])
            fold_seed = int(cfg["seed"] if cfg.get("cv_seed") is None else cfg["cv_seed"])
            res = cross_validate(torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]), table.group.to_numpy(),
                                 k, fold_seed, lambda tr, sel, hx: predict(recipe(tr, sel, None)[0], hx)[:, 1]
                                 .numpy(), tracker=tracker)
            # paths: paired comparisons; "seed" is the folds' seed, "train_seed" the recipe's
            write_json(out_dir / "cv.json", res.to_dict(paths=table.path.tolist()) | {"train_seed": int(cfg["seed"])})

    def body(log):
        trained, history = recipe(train, val, log)
        ev = evaluate(trained, *val)
        val_metrics = point_metrics(val[1].numpy(), ev["p_covid"], 0.5)
        prefix = "val_in_sample_" if refit else "val_"  # refit: the validation images were trained on
        return trained, history, {f"{prefix}{k}": v for k, v in val_metrics.items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    if not track:
        trained, history, metrics = body(None)
        cv(None)
        run_info = {}
    else:
        from .. import tracking  # noqa: PLC0415

        mlflow = tracking.setup()
        with mlflow.start_run(run_name=f"train-{cfg['backbone']}",
                              tags={**tracking.standard_tags(split_dir), "stage": "train", "candidate": "baseline"}) as r:
            mlflow.log_params(tracking.flatten_params(cfg))
            tracking.log_split_inputs(mlflow, split_dir, ("train", "val"))
            rename = in_sample_names if refit else (lambda k: k)
            trained, history, metrics = body(lambda m, step: mlflow.log_metrics({rename(k): v for k, v in m.items()},
                                                                               step=step))
            mlflow.log_metrics({**metrics, "threshold": trained.config["threshold"]})
            out_dir.mkdir(parents=True, exist_ok=True)
            plots.training_curves(history, out_dir / "training_curves.png")
            mlflow.log_artifact(str(out_dir / "training_curves.png"))
            uri = tracking.log_model(mlflow, trained, val[0])
            run_info = {"run_id": r.info.run_id, "model_uri": uri}
            cv(mlflow)
            mlflow.log_artifact(str(out_dir / "cv.json"))
            trained.to(dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(trained, out_dir / "model.pt", extra={"history": history})
    write_csv(out_dir / "history.csv", history, list(history[0]))
    if not track:
        plots.training_curves(history, out_dir / "training_curves.png")
    write_json(out_dir / "run.json", run_info)
    selected = max(h["epoch"] for h in history if h.get("selected"))
    write_json(out_dir / "metrics.json", {**metrics, "threshold": trained.config["threshold"],
                                          "epochs_run": len(history), "selected_epoch": selected})
    return metrics
