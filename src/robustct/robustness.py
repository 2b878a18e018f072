"""Robustness evaluation: attack sweeps over epsilon and their summary statistics.

Definitions (per sweep point, over the evaluated images):
- clean accuracy: fraction classified correctly without attack;
- robust accuracy: fraction classified correctly both without and after the attack (an image
  the model already gets wrong counts as broken, as in Croce & Hein's AutoAttack), so it is
  never above clean accuracy;
- attack success rate: fraction of the clean-correct images that the attack makes wrong;
- mean L-infinity / L2 norm of the perturbation ``x_adv - x`` (pixel units, [0, 1] scale).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .attack_registry import ATTACK_SPECS, fixed_budget_names, load_attack, names
from .attacks import ATTACKS, FGSM, PGD, IterativeEpsilonFGSM, eval_mode, fgsm_from_sign, input_gradient
from .models import LABELS
from .progress import section_timer


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class probabilities (N, 2) for images (N, C, H, W) in [0, 1] (float or uint8 /255)."""
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = as_float(x[i:i + batch_size]).to(device)
            out.append(torch.softmax(model(xb), 1).cpu())
    return torch.cat(out) if out else torch.zeros((0, 2))


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float in [0, 1]; float images unchanged (as float32)."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def point_summary(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor,
                  delta: torch.Tensor) -> dict:
    """Summary of one (attack, epsilon) point; all inputs on CPU.

    Args:
        y, clean_pred, adv_pred: int64 (N,).
        delta: perturbation (N, C, H, W).
    """
    correct = clean_pred == y
    robust = correct & (adv_pred == y)  # a misclassified image is not robust, whatever the attack returns
    flat = delta.flatten(1)
    out = {
        "n": int(len(y)),
        "clean_accuracy": float(correct.float().mean()) if len(y) else float("nan"),
        "robust_accuracy": float(robust.float().mean()) if len(y) else float("nan"),
        "attack_success_rate": float((correct & ~robust).sum() / max(int(correct.sum()), 1)),
        "mean_linf": float(flat.abs().amax(1).mean()) if len(y) else 0.0,
        "mean_l2": float(flat.norm(dim=1).mean()) if len(y) else 0.0,
    }
    for k, label in enumerate(LABELS):
        m = y == k
        out[f"robust_accuracy_{label}"] = float(robust[m].float().mean()) if m.any() else float("nan")
        out[f"correct_{label}"] = int(robust[m].sum())
        out[f"total_{label}"] = int(m.sum())
    return out


def fgsm_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: list[float],
               batch_size: int = 32, keep: int = 0) -> tuple[list[dict], dict]:
    """FGSM at many epsilons from ONE input gradient per image.

    The sign of the input gradient does not depend on epsilon, so it is computed once
    and reused: cost is one forward+backward per image plus one forward per epsilon.

    Args:
        x: (N, 1, H, W) uint8 or float in [0, 1]; y: int64 (N,).
        keep: number of leading images whose adversarial versions are returned (for plots).

    Returns:
        (list of point summaries with ``attack``/``epsilon`` keys, {epsilon: x_adv[:keep]}).
    """
    device = next(model.parameters()).device
    clean, adv = [], {e: [] for e in epsilons}
    deltas = {e: [] for e in epsilons}
    examples = {e: [] for e in epsilons}
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = as_float(x[i:i + batch_size]).to(device), y[i:i + batch_size].to(device)
            sign = input_gradient(model, xb, yb).sign()
            with torch.no_grad():
                clean.append(model(xb).argmax(1).cpu())
                for e in epsilons:
                    xa = fgsm_from_sign(xb, sign, e)
                    adv[e].append(model(xa).argmax(1).cpu())
                    deltas[e].append((xa - xb).cpu())
                    if i < keep:
                        examples[e].append(xa[: max(keep - i, 0)].cpu())
    clean_pred = torch.cat(clean)
    points = []
    for e in epsilons:
        s = point_summary(y.cpu(), clean_pred, torch.cat(adv[e]), torch.cat(deltas[e]))
        points.append({"attack": "fgsm", "epsilon": float(e), **s})
    return points, {e: torch.cat(v)[:keep] if v else None for e, v in examples.items()}


