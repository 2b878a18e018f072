"""Adversarial-training throughput against its floor, side by side in one process (issue 8).

For the ``defend`` recipe's model (default: params.yaml ``defend``: small_cnn_bn resized to 64 px inside, input
160 px), one training step on the same batch is timed for:
  1. a clean step (one forward and backward pass, augmentation off): the unit;
  2. the method's step (``defend.method``, ``defend.steps`` attack steps, dual BatchNorm as configured);
  3. the floor: (1 + attack steps) clean steps, the cost of one forward-and-backward pass per attack step plus
     the weight update's pass.
Prints images per second of each and the ratio method / floor (1.0 = no overhead beyond the passes it must make;
TRADES also needs one no-grad forward for p(x) and one extra forward of x, so it sits slightly above 1).

Usage (from the repository root):
    python benchmarks/bench_adv_training.py [--batch 32] [--repeats 5] [--threads 2] [--set beta=3 steps=3]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> None:
    from robustct.defences.adversarial import AdvTrainSettings, initial_model, make_objective, split_batchnorm
    from robustct.models import build_model
    from robustct.params import load_params
    from robustct.train import Objective

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="defend overrides KEY=VALUE (values as YAML scalars)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params(Path(args.params))
    cfg = dict(params["defend"])
    for kv in args.set:
        k, v = kv.split("=", 1)
        from ruamel.yaml import YAML  # noqa: PLC0415

        cfg[k] = YAML(typ="safe").load(v)
    size = int(params["train"]["image_size"])
    s = AdvTrainSettings.from_cfg(cfg, cfg["method"])
    base = build_model("small_cnn_bn", "none", size, 0.0)
    model = initial_model(base, s)
    model.set_trainable_stages("all")
    if s.batchnorm == "dual":
        split_batchnorm(model)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, size, size, generator=g)
    y = torch.randint(0, 2, (args.batch,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = make_objective(model, s, torch.Generator().manual_seed(1))
    objective.begin_epoch(10 ** 6)  # past the warm-up: full epsilon and beta

    def step(obj):
        def run():
            model.train()
            loss, _ = obj.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    t_clean = timed(step(Objective()), args.repeats)
    t_method = timed(step(objective), args.repeats)
    steps = s.attack_steps()
    t_floor = (1 + steps) * t_clean
    ips = lambda t: args.batch / t  # noqa: E731
    print(f"model: {s.backbone} resize_to={s.resize_to} input {size} px, batch {args.batch}, "
          f"{args.threads} threads, method {s.method}, {steps} attack steps, batchnorm {s.batchnorm}")
    print("| step | images/s | seconds per batch | ratio to floor |")
    print("|---|---:|---:|---:|")
    print(f"| clean (1 forward + backward) | {ips(t_clean):.1f} | {t_clean:.4f} | {t_clean / t_floor:.2f} |")
    print(f"| floor: (1 + {steps}) forward + backward | {ips(t_floor):.1f} | {t_floor:.4f} | 1.00 |")
    print(f"| {s.method} | {ips(t_method):.1f} | {t_method:.4f} | {t_method / t_floor:.2f} |")


if __name__ == "__main__":
    main()
