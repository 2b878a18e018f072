"""MLflow set-up and the tags every run carries.

The tracking store is SQLite inside ``mlruns/`` and artifacts live in ``mlruns/artifacts``,
so ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` shows everything.
``ROBUSTCT_MLRUNS`` points the project at another folder (tests use a temporary one).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

EXPERIMENT = "covid-ct-robustness"
PACKAGE_DIR = Path(__file__).resolve().parent


def mlruns_dir() -> Path:
    """The project's MLflow folder (``$ROBUSTCT_MLRUNS`` or ``./mlruns``), absolute."""
    return Path(os.environ.get("ROBUSTCT_MLRUNS", "mlruns")).resolve()


def tracking_uri(root: Path | None = None) -> str:
    root = Path(root) if root else mlruns_dir()
    return f"sqlite:///{root / 'mlflow.db'}"


def setup(experiment: str = EXPERIMENT, root: Path | None = None):
    """Point MLflow at the project store and select (or create) the experiment.

    Returns:
        the ``mlflow`` module, ready to use.
    """
    import mlflow  # noqa: PLC0415  (heavy; imported by the stages that track)

    root = Path(root) if root else mlruns_dir()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(root))
    mlflow.set_registry_uri(tracking_uri(root))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment)
    return mlflow


def file_hash(path: Path) -> str:
    """Short SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def git_commit() -> str:
    """HEAD commit, suffixed ``-dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version(dvc_file: Path = Path("data.dvc")) -> str:
    """The dataset version: the md5 DVC records in ``data.dvc`` (else the pinned checksum list's hash)."""
    import yaml  # noqa: PLC0415

    if Path(dvc_file).is_file():
        outs = (yaml.safe_load(Path(dvc_file).read_text()) or {}).get("outs", [{}])
        if outs and outs[0].get("md5"):
            return "dvc-md5:" + outs[0]["md5"]
    from .data.ingest import dataset_version  # noqa: PLC0415

    return "sha256sums:" + dataset_version()


def standard_tags(split_dir: Path | None = None) -> dict[str, str]:
    """Tags for every run: git commit, data version, split files' hashes."""
    tags = {"git_commit": git_commit(), "data_version": data_version()}
    if split_dir is not None:
        for name in ("train", "val", "test"):
            f = Path(split_dir) / f"{name}.csv"
            if f.is_file():
                tags[f"split_{name}_sha256"] = file_hash(f)
    return tags


def log_model(mlflow, model, x_example) -> str:
    """Log ``model`` with the PyTorch flavour, a signature and an input example; return its URI."""
    import torch  # noqa: PLC0415
    from mlflow.models import infer_signature  # noqa: PLC0415

    model = model.cpu().eval()
    example = (x_example[:2].float() / 255.0).numpy()
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model, name="model", signature=infer_signature(example, out), input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision==0.29.1", "timm>=1.0,<2"],
    )
    return info.model_uri


def flatten_params(d: dict, prefix: str = "") -> dict:
    """Nested params as ``{"a.b": value}`` (MLflow params are flat)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def require_run(mlflow, info: dict, run_json: Path) -> None:
    """Raise FileNotFoundError (one line, naming ``run_json`` and the fix) when the run it names is not in the store."""
    run_id = (info or {}).get("run_id")
    if not run_id:
        raise FileNotFoundError(f"{run_json}: no MLflow run id (the stage ran with --no-track); rerun it with tracking: "
                                f"dvc repro --force <stage>")
    try:
        mlflow.get_run(run_id)
    except Exception as exc:  # noqa: BLE001  (MlflowException for a missing run)
        raise FileNotFoundError(f"{run_json}: MLflow run {run_id} is not in the store {mlflow.get_tracking_uri()} "
                                f"(new machine or deleted mlruns/?); rerun the stage that wrote it: "
                                f"dvc repro --force <stage>") from exc
