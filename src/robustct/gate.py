"""The promotion gate (pure functions): a candidate passes only if every threshold in ``params.yaml: gate``
holds, it did not collapse, and no vetoing sanity flag was raised.

Robust accuracy is read at ``gate.epsilon`` from the worst case over every fixed-budget attack of
``attack.worst_case`` (``gate.attack: worst_case``, the default) or from one named attack. Reading one weak
attack is the classic false robustness claim (Carlini et al. 2019, "On Evaluating Adversarial Robustness";
Croce & Hein 2020), so the worst case is the default.
"""
from __future__ import annotations

from .epsilon import format_epsilon

VETO_FLAGS = ("black_box_beats_white_box", "iterative_weaker_than_fgsm", "vanishing_gradients")
"""Sanity flags (robustct.sanity) that point at gradient masking: a candidate raising one cannot pass."""


def robust_key(attack: str, epsilon: float) -> str:
    """Name of a robust-accuracy measurement, e.g. ``robust.worst_case.1/255`` (also a registry tag name)."""
    return f"robust.{attack}.{format_epsilon(epsilon)}"


def measurements(evaluation: dict, sweep: dict) -> dict:
    """Every number the gate may read, from a candidate's ``evaluate/metrics.json`` and ``attack/sweep.json``.

    Returns:
        ``{"clean_accuracy", "auc", "predicted_covid_rate", "profile", "sanity.<flag>": 0/1,
        "robust.<attack>.<epsilon>": robust accuracy}`` (floats in [0, 1]; flags as 0/1).
    """
    m = {"clean_accuracy": evaluation["metrics"]["accuracy"]["value"], "auc": evaluation["metrics"]["auc"]["value"],
         "predicted_covid_rate": evaluation.get("predicted_covid_rate"),
         "profile": (sweep.get("worst_case") or [{}])[0].get("profile")}
    for key, pts in sweep.items():
        if isinstance(pts, list) and pts and isinstance(pts[0], dict) and "robust_accuracy" in pts[0] \
                and "epsilon" in pts[0] and key != "fgsm_paper":
            for p in pts:
                m[robust_key(key, p["epsilon"])] = p["robust_accuracy"]
    for name, f in ((sweep.get("sanity") or {}).get("flags") or {}).items():
        m[f"sanity.{name}"] = int(bool(f["flag"]))
    return m


def collapse(m: dict, cfg: dict) -> str | None:
    """Why a candidate counts as collapsed (nearly constant predictions or AUC near chance), or None.

    Args:
        m: ``{"predicted_covid_rate", "auc"}``; cfg: ``{"min_covid_rate", "max_covid_rate", "min_auc"}``.
    """
    rate, auc = _num(m.get("predicted_covid_rate")), _num(m.get("auc"))
    if rate is None or auc is None:
        return "predicted-COVID rate or AUC missing"
    if not cfg["min_covid_rate"] <= rate <= cfg["max_covid_rate"]:
        return f"predicted-COVID rate {rate:.3f} outside [{cfg['min_covid_rate']}, {cfg['max_covid_rate']}]"
    if auc < cfg["min_auc"]:
        return f"AUC {auc:.3f} < {cfg['min_auc']}"
    return None


def _num(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


def evaluate_gate(m: dict, gate: dict) -> dict:
    """Judge one candidate's measurements against the gate.

    Args:
        m: measurements (:func:`measurements`, or the tags of a registered version).
        gate: validated ``gate`` section (epsilon a float), optionally ``veto_flags`` (default :data:`VETO_FLAGS`).

    Returns:
        ``{"passed": bool, "robust_accuracy": float | None, "robust_measure": str, "collapse": str | None,
        "checks": [{"name", "threshold", "measured", "passed"}]}``. A missing or NaN measurement fails.
    """
    key = robust_key(gate["attack"], gate["epsilon"])
    robust = _num(m.get(key))
    measure = f"{gate['attack']}[{m.get('profile') or 'unknown profile'}]@{format_epsilon(gate['epsilon'])}"
    checks = []
    for name, value, thr in (("clean_accuracy", m.get("clean_accuracy"), gate.get("min_clean_accuracy")),
                             ("auc", m.get("auc"), gate.get("min_auc")),
                             (f"robust_accuracy {measure}", robust, gate.get("min_robust_accuracy"))):
        if thr is None:
            continue
        v = _num(value)
        checks.append({"name": name, "threshold": float(thr), "measured": v,
                       "passed": v is not None and v >= float(thr)})
    why = collapse(m, gate["collapse"]) if gate.get("collapse") else None
    checks.append({"name": "no collapse", "threshold": None, "measured": why or "ok", "passed": why is None})
    for flag in gate.get("veto_flags", VETO_FLAGS):
        raised = m.get(f"sanity.{flag}")
        checks.append({"name": f"no sanity flag {flag}", "threshold": None,
                       "measured": "missing" if raised is None else ("raised" if int(raised) else "ok"),
                       "passed": raised is not None and not int(raised)})
    return {"passed": all(c["passed"] for c in checks), "robust_accuracy": robust, "robust_measure": measure,
            "collapse": why, "checks": checks}


def choose_champion(verdicts: list[dict]) -> dict | None:
    """Best passing candidate: highest robust accuracy, then clean accuracy; None if none pass.

    Args:
        verdicts: ``[{"name", "passed", "robust_accuracy", "clean_accuracy", ...}]``.
    """
    passing = [v for v in verdicts if v["passed"]]
    if not passing:
        return None
    return max(passing, key=lambda v: (v["robust_accuracy"] or 0.0, v["clean_accuracy"] or 0.0))


def format_verdict(name: str, verdict: dict) -> str:
    """Human-readable lines: one per check with the measured value."""
    lines = [f"{name}: {'PASS' if verdict['passed'] else 'FAIL'}"]
    for c in verdict["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        if c["threshold"] is None:
            lines.append(f"  {mark} {c['name']}: {c['measured']}")
        else:
            measured = "missing" if c["measured"] is None else f"{c['measured']:.4f}"
            lines.append(f"  {mark} {c['name']}: measured {measured} >= {c['threshold']:.4f}")
    return "\n".join(lines)
