"""Stage `promote` and the CI `gate` command: register candidates, move `champion` only on a pass."""
from __future__ import annotations

from pathlib import Path

from ..gate import choose_champion, evaluate_gate, format_verdict
from ..params import parse_epsilon
from ..robustness import lookup
from ..io import OUT, read_json, write_json

CANDIDATES = {
    "baseline": {"evaluation": OUT / "evaluate" / "metrics.json", "sweep": OUT / "attack" / "sweep.json",
                 "run": OUT / "train" / "run.json", "stage": "evaluate/attack"},
    "defended": {"evaluation": OUT / "defend" / "evaluation" / "metrics.json",
                 "sweep": OUT / "defend" / "attack" / "sweep.json", "run": OUT / "defend" / "run.json",
                 "stage": "defend"},
}


def gate_config(params: dict) -> dict:
    g = dict(params["gate"])
    g["epsilon"] = parse_epsilon(g["epsilon"], "gate.epsilon")
    return g


def candidate_metrics(evaluation: dict, sweep: dict, gate: dict) -> dict:
    """Measured values the gate compares: clean accuracy, AUC, robust accuracy at the gate's attack/epsilon."""
    key = "pgd" if gate["attack"] == "pgd" else "fgsm"
    try:
        robust = lookup(sweep[key], gate["epsilon"])
    except KeyError:
        robust = lookup(sweep["fgsm_paper"], gate["epsilon"]) if key == "fgsm" else None
    return {"clean_accuracy": evaluation["metrics"]["accuracy"]["value"],
            "auc": evaluation["metrics"]["auc"]["value"], "robust_accuracy": robust}


def judge(name: str, params: dict, paths: dict | None = None) -> dict:
    """Verdict for one candidate from its written metrics (no MLflow needed)."""
    paths = paths or CANDIDATES[name]
    gate = gate_config(params)
    m = candidate_metrics(read_json(paths["evaluation"], paths["stage"]), read_json(paths["sweep"], paths["stage"]), gate)
    return {"name": name, **m, **evaluate_gate(m, gate)}


def run(params: dict, out_dir: Path = OUT / "promote", candidates: dict | None = None, track: bool = True) -> dict:
    """Register every candidate as a version of one registered model, tag it, set aliases.

    ``champion`` moves to the best passing candidate; if none passes it stays where it was.
    ``challenger`` marks the best candidate of this run that did not become champion.
    Aliases are set last, after every registration succeeded.
    """
    candidates = candidates or CANDIDATES
    name = params["promote"]["model_name"]
    verdicts = [judge(c, params, paths) for c, paths in candidates.items()]
    for v in verdicts:
        print(format_verdict(v["name"], v))
    champion = choose_champion(verdicts)
    result = {"model_name": name, "gate": {k: v for k, v in gate_config(params).items()},
              "candidates": verdicts, "champion": champion["name"] if champion else None,
              "champion_moved": bool(champion)}
    if track:
        from .. import tracking  # noqa: PLC0415

        mlflow = tracking.setup()
        client = mlflow.MlflowClient()
        versions = {}
        for v in verdicts:
            info = read_json(candidates[v["name"]]["run"], candidates[v["name"]]["stage"])
            mv = mlflow.register_model(info["model_uri"], name, tags={"candidate": v["name"]})
            versions[v["name"]] = mv.version
            v["version"] = mv.version
            for k in ("clean_accuracy", "auc", "robust_accuracy"):
                client.set_model_version_tag(name, mv.version, k, f"{v[k]:.4f}" if v[k] is not None else "missing")
            client.set_model_version_tag(name, mv.version, "gate_verdict", "pass" if v["passed"] else "fail")
            client.set_model_version_tag(name, mv.version, "gate_checks", "; ".join(
                f"{c['name']} {c['measured']} >= {c['threshold']}" for c in v["checks"]))
        if champion:
            client.set_registered_model_alias(name, "champion", versions[champion["name"]])
            result["champion_version"] = versions[champion["name"]]
        others = [v for v in verdicts if not champion or v["name"] != champion["name"]]
        if others:
            best = max(others, key=lambda v: ((v["robust_accuracy"] or 0), v["clean_accuracy"]))
            client.set_registered_model_alias(name, "challenger", versions[best["name"]])
        try:
            result["champion_now"] = client.get_model_version_by_alias(name, "champion").version
        except Exception:  # noqa: BLE001  (no champion yet is a normal state)
            result["champion_now"] = None
    write_json(Path(out_dir) / "verdict.json", result)
    return result


def gate_main(params: dict, candidate: str) -> int:
    """CI gate: print each threshold with the measured value; 0 when the candidate passes, else 1."""
    v = judge(candidate, params)
    print(format_verdict(candidate, v))
    return 0 if v["passed"] else 1
