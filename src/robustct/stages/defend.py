"""Stage `defend`: train the defended candidate (``defend.method``). Evaluation and attacks run in the
`evaluate` and `attack` stages, the same way for every candidate."""
from __future__ import annotations

import time
from pathlib import Path

from .. import plots
from ..defences import get_method
from ..io import OUT, device, load_split_tensors, write_csv, write_json
from ..models import load_checkpoint, save_checkpoint
from ..train import evaluate


def run(params: dict, data_root: Path, base_model: Path = OUT / "train" / "model.pt",
        split_dir: Path = OUT / "split", out_dir: Path = OUT / "defend", track: bool = True) -> dict:
    cfg = params["defend"]
    out_dir = Path(out_dir)
    method = get_method(cfg["method"])
    model = load_checkpoint(base_model).to(device())
    size = model.config["image_size"]
    train = load_split_tensors(data_root, split_dir, "train", size)
    val = load_split_tensors(data_root, split_dir, "val", size)

    def body(log):
        start = time.perf_counter()
        trained, history = method(model, train, val, cfg, log)
        history = uniform_rows(history)
        ev = evaluate(trained, *val)
        selected = [h for h in history if h.get("selected")]
        return trained, history, {"val_accuracy": ev["accuracy"], "val_auc": ev["auc"],
                                  "val_robust_accuracy": selected[-1].get("val_robust_accuracy", float("nan"))
                                  if selected else float("nan"),
                                  "selected_epoch": selected[-1]["epoch"] if selected else None,
                                  "selected_collapsed": bool(selected[-1].get("collapsed")) if selected else None,
                                  "train_seconds": round(time.perf_counter() - start, 1)}

    run_info = {}
    if not track:
        trained, history, metrics = body(None)
    else:
        from .. import tracking  # noqa: PLC0415

        mlflow = tracking.setup()
        with mlflow.start_run(run_name=f"defend-{cfg['method']}",
                              tags={**tracking.standard_tags(split_dir), "stage": "defend",
                                    "candidate": "defended"}) as r:
            mlflow.log_params(tracking.flatten_params(cfg))
            tracking.log_split_inputs(mlflow, split_dir, ("train", "val"))
            trained, history, metrics = body(lambda m, step: mlflow.log_metrics(m, step=step))
            mlflow.log_metrics({**metrics, "threshold": trained.config["threshold"]})
            out_dir.mkdir(parents=True, exist_ok=True)
            plots.training_curves(history, out_dir / "training_curves.png")
            mlflow.log_artifact(str(out_dir / "training_curves.png"))
            run_info = {"run_id": r.info.run_id, "model_uri": tracking.log_model(mlflow, trained, val[0])}
            trained.to(device())
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(trained, out_dir / "model.pt", extra={"history": history})
    write_csv(out_dir / "history.csv", history, list(history[0]))  # rows share every key (uniform_rows)
    plots.training_curves(history, out_dir / "training_curves.png")
    write_json(out_dir / "run.json", run_info)
    write_json(out_dir / "metrics.json", {**metrics, "threshold": trained.config["threshold"],
                                          "epochs_run": len(history)})
    return metrics


def uniform_rows(history: list[dict]) -> list[dict]:
    """Every row with every key seen in any row (missing numbers NaN, missing flags False), first-seen order.

    A clean prefit's rows have no robust accuracy; the CSV and the curves need one column set.
    """
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    flags = {k for h in history for k, v in h.items() if isinstance(v, bool)}
    return [{k: h.get(k, False if k in flags else float("nan")) for k in keys} for h in history]
