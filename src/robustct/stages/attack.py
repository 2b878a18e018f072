"""Stage `attack`: FGSM (paper grid + standard grid) and PGD sweeps on the test split."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import plots
from ..models import LABELS, load_checkpoint
from ..params import format_epsilon
from ..robustness import paper_table, predict, standard_suite
from .common import (OUT, PAPER_FGSM_NON_COVID, device, flat_sweep_metrics, load_split_tensors, read_json,
                     sweep_config, write_csv, write_json)

POINT_FIELDS = ["attack", "epsilon", "n", "clean_accuracy", "robust_accuracy", "robust_accuracy_non_covid",
                "robust_accuracy_covid", "attack_success_rate", "mean_linf", "mean_l2"]


def sweep_and_write(model, x, y, cfg: dict, out_dir: Path, progress=print) -> dict:
    """Run the standard suite and write sweep.json, metrics.json, CSVs, the paper table and plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = standard_suite(model, x, y, cfg, progress)
    table = paper_table(result["fgsm_paper"], PAPER_FGSM_NON_COVID)
    sweeps = {k: result[k] for k in ("fgsm_paper", "fgsm", "pgd")}
    write_json(out_dir / "sweep.json", {**sweeps, "paper_table_non_covid": table})
    write_json(out_dir / "metrics.json", flat_sweep_metrics(result))
    for key, pts in sweeps.items():
        write_csv(out_dir / f"{key}.csv", pts, POINT_FIELDS)
    write_csv(out_dir / "paper_table.csv", table, ["epsilon", "correct", "total", "accuracy", "paper_accuracy"])
    (out_dir / "paper_table.md").write_text(paper_table_markdown(table))
    plots.accuracy_vs_epsilon({"FGSM (all test)": result["fgsm_paper"],
                               "FGSM (non-COVID)": [dict(epsilon=r["epsilon"], robust_accuracy=r["accuracy"])
                                                    for r in table]},
                              out_dir / "fgsm_paper_grid.png", paper=PAPER_FGSM_NON_COVID,
                              title="FGSM, paper grid")
    plots.accuracy_vs_epsilon({"FGSM": result["fgsm"], "PGD": result["pgd"]}, out_dir / "standard_grid.png",
                              title="standard grid", log_x=True)
    k = cfg["grid_examples"]
    if k:
        xs = x[:k].float() / 255.0
        shown = {e: v for e, v in result["examples"].items() if v is not None and e in (0.1, 0.3, 2 / 255, 8 / 255)}
        probs = {e: predict(model, v)[:, 1].numpy() for e, v in shown.items()}
        plots.adversarial_grid(xs, shown, predict(model, xs)[:, 1].numpy(), probs,
                               [LABELS[i] for i in y[:k].tolist()], out_dir / "examples.png")
    return {**sweeps, "paper_table_non_covid": table}


def paper_table_markdown(rows: list[dict]) -> str:
    lines = ["| epsilon | predicted correct | total | accuracy | paper accuracy |", "|---|---|---|---|---|"]
    for r in rows:
        paper = "" if r["paper_accuracy"] is None else f"{r['paper_accuracy']:.3f}"
        lines.append(f"| {r['epsilon']:g} | {r['correct']} | {r['total']} | {r['accuracy']:.3f} | {paper} |")
    return "\n".join(lines) + "\n"


def log_sweep(mlflow, sweeps: dict, out_dir: Path) -> None:
    """One nested run per (attack, epsilon) under the active parent run; artifacts on the parent."""
    for key in ("fgsm_paper", "fgsm", "pgd"):
        for p in sweeps[key]:
            with mlflow.start_run(run_name=f"{key}@{format_epsilon(p['epsilon'])}", nested=True,
                                  tags={"attack": p["attack"], "grid": key}):
                conf = p.get("config", {"attack": p["attack"], "norm": "Linf", "epsilon": p["epsilon"]})
                mlflow.log_params(conf)
                mlflow.log_metrics({k: p[k] for k in POINT_FIELDS[3:] if p.get(k) == p.get(k)})
    for f in sorted(Path(out_dir).iterdir()):
        if f.suffix in (".png", ".csv", ".md", ".json"):
            mlflow.log_artifact(str(f), "attack")


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
                               "pgd_step_size": cfg["pgd"].get("step_size") or "2.5*eps/steps"})
            log_sweep(mlflow, sweeps, out_dir)
    return sweeps
