"""Stage `defend`: PGD adversarial training (Madry et al., 2018), then the same evaluation and sweep."""
from __future__ import annotations

from pathlib import Path

from .. import plots
from ..attacks import PGD
from ..models import load_checkpoint, save_checkpoint
from ..params import parse_epsilon
from ..train import fit, make_augment
from .attack import log_sweep, sweep_and_write
from .common import OUT, device, flat_sweep_metrics, load_split_tensors, sweep_config, write_csv, write_json
from .evaluate import log_report, report_for
from .train import _flat, choose_threshold, log_model


def adversaries(model, cfg: dict) -> tuple[PGD, PGD]:
    """The training adversary (no early stop) and the validation attack used for selection."""
    eps = parse_epsilon(cfg["epsilon"], "defend.epsilon")
    step = parse_epsilon(cfg["step_size"], "defend.step_size") if cfg.get("step_size") is not None else None
    train_adv = PGD(model, eps, steps=int(cfg["steps"]), step_size=step, early_stop=False, seed=int(cfg["seed"]))
    val_adv = PGD(model, eps, steps=int(cfg.get("val_steps", cfg["steps"])), step_size=None, seed=int(cfg["seed"]) + 1)
    return train_adv, val_adv


def run(params: dict, data_root: Path, base_model: Path = OUT / "train" / "model.pt",
        split_dir: Path = OUT / "split", out_dir: Path = OUT / "defend", track: bool = True) -> dict:
    cfg = params["defend"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = device()
    model = load_checkpoint(base_model)
    if not cfg.get("warm_start", True):
        from ..models import build_model  # noqa: PLC0415

        c = model.config
        model = build_model(c["backbone"], cfg.get("weights", "imagenet"), c["image_size"], c["dropout"])
    model.set_threshold(0.5)  # re-chosen on validation after training
    trainable = cfg["trainable_stages"]
    model.set_trainable_stages(trainable if trainable == "all" else int(trainable))
    model.to(dev)
    size = model.config["image_size"]
    train = load_split_tensors(data_root, split_dir, "train", size)
    val = load_split_tensors(data_root, split_dir, "val", size)
    test = load_split_tensors(data_root, split_dir, "test", size)
    train_adv, val_adv = adversaries(model, cfg)

    def body(log):
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
        save_checkpoint(trained, out_dir / "model.pt", extra={"history": history})
        write_csv(out_dir / "history.csv", history, list(history[0]))
        plots.training_curves(history, out_dir / "training_curves.png")
        rep = report_for(trained, data_root, split_dir, params["evaluate"], out_dir / "evaluation")
        sweep_cfg = sweep_config(params["attack"])
        if cfg.get("attack_suite", "standard") == "standard":  # FGSM + PGD only; "full" reruns the whole suite
            sweep_cfg.update(suite=[], targeted={})
        sweeps = sweep_and_write(trained, *test, sweep_cfg, out_dir / "attack")
        return trained, rep, sweeps

    run_info = {}
    if not track:
        trained, rep, sweeps = body(None)
    else:
        from .. import tracking  # noqa: PLC0415

        mlflow = tracking.setup()
        with mlflow.start_run(run_name="defend-pgd-at", tags={**tracking.standard_tags(split_dir), "stage": "defend",
                                                              "candidate": "defended"}) as r:
            mlflow.log_params(_flat(cfg))
            trained, rep, sweeps = body(lambda m, step: mlflow.log_metrics(m, step=step))
            mlflow.log_metric("threshold", trained.config["threshold"])
            mlflow.log_artifact(str(out_dir / "training_curves.png"))
            log_report(mlflow, rep, out_dir / "evaluation")
            log_sweep(mlflow, sweeps, out_dir / "attack")
            run_info = {"run_id": r.info.run_id, "model_uri": log_model(mlflow, trained, val[0])}
    write_json(out_dir / "run.json", run_info)
    write_json(out_dir / "metrics.json", {"clean": {k: v["value"] for k, v in rep["metrics"].items()},
                                          "threshold": trained.config["threshold"], **flat_sweep_metrics(sweeps)})
    return {"evaluation": rep, "sweeps": sweeps}
