"""Recipe probe for the defend stage (docs/defences.md): train one `defend` recipe on a split folder,
then score it on validation (or, once, on test) with clean accuracy, AUC, the collapse check and the
worst case per image over PGD-50 x 3 restarts and APGD-CE 50 (optionally Square) at each epsilon.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/defence_probe.py --split outputs/probe_split \
           --size 160 --set method=pgd_at init=new backbone=small_cnn resize_to=64 ... [--test]
With --load MODEL --test it scores a model saved by an earlier probe (--save) on test without retraining.
Prints one JSON line (the row of the probe table) and writes it to --out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from robustct.attacks import APGD, PGD, Square
from robustct.defences import get_method
from robustct.io import load_split_tensors
from robustct.models import build_model, load_checkpoint, save_checkpoint
from robustct.robustness import predict
from robustct.train import collapse_reasons, evaluate


def worst_case(model, x, y, eps, square=0):
    """Per image: robust iff clean-correct and every attack fails (cascade: later attacks on survivors)."""
    xf = x.float() / 255.0
    robust = predict(model, x).argmax(1) == y
    attacks = [PGD(model, eps, steps=50, restarts=3, seed=0), APGD(model, eps, steps=50, restarts=1, seed=0)]
    if square:
        attacks.append(Square(model, eps, max_iter=square, seed=0))
    per = {}
    for a in attacks:
        idx = robust.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        xa = a.perturb(xf[idx], y[idx])
        ok = predict(model, xa).argmax(1) == y[idx]
        robust[idx[~ok]] = False
        per[a.name] = float(robust.float().mean())
    return float(robust.float().mean()), per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="outputs/probe_split")
    ap.add_argument("--data", default="data")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--test", action="store_true", help="score on test (once, for the chosen recipe)")
    ap.add_argument("--epsilons", default="1,2")
    ap.add_argument("--square", type=int, default=0)
    ap.add_argument("--out", default="outputs/probes/probes.jsonl")
    ap.add_argument("--save", default=None)
    ap.add_argument("--load", default=None, help="score a model saved with --save instead of training")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = dict(yaml.safe_load(Path(a.params).read_text())["defend"])
    for kv in a.set:
        k, v = kv.split("=", 1)
        cfg[k] = yaml.safe_load(v)
    train = load_split_tensors(a.data, a.split, "train", a.size)
    val = load_split_tensors(a.data, a.split, "val", a.size)
    base = build_model(cfg.get("backbone") or "small_cnn", "none", a.size, 0.2)
    t0 = time.perf_counter()
    if a.load:
        model = load_checkpoint(Path(a.load))
        history = torch.load(a.load, weights_only=False)["extra"]["history"]
    else:
        model, history = get_method(cfg["method"])(base, train, val, cfg, None)
    minutes = (time.perf_counter() - t0) / 60
    if a.save:
        save_checkpoint(model, Path(a.save), extra={"history": history})
    split = load_split_tensors(a.data, a.split, "test", a.size) if a.test else val
    ev = evaluate(model, *split)
    row = {"set": a.set, "loaded": a.load, "scored_on": "test" if a.test else "val", "train_minutes": round(minutes, 2),
           "selected_epoch": max(h["epoch"] for h in history if h.get("selected")), "epochs_run": len(history),
           "clean_accuracy": ev["accuracy"], "auc": ev["auc"],
           "covid_rate": float(np.mean(ev["p_covid"] >= 0.5)),
           "collapse": collapse_reasons(split[1].numpy(), ev["p_covid"])}
    for e in a.epsilons.split(","):
        wc, per = worst_case(model, *split, float(e) / 255, a.square)
        row[f"worst_case_{e}"] = wc
        row[f"cascade_{e}"] = per
    line = json.dumps(row)
    print(line, flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
