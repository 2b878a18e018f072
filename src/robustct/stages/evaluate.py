"""Stage `evaluate`: clean test metrics with 95 % bootstrap intervals, ROC and confusion matrix."""
from __future__ import annotations

from pathlib import Path

from .. import tracking
from ..evaluation import log_report, report_for
from ..models import load_checkpoint
from ..io import OUT, device, read_json


def run(params: dict, data_root: Path, model_path: Path = OUT / "train" / "model.pt",
        split_dir: Path = OUT / "split", out_dir: Path = OUT / "evaluate", track: bool = True) -> dict:
    cfg = params["evaluate"]
    if track:  # the run named in run.json must be in the store before any output is written
        tracking.resolve_run(Path(model_path).parent / "run.json", "train")
    model = load_checkpoint(model_path).to(device())
    rep = report_for(model, data_root, split_dir, cfg, out_dir)
    if track:
        info = read_json(Path(model_path).parent / "run.json", "train")
        mlflow = tracking.setup()
        with mlflow.start_run(run_id=info["run_id"]):
            tracking.log_split_inputs(mlflow, split_dir, ("test",))
            log_report(mlflow, rep, out_dir)
    return rep
