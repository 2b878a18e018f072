"""End to end: `dvc repro` runs every stage on a 40-image real subset (64x64, one epoch).

Checks the outputs of every stage, the MLflow runs, and the registry alias for a
passing gate (champion set) and a failing gate (champion stays where it was).
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
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["validate"]["expected_counts"] = {"covid": N_PER_CLASS, "non_covid": N_PER_CLASS}
    p["split"]["ratios"] = {"train": 0.6, "val": 0.2, "test": 0.2}
    p["train"].update(image_size=64, epochs=1, batch_size=16)
    p["evaluate"]["bootstrap"] = 50
    p["attack"].update(fgsm_paper_epsilons=[0, 0.1, 0.5, 1.0], standard_epsilons=["1/255", "8/255"],
                       pgd={"steps": 3, "step_size": None, "restarts": 1}, grid_examples=2)
    p["defend"].update(epochs=1, steps=1, val_steps=2, trainable_stages=1, batch_size=16)
    p["gate"].update(min_clean_accuracy=0.0, min_auc=0.0, min_robust_accuracy=0.0, epsilon="1/255")
    return p


def run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    root = tmp_path_factory.mktemp("project")
    make_subset(root / "data")
    (root / "src").symlink_to(REPO / "src")
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    env = {**os.environ, "ROBUSTCT_MLRUNS": str(root / "mlruns"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}
    rc, out = run(["dvc", "init", "--no-scm", "-q"], root, env)
    assert rc == 0, out
    rc, out = run(["dvc", "repro"], root, env)
    assert rc == 0, out
    return root, env, out


def test_every_stage_ran(project):
    root, _, log = project
    for stage in ("validate", "split", "train", "evaluate", "attack", "defend", "promote"):
        assert f"Running stage '{stage}'" in log
    summary = json.loads((root / "outputs/validate/summary.json").read_text())
    assert summary["success"] and summary["files_checked"] == 40
    assert (root / "outputs/validate/data_docs/index.html").is_file()
    splits = {s: (root / f"outputs/split/{s}.csv").read_text().splitlines()[1:] for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 40
    groups = [{line.rsplit(",", 1)[1] for line in v} for v in splits.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    metrics = json.loads((root / "outputs/evaluate/metrics.json").read_text())["metrics"]
    for m in ("accuracy", "auc", "sensitivity", "specificity", "f1"):
        assert set(metrics[m]) == {"value", "ci_low", "ci_high"}
    sweep = json.loads((root / "outputs/attack/sweep.json").read_text())
    assert [p["epsilon"] for p in sweep["fgsm_paper"]] == [0, 0.1, 0.5, 1.0]
    assert len(sweep["paper_table_non_covid"]) == 4 and sweep["paper_table_non_covid"][1]["paper_accuracy"] == 0.8
    for p in sweep["pgd"] + sweep["fgsm"]:
        assert p["mean_linf"] <= p["epsilon"] + 1e-6 and p["robust_accuracy"] <= p["clean_accuracy"] + 1e-9
    for f in ("outputs/attack/examples.png", "outputs/defend/model.pt", "outputs/defend/metrics.json"):
        assert (root / f).is_file()


def registry(root):
    import mlflow

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_runs_and_registry_after_passing_gate(project):
    root, env, _ = project
    client = registry(root)
    runs = client.search_runs([client.get_experiment_by_name("covid-ct-robustness").experiment_id], max_results=200)
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"validate", "train", "attack", "defend"} <= stages
    train = next(r for r in runs if r.data.tags.get("stage") == "train")
    assert {"git_commit", "data_version", "split_test_sha256"} <= set(train.data.tags)
    assert "test_accuracy" in train.data.metrics and "val_accuracy" in train.data.metrics
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(nested) >= 2 * (4 + 2 + 2)  # attack and defend sweeps: (fgsm_paper + fgsm + pgd) points
    verdict = json.loads((root / "outputs/promote/verdict.json").read_text())
    assert verdict["champion_moved"] and verdict["champion"] in ("baseline", "defended")
    champ = client.get_model_version_by_alias("covid-ct-classifier", "champion")
    assert champ.tags["gate_verdict"] == "pass" and champ.version == verdict["champion_version"]
    rc, out = run(["robustct", "gate", "--candidate", "defended"], root, env)
    assert rc == 0 and "PASS" in out and "robust_accuracy[pgd@" in out


def test_failing_gate_leaves_champion_alone(project):
    root, env, _ = project
    client = registry(root)
    before = client.get_model_version_by_alias("covid-ct-classifier", "champion").version
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"]["min_robust_accuracy"] = 1.0
    params["gate"]["min_clean_accuracy"] = 1.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rc, out = run(["dvc", "repro", "promote"], root, env)
    assert rc == 0, out
    assert "Running stage 'train'" not in out  # only the gate's stage reruns
    verdict = json.loads((root / "outputs/promote/verdict.json").read_text())
    assert not verdict["champion_moved"] and verdict["champion"] is None
    assert all(not c["passed"] for c in verdict["candidates"])
    versions = client.search_model_versions("name='covid-ct-classifier'")
    assert len(versions) == 4
    assert client.get_model_version_by_alias("covid-ct-classifier", "champion").version == before
    rc, out = run(["robustct", "gate", "--candidate", "baseline"], root, env)
    assert rc == 1 and "FAIL clean_accuracy" in out
