"""Clean evaluation of one model on the test split: metrics with bootstrap intervals, ROC, confusion matrix.

Used by the ``evaluate`` stage for every candidate. The tracker is passed in (``log_report``), never imported.
"""
from __future__ import annotations

from pathlib import Path

from . import plots
from .io import load_split_tensors, read_split, write_csv, write_json
from .metrics import evaluation_report
from .robustness import predict


def report_for(model, data_root: Path, split_dir: Path, cfg: dict, out_dir: Path) -> dict:
    """Evaluate ``model`` on the test split; write metrics.json, roc.csv, predictions.csv and plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = load_split_tensors(data_root, split_dir, "test", model.config["image_size"])
    p = predict(model, x)[:, 1].numpy()
    test = read_split(split_dir, "test")
    groups = test.group.to_numpy() if "group" in test else None  # patients: cluster bootstrap
    # the model's threshold is folded into its logits, so 0.5 on its probabilities is its decision rule
    rep = evaluation_report(y.numpy(), p, 0.5, int(cfg.get("bootstrap", 1000)), int(cfg.get("seed", 0)),
                            groups=groups)
    rep["model_threshold"] = model.config["threshold"]
    rep["model_tta"] = model.config.get("tta", "none")  # test-time augmentation inside the model (train.tta)
    rep["predicted_covid_rate"] = float((p >= 0.5).mean()) if len(p) else float("nan")
    keys = ("n", "threshold", "model_threshold", "model_tta", "metrics", "confusion_matrix", "predicted_covid_rate",
            "interval_method", "n_groups")
    write_json(out_dir / "metrics.json", {k: rep[k] for k in keys if k in rep})
    roc = rep["roc"]
    write_csv(out_dir / "roc.csv", [dict(fpr=a, tpr=b) for a, b in zip(roc["fpr"], roc["tpr"])], ["fpr", "tpr"])
    write_csv(out_dir / "predictions.csv",
              [dict(path=pa, label=int(t), p_covid=float(q)) for pa, t, q in zip(test.path, y.tolist(), p)],
              ["path", "label", "p_covid"])
    plots.roc_plot(roc, rep["metrics"]["auc"]["value"], out_dir / "roc.png")
    plots.confusion_plot(rep["confusion_matrix"]["rows_true_cols_pred"], ["non_covid", "covid"], out_dir / "confusion.png")
    return rep


def headline(rep: dict) -> dict:
    """The few numbers ``dvc metrics show`` lists per candidate: accuracy and AUC with their 95 % intervals
    (as ``"low-high"`` text) and the predicted-COVID rate (a collapse shows here first)."""
    m = rep["metrics"]
    return {"accuracy": round(m["accuracy"]["value"], 4),
            "accuracy_95ci": f"{m['accuracy']['ci_low']:.3f}-{m['accuracy']['ci_high']:.3f}",
            "auc": round(m["auc"]["value"], 4), "auc_95ci": f"{m['auc']['ci_low']:.3f}-{m['auc']['ci_high']:.3f}",
            "covid_rate": round(rep["predicted_covid_rate"], 4)}


def log_report(mlflow, rep: dict, out_dir: Path, prefix: str = "test_") -> None:
    """Log test metrics with their interval bounds and the evaluation artifacts into the active run."""
    for k, v in rep["metrics"].items():
        mlflow.log_metrics({f"{prefix}{k}": v["value"], f"{prefix}{k}_ci_low": v["ci_low"],
                            f"{prefix}{k}_ci_high": v["ci_high"]})
    mlflow.log_metric(f"{prefix}predicted_covid_rate", rep["predicted_covid_rate"])
    for f in ("metrics.json", "roc.png", "confusion.png", "predictions.csv"):
        mlflow.log_artifact(str(Path(out_dir) / f), "evaluation")
