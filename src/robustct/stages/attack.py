"""Stage `attack`: FGSM (paper grid + standard grid), PGD and the attack suite on the test split."""
from __future__ import annotations

from pathlib import Path

import torch

from ..io import OUT, device, load_split_tensors, read_json, sweep_config
from ..models import load_checkpoint
from ..params import format_epsilon
from ..sweep_report import log_sweep, sweep_and_write


def run(params: dict, data_root: Path, model_path: Path = OUT / "train" / "model.pt",
        split_dir: Path = OUT / "split", out_dir: Path = OUT / "attack", track: bool = True) -> dict:
    cfg = sweep_config(params["attack"])
    model = load_checkpoint(model_path).to(device())
    x, y = load_split_tensors(data_root, split_dir, "test", model.config["image_size"])
    torch.manual_seed(cfg["seed"])
    sweeps = sweep_and_write(model, x, y, cfg, out_dir)
    if track:
        from .. import tracking  # noqa: PLC0415

        info = read_json(Path(model_path).parent / "run.json", "train")
        mlflow = tracking.setup()
        with mlflow.start_run(run_name="attack-sweep", tags={**tracking.standard_tags(split_dir), "stage": "attack",
                                                             "model_run_id": info.get("run_id", "")}):
            mlflow.log_params({"paper_epsilons": len(cfg["paper_epsilons"]),
                               "standard_epsilons": ",".join(format_epsilon(e) for e in cfg["standard_epsilons"]),
                               "pgd_steps": cfg["pgd"]["steps"], "pgd_restarts": cfg["pgd"].get("restarts", 1),
                               "pgd_step_size": cfg["pgd"].get("step_size") or "2.5*eps/steps",
                               "suite": ",".join(cfg.get("suite", [])),
                               "targeted": ",".join(cfg.get("targeted", {}).get("attacks", [])),
                               "perceptibility_epsilon": format_epsilon(cfg["perceptibility_epsilon"])})
            tracking.log_split_inputs(mlflow, split_dir, ("test",))
            log_sweep(mlflow, sweeps, out_dir)
    return sweeps
