"""Sanity flags on a robustness sweep (pure functions).

After Carlini et al., 2019, "On Evaluating Adversarial Robustness" (arXiv:1902.06705), section 5:
an evaluation is suspect when accuracy does not go to (near) zero at a large enough budget, when
robust accuracy rises with epsilon, when a black-box attack beats a white-box one, when an
iterative attack is weaker than a single step, or when input gradients vanish (gradient masking).
A raised flag says "look here", not "the model is robust" or "the attack is wrong".
"""
from __future__ import annotations

from .attack_registry import ATTACK_SPECS, white_box_iterative_names

WHITE_BOX_ITERATIVE = white_box_iterative_names()
BLACK_BOX = tuple(n for n, s in ATTACK_SPECS.items() if s.kind == "black_box_linf")
FLAG_NAMES = ("accuracy_not_near_zero_at_largest_epsilon", "non_monotone_curve", "black_box_beats_white_box",
              "iterative_weaker_than_fgsm", "robust_above_clean", "vanishing_gradients")
"""Every flag :func:`sanity_flags` raises (the gate's ``veto_flags`` choose among them)."""
DEFAULTS = {"max_accuracy_at_largest_epsilon": 0.05, "tolerance_images": 1, "max_zero_gradient_fraction": 0.05}


def _curves(result: dict) -> dict[str, list[dict]]:
    return {k: v for k, v in result.items()
            if isinstance(v, list) and v and isinstance(v[0], dict) and "robust_accuracy" in v[0] and "epsilon" in v[0]
            and k not in ("perceptibility",)}


def non_monotone(points: list[dict], tol: float) -> list[tuple[float, float]]:
    """Epsilon pairs (e1 < e2) where robust accuracy rises by more than ``tol``."""
    pts = sorted(points, key=lambda p: p["epsilon"])
    return [(a["epsilon"], b["epsilon"]) for a, b in zip(pts, pts[1:])
            if b["robust_accuracy"] > a["robust_accuracy"] + tol]


def weaker_than(points: list[dict], reference: list[dict], tol: float) -> list[float]:
    """Epsilons where ``points`` has robust accuracy above ``reference`` by more than ``tol``."""
    ref = {round(p["epsilon"], 9): p["robust_accuracy"] for p in reference}
    return [p["epsilon"] for p in points
            if round(p["epsilon"], 9) in ref and p["robust_accuracy"] > ref[round(p["epsilon"], 9)] + tol]


def sanity_flags(result: dict, zero_gradient_fraction: float, thresholds: dict | None = None) -> dict:
    """Flags for a sweep result (as returned by ``robustness.standard_suite``).

    Args:
        result: ``{attack: [points]}`` with ``epsilon``, ``robust_accuracy``, ``clean_accuracy``, ``n``;
            optionally ``"minimal_epsilon"`` with unbounded success rates of minimal-perturbation attacks.
        zero_gradient_fraction: fraction of images with an all-zero input gradient, in [0, 1].
        thresholds: overrides of ``DEFAULTS``.

    Returns:
        ``{"flags": {name: {"flag": bool, "detail": str}}, "any": bool}``.
    """
    th = {**DEFAULTS, **(thresholds or {})}
    curves = _curves(result)
    n = max([p.get("n", 1) for pts in curves.values() for p in pts] + [1])
    tol = th["tolerance_images"] / n
    flags = {}

    # 1. accuracy near zero at the largest budget (strongest evidence over all attacks run)
    largest = []
    for name, pts in curves.items():
        top = max(pts, key=lambda p: p["epsilon"])
        largest.append((top["robust_accuracy"], f"{name}@{top['epsilon']:.4g}"))
    for name, norms in result.get("minimal_epsilon", {}).get("norms", {}).items():
        clean = result.get("clean_accuracy", 1.0)
        largest.append((clean * (1 - norms["unbounded_success_rate"]), f"{name}@unbounded"))
    best = min(largest) if largest else (float("nan"), "none")
    flags["accuracy_not_near_zero_at_largest_epsilon"] = {
        "flag": bool(best[0] > th["max_accuracy_at_largest_epsilon"]),
        "detail": f"lowest robust accuracy at the largest budget: {best[0]:.3f} ({best[1]})"}

    # 2. non-monotone curves
    bad = {name: non_monotone(pts, tol) for name, pts in curves.items()}
    bad = {k: v for k, v in bad.items() if v}
    flags["non_monotone_curve"] = {"flag": bool(bad), "detail": "; ".join(f"{k}: {v}" for k, v in bad.items())
                                   or "every curve is non-increasing in epsilon"}

    # 3. black box beating white box (same epsilon, same images or not: one-image tolerance)
    white = [curves[k] for k in WHITE_BOX_ITERATIVE if k in curves]
    beaten = []
    if "square" in curves:
        for w in white:
            for p in w:
                for q in curves["square"]:
                    if abs(p["epsilon"] - q["epsilon"]) < 1e-9 and q["robust_accuracy"] < p["robust_accuracy"] - tol:
                        beaten.append(f"square<{p['attack']}@{p['epsilon']:.4g}")
    for p in result.get("worst_case") or []:  # in the cascade, a black box ran after the white-box attacks
        for name in BLACK_BOX:
            k = p.get("broken_by", {}).get(name, 0)
            if k > th["tolerance_images"]:
                beaten.append(f"{name} broke {k} images the white-box attacks missed @{p['epsilon']:.4g}")
    flags["black_box_beats_white_box"] = {"flag": bool(beaten), "detail": ", ".join(beaten) or "no"}

    # 4. iterative weaker than single-step FGSM
    weak = []
    if "fgsm" in curves:
        for k in WHITE_BOX_ITERATIVE:
            if k in curves:
                weak += [f"{k}@{e:.4g}" for e in weaker_than(curves[k], curves["fgsm"], tol)]
    flags["iterative_weaker_than_fgsm"] = {"flag": bool(weak), "detail": ", ".join(weak) or "no"}

    # 5. robust above clean
    above = [f"{k}@{p['epsilon']:.4g}" for k, pts in curves.items() for p in pts
             if p.get("clean_accuracy") is not None and p["robust_accuracy"] > p["clean_accuracy"] + 1e-9]
    flags["robust_above_clean"] = {"flag": bool(above), "detail": ", ".join(above) or "no"}

    # 6. vanishing input gradients
    flags["vanishing_gradients"] = {
        "flag": bool(zero_gradient_fraction > th["max_zero_gradient_fraction"]),
        "detail": f"{zero_gradient_fraction:.3f} of images have an all-zero input gradient"}
    return {"flags": flags, "any": any(f["flag"] for f in flags.values())}