def attack_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str,
                 make_attack: Callable[[float], object], epsilons: list[float],
                 batch_size: int = 32, progress: Callable[[str], None] | None = None,
                 adv_out: dict | None = None, clean_pred: torch.Tensor | None = None) -> list[dict]:
    """Run ``make_attack(epsilon).perturb`` at each epsilon and summarise.

    The whole input goes to ``perturb`` at once; an attack with a ``batch_size`` of ``None``
    gets ``batch_size`` (attacks batch internally, so random starts do not depend on it).

    Args:
        x: (N, C, H, W) uint8 or float in [0, 1]; y: int64 (N,) true labels.
        name: attack name recorded in each point.
        make_attack: epsilon -> attack object with ``perturb(x, y)`` and ``config()``.
        adv_out: if given, filled with ``{epsilon: x_adv (N, C, H, W) float on CPU}``.
        clean_pred: int64 (N,) clean predictions when already known (saves a forward pass).
    """
    clean_pred = predict(model, x, batch_size).argmax(1) if clean_pred is None else clean_pred
    points = []
    for e in epsilons:
        attack = make_attack(e)
        xa, xf = run_attack(model, attack, x, y, batch_size)
        pred = predict(model, xa, batch_size).argmax(1)
        s = point_summary(y.cpu(), clean_pred, pred, xa - xf)
        points.append({"attack": name, "epsilon": float(e), **s, "config": attack.config()})
        if adv_out is not None:
            adv_out[float(e)] = xa
        if progress:
            progress(f"{name} eps={e:.4f} robust_accuracy={s['robust_accuracy']:.3f}")
    return points


def run_attack(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32):
    """``attack.perturb`` on the model's device; returns (x_adv, x) as float CPU tensors."""
    device = next(model.parameters()).device
    if getattr(attack, "batch_size", 0) is None:
        attack.batch_size = batch_size
    xf = as_float(x)
    xa = attack.perturb(xf.to(device), y.to(device)).cpu()
    return xa, xf


def paper_table(points: list[dict], paper: dict[float, float], label: str = "non_covid") -> list[dict]:
    """Rows in the reference paper's form: epsilon, predicted correct, total, accuracy, paper accuracy."""
    rows = []
    for p in points:
        e = round(p["epsilon"], 4)
        rows.append({
            "epsilon": e, "correct": p[f"correct_{label}"], "total": p[f"total_{label}"],
            "accuracy": p[f"robust_accuracy_{label}"], "paper_accuracy": paper.get(e),
        })
    return rows


