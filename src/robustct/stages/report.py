"""Stage `report` (last): the results page ``docs/results/README.md`` with its plots, from this run's outputs;
logged to MLflow with the promote run."""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import plots
from ..io import OUT, read_json
from ..report import CandidateResults, results_page

FIGURES = {"roc": "evaluate/roc.png", "standard_grid": "attack/standard_grid.png",
           "fgsm_paper_grid": "attack/fgsm_paper_grid.png", "examples": "attack/examples.png"}


def run(params: dict, out_dir: Path = Path("docs/results"), root: Path = OUT, track: bool = True) -> Path:
    """Write the page and its figures into ``out_dir`` (replaced whole, so no stale figure stays).

    With ``track`` the page is uploaded as artifacts (``results/``) of the promote run named in
    ``verdict.json`` without reopening it (``MlflowClient.log_artifacts``), so that run's end time stays
    promote's own.

    Raises:
        robustct.tracking.MissingRunError: (``track``) the promote run is missing from the store or deleted;
            raised before anything is written.
        FileNotFoundError: an output of an earlier stage (``verdict.json``, a candidate's metrics) is missing.
    """
    from .. import tracking  # noqa: PLC0415  (tags only; no MLflow import unless tracking)

    out_dir, root = Path(out_dir), Path(root)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    verdict = read_json(root / "promote" / "verdict.json", "promote")
    mlflow = None
    if track and verdict.get("promote_run_id"):  # check the store before writing anything
        mlflow = tracking.setup()
        tracking.require_run(mlflow, {"run_id": verdict["promote_run_id"]}, root / "promote" / "verdict.json",
                             "promote")
    by_name = {v["name"]: v for v in verdict["candidates"]}
    cands = []
    for name, spec in params["candidates"].items():
        c = CandidateResults(name, read_json(root / name / "evaluate" / "metrics.json", f"evaluate@{name}"),
                             read_json(root / name / "attack" / "sweep.json", f"attack@{name}"), by_name.get(name))
        for key, rel in FIGURES.items():
            src = root / name / rel
            if src.is_file():
                shutil.copyfile(src, tmp / f"{name}_{key}.png")
                c.figures[key] = f"{name}_{key}.png"
        curves = Path(spec["model"]) / "training_curves.png"
        if curves.is_file():
            shutil.copyfile(curves, tmp / f"{name}_training_curves.png")
            c.figures["training_curves"] = f"{name}_training_curves.png"
        cands.append(c)
    plots.accuracy_vs_epsilon({c.name: c.sweep.get("worst_case", []) for c in cands}, tmp / "worst_case.png",
                              title="worst-case robust accuracy", log_x=True)
    split = read_json(root / "split" / "summary.json", "split")
    context = {"git_commit": tracking.git_commit(), "data_version": tracking.data_version(), "split": split,
               "figures": {"worst_case": "worst_case.png"}}
    readings = [(c.name, c.sweep.get("paper_readings")) for c in cands if c.sweep.get("paper_readings")]
    if readings:
        context["paper_readings"] = "\n".join(
            f"Both readings of the paper's epsilons, candidate `{n}` (non-COVID test images):\n\n{r['markdown']}"
            for n, r in readings)
    (tmp / "README.md").write_text(results_page(cands, verdict, context, params["attack"]["standard_epsilons"]))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    if mlflow is not None:  # uploaded into the finished run: its duration stays promote's
        mlflow.MlflowClient().log_artifacts(verdict["promote_run_id"], str(out_dir), "results")
    return out_dir / "README.md"
