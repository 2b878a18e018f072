"""Measure a pre-processing defence (denoiser, input transform) or randomized smoothing on the real data.

Honest attack: the cascade FGSM -> PGD -> APGD-CE end to end through the composite (BPDA for the
transforms, EOT over the composite's draws for random ones); per image and epsilon an image is robust
only if every attack failed (each later attack runs only on the images still robust). Naive attack:
the same cascade crafted on a weaker surrogate and evaluated on the defended model: the transform's
own gradient (zero for bit depth / JPEG) for transforms, the undefended classifier (transfer) for the
denoiser and for smoothing.

Usage (from a folder with outputs/split/*.csv and data/):
  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/defences_preproc.py --method input_transform \
      --cfg '{"input_transform": {"kind": "bit_depth", "bits": 4}}' --name bit4 --out results/bit4.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from robustct.attacks import APGD, FGSM, PGD
from robustct.defences import METHODS, get_method
from robustct.io import load_split_tensors, write_json
from robustct.models import load_checkpoint, save_checkpoint
from robustct.robustness import gradient_zero_fraction, predict
from robustct.train import choose_threshold

EPSILONS = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255)


def cascade(craft, judge, x, y, eps, steps, random, seed=0):
    """Worst case over FGSM, PGD-``steps``, APGD-CE-``steps`` (robust = correct on clean and after every attack).

    ``craft`` makes the examples, ``judge`` (the defended model) classifies them. Returns
    ``{"clean": acc, "fgsm": robust acc after FGSM, "pgd": after FGSM+PGD, "apgd_ce": worst case}``.
    """
    xf = x.float() / 255.0
    robust = predict(judge, xf).argmax(1) == y
    out = {"clean": float(robust.float().mean())}
    attacks = {"fgsm": lambda: FGSM(craft, eps),
               "pgd": lambda: PGD(craft, eps, steps=steps, early_stop=not random, seed=seed),
               "apgd_ce": lambda: APGD(craft, eps, steps=steps, early_stop=not random, seed=seed)}
    for name, make in attacks.items():
        idx = robust.nonzero().squeeze(1)
        if len(idx):
            atk = make()
            atk.batch_size = 32
            xa = atk.perturb(xf[idx], y[idx])
            robust[idx] &= predict(judge, xa).argmax(1) == y[idx]
        out[name] = float(robust.float().mean())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=[*METHODS, "baseline"])
    ap.add_argument("--cfg", default="{}", help="JSON merged into the defend section")
    ap.add_argument("--name", required=True)
    ap.add_argument("--base", default="outputs/train/model.pt")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--split-dir", default="outputs/split")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--subset", type=int, default=None, help="attack a seeded subset of this many test images")
    ap.add_argument("--certify", default=None, help="JSON cfg for certify_report (smoothing only)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    base = load_checkpoint(a.base)
    size = base.config["image_size"]
    train, val, test = (load_split_tensors(Path(a.data_root), Path(a.split_dir), s, size) for s in ("train", "val", "test"))
    cfg = {"threshold": "val_youden", **json.loads(a.cfg)}
    if a.method == "baseline":
        model, history = base, []
        model.set_threshold(choose_threshold(model, val, cfg["threshold"]))
    else:
        model, history = get_method(a.method)(copy.deepcopy(base), train, val, cfg, None)
    train_s = time.perf_counter() - t0
    ckpt = Path(a.out).with_suffix(".pt")
    save_checkpoint(model, ckpt)
    model = load_checkpoint(ckpt)  # measure what the pipeline would load
    base.eval()
    x, y = test
    p = predict(model, x)[:, 1]
    res = {"name": a.name, "method": a.method, "cfg": cfg, "train_s": train_s, "n_test": len(y),
           "image_size": size, "clean_accuracy": float(((p >= 0.5).long() == y).float().mean()),
           "auc": float(roc_auc_score(y.numpy(), p.numpy())), "predicted_covid_rate": float((p >= 0.5).float().mean()),
           "threshold": model.config["threshold"], "history": history}
    if a.subset is not None and a.subset < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: a.subset].sort().values
        x, y = x[keep], y[keep]
        res["n_attacked"] = len(y)
    random = a.method == "gaussian_smoothing" or bool(getattr(model, "eot_samples", 1) > 1)
    naive = base
    if a.method == "input_transform":
        naive = copy.deepcopy(model)
        naive.set_bpda(False)
    res["zero_gradient_fraction"] = {"honest": gradient_zero_fraction(model, x, y)}
    if a.method != "baseline":
        res["zero_gradient_fraction"]["naive"] = gradient_zero_fraction(naive, x, y)
    res["honest"], res["naive"] = {}, {}
    for e in EPSILONS:
        k = f"{e * 255:g}/255"
        res["honest"][k] = cascade(model, model, x, y, e, a.steps, random)
        print(a.name, "honest", k, res["honest"][k], flush=True)
        if a.method != "baseline":
            res["naive"][k] = cascade(naive, model, x, y, e, a.steps, False)
            print(a.name, "naive ", k, res["naive"][k], flush=True)
    if a.certify:
        from robustct.defences.smoothing import certify_report  # noqa: PLC0415

        res["certify"] = certify_report(model, x, y, json.loads(a.certify)).as_dict()
        print(json.dumps(res["certify"], indent=1), flush=True)
    res["total_s"] = time.perf_counter() - t0
    write_json(Path(a.out), res)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
