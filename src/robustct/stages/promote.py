"""Stage `promote` (always runs: its effects live in the registry) and the CI `gate` command.

Every candidate of ``params.yaml: candidates`` is judged from its written outputs, registered once as a
version of one registered model (a rerun reuses the version of the same MLflow run), and tagged with every
measurement and its verdict. Aliases move last, after every registration succeeded:

- ``champion`` goes to the best candidate that passes the current gate;
- if none passes, the current champion is re-judged from its tags under the current gate; if it fails,
  the alias is removed and the version tagged with the reason (the alias never points at a failing model);
- ``challenger`` marks the best other candidate.

``verdict.json`` records the registry state after these moves.
"""
from __future__ import annotations

from pathlib import Path

from ..gate import choose_champion, evaluate_gate, format_verdict, measurements
from ..io import OUT, read_json, write_json


def candidate_paths(name: str, model_dir: str | Path, root: Path = OUT) -> dict:
    """Where the evaluate/attack stages wrote candidate ``name``'s results, and its training run."""
    return {"evaluation": Path(root) / name / "evaluate" / "metrics.json",
            "sweep": Path(root) / name / "attack" / "sweep.json", "run": Path(model_dir) / "run.json"}


def judge(name: str, params: dict, paths: dict) -> dict:
    """Verdict for one candidate from its written metrics (no MLflow needed)."""
    m = measurements(read_json(paths["evaluation"], f"evaluate@{name}"), read_json(paths["sweep"], f"attack@{name}"))
    v = evaluate_gate(m, params["gate"])
    return {"name": name, "clean_accuracy": m["clean_accuracy"], "auc": m["auc"], **v, "measurements": m}


def _tags_to_measurements(tags: dict) -> dict:
    m = {}
    for k, v in tags.items():
        if k in ("clean_accuracy", "auc", "predicted_covid_rate") or k.startswith(("robust.", "sanity.")):
            try:
                m[k] = float(v)
            except ValueError:
                m[k] = None
    m["profile"] = tags.get("profile")
    return m


def rejudge_version(tags: dict, gate: dict) -> dict:
    """The current gate's verdict on a registered version, from the measurements tagged on it (pure)."""
    return evaluate_gate(_tags_to_measurements(tags), gate)


def _version_for_run(client, model_name: str, run_id: str):
    for mv in client.search_model_versions(f"name='{model_name}'"):
        if mv.run_id == run_id:
            return mv
    return None


def _register(mlflow, client, model_name: str, verdict: dict, info: dict) -> str:
    mv = _version_for_run(client, model_name, info["run_id"])
    if mv is None:
        mv = mlflow.register_model(info["model_uri"], model_name, tags={"candidate": verdict["name"]})
    tags = {k: "missing" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
            for k, v in verdict["measurements"].items()}
    tags.update(candidate=verdict["name"], gate_verdict="pass" if verdict["passed"] else "fail",
                gate_checks="; ".join(f"{c['name']}: {c['measured']}" for c in verdict["checks"])[:5000])
    for k, v in tags.items():
        client.set_model_version_tag(model_name, mv.version, k, v)
    return mv.version


def _alias(client, model_name: str, alias: str):
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except Exception:  # noqa: BLE001  (MlflowException: alias not set is a normal state)
        return None


def update_registry(mlflow, model_name: str, verdicts: list[dict], infos: dict, gate: dict) -> dict:
    """Register/tag every candidate, then move aliases (last). Returns the registry state after the moves."""
    client = mlflow.MlflowClient()
    versions = {v["name"]: _register(mlflow, client, model_name, v, infos[v["name"]]) for v in verdicts}
    champion = choose_champion(verdicts)
    state = {"versions": versions, "champion_action": None, "champion_removed_reason": None}
    current = _alias(client, model_name, "champion")
    if champion:
        client.set_registered_model_alias(model_name, "champion", versions[champion["name"]])
        state["champion_action"] = "kept" if current and current.version == versions[champion["name"]] else "moved"
    elif current is not None:
        again = rejudge_version(current.tags, gate)
        if again["passed"]:
            state["champion_action"] = "kept (an earlier version still passes the current gate)"
        else:
            failed = "; ".join(f"{c['name']}: {c['measured']}" for c in again["checks"] if not c["passed"])
            reason = f"fails the current gate ({failed})"
            client.delete_registered_model_alias(model_name, "champion")
            client.set_model_version_tag(model_name, current.version, "champion_removed", reason[:5000])
            state.update(champion_action=f"removed from version {current.version}", champion_removed_reason=reason)
    others = [v for v in verdicts if not champion or v["name"] != champion["name"]]
    if others:
        best = max(others, key=lambda v: (v["robust_accuracy"] or 0.0, v["clean_accuracy"] or 0.0))
        client.set_registered_model_alias(model_name, "challenger", versions[best["name"]])
    now = _alias(client, model_name, "champion")
    state["champion_version"] = now.version if now else None
    state["champion_candidate"] = now.tags.get("candidate") if now else None
    chal = _alias(client, model_name, "challenger")
    state["challenger_version"] = chal.version if chal else None
    return state


def run(params: dict, out_dir: Path = OUT / "promote", root: Path = OUT, track: bool = True) -> dict:
    """Judge every candidate, update the registry (when tracking) and write ``verdict.json`` and ``gate.json``."""
    name = params["promote"]["model_name"]
    cands = params["candidates"]
    paths = {c: candidate_paths(c, spec["model"], root) for c, spec in cands.items()}
    verdicts = [judge(c, params, paths[c]) for c in cands]
    infos = {c: read_json(paths[c]["run"], c) for c in cands} if track else {}
    for v in verdicts:
        print(format_verdict(v["name"], v))
    champion = choose_champion(verdicts)
    result = {"model_name": name, "gate": params["gate"], "candidates": verdicts,
              "passing_champion": champion["name"] if champion else None}
    if track:
        from .. import tracking  # noqa: PLC0415

        mlflow = tracking.setup()
        for c, info in infos.items():
            tracking.require_run(mlflow, info, paths[c]["run"])
        with mlflow.start_run(run_name="promote", tags={**tracking.standard_tags(), "stage": "promote"}) as r:
            result["registry"] = update_registry(mlflow, name, verdicts, infos, params["gate"])
            result["promote_run_id"] = r.info.run_id
            mlflow.log_params({"model_name": name, "gate.attack": params["gate"]["attack"],
                               "gate.epsilon": params["gate"]["epsilon"]})
            mlflow.log_dict(result, "verdict.json")
    _write_verdict(out_dir, result)
    return result


def _write_verdict(out_dir: Path, result: dict) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "verdict.json", result)
    reg = result.get("registry") or {}
    write_json(out_dir / "gate.json", {**{v["name"]: "pass" if v["passed"] else "fail" for v in result["candidates"]},
                                       "champion": reg.get("champion_candidate") or "none"})


def gate_main(params: dict, candidate: str) -> int:
    """CI gate: print each check with the measured value; 0 when the candidate passes, else 1."""
    spec = params["candidates"][candidate]
    v = judge(candidate, params, candidate_paths(candidate, spec["model"]))
    print(format_verdict(candidate, v))
    return 0 if v["passed"] else 1
