"""Attack speed benchmark, side by side in one process on the same model and test images.

Times:
  1. our FGSM sweep over the paper's 11 epsilons (one input gradient reused) against the naive
     per-epsilon recomputation (FGSM(model, e).perturb for each epsilon);
  2. our PGD (with and without early stop) against ART's ProjectedGradientDescent and torchattacks'
     PGD at equal steps, step size, epsilon and one random start;
  3. the floor: steps x (one forward and input-gradient pass over the images).
Prints a markdown table of times, ratios and robust accuracy (and its agreement in images).

Usage (from the repository root, after `dvc repro train`):
    python benchmarks/bench_attacks.py [--model outputs/train/model.pt] [--steps 10] [--epsilon 2/255]
    python benchmarks/bench_attacks.py --random-init   # untrained EfficientNet-Lite0, when no checkpoint exists
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def timed(fn, repeats: int):
    """Median wall time of ``repeats`` calls (after one untimed warm-up call) and the last output."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main(argv=None) -> None:
    from robustct.attacks import FGSM, PGD, eval_mode, objective_gradient
    from robustct.models import build_model, load_checkpoint
    from robustct.params import parse_epsilon
    from robustct.robustness import fgsm_sweep, predict
    from robustct.io import load_split_tensors

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="outputs/train/model.pt")
    ap.add_argument("--random-init", action="store_true", help="untrained efficientnet_lite0 instead of --model")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--split-dir", default="outputs/split")
    ap.add_argument("--n", type=int, default=0, help="test images used (0 = all)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--epsilon", default="2/255")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per method (median reported), after one warm-up")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.random_init:
        model, size = build_model("efficientnet_lite0", weights="none", image_size=160), 160
    else:
        model = load_checkpoint(Path(a.model))
        size = model.config["image_size"]
    model = model.to(device).eval()
    x, y = load_split_tensors(Path(a.data_root), Path(a.split_dir), "test", size)
    if a.n:
        x, y = x[: a.n], y[: a.n]
    xf, yd = (x.float() / 255).to(device), y.to(device)
    eps, steps, bs = parse_epsilon(a.epsilon), a.steps, a.batch_size
    alpha = 2.5 * eps / steps
    paper = [round(0.1 * k, 1) for k in range(11)]
    rows = []

    clean_ok = predict(model, xf, bs).argmax(1) == y

    def acc(xa):  # robust accuracy as the sweeps define it: correct without and with the attack
        return float(((predict(model, xa, bs).argmax(1) == y) & clean_ok).float().mean())

    # 1. FGSM sweep, 11 epsilons
    t_sweep, (pts, _) = timed(lambda: fgsm_sweep(model, x, y, paper, bs), a.repeats)

    def naive():
        return [acc(FGSM(model, e, batch_size=bs).perturb(xf, yd)) for e in paper]

    t_naive, naive_acc = timed(naive, a.repeats)
    agree = max(abs(p["robust_accuracy"] - n) for p, n in zip(pts, naive_acc)) * len(y)
    rows.append(("FGSM sweep, 11 epsilons (ours, one gradient)", t_sweep, t_sweep / t_naive,
                 f"max diff {agree:.0f} images", ""))
    rows.append(("FGSM per epsilon, naive (11 gradients)", t_naive, 1.0, "", ""))

    # 3. floor: steps x (forward + input gradient)
    def one_pass():
        with eval_mode(model):
            for i in range(0, len(xf), bs):
                objective_gradient(model, xf[i:i + bs], yd[i:i + bs])

    t_pass, _ = timed(one_pass, a.repeats)
    floor = steps * t_pass

    # 2. PGD at equal steps
    ours_es = lambda: PGD(model, eps, steps=steps, step_size=alpha, seed=0, batch_size=bs).perturb(xf, yd)  # noqa: E731
    ours = lambda: PGD(model, eps, steps=steps, step_size=alpha, seed=0, early_stop=False,  # noqa: E731
                       batch_size=bs).perturb(xf, yd)
    t_es, xa_es = timed(ours_es, a.repeats)
    t_ours, xa_ours = timed(ours, a.repeats)
    ref = acc(xa_ours)
    results = [("PGD ours, early stop", t_es, acc(xa_es)), ("PGD ours, no early stop", t_ours, ref)]
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=2,
                                clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
        art = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1,
                                       batch_size=bs, verbose=False)
        t_art, xa_art = timed(lambda: art.generate(xf.cpu().numpy(), y=np.eye(2)[y.numpy()]), a.repeats)
        results.append(("PGD ART 1.20", t_art, acc(torch.from_numpy(xa_art))))
    except ImportError as exc:  # pragma: no cover
        print(f"ART unavailable: {exc}")
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

        def run_ta():
            return torch.cat([ta(xf[i:i + bs], yd[i:i + bs]) for i in range(0, len(xf), bs)])

        t_ta, xa_ta = timed(run_ta, a.repeats)
        results.append((f"PGD torchattacks {torchattacks.__version__}", t_ta, acc(xa_ta)))
    except ImportError as exc:  # pragma: no cover
        print(f"torchattacks unavailable: {exc}")
    for name, t, r in results:
        rows.append((name, t, t / floor, f"{r:.3f}", f"{(r - ref) * len(y):+.0f}"))
    rows.append((f"floor: {steps} x (forward + input gradient)", floor, 1.0, "", ""))

    clean = float((predict(model, xf, bs).argmax(1) == y).float().mean())
    print(f"\n{len(y)} test images {tuple(x.shape[1:])}, device {device}, torch threads {torch.get_num_threads()}, "
          f"clean accuracy {clean:.3f}, epsilon {a.epsilon}, PGD steps {steps}, step size 2.5*eps/steps, "
          f"median of {a.repeats} after a warm-up\n")
    print("| method | time (s) | ratio | robust accuracy / agreement | vs ours (images) |")
    print("|---|---|---|---|---|")
    for name, t, ratio, r, d in rows:
        print(f"| {name} | {t:.2f} | {ratio:.2f} | {r} | {d} |")
    print("\nratio: FGSM rows relative to the naive recomputation; PGD rows relative to the floor.")


if __name__ == "__main__":
    main()