def threat_model_violation(x: torch.Tensor, x_adv: torch.Tensor, epsilon: float, tol: float = 1e-6) -> str | None:
    """Pure check that adversarial images respect the threat model: ``|x_adv - x|_inf <= epsilon`` and
    ``x_adv`` in [0, 1] (float32 rounding ``tol``). Returns a description of the violation, or None."""
    if x_adv.shape != x.shape:
        return f"shape {tuple(x_adv.shape)} != {tuple(x.shape)}"
    if len(x) == 0:
        return None
    linf = float((x_adv - x).abs().max())
    if linf > epsilon + tol:
        return f"L-inf distance {linf:.6g} exceeds epsilon {epsilon:.6g}"
    if float(x_adv.min()) < -tol or float(x_adv.max()) > 1 + tol:
        return f"values outside [0, 1]: [{float(x_adv.min()):.4g}, {float(x_adv.max()):.4g}]"
    return None


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list[str],
               make: Callable[[str, float], object], epsilons: list[float], batch_size: int = 32,
               progress: Callable[[str], None] | None = None, clean_pred: torch.Tensor | None = None,
               known: dict[str, dict[float, torch.Tensor]] | None = None) -> tuple[list[dict], torch.Tensor]:
    """Worst-case robust accuracy over several fixed-budget attacks, run as a cascade.

    At each epsilon an image is robust only if it is classified correctly and EVERY attack in ``attacks``
    failed on it. Each attack runs only on the images still robust after the attacks before it (the
    AutoAttack cascade, Croce & Hein 2020): cheaper than running every attack on every image, and the
    result equals the per-image minimum over the attacks. Every adversarial batch is checked against the
    threat model (:func:`threat_model_violation`).

    Args:
        x: (N, C, H, W) uint8 or float in [0, 1]; y: int64 (N,) true labels.
        attacks: attack names in cascade order (cheapest first).
        make: ``(name, epsilon) -> attack`` with ``perturb(x, y)`` and ``config()``.
        epsilons: L-inf budgets in [0, 1] pixel units.
        clean_pred: int64 (N,) clean predictions if already known.
        known: ``{name: {epsilon: adversarial predictions int64 (N,)}}`` of attacks already run on ALL
            ``x`` with the same configuration (their result is reused instead of rerunning them).

    Returns:
        (points, robust) with one point per epsilon ``{"attack": "worst_case", "epsilon", "n",
        "clean_accuracy", "robust_accuracy", "attacks", "robust_after" (cumulative robust accuracy after
        each attack), "broken_by" (images first broken by each attack), "attacked" (images each attack
        ran on), "configs"}`` and ``robust`` bool (len(epsilons), N).

    Raises:
        RuntimeError: an attack returned images outside its threat model.
    """
    xf, y = as_float(x), y.cpu()
    clean_pred = predict(model, xf, batch_size).argmax(1) if clean_pred is None else clean_pred.cpu()
    correct = clean_pred == y
    known = known or {}
    points, masks = [], []
    for e in epsilons:
        robust = correct.clone()
        after, broken_by, attacked, configs = {}, {}, {}, {}
        for name in attacks:
            idx = robust.nonzero().squeeze(1)
            attacked[name] = int(len(idx))
            key = next((k for k in known.get(name, {}) if abs(k - e) < 1e-9), None)
            if key is not None:
                broken = known[name][key][idx] != y[idx]
                configs[name] = "reused from the full-set run"
            elif len(idx):
                attack = make(name, e)
                xa, xs = run_attack(model, attack, xf[idx], y[idx], batch_size)
                bad = threat_model_violation(xs, xa, e)
                if bad:
                    raise RuntimeError(f"attack {name} at epsilon {e:.6g} broke its threat model: {bad}")
                broken = predict(model, xa, batch_size).argmax(1) != y[idx]
                configs[name] = attack.config()
            else:
                broken = torch.zeros(0, dtype=torch.bool)
                configs[name] = make(name, e).config()
            robust[idx[broken]] = False
            broken_by[name] = int(broken.sum())
            after[name] = float(robust.float().mean()) if len(y) else float("nan")
        n = len(y)
        points.append({"attack": "worst_case", "epsilon": float(e), "n": int(n),
                       "clean_accuracy": float(correct.float().mean()) if n else float("nan"),
                       "robust_accuracy": float(robust.float().mean()) if n else float("nan"),
                       "attacks": list(attacks), "robust_after": after, "broken_by": broken_by,
                       "attacked": attacked, "configs": configs})
        masks.append(robust)
        if progress:
            progress(f"worst case eps={e:.4f} robust_accuracy={points[-1]['robust_accuracy']:.3f} "
                     f"(broken by {broken_by})")
    return points, torch.stack(masks) if masks else torch.zeros((0, len(y)), dtype=torch.bool)


SCENARIOS = {"fraud": (0, 1), "missed_diagnosis": (1, 0)}
"""Targeted clinical scenarios: (source class, target class). 0 = non_covid, 1 = covid."""

LINF_SUITE = tuple(n for n in fixed_budget_names() if n not in ("fgsm", "pgd"))
"""Fixed-budget attacks of the suite besides FGSM and PGD (which always run), from the registry."""
MINIMAL_SUITE = names("minimal")
"""Minimal-perturbation attacks (read at each epsilon as upper bounds), from the registry."""


def make_attack(name: str, model, epsilon, cfg: dict, targeted: bool = False):
    """Build attack ``name`` (a registered name, :mod:`robustct.attack_registry`) from its parameters ``cfg``
    (keys as in ``params.yaml attack.profiles.<profile>.<name>``; ``subset`` and ``seed`` handled here).

    Raises:
        ValueError: unknown or inapplicable attack name.
    """
    c = {k: v for k, v in (cfg or {}).items() if k != "subset"}
    seed = c.pop("seed", 0)
    cls = load_attack(name)
    kind = ATTACK_SPECS[name].kind
    if name == "fgsm":
        return cls(model, epsilon, targeted=targeted)
    if kind == "linf":
        return cls(model, epsilon, seed=seed, targeted=targeted, **c)
    if kind == "black_box_linf":
        return cls(model, epsilon, seed=seed, **c)
    if kind == "minimal":
        return cls(model, seed=seed, targeted=targeted, **c)
    raise ValueError(f"attack {name!r} ({kind}) is not built by make_attack; see robustness.standard_suite")


