"""Screen training recipes by patient-grouped cross-validation on train + val (the test split is never read).

Each recipe of a grid file is trained on every fold (fit / select / held-out, :func:`robustct.crossval.nested_folds`)
and scored on the held-out fold. Two kinds of recipe:

- ``defend``: overrides of the ``defend`` section of ``params.yaml``, trained by the method's registered function
  (init ``new``). Scored by clean accuracy and AUC (the model's validation-chosen threshold) and the worst case per
  image over PGD-20 and APGD-CE-20 (cascade, later attack on the survivors) at each epsilon of ``--epsilons``.
- ``train``: overrides of the ``train`` section, trained as the ``train`` stage does (plus ``ema_decay`` and
  ``tta``, screened here before they become parameters). Scored by clean accuracy at 0.5 and AUC, with and
  without horizontal-flip test-time augmentation.

This is a screening tool for many recipes on one machine with a GPU (jobs run in parallel worker processes);
finalists are then run as ``dvc exp`` trials of the pipeline, which is what the docs tables report.

Usage:
    PYTHONPATH=src python scripts/screen_cv.py pack --out screen/pack.pt            # images of train + val
    PYTHONPATH=src python scripts/screen_cv.py run --pack screen/pack.pt --grid scripts/screen_grid.yaml \\
        --out screen/results.jsonl --workers 8 --budget-s 480
    PYTHONPATH=src python scripts/screen_cv.py table screen/results.jsonl                 # mean / std per recipe
    PYTHONPATH=src python scripts/screen_cv.py to-cv screen/results.jsonl --name c05_batch16 --out c05.json
        # one train recipe's held-out rows as a cv.json (paths from the split), for `robustct cv-compare`
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def pack(args):
    import torch

    from robustct.io import load_split_tensors, read_split

    split, data = Path(args.split), Path(args.data)
    xs, ys, groups = [], [], []
    for name in ("train", "val"):
        x, y = load_split_tensors(data, split, name, args.size)
        xs.append(x), ys.append(y)
        groups += read_split(split, name).group.tolist()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": torch.cat(xs), "y": torch.cat(ys), "groups": groups, "size": args.size}, args.out)
    print(f"{args.out}: {sum(len(x) for x in xs)} images ({args.size} px), {len(set(groups))} patient groups")


def load_grid(path: str) -> list[dict]:
    from ruamel.yaml import YAML

    grid = YAML(typ="safe").load(Path(path).read_text())
    out = []
    for kind in ("defend", "train"):
        base = grid.get(f"{kind}_base", {})
        for name, over in (grid.get(kind) or {}).items():
            out.append({"kind": kind, "name": name, "cfg": {**base, **(over or {})}})
    return out


_STATE = {}


def _init_worker(pack_path: str, params_path: str, threads: int):
    import torch

    sys.stderr = open(os.devnull, "w")  # per-epoch progress lines of many workers
    torch.set_num_threads(threads)
    d = torch.load(pack_path, weights_only=False)
    from robustct.params import load_params

    _STATE.update(d, params=load_params(Path(params_path)))


def _hflip_predict(model, x, tta: bool):
    import torch

    from robustct.robustness import predict

    p = predict(model, x)[:, 1].numpy()
    if tta:
        p = (p + predict(model, torch.flip(x, dims=[-1]))[:, 1].numpy()) / 2
    return p


def _worst_case(model, x, y, eps: float) -> float:
    from robustct.attacks import APGD, PGD
    from robustct.robustness import predict, run_attack

    robust = predict(model, x).argmax(1) == y
    for a in (PGD(model, eps, steps=20, restarts=1, seed=0), APGD(model, eps, steps=20, restarts=1, seed=0)):
        idx = robust.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        xa, _ = run_attack(model, a, x[idx], y[idx])  # on the model's device; CPU tensors back
        ok = predict(model, xa).argmax(1) == y[idx]
        robust[idx[~ok]] = False
    return float(robust.float().mean())


def _job(job: dict) -> dict:
    from robustct.crossval import nested_folds
    from robustct.io import device
    from robustct.metrics import point_metrics

    x, y, groups = _STATE["x"], _STATE["y"], np.asarray(_STATE["groups"])
    fit_idx, sel_idx, ho = nested_folds(y.numpy(), groups, job["k"], job["seed"])[job["fold"]]
    fit, sel, held = (x[fit_idx], y[fit_idx]), (x[sel_idx], y[sel_idx]), (x[ho], y[ho])
    t0 = time.perf_counter()
    dev = device()
    row = {"kind": job["kind"], "name": job["name"], "fold": job["fold"], "cfg": job["cfg"], "n_held_out": len(ho)}
    try:
        if job["kind"] == "defend":
            model, history = _train_defend(job["cfg"], fit, sel, dev)
        else:
            epoch_p = []  # held-out P(COVID) after every epoch: scores "last" and fixed epochs from the same run
            resolved = {}  # the whole train section the fold ran with (params.yaml + recipe): rows stay readable
            model, history = _train_clean(job["cfg"], fit, sel, dev, held[0], epoch_p, resolved)  # after params change
            row["epoch_p_covid"], row["train_params"] = epoch_p, resolved
        row["train_s"] = round(time.perf_counter() - t0, 1)
        row["selected_epoch"] = max((h["epoch"] for h in history if h.get("selected")), default=None)
        yh = held[1].numpy()
        if job["kind"] == "defend":
            p = _hflip_predict(model, held[0], False)
            m = point_metrics(yh, p, 0.5)  # the validation-chosen threshold is folded into the model (set_threshold)
            row.update(accuracy=m["accuracy"], auc=m["auc"], covid_rate=float((p >= 0.5).mean()))
            for e in job["epsilons"]:
                row[f"worst_{e * 255:g}"] = _worst_case(model, held[0], held[1], e)
        else:
            for tta in (False, True):
                p = _hflip_predict(model, held[0], tta)
                m = point_metrics(yh, p, 0.5)
                tag = "tta_" if tta else ""
                row.update({f"{tag}accuracy": m["accuracy"], f"{tag}auc": m["auc"]})
                row[f"{tag}p_covid"] = [round(float(v), 5) for v in p]  # held-out order: for pooled and ensemble scores
            row["y"] = [int(v) for v in yh]
    except Exception as exc:  # a failing recipe is a result too
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["total_s"] = round(time.perf_counter() - t0, 1)
    return row


def _train_defend(cfg: dict, fit, sel, dev):
    from robustct.defences import get_method
    from robustct.models import build_model

    full = {**_STATE["params"]["defend"], **cfg}
    base = build_model("small_cnn_bn", "none", int(_STATE["size"]), 0.0).to(dev)  # carries image size and device
    return get_method(full["method"])(base, fit, sel, full, None)


def _train_clean(cfg: dict, fit, sel, dev, held_x=None, epoch_p: list | None = None, resolved: dict | None = None):
    import torch

    from robustct.models import build_model
    from robustct.train import (SmoothedObjective, WeightEMA, backbone_head_param_groups, fit as fit_fn,
                                make_augment, seed_everything)

    from robustct.params import validated

    c = validated({"train": {**_STATE["params"]["train"], **cfg}})["train"]  # the schema's rules (e.g. refit + last)
    if resolved is not None:
        resolved.update(c)
    if int(c["image_size"]) != int(_STATE["size"]):  # the pack's images were resized once, at its size
        raise ValueError(f"recipe image_size {c['image_size']} but the pack holds {_STATE['size']} px images: "
                         f"build one with `screen_cv.py pack --size {c['image_size']}` and pass it as --pack")
    if c["fit_on"] == "train_val":  # refit on fit + select with a fixed schedule (nothing to select)
        fit = (torch.cat([fit[0], sel[0]]), torch.cat([fit[1], sel[1]]))
    seed_everything(int(c["seed"]))
    model = build_model(c["backbone"], str(c["weights"]), int(_STATE["size"]), float(c["dropout"]),
                        bool(c["freeze_backbone"])).to(dev)
    ema = WeightEMA(model, float(c["ema_decay"])) if c.get("ema_decay") else None

    def record(m, epoch, row):  # the weights just trained (EMA: its shadow), before the selection
        if epoch_p is not None:
            epoch_p.append([round(float(v), 5) for v in _hflip_predict(ema.model if ema else m, held_x, False)])
        return False

    return fit_fn(model, fit, sel, epochs=int(c["epochs"]), lr=float(c["lr"]), batch_size=int(c["batch_size"]),
                  seed=int(c["seed"]), augment=make_augment(c.get("augmentation")),
                  weight_decay=float(c.get("weight_decay", 0.0)), schedule=c.get("schedule", "constant"),
                  objective=SmoothedObjective(float(c["label_smoothing"])) if c.get("label_smoothing") else None,
                  param_groups=backbone_head_param_groups(model, float(c["lr"]), c.get("lr_backbone")), ema=ema,
                  select="last" if c.get("checkpoint") == "last" else "robust", epoch_end=record, progress=None)


def run(args):
    import multiprocessing as mp

    from robustct.cli import exit_on_sigterm
    from robustct.epsilon import parse_epsilon

    recipes = load_grid(args.grid)
    if args.only:
        recipes = [r for r in recipes if r["name"] in args.only.split(",")]
    eps = [parse_epsilon(e, "--epsilons") for e in args.epsilons.split(",")]
    jobs = [{**r, "fold": f, "k": args.folds, "seed": args.seed, "epsilons": eps}
            for r in recipes for f in range(args.folds)
            if not args.only_folds or str(f) in args.only_folds.split(",")]
    print(f"{len(recipes)} recipes x {args.folds} folds ({args.only_folds or 'all'}) = {len(jobs)} jobs on "
          f"{args.workers} workers", flush=True)
    t0 = time.perf_counter()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    done = 0
    # `kill` of this process: leave through the `with` below, whose exit terminates the worker processes (by
    # default SIGTERM ends only this one and the workers run on, orphaned, holding the CPU)
    exit_on_sigterm()
    with open(args.out, "a") as fh, ctx.Pool(args.workers, _init_worker,
                                             (args.pack, args.params, args.threads)) as pool:
        it = pool.imap_unordered(_job, jobs)
        while done < len(jobs):
            left = args.budget_s - (time.perf_counter() - t0)
            if left <= 0:
                print(f"budget of {args.budget_s} s spent: {done}/{len(jobs)} jobs done", flush=True)
                pool.terminate()
                break
            try:
                row = it.next(timeout=left)
            except mp.TimeoutError:
                continue
            done += 1
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(f"[{time.perf_counter() - t0:6.0f}s] {done}/{len(jobs)} {row['name']} fold {row['fold']}: "
                  + " ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)
                             and k not in ("train_s", "total_s")) + (f" ERROR {row['error']}" if "error" in row else ""),
                  flush=True)
    table(argparse.Namespace(results=args.out))


def table(args):
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["kind"], r["name"]), []).append(r)
    for (kind, name), rs in by.items():
        ok = [r for r in rs if "error" not in r]
        keys = [k for k in ok[0] if isinstance(ok[0][k], float) and k not in ("total_s",)] if ok else []
        stats = " ".join(f"{k}={np.mean([r[k] for r in ok]):.3f}±{np.std([r[k] for r in ok], ddof=1) if len(ok) > 1 else 0:.3f}"
                         for k in keys)
        errors = {r["error"] for r in rs if "error" in r}
        if ok and "p_covid" in ok[0] and len(ok) == max(r["fold"] for r in rs) + 1:  # every fold: pooled scores
            from robustct.metrics import point_metrics

            ok.sort(key=lambda r: r["fold"])  # y and every p below in the same (fold) order

            y = np.concatenate([r["y"] for r in ok])
            stats += " pooled:" + "".join(
                f" {tag}acc={m['accuracy']:.3f} {tag}auc={m['auc']:.3f}"
                for tag in ("", "tta_") for m in [point_metrics(y, np.concatenate([r[f"{tag}p_covid"] for r in ok]), 0.5)])
            stats += "\n        per fold (acc/auc): " + " ".join(f"{r['accuracy']:.3f}/{r['auc']:.3f}" for r in ok)
            if "epoch_p_covid" in ok[0]:  # pooled held-out score of every epoch (the last one: checkpoint "last")
                n = min(len(r["epoch_p_covid"]) for r in ok)
                stats += "\n        per fold, last epoch (acc/auc): " + " ".join(
                    f"{m['accuracy']:.3f}/{m['auc']:.3f}" for r in ok
                    for m in [point_metrics(np.asarray(r["y"]), np.asarray(r["epoch_p_covid"][-1]), 0.5)])
                stats += "\n        per epoch (pooled acc/auc):" + "".join(
                    f" {e + 1}:{m['accuracy']:.3f}/{m['auc']:.3f}" for e in range(n)
                    for m in [point_metrics(y, np.concatenate([r["epoch_p_covid"][e] for r in ok]), 0.5)])
        print(f"{kind:6s} {name:28s} folds={len(ok)} {stats}" + (f" ERRORS {errors}" if errors else ""))


def to_cv(args):
    """Write one ``train`` recipe's rows as the train stage's ``cv.json`` (:meth:`robustct.crossval.CVResult.to_dict`
    with paths), so ``robustct cv-compare`` pairs it with a ``dvc exp`` trial. The rows must come from the pack of
    ``--split`` (train then val, in split order) and ``--folds`` / ``--seed`` must be the ones of that round: each
    row's labels are checked against them."""
    import pandas as pd

    from robustct.crossval import CVResult, FoldResult, nested_folds
    from robustct.io import read_split, write_json
    from robustct.metrics import point_metrics

    table = pd.concat([read_split(Path(args.split), "train"), read_split(Path(args.split), "val")])
    y, groups = table.label_index.to_numpy(), table.group.to_numpy()
    folds = nested_folds(y, groups, args.folds, args.seed)
    p, fold, results = np.full(len(y), np.nan), np.full(len(y), -1), {}
    for line in Path(args.results).read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        if r.get("kind") != "train" or r.get("name") != args.name or "error" in r:
            continue
        fit, sel, held = folds[r["fold"]]
        if list(y[held]) != r["y"]:
            sys.exit(f"error: {args.results}: fold {r['fold']} of {args.name} holds other images than "
                     f"--split {args.split} with --folds {args.folds} --seed {args.seed}; pass that round's values")
        p[held], fold[held] = r["p_covid"], r["fold"]
        m = point_metrics(y[held], p[held], 0.5)
        results[r["fold"]] = FoldResult(r["fold"], len(fit), len(sel), len(held), len(set(groups[held])),
                                        m["accuracy"], m["auc"])
    if np.isnan(p).any():
        sys.exit(f"error: {args.results}: {args.name} lacks folds {sorted(set(range(args.folds)) - set(fold))}")
    res = CVResult(args.folds, args.seed, [results[f] for f in sorted(results)], y.astype(int), p, fold)
    write_json(Path(args.out), {**res.to_dict(paths=table.path.tolist()), "source": f"{args.results} ({args.name})"})
    print(f"{args.out}: {len(y)} out-of-fold predictions of {args.name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--split", default="outputs/split")
    p.add_argument("--data", default="data")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--out", default="screen/pack.pt")
    r = sub.add_parser("run")
    r.add_argument("--pack", default="screen/pack.pt")
    r.add_argument("--grid", default="scripts/screen_grid.yaml")
    r.add_argument("--params", default="params.yaml")
    r.add_argument("--out", default="screen/results.jsonl")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--epsilons", default="1/255,2/255")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--budget-s", type=float, default=3600)
    r.add_argument("--only", default="", help="comma-separated recipe names")
    r.add_argument("--only-folds", default="", help="comma-separated fold indices (e.g. to finish a stopped round)")
    t = sub.add_parser("table")
    t.add_argument("results")
    c = sub.add_parser("to-cv")
    c.add_argument("results")
    c.add_argument("--name", required=True, help="a train recipe of the rows")
    c.add_argument("--out", required=True)
    c.add_argument("--split", default="outputs/split")
    c.add_argument("--folds", type=int, default=5)
    c.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    {"pack": pack, "run": run, "table": table, "to-cv": to_cv}[args.cmd](args)


if __name__ == "__main__":
    main()
