"""Shared input/output helpers (atomic JSON, CSV, split files, device choice, sweep config): no math here."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pandas as pd
import torch

from .epsilon import format_epsilon

OUT = Path("outputs")
PAPER_FGSM_NON_COVID = {  # reference paper, non-COVID test images, accuracy under FGSM
    0.0: 0.800, 0.1: 0.800, 0.2: 0.775, 0.3: 0.750, 0.4: 0.550, 0.5: 0.475,
    0.6: 0.350, 0.7: 0.175, 0.8: 0.075, 0.9: 0.000, 1.0: 0.000,
}


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file + rename); NaN becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def _clean(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def read_json(path: Path, stage: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; it is written by the `{stage}` stage (run `dvc repro {stage}`)")
    return json.loads(path.read_text())


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_split(split_dir: Path, name: str) -> pd.DataFrame:
    path = Path(split_dir) / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found; run `dvc repro split`")
    return pd.read_csv(path, keep_default_na=False)


def load_split_tensors(data_root: Path, split_dir: Path, name: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed images (N, 1, size, size) uint8 and labels (N,) int64 of one split."""
    from .data.images import load_images  # noqa: PLC0415

    df = read_split(split_dir, name)
    x = load_images(data_root, df.path.tolist(), size)
    return x, torch.as_tensor(df.label_index.to_numpy(), dtype=torch.long)


def device() -> torch.device:
    """CUDA when available (or ``ROBUSTCT_DEVICE``), else CPU."""
    name = os.environ.get("ROBUSTCT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sweep_config(attack_params: dict) -> dict:
    """The robustness-evaluation config from the ``attack`` params section.

    Args:
        attack_params: the ``attack`` section, validated (:func:`robustct.params.validated`) or raw
            (it is validated here: epsilons parsed, defaults filled).

    Returns:
        ``{"paper_epsilons", "standard_epsilons", "profile", "worst_case", "suite", "targeted",
        "perceptibility_epsilon", "sanity", "batch_size", "grid_examples", "seed"}`` plus one section per
        registered attack with the active profile's parameters (``cfg["pgd"]``, ``cfg["square"]``, ...).
    """
    from .params import AttackParams  # noqa: PLC0415

    a = AttackParams.model_validate(attack_params).model_dump()
    cfg = {"paper_epsilons": a["fgsm_paper_epsilons"], "standard_epsilons": a["standard_epsilons"],
           "profile": a["profile"], "worst_case": a["worst_case"], "suite": a["suite"], "targeted": a["targeted"],
           "perceptibility_epsilon": a["perceptibility_epsilon"], "sanity": a["sanity"],
           "batch_size": a["batch_size"], "grid_examples": a["grid_examples"], "seed": a["seed"]}
    cfg.update(a["profiles"][a["profile"]])
    return cfg


POINT_METRICS = ("robust_accuracy", "robust_accuracy_non_covid", "robust_accuracy_covid",
                 "attack_success_rate", "mean_linf", "mean_l2")
TARGETED_METRICS = ("targeted_success_rate", "targeted_success_rate_all", "robust_accuracy")


def point_lists(result: dict) -> dict[str, list[dict]]:
    """The untargeted sweep curves of a result: ``{key: [points]}`` (fgsm_paper, fgsm, pgd first)."""
    keys = ["fgsm_paper", "fgsm", "pgd"] + [k for k in result if k not in ("fgsm_paper", "fgsm", "pgd")]
    return {k: result[k] for k in keys if isinstance(result.get(k), list) and result[k]
            and isinstance(result[k][0], dict) and "epsilon" in result[k][0] and "attack" in result[k][0]
            and "robust_accuracy" in result[k][0]}


def flat_sweep_metrics(result: dict) -> dict:
    """DVC-friendly nested dict: ``{attack: {epsilon label: {robust_accuracy, ...}}}``, plus
    ``targeted`` (``{attack/scenario: {epsilon: {targeted_success_rate, ...}}}``) and ``sanity`` flags
    (1 = raised) when present."""
    out = {}
    for key, pts in point_lists(result).items():
        out[key] = {format_epsilon(p["epsilon"]): {k: p[k] for k in POINT_METRICS if k in p} for p in pts}
    if result.get("targeted"):
        out["targeted"] = {name: {format_epsilon(p["epsilon"]): {k: p[k] for k in TARGETED_METRICS} for p in pts}
                           for name, pts in result["targeted"].items()}
    if result.get("sanity"):
        out["sanity"] = {k: int(v["flag"]) for k, v in result["sanity"]["flags"].items()}
        out["sanity"]["any"] = int(result["sanity"]["any"])
    return out
