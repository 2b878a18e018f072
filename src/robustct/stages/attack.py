"""Stage `attack` (one per candidate, DVC foreach): worst-case robust accuracy over the L-inf cascade,
the FGSM paper grid, every suite attack's curve, targeted scenarios, minimal epsilon, perceptibility and
sanity flags, identical in form for every candidate."""
from __future__ import annotations

from pathlib import Path

import torch

from ..io import OUT, device, load_split_tensors, read_json, sweep_config, write_json
from ..models import load_checkpoint
from ..epsilon import format_epsilon
from ..progress import section_timer
from ..sweep_report import headline, log_sweep, sweep_and_write


def run(params: dict, data_root: Path, candidate: str = "baseline", model_dir: Path = OUT / "train",
        split_dir: Path = OUT / "split", out_dir: Path | None = None, headline_path: Path | None = None,
        track: bool = True) -> dict:
    """Attack ``model_dir/model.pt`` on the test split; write ``outputs/<candidate>/attack/`` and the headline
    metrics ``outputs/<candidate>/attack.json``; one MLflow run ``attack-<candidate>`` (started before the
    attacks, so its duration is true) with a nested run per (attack, epsilon, target mode), and the wall-clock
    seconds of each part of the sweep as its metrics ``wall_seconds_<part>`` (``pgd``, ``worst_case``, ``cw_l2``,
    ...: :func:`robustct.sweep_report.sweep_and_write`), also printed; they are not in the DVC outputs."""
    cfg = sweep_config(params["attack"])
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir else OUT / candidate / "attack"
    headline_path = Path(headline_path) if headline_path else OUT / candidate / "attack.json"
    model = load_checkpoint(model_dir / "model.pt").to(device())
    x, y = load_split_tensors(data_root, split_dir, "test", model.config["image_size"])
    torch.manual_seed(cfg["seed"])
    timings: dict = {}  # wall seconds per part of the sweep: printed and logged to MLflow, never in the outputs
    if not track:
        sweeps = sweep_and_write(model, x, y, cfg, out_dir, timings=timings)
    else:
        from .. import tracking  # noqa: PLC0415

        info = read_json(model_dir / "run.json", candidate)
        mlflow = tracking.setup()
        tracking.require_run(mlflow, info, model_dir / "run.json")
        with mlflow.start_run(run_name=f"attack-{candidate}",
                              tags={**tracking.standard_tags(split_dir), "stage": "attack", "candidate": candidate,
                                    "attack_profile": cfg["profile"], "model_run_id": info["run_id"]}):
            mlflow.log_params({"candidate": candidate, "profile": cfg["profile"],
                               "worst_case": ",".join(cfg["worst_case"]), "suite": ",".join(cfg["suite"]),
                               "standard_epsilons": ",".join(format_epsilon(e) for e in cfg["standard_epsilons"]),
                               "paper_epsilons": len(cfg["paper_epsilons"]),
                               "targeted": ",".join(cfg["targeted"].get("attacks", [])),
                               "perceptibility_epsilon": format_epsilon(cfg["perceptibility_epsilon"]),
                               **{f"{name}.{k}": v for name in cfg["suite"] for k, v in cfg.get(name, {}).items()}})
            tracking.log_split_inputs(mlflow, split_dir, ("test",))
            sweeps = sweep_and_write(model, x, y, cfg, out_dir, timings=timings)
            with section_timer(timings, "mlflow_logging"):
                log_sweep(mlflow, sweeps, out_dir)
            mlflow.log_metrics({f"wall_seconds_{k}": v for k, v in timings.items()})
    print("attack wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(timings.items(), key=lambda kv: -kv[1])))
    write_json(headline_path, headline(sweeps))
    return sweeps
