"""End to end: `dvc repro` runs every stage on a 40-image real subset (64x64, one epoch).

Checks the outputs of every stage (the same files for every candidate), the MLflow runs, readable
metrics, the registry aliases for a passing gate (champion set), a failing gate (the champion that now
fails loses its alias, although DVC could have restored `promote` from its run cache) and a passing
gate again, and that editing a shared module marks every stage that runs it as changed.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SHARED

pytestmark = pytest.mark.e2e
N_PER_CLASS = 20


def make_subset(dest: Path) -> None:
    """20 COVID and 20 non-COVID images spread over the metadata (many patients), with their rows."""
    for folder, meta, col in (("CT_COVID", "COVID-CT-MetaInfo.csv", "File name"),
                              ("CT_NonCOVID", "NonCOVID-CT-MetaInfo.csv", "image name")):
        (dest / folder).mkdir(parents=True)
        with open(SHARED / meta, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [r for r in reader if r[col]]
            rows = rows[:: len(rows) // N_PER_CLASS][:N_PER_CLASS]
            fields = reader.fieldnames
        for r in rows:
            shutil.copyfile(SHARED / folder / r[col], dest / folder / r[col])
        with open(dest / meta, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fields)
            w.writeheader()
            w.writerows(rows)


def small_params() -> dict:
    from robustct.params import read_yaml

    p = read_yaml(REPO / "params.yaml")
    p["validate"]["expected_counts"] = {"covid": N_PER_CLASS, "non_covid": N_PER_CLASS}
    p["split"].update(scheme="patient", ratios={"train": 0.6, "val": 0.2, "test": 0.2})  # official lists: all 746
    p["train"].update(image_size=64, epochs=1, batch_size=16)
    p["evaluate"]["bootstrap"] = 50
    p["attack"].update(fgsm_paper_epsilons=[0, 0.1, 0.5, 1.0], standard_epsilons=["1/255", "8/255"],
                       suite=["fgsm", "pgd", "apgd_ce", "square", "deepfool", "fgsm_min_eps"], grid_examples=2)
    cpu = p["attack"]["profiles"]["cpu"]
    cpu.update(pgd={"steps": 3, "step_size": None, "restarts": 1}, apgd_ce={"steps": 3, "restarts": 1},
               square={"max_iter": 5, "p_init": 0.8, "restarts": 1},
               deepfool={"max_iter": 3, "overshoot": 0.02, "subset": 4},
               fgsm_min_eps={"epsilon_step": "2/255", "max_epsilon": "16/255"})
    p["defend"].update(epochs=1, prefit_epochs=1, epsilon_warmup=1, steps=1, val_steps=2, batch_size=16)
    p["gate"].update(RELAXED)
    return p


RELAXED = {"min_clean_accuracy": 0.0, "min_auc": 0.0, "min_robust_accuracy": 0.0, "epsilon": "1/255",
           "collapse": {"min_covid_rate": 0.0, "max_covid_rate": 1.0, "min_auc": 0.0}, "veto_flags": []}


def run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


def write_params(root, params):
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    root = tmp_path_factory.mktemp("project")
    make_subset(root / "data")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    write_params(root, small_params())
    env = {**os.environ, "ROBUSTCT_MLRUNS": str(root / "mlruns"), "PYTHONPATH": str(root / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}
    rc, out = run(["dvc", "init", "--no-scm", "-q"], root, env)
    assert rc == 0, out
    rc, out = run(["dvc", "repro"], root, env)
    assert rc == 0, out
    return root, env, out


def test_every_stage_ran_and_every_candidate_got_the_same_outputs(project):
    root, _, log = project
    for stage in ("validate", "split", "train", "defend", "evaluate@baseline", "evaluate@defended",
                  "attack@baseline", "attack@defended", "promote", "report"):
        assert f"Running stage '{stage}'" in log
    summary = json.loads((root / "outputs/validate/summary.json").read_text())
    assert summary["success"] and summary["files_checked"] == 40
    assert (root / "outputs/validate/data_docs/index.html").is_file()
    splits = {s: (root / f"outputs/split/{s}.csv").read_text().splitlines()[1:] for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 40
    files = {c: sorted(p.relative_to(root / "outputs" / c).as_posix() for p in (root / "outputs" / c).rglob("*")
                       if p.is_file()) for c in ("baseline", "defended")}
    assert files["baseline"] == files["defended"] and "attack/worst_case.csv" in files["baseline"]
    for c in ("baseline", "defended"):
        metrics = json.loads((root / f"outputs/{c}/evaluate/metrics.json").read_text())["metrics"]
        for m in ("accuracy", "auc", "sensitivity", "specificity", "f1"):
            assert set(metrics[m]) == {"value", "ci_low", "ci_high"}
        sweep = json.loads((root / f"outputs/{c}/attack/sweep.json").read_text())
        assert [p["epsilon"] for p in sweep["fgsm_paper"]] == [0, 0.1, 0.5, 1.0]
        assert sweep["paper_table_non_covid"][1]["paper_accuracy"] == 0.8
        wc = sweep["worst_case"]
        assert [p["attacks"] for p in wc] == [["fgsm", "pgd", "apgd_ce", "square"]] * 2 and wc[0]["profile"] == "cpu"
        for p in wc:  # the worst case is never above any single attack on the same images
            for name in ("fgsm", "pgd", "apgd_ce", "square"):
                single = next(q for q in sweep[name] if abs(q["epsilon"] - p["epsilon"]) < 1e-9)
                assert p["robust_accuracy"] <= single["robust_accuracy"] + 1e-9
        assert set(sweep["sanity"]["flags"]) >= {"black_box_beats_white_box", "vanishing_gradients"}
    page = (root / "docs/results/README.md").read_text()
    assert "## Worst-case robust accuracy" in page and "| baseline |" in page and "| defended |" in page
    assert (root / "docs/results/worst_case.png").is_file()


def test_metrics_show_is_readable(project):
    root, env, _ = project
    rc, out = run(["dvc", "metrics", "show", "--json"], root, env)
    assert rc == 0, out
    data = json.loads(out)
    leaves = []

    def walk(d):
        for v in d.values():
            walk(v) if isinstance(v, dict) else leaves.append(v)

    walk(next(iter(data.values()))["data"])
    assert len(leaves) <= 24, f"{len(leaves)} metric columns"


def registry(root):
    import mlflow

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion(client):
    try:
        return client.get_model_version_by_alias("covid-ct-classifier", "champion")
    except Exception:  # noqa: BLE001
        return None


def test_runs_and_registry_after_passing_gate(project):
    root, env, _ = project
    client = registry(root)
    runs = client.search_runs([client.get_experiment_by_name("covid-ct-robustness").experiment_id], max_results=500)
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"validate", "train", "attack", "defend", "promote"} <= stages
    attack_runs = {r.data.tags.get("candidate") for r in runs if r.data.tags.get("stage") == "attack"}
    assert attack_runs == {"baseline", "defended"}
    for candidate in attack_runs:  # each attack stage logs where its time went (not in its DVC outputs)
        timed = [r for r in runs if r.data.tags.get("stage") == "attack" and r.data.tags.get("candidate") == candidate
                 and "wall_seconds_worst_case" in r.data.metrics]
        assert len(timed) == 1 and {"wall_seconds_pgd", "wall_seconds_write"} <= set(timed[0].data.metrics)
    train = next(r for r in runs if r.data.tags.get("stage") == "train")
    assert {"git_commit", "data_version", "split_test_sha256", "torch_num_threads", "device"} <= set(train.data.tags)
    val = "val_in_sample_accuracy" if small_params()["train"]["fit_on"] == "train_val" else "val_accuracy"
    assert val in train.data.metrics  # refit: validation was trained on
    # the test metrics are in the evaluation's own run, linked to the training run (which it does not reopen)
    ev = [r for r in runs if r.data.tags.get("stage") == "evaluate" and r.data.tags.get("model_run_id") == train.info.run_id]
    assert len(ev) == 1 and "test_accuracy" in ev[0].data.metrics and "test_accuracy" not in train.data.metrics
    assert ev[0].info.start_time >= train.info.end_time
    assert all(r.info.status == "FINISHED" for r in runs if r.data.tags.get("stage") in ("train", "evaluate", "promote"))
    verdict = json.loads((root / "outputs/promote/verdict.json").read_text())
    champ = champion(client)
    assert champ is not None and champ.tags["gate_verdict"] == "pass"
    assert verdict["registry"]["champion_version"] == champ.version
    assert verdict["registry"]["champion_candidate"] in ("baseline", "defended")
    rc, out = run(["robustct", "gate", "--candidate", "defended"], root, env)
    assert rc == 0 and "PASS" in out and "robust_accuracy worst_case[cpu]@1/255" in out


def test_promote_always_runs_and_the_champion_never_fails_the_current_gate(project):
    root, env, _ = project
    client = registry(root)
    before = champion(client).version
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"]["min_clean_accuracy"] = 1.0
    write_params(root, params)
    rc, out = run(["dvc", "repro"], root, env)
    assert rc == 0, out
    assert "Running stage 'train'" not in out and "Running stage 'promote'" in out
    verdict = json.loads((root / "outputs/promote/verdict.json").read_text())
    assert all(not c["passed"] for c in verdict["candidates"])
    assert verdict["registry"]["champion_version"] is None
    assert verdict["registry"]["champion_action"] == f"removed from version {before}"
    assert champion(client) is None
    assert "fails the current gate" in client.get_model_version("covid-ct-classifier", before).tags["champion_removed"]
    assert len(client.search_model_versions("name='covid-ct-classifier'")) == 2  # reruns reuse their versions
    rc, out = run(["robustct", "gate", "--candidate", "baseline"], root, env)
    assert rc == 1 and "FAIL clean_accuracy" in out
    # the same params as the first run: DVC must not restore promote from its run cache
    params["gate"].update(RELAXED)
    write_params(root, params)
    rc, out = run(["dvc", "repro"], root, env)
    assert rc == 0, out
    assert "Stage 'promote' is cached" not in out and "Running stage 'promote'" in out
    assert champion(client) is not None
    assert json.loads((root / "outputs/promote/verdict.json").read_text())["registry"]["champion_version"] \
        == champion(client).version


def test_editing_a_shared_module_marks_every_stage_that_runs_it(project):
    root, env, _ = project
    with open(root / "src/robustct/metrics.py", "a") as fh:
        fh.write("# edited\n")
    rc, out = run(["dvc", "status", "--json"], root, env)
    assert rc == 0, out
    changed = set(json.loads(out))
    assert {"train", "defend", "evaluate@baseline", "evaluate@defended"} <= changed
    assert "validate" not in changed and "split" not in changed
    with open(root / "src/robustct/io.py", "a") as fh:
        fh.write("# edited\n")
    rc, out = run(["dvc", "status", "--json"], root, env)
    assert {"validate", "split", "train", "defend", "attack@baseline", "report"} <= set(json.loads(out))
