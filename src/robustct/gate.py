"""The promotion gate: a candidate passes only if every threshold in ``params.yaml: gate`` holds."""
from __future__ import annotations


def evaluate_gate(candidate: dict, gate: dict) -> dict:
    """Compare a candidate's measured metrics with the gate's thresholds.

    Args:
        candidate: ``{"clean_accuracy": float, "robust_accuracy": float, ...}`` where
            ``robust_accuracy`` was measured with ``gate["attack"]`` at ``gate["epsilon"]``.
        gate: ``{"min_clean_accuracy", "min_robust_accuracy", "attack", "epsilon"}``
            (+ optional ``min_auc``), epsilon already parsed to float.

    Returns:
        ``{"passed": bool, "checks": [{"name", "threshold", "measured", "passed"}]}``. A missing or
        NaN measurement fails its check.
    """
    specs = [("clean_accuracy", "min_clean_accuracy"),
             (f"robust_accuracy[{gate['attack']}@{gate['epsilon']:.6g}]", "min_robust_accuracy"),
             ("auc", "min_auc")]
    measured_of = {"min_clean_accuracy": "clean_accuracy", "min_robust_accuracy": "robust_accuracy", "min_auc": "auc"}
    checks = []
    for name, key in specs:
        if key not in gate:
            continue
        value = candidate.get(measured_of[key])
        ok = value is not None and value == value and float(value) >= float(gate[key])
        checks.append({"name": name, "threshold": float(gate[key]),
                       "measured": None if value is None else float(value), "passed": bool(ok)})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def choose_champion(verdicts: list[dict]) -> dict | None:
    """Best passing candidate: highest robust accuracy, then clean accuracy; None if none pass.

    Args:
        verdicts: ``[{"name", "passed", "robust_accuracy", "clean_accuracy", ...}]``.
    """
    passing = [v for v in verdicts if v["passed"]]
    if not passing:
        return None
    return max(passing, key=lambda v: (v["robust_accuracy"], v["clean_accuracy"]))


def format_verdict(name: str, verdict: dict) -> str:
    """Human-readable lines: one per threshold with the measured value."""
    lines = [f"{name}: {'PASS' if verdict['passed'] else 'FAIL'}"]
    for c in verdict["checks"]:
        measured = "missing" if c["measured"] is None else f"{c['measured']:.4f}"
        lines.append(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: measured {measured} >= {c['threshold']:.4f}")
    return "\n".join(lines)