def subset_index(n: int, size, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of ``size`` of ``n`` images (all if ``size`` is None/>= n)."""
    if size is None or int(size) >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: int(size)].sort().values


def curve_from_minimal(eps_min: torch.Tensor, correct: torch.Tensor, epsilons: list[float]) -> list[float]:
    """Robust accuracy at each epsilon from per-image minimal epsilons (pure function).

    An image is robust at ``e`` when it is classified correctly and its minimal epsilon exceeds ``e``
    (by more than 1e-6, float32 rounding; epsilon grids are multiples of 1/255 ~ 0.004).

    Args:
        eps_min: float (N,), ``inf`` where no adversarial example was found; correct: bool (N,).
    """
    eps_min, correct = eps_min.cpu().double(), correct.cpu()
    return [float((correct & (eps_min > e + 1e-6)).float().mean()) if len(correct) else float("nan")
            for e in epsilons]


def minimal_attack_points(model, x, y, attack, epsilons, batch_size=32, clean_pred=None):
    """Run a minimal-perturbation attack once and read its points at each L-inf epsilon.

    At epsilon ``e`` an image counts as broken when the attack found an adversarial example whose
    L-inf norm is at most ``e`` (so the point is an upper bound on robust accuracy at ``e``).

    Returns:
        (points, info) with info ``{"eps_min_linf", "l2", "linf", "success", "x_adv"}`` per image.
    """
    xa, xf = run_attack(model, attack, x, y, batch_size)
    y = y.cpu()
    clean_pred = predict(model, xf, batch_size).argmax(1) if clean_pred is None else clean_pred
    adv_pred = predict(model, xa, batch_size).argmax(1)
    delta = xa - xf
    linf = delta.flatten(1).abs().amax(1) if len(xf) else torch.zeros(0)
    l2 = delta.flatten(1).norm(dim=1) if len(xf) else torch.zeros(0)
    success = (adv_pred != y) & (clean_pred == y)
    eps_min = torch.where(clean_pred != y, torch.zeros_like(linf), torch.where(success, linf, torch.full_like(linf, float("inf"))))
    points = []
    for e in epsilons:
        within = (success & (linf <= e + 1e-6))
        pred_e = torch.where(within, adv_pred, clean_pred)
        s = point_summary(y, clean_pred, pred_e, delta * within.view(-1, 1, 1, 1))
        points.append({"attack": attack.name, "epsilon": float(e), **s, "config": attack.config(),
                       "derived_from": "minimal perturbation (L-inf norm of the adversarial example found)"})
    info = {"eps_min_linf": eps_min, "l2": l2, "linf": linf, "success": success, "x_adv": xa,
            "unbounded_success_rate": float(success.sum() / max(int((clean_pred == y).sum()), 1)),
            "median_l2": float(l2[success].median()) if success.any() else float("nan"),
            "median_linf": float(linf[success].median()) if success.any() else float("nan")}
    return points, info


def targeted_points(model, x, y, name, make, epsilons, scenario, batch_size=32, progress=None):
    """Targeted attack for one clinical scenario (``SCENARIOS``) at each epsilon.

    targeted_success_rate: among source-class images classified correctly, the fraction the attack
    moves to the target class; targeted_success_rate_all: the same over all source-class images.
    """
    src, tgt = SCENARIOS[scenario]
    m = y == src
    xs, ys = x[m], y[m]
    clean_pred = predict(model, xs, batch_size).argmax(1)
    correct = clean_pred == ys
    target = torch.full_like(ys, tgt)
    points = []
    for e in epsilons:
        attack = make(e)
        xa, xf = run_attack(model, attack, xs, target, batch_size)
        pred = predict(model, xa, batch_size).argmax(1)
        hit = pred == tgt
        s = point_summary(ys, clean_pred, pred, xa - xf)
        points.append({"attack": name, "target_mode": scenario, "source": LABELS[src], "target": LABELS[tgt],
                       "epsilon": float(e), "n": int(len(ys)), "clean_accuracy": s["clean_accuracy"],
                       "robust_accuracy": s["robust_accuracy"],
                       "targeted_success_rate": float((hit & correct).sum() / max(int(correct.sum()), 1)),
                       "targeted_success_rate_all": float(hit.float().mean()) if len(ys) else float("nan"),
                       "mean_linf": s["mean_linf"], "mean_l2": s["mean_l2"], "config": attack.config()})
        if progress:
            progress(f"{name} {scenario} eps={e:.4f} targeted_success_rate={points[-1]['targeted_success_rate']:.3f}")
    return points


def gradient_zero_fraction(model, x, y, batch_size=32, tol: float = 0.0) -> float:
    """Fraction of images whose input gradient (cross-entropy) has L1 norm <= ``tol`` (gradient masking check)."""
    device = next(model.parameters()).device
    zero = 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            g = input_gradient(model, as_float(x[i:i + batch_size]).to(device), y[i:i + batch_size].to(device))
            zero += int((g.flatten(1).abs().sum(1) <= tol).sum())
    return zero / max(len(x), 1)


def standard_suite(model, x, y, cfg: dict, progress=None, timings: dict | None = None) -> dict:
    """The project's sweep: FGSM on the paper grid and the standard grid, PGD and the rest of the
    suite (``cfg["suite"]``) on the standard grid, targeted scenarios, minimal-epsilon curves,
    perceptibility and sanity flags.

    Args:
        x: (N, 1, H, W) uint8 or float in [0, 1]; y: int64 (N,).
        cfg: ``{"paper_epsilons", "standard_epsilons", "pgd": {...}, "batch_size", "seed", "grid_examples"}``
            with epsilons already parsed to floats; optional ``"suite"`` (attack names), one section per
            attack (``"bim"``, ``"mim"``, ``"apgd_ce"``, ``"square"``, ``"cw_l2"``, ``"deepfool"``,
            ``"fgsm_min_eps"``; ``subset`` = images attacked), ``"targeted"``, ``"perceptibility_epsilon"``,
            ``"sanity"`` (thresholds).
        timings: None, or a dict that receives the wall-clock seconds of each part of the sweep: ``fgsm_paper``,
            ``fgsm``, ``pgd``, one key per further suite attack, ``worst_case`` (when configured: the cascade's
            attack runs that are not reused from the suite's full-set runs, e.g. APGD-CE and Square when only the
            cascade runs them), ``analysis`` (sanity flags; with an attack besides FGSM and PGD in the suite also
            the minimal-epsilon curves and perceptibility), and with such an attack also ``targeted``. Seconds add
            up over calls that share the dict. The results do not depend on it.

    Returns:
        ``{"fgsm_paper": [...], "fgsm": [...], "pgd": [...], "examples": {...}, "sanity": {...}}`` (sanity flags
        for every suite, so the gate's veto flags are never missing), ``"adversarial"`` (``{attack: {epsilon:
        x_adv}}`` at the perceptibility epsilon, for figures), ``"worst_case"`` when configured; with an attack
        besides FGSM and PGD in the suite also one point list per further attack, ``"targeted"``,
        ``"minimal_epsilon"`` and ``"perceptibility"``.
    """
    from . import perceptibility  # noqa: PLC0415

    say = progress or (lambda s: None)
    bs = cfg.get("batch_size", 32)
    keep = cfg.get("grid_examples", 0)
    seed = cfg.get("seed", 0)
    std = cfg["standard_epsilons"]
    suite = list(cfg.get("suite", []))
    with section_timer(timings, "fgsm_paper"):
        fgsm_paper, examples = fgsm_sweep(model, x, y, cfg["paper_epsilons"], bs, keep)
    with section_timer(timings, "fgsm"):
        fgsm_std, std_examples = fgsm_sweep(model, x, y, std, bs, keep)
    pgd_cfg = {"seed": seed, **cfg["pgd"]}
    eps_p = cfg.get("perceptibility_epsilon", 2 / 255)
    std_p = sorted(set(std) | {eps_p}) if suite else std
    advs: dict = {}

    def make_pgd(e):
        return make_attack("pgd", model, e, pgd_cfg)

    pgd_adv: dict = {}
    with section_timer(timings, "pgd"):
        pgd = attack_sweep(model, x, y, "pgd", make_pgd, std_p, bs, progress, pgd_adv)
    result = {"fgsm_paper": fgsm_paper, "fgsm": fgsm_std, "pgd": [p for p in pgd if p["epsilon"] in std],
              "examples": {**examples, **std_examples}}
    if not [n for n in suite if n not in ("fgsm", "pgd")]:  # the FGSM + PGD sweep only
        e_fig = eps_p if eps_p in pgd_adv else min(pgd_adv, default=None)
        result["adversarial"] = {"pgd": {e_fig: pgd_adv[e_fig]}} if e_fig is not None else {}
        if cfg.get("worst_case"):
            with section_timer(timings, "worst_case"):
                result["worst_case"] = _worst_case_of(model, x, y, cfg, {"pgd": pgd_adv}, progress)
        with section_timer(timings, "analysis"):  # the gate's veto flags need the checks on this path too
            result["sanity"] = _sanity(model, x, y, result, cfg, bs, say)
        return result
    advs["pgd"] = {eps_p: pgd_adv[eps_p]}
    xf = as_float(x)
    y = y.cpu()
    clean_pred = predict(model, xf, bs).argmax(1)
    correct = clean_pred == y
    per_sample = {"pgd": {p["epsilon"]: pgd_adv[p["epsilon"]] for p in pgd}}
    minimal: dict = {"curves": {}, "norms": {}}
    subsets = {}
    for name in suite:
        if name in ("fgsm", "pgd"):
            continue
        with section_timer(timings, name):
            acfg = {"seed": seed, **cfg.get(name, {})}
            idx = subset_index(len(x), acfg.get("subset"), seed)
            subsets[name] = idx
            if name in LINF_SUITE:
                out: dict = {}
                pts = attack_sweep(model, xf[idx], y[idx], name, lambda e, n=name, c=acfg: make_attack(n, model, e, c),
                                   std_p, bs, progress, out, clean_pred[idx])
                result[name] = [p for p in pts if p["epsilon"] in std]
                advs[name] = {eps_p: out[eps_p]}
                per_sample[name] = out
            elif name in MINIMAL_SUITE:
                pts, info = minimal_attack_points(model, xf[idx], y[idx], make_attack(name, model, None, acfg), std, bs,
                                                  clean_pred[idx])
                result[name] = pts
                minimal["curves"][f"{name}_linf"] = (info["eps_min_linf"], correct[idx])
                minimal["norms"][name] = {k: info[k] for k in ("unbounded_success_rate", "median_l2", "median_linf")}
                minimal["norms"][name]["n"] = int(len(idx))
                advs[name] = {"minimal": info["x_adv"]}
                say(f"{name}: unbounded success {info['unbounded_success_rate']:.3f}, "
                    f"median L2 {info['median_l2']:.4f}")
            elif name == "fgsm_min_eps":
                atk = IterativeEpsilonFGSM(model, acfg.get("max_epsilon", 0.3), acfg.get("epsilon_step", 1 / 255),
                                           batch_size=bs)
                e_min, _ = atk.minimal_epsilon(xf[idx].to(next(model.parameters()).device),
                                               y[idx].to(next(model.parameters()).device))
                e_min = e_min.cpu()
                minimal["curves"]["fgsm_min_eps"] = (e_min, correct[idx])
                minimal["fgsm_min_eps_config"] = atk.config()
                result[name] = [{"attack": name, "epsilon": float(e), "n": int(len(idx)),
                                 "clean_accuracy": float(correct[idx].float().mean()),
                                 "robust_accuracy": r, "config": atk.config(),
                                 "derived_from": "per-image minimal FGSM epsilon (paper Algorithm 1)"}
                                for e, r in zip(std, curve_from_minimal(e_min, correct[idx], std))]
                say(f"fgsm_min_eps: median minimal epsilon {float(e_min.median()):.4f}")
            else:
                raise ValueError(f"unknown attack {name!r} in the suite; valid: {', '.join(ATTACKS)}")

    if cfg.get("worst_case"):
        full = {n: d for n, d in per_sample.items() if len(subsets.get(n, range(len(x)))) == len(x)}
        with section_timer(timings, "worst_case"):
            result["worst_case"] = _worst_case_of(model, x, y, cfg, full, progress)

    # targeted clinical scenarios
    tcfg = cfg.get("targeted", {})
    result["targeted"] = {}
    with section_timer(timings, "targeted"):
        for name in tcfg.get("attacks", []):
            acfg = pgd_cfg if name == "pgd" else {"seed": seed, **cfg.get(name, {})}
            for scen in tcfg.get("scenarios", list(SCENARIOS)):
                result["targeted"][f"{name}/{scen}"] = targeted_points(
                    model, xf, y, name, lambda e, n=name, c=acfg: make_attack(n, model, e, c, targeted=True),
                    tcfg.get("epsilons") or std, scen, batch_size=bs, progress=progress)
    with section_timer(timings, "analysis"):  # minimal-epsilon curves, perceptibility, sanity flags
        # the whole curve from one run, checked against the explicit fixed-epsilon runs
        if "pgd" in per_sample:  # union over the sweep: broken at some epsilon <= e
            e_min = torch.full((len(y),), float("inf"))
            for e in sorted(per_sample["pgd"]):
                broken = predict(model, per_sample["pgd"][e], bs).argmax(1) != y
                e_min = torch.where(broken & torch.isinf(e_min), torch.full_like(e_min, e), e_min)
            minimal["curves"]["pgd_union"] = (torch.where(correct, e_min, torch.zeros_like(e_min)), correct)
        grid_step = cfg.get("fgsm_min_eps", {}).get("epsilon_step", 1 / 255)
        grid_max = max([cfg.get("fgsm_min_eps", {}).get("max_epsilon", 0.3)] + std)
        grid = [k * grid_step for k in range(int(grid_max / grid_step + 1e-9) + 1)]
        curves = {k: curve_from_minimal(e, c, grid) for k, (e, c) in minimal["curves"].items()}
        check = []
        if "fgsm_min_eps" in minimal["curves"]:
            e_min, c = minimal["curves"]["fgsm_min_eps"]
            idx = subsets["fgsm_min_eps"]
            for p in fgsm_std + [q for q in fgsm_paper if q["epsilon"] <= grid_max + 1e-9]:
                if len(idx) != len(y):
                    break
                from_min = curve_from_minimal(e_min, c, [p["epsilon"]])[0]
                check.append({"attack": "fgsm", "epsilon": p["epsilon"], "from_minimal": from_min,
                              "fixed": p["robust_accuracy"], "difference": from_min - p["robust_accuracy"]})
        result["minimal_epsilon"] = {"grid": grid, "curves": curves, "norms": minimal["norms"], "check": check,
                                     "median_minimal_epsilon": {k: float(e[c].median()) if c.any() else float("nan")
                                                                for k, (e, c) in minimal["curves"].items()}}

        # perceptibility at the perceptibility epsilon (successful adversarial images only)
        perc = []
        for name, d in advs.items():
            idx = subsets.get(name, torch.arange(len(y)))
            for key, xa in d.items():
                stats = perceptibility.per_sample(xf[idx], xa)
                ok = (predict(model, xa, bs).argmax(1) != y[idx]) & correct[idx]
                perc.append({"attack": name, "epsilon": key if key == "minimal" else float(key), "n": int(len(idx)),
                             "n_success": int(ok.sum()), **perceptibility.medians(stats, ok.numpy())})
        result["perceptibility"] = perc
        result["adversarial"] = advs
        result["subsets"] = subsets
        result["clean_accuracy"] = float(correct.float().mean())
        result["sanity"] = _sanity(model, x, y, result, cfg, bs, say)
    return result


def _sanity(model, x, y, result: dict, cfg: dict, batch_size: int, say) -> dict:
    """The Carlini et al. sanity flags of ``result`` (:func:`robustct.sanity.sanity_flags`, one more input-gradient
    pass for the vanishing-gradient check); each raised flag is said."""
    from . import sanity  # noqa: PLC0415

    flags = sanity.sanity_flags(result, gradient_zero_fraction(model, x, y, batch_size), cfg.get("sanity", {}))
    for k, v in flags["flags"].items():
        if v["flag"]:
            say(f"SANITY FLAG {k}: {v['detail']}")
    return flags


def _worst_case_of(model, x, y, cfg: dict, full_runs: dict, progress) -> list[dict]:
    """The worst case over ``cfg["worst_case"]`` on the standard grid, reusing the full-set runs
    ``{name: {epsilon: x_adv}}`` of the same attacks with the same configuration."""
    bs = cfg.get("batch_size", 32)
    known = {n: {e: predict(model, v, bs).argmax(1) for e, v in d.items()} for n, d in full_runs.items()
             if n in cfg["worst_case"]}

    def make(name, e):
        return make_attack(name, model, e, {"seed": cfg.get("seed", 0), **cfg.get(name, {})})

    points, _ = worst_case(model, x, y, cfg["worst_case"], make, cfg["standard_epsilons"], bs, progress,
                           known=known)
    for p in points:
        p["profile"] = cfg.get("profile", "custom")
    return points


__all__ = ["FGSM", "PGD", "SCENARIOS", "attack_sweep", "curve_from_minimal", "fgsm_sweep",
           "make_attack", "minimal_attack_points", "paper_table", "point_summary", "predict", "run_attack",
           "standard_suite", "targeted_points", "threat_model_violation", "worst_case"]
