"""Why a uniform soup of two fine-tuned members does (not) keep the gain of their probability ensemble.

For the chosen cross-validation folds of the train stage (same folds as ``train.cv_folds: 5``, seed
``train.seed``), trains the soup's members exactly as the train stage does (``params.yaml`` ``train``
section, member j seeded ``seed + j``, one initialisation) and scores on the held-out fold: each member,
the mean of their P(COVID) (a probability ensemble), and the uniform soup with averaged and with
re-estimated BatchNorm statistics. The test split is never read. Member 0 must reproduce the
``cv-default`` trial's out-of-fold probabilities when run with the same torch thread count.

Usage (from the repository root, after ``dvc repro split``):
    PYTHONPATH=src python scripts/soup_probe.py --folds 3 0 --members 2 --out screen/r5/soup_probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robustct.crossval import nested_folds
from robustct.io import load_split_tensors, read_split
from robustct.metrics import point_metrics
from robustct.models import build_model
from robustct.params import load_params
from robustct.robustness import predict
from robustct.stages.train import train_members
from robustct.train import seed_everything, uniform_soup


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, nargs="+", required=True)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--split-dir", default="outputs/split")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cfg = load_params(Path(a.params))["train"]
    if cfg.get("fit_on") != "train_val":
        raise SystemExit("this probe mirrors the refit recipe (train.fit_on: train_val)")
    size, k = int(cfg["image_size"]), int(cfg.get("cv_folds") or 5)
    tr = load_split_tensors(Path(a.data), Path(a.split_dir), "train", size)
    va = load_split_tensors(Path(a.data), Path(a.split_dir), "val", size)
    x, y = torch.cat([tr[0], va[0]]), torch.cat([tr[1], va[1]])
    table = pd.concat([read_split(Path(a.split_dir), "train"), read_split(Path(a.split_dir), "val")])
    folds = nested_folds(y.numpy(), table.group.to_numpy(), k, int(cfg["seed"]))
    rows = []
    for f in a.folds:
        fit_idx, sel_idx, ho = folds[f]
        train = (torch.cat([x[fit_idx], x[sel_idx]]), torch.cat([y[fit_idx], y[sel_idx]]))  # refit: fit + select
        select = (x[sel_idx], y[sel_idx])
        seed_everything(int(cfg["seed"]))
        init = build_model(cfg["backbone"], str(cfg["weights"]), size, float(cfg["dropout"]), bool(cfg["freeze_backbone"]))
        members, _ = train_members({**cfg, "soup_size": a.members}, init, train, select)
        p = {f"member_{j}": predict(m, x[ho])[:, 1].numpy() for j, m in enumerate(members)}
        p["ensemble"] = np.mean([p[f"member_{j}"] for j in range(a.members)], 0)
        p["soup_averaged_bn"] = predict(uniform_soup(members), x[ho])[:, 1].numpy()
        p["soup_reestimated_bn"] = predict(uniform_soup(members, bn_images=train[0]), x[ho])[:, 1].numpy()
        yh = y[ho].numpy()
        row = {"fold": f, "n_held_out": len(ho), "torch_num_threads": torch.get_num_threads(),
               "metrics": {n: {m: point_metrics(yh, v, 0.5)[m] for m in ("accuracy", "auc")} for n, v in p.items()},
               "path": table.path.to_numpy()[ho].tolist(), "y": yh.tolist(),
               "p_covid": {n: [round(float(t), 6) for t in v] for n, v in p.items()}}
        rows.append(row)
        print(f"fold {f}: " + "; ".join(f"{n} {m['accuracy']:.3f}/{m['auc']:.3f}" for n, m in row["metrics"].items()),
              flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
