"""Stage `evaluate` (one per candidate, DVC foreach): clean test metrics with 95 % bootstrap intervals,
ROC, confusion matrix and predicted-COVID rate, identical in form for every candidate; its own MLflow run,
linked to the model's training run by the tag ``model_run_id``."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from ..evaluation import headline, log_report, report_for
from ..io import OUT, device, read_json, write_json
from ..models import load_checkpoint


def run(params: dict, data_root: Path, candidate: str = "baseline", model_dir: Path = OUT / "train",
        split_dir: Path = OUT / "split", out_dir: Path | None = None, headline_path: Path | None = None,
        track: bool = True) -> dict:
    """Evaluate ``model_dir/model.pt`` on the test split into ``outputs/<candidate>/evaluate``.

    With ``track`` the metrics (``test_*``) and artifacts go to the stage's own MLflow run ``evaluate-<candidate>``
    (tags ``stage=evaluate``, ``candidate`` and ``model_run_id``, the training run of ``model_dir/run.json``),
    started where the work starts so its duration is the evaluation's. The training run is not reopened: its
    duration stays the training's.

    Raises:
        robustct.tracking.MissingRunError: (``track``) the run of ``model_dir/run.json`` is missing from the
            store or deleted; raised before any output is written.
        FileNotFoundError: ``model_dir/model.pt`` or ``model_dir/run.json`` is missing.
    """
    cfg = params["evaluate"]
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir else OUT / candidate / "evaluate"
    headline_path = Path(headline_path) if headline_path else OUT / candidate / "evaluate.json"
    model = load_checkpoint(model_dir / "model.pt").to(device())
    info = {}
    if track:  # check the store before writing anything
        from .. import tracking  # noqa: PLC0415

        info = read_json(model_dir / "run.json", candidate)
        tracking.require_run(tracking.setup(), info, model_dir / "run.json")
        run_ctx = tracking.stage_run("evaluate", run_name=f"evaluate-{candidate}", split_dir=split_dir,
                                     splits=("test",), tags={"candidate": candidate, "model_run_id": info["run_id"]})
    else:
        run_ctx = nullcontext((None, None))
    with run_ctx as (mlflow, _):
        rep = report_for(model, data_root, split_dir, cfg, out_dir)
        if model.config.get("defence", {}).get("method") == "gaussian_smoothing":  # a certified number too
            from ..defences.smoothing import certify_report  # noqa: PLC0415
            from ..io import load_split_tensors  # noqa: PLC0415

            x, y = load_split_tensors(data_root, split_dir, "test", model.config["image_size"])
            rep["certified"] = certify_report(model, x, y, None).as_dict()
            write_json(out_dir / "certified.json", rep["certified"])
        write_json(headline_path, headline(rep))
        if mlflow is not None:
            log_report(mlflow, rep, out_dir)
    return rep
