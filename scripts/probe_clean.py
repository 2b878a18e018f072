"""Clean-recipe probe (issue 9): train one recipe on the split's train images, score it on val.

Usage (one thread; one probe at a time on a shared CPU):
    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/probe_clean.py --name NAME --set key=value ...
Keys: backbone, image_size, epochs, lr, lr_backbone, weight_decay, schedule, trainable_stages (int|all),
dropout, label_smoothing, batch_size, seed, hflip, rotation_deg, translate, scale_lo, scale_hi.
Prints one progress line per epoch and one JSON result line (appended to --out). ``--test`` also scores the
test split (cluster bootstrap over patients): use it once, for the final recipe only.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robustct.io import load_split_tensors, read_split
from robustct.metrics import best_threshold, evaluation_report, point_metrics
from robustct.models import build_model, load_checkpoint, save_checkpoint
from robustct.robustness import predict
from robustct.train import SmoothedObjective, backbone_head_param_groups, fit, make_augment, seed_everything

DEFAULTS = dict(backbone="efficientnet_lite0", image_size=160, epochs=20, lr=1e-3, lr_backbone=None, weight_decay=0.0,
                schedule="constant", trainable_stages=0, dropout=0.5, label_smoothing=0.0, batch_size=32, seed=0,
                hflip=True, rotation_deg=10.0, translate=0.05, scale_lo=0.9, scale_hi=1.1)


def parse(sets: list[str]) -> dict:
    cfg = dict(DEFAULTS)
    for item in sets:
        k, v = item.split("=", 1)
        if k not in cfg:
            raise SystemExit(f"unknown key {k}; valid: {', '.join(cfg)}")
        cfg[k] = v if k in ("backbone", "schedule") else (None if v == "none" else v if v == "all" else
                                                           (v.lower() == "true") if k == "hflip" else float(v))
    for k in ("image_size", "epochs", "batch_size", "seed"):
        cfg[k] = int(cfg[k])
    if cfg["trainable_stages"] != "all":
        cfg["trainable_stages"] = int(cfg["trainable_stages"])
    return cfg


def tta_predict(model, x, flip: bool) -> np.ndarray:
    p = predict(model, x)[:, 1].numpy()
    if flip:
        p = (p + predict(model, torch.flip(x, dims=[-1]))[:, 1].numpy()) / 2
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--split-dir", default="outputs/split")
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default="outputs/probes/clean.jsonl")
    ap.add_argument("--save", help="checkpoint path for the trained model")
    ap.add_argument("--test", action="store_true", help="also score the test split (final recipe only)")
    ap.add_argument("--load", help="skip training: score this checkpoint (saved by --save) instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = parse(args.set)
    t0 = time.time()
    size = cfg["image_size"]
    train = load_split_tensors(Path(args.data), Path(args.split_dir), "train", size)
    val = load_split_tensors(Path(args.data), Path(args.split_dir), "val", size)
    if args.load:
        model = load_checkpoint(Path(args.load))
        history = torch.load(args.load, weights_only=False)["extra"]["history"]
    else:
        model, history = train_recipe(cfg, train, val, args.name, t0)
    yv = val[1].numpy()
    res = {"name": args.name, "cfg": cfg, "train_s": round(time.time() - t0, 1), "loaded": args.load,
           "selected_epoch": max(h["epoch"] for h in history if h.get("selected"))}
    for tta in (False, True):
        p = tta_predict(model, val[0], tta)
        thr = best_threshold(yv, p)
        tag = "tta_" if tta else ""
        res[f"val_{tag}auc"] = point_metrics(yv, p)["auc"]
        res[f"val_{tag}acc_0.5"] = point_metrics(yv, p, 0.5)["accuracy"]
        res[f"val_{tag}acc_youden"] = point_metrics(yv, p, thr)["accuracy"]
        res[f"val_{tag}youden_threshold"] = thr
    if args.save:
        save_checkpoint(model, Path(args.save), extra={"history": history, "probe": res})
    if args.test:
        test = load_split_tensors(Path(args.data), Path(args.split_dir), "test", size)
        groups = read_split(Path(args.split_dir), "test").group.to_numpy()
        for tta in (False, True):
            pv = tta_predict(model, val[0], tta)
            thr = best_threshold(yv, pv)  # chosen on validation only
            pt = tta_predict(model, test[0], tta)
            for name, t in (("0.5", 0.5), ("youden", thr)):
                rep = evaluation_report(test[1].numpy(), pt, t, 1000, 0, groups=groups)
                res[f"test_{'tta_' if tta else ''}{name}"] = {
                    "threshold": t, "interval_method": rep["interval_method"], "n": rep["n"],
                    "n_groups": rep["n_groups"],
                    **{k: rep["metrics"][k] for k in ("accuracy", "auc", "sensitivity", "specificity")}}
    res["total_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(res) + "\n")
    print(json.dumps(res), flush=True)


def train_recipe(cfg, train, val, name, t0):
    seed_everything(cfg["seed"])
    model = build_model(cfg["backbone"], "imagenet", cfg["image_size"], cfg["dropout"], freeze_backbone=True)
    model.set_trainable_stages(cfg["trainable_stages"])
    aug = make_augment({"hflip": cfg["hflip"], "rotation_deg": cfg["rotation_deg"], "translate": cfg["translate"],
                        "scale": [cfg["scale_lo"], cfg["scale_hi"]]})
    log = lambda m, step: print(f"[{name}] epoch {step} {time.time() - t0:.0f}s " + " ".join(  # noqa: E731
        f"{k}={v:.3f}" for k, v in m.items() if k in ("train_loss", "val_accuracy", "val_auc")), flush=True)
    model, history = fit(model, train, val, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                         seed=cfg["seed"], augment=aug, weight_decay=cfg["weight_decay"], schedule=cfg["schedule"],
                         log=log, objective=SmoothedObjective(cfg["label_smoothing"]),
                         param_groups=backbone_head_param_groups(model, cfg["lr"], cfg["lr_backbone"]))
    return model, history


if __name__ == "__main__":
    main()
