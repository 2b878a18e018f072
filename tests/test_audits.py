"""Shortcut audit, duplicate helpers, split-file leakage audit, run tags, params of validate/split."""
import json
import tomllib

import numpy as np
import pandas as pd
import pytest

from robustct.data.duplicates import candidate_pairs, clusters, hash_bits
from robustct.data.shortcut import audit, cross_validated_auc
from robustct.data.split import audit_split_files, linked_groups
from robustct.params import check_params
from robustct.runtags import ShortcutAuditContext, shortcut_tags

from conftest import REPO


def property_table(n_patients=60, per_patient=3, seed=0):
    """Format and mode give the label away; processed statistics are label-independent noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_patients):
        y = g % 2
        for k in range(per_patient):
            rows.append(dict(
                path=f"{'CT_COVID' if y else 'CT_NonCOVID'}/{g}_{k}.{'png' if y else 'jpg'}",
                label_index=y, group=f"p{g}", decode_ok=True,
                format="PNG" if y else "JPEG", mode="RGBA" if y else "L", bit_depth=8,
                width=int(rng.integers(100, 900)), height=int(rng.integers(100, 900)), bytes=int(rng.integers(10**4, 10**6)),
                **{c: float(rng.random()) for c in ("proc_mean", "proc_std", "proc_min", "proc_max",
                                                    "proc_dark_frac", "proc_bright_frac")},
            ))
    return pd.DataFrame(rows)


def test_shortcut_audit_known_answers():
    t = property_table()
    out = audit(t, max_auc=0.7, folds=5, seed=0)
    assert out["raw"]["auc"] == pytest.approx(1.0)
    assert out["raw"]["per_property"]["format"] == pytest.approx(1.0)
    assert out["raw"]["per_property"]["width"] < 0.7                  # random sizes carry nothing
    assert 0.3 < out["processed"]["auc"] < 0.7                        # noise: near chance
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("shortcut: raw properties")


def test_shortcut_audit_needs_enough_patients():
    with pytest.raises(ValueError, match="validate.shortcut.folds"):
        cross_validated_auc(property_table(n_patients=6), ["format"], folds=5)


def test_hash_distances_and_clusters():
    bits = hash_bits(["0000000000000000", "0000000000000003", "ffffffffffffffff"])
    assert bits.shape == (3, 64) and bits[1].sum() == 2 and bits[2].sum() == 64
    assert candidate_pairs(["0000000000000000", "0000000000000003", "ffffffffffffffff"], 2) == [(0, 1, 2)]
    assert candidate_pairs(["0000000000000000", "0000000000000003"], 1) == []
    pairs = pd.DataFrame({"path_a": ["b", "c"], "path_b": ["c", "d"]})
    assert clusters(["a", "b", "c", "d", "e"], pairs) == {"a": "a", "b": "b", "c": "b", "d": "b", "e": "e"}


def test_linked_groups_join_patients_through_duplicates():
    t = pd.DataFrame({"group": ["p1", "p1", "p2", "p3"], "dup_cluster": ["x", "y", "y", "z"]})
    units = linked_groups(t).tolist()
    assert units[0] == units[1] == units[2] != units[3]


def test_audit_of_written_split_files_names_every_leak(tmp_path):
    files = {}
    frames = {
        "train": pd.DataFrame({"path": ["a", "b"], "group": ["p1", "p2"], "sha256": ["h1", "h2"]}),
        "val": pd.DataFrame({"path": ["c"], "group": ["p3"], "sha256": ["h2"]}),
        "test": pd.DataFrame({"path": ["d"], "group": ["p1"], "sha256": ["h4"]}),
    }
    for name, df in frames.items():
        files[name] = tmp_path / f"{name}.csv"
        df.to_csv(files[name], index=False)
    pairs = pd.DataFrame({"path_a": ["a", "b"], "path_b": ["c", "b"]})
    out = audit_split_files(files, pairs)
    assert out == {"patient_groups": ["p1 (train and test)"], "identical_images": ["h2 (train and val)"],
                   "near_duplicates": ["a (train) ~ c (val)"]}
    clean = {k: v for k, v in frames.items()}
    clean["test"] = pd.DataFrame({"path": ["d"], "group": ["p4"], "sha256": ["h4"]})
    clean["val"] = pd.DataFrame({"path": ["c"], "group": ["p3"], "sha256": ["h3"]})
    for name, df in clean.items():
        df.to_csv(files[name], index=False)
    assert audit_split_files(files, pd.DataFrame({"path_a": ["a"], "path_b": ["b"]})) == {
        "patient_groups": [], "identical_images": [], "near_duplicates": []}


def test_shortcut_tags_from_audit_file(tmp_path):
    f = tmp_path / "shortcut_audit.json"
    f.write_text(json.dumps({"max_auc": 0.7, "raw": {"auc": 0.93}, "processed": {"auc": 0.61}, "warnings": ["x"]}))
    assert shortcut_tags(f) == {"data.shortcut_auc_raw": "0.930", "data.shortcut_auc_processed": "0.610",
                                "data.shortcut_warning": "raw"}
    f.write_text(json.dumps({"max_auc": 0.95, "raw": {"auc": 0.93}, "processed": {"auc": 0.61}}))
    assert shortcut_tags(f)["data.shortcut_warning"] == "none"
    assert shortcut_tags(tmp_path / "missing.json") == {}


def test_every_later_mlflow_run_carries_the_shortcut_tag(tmp_path, monkeypatch):
    from mlflow.tracking.context.registry import _run_context_provider_registry

    from robustct import tracking

    # installed packages register the provider through their entry point; this checkout may not be installed
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["mlflow.run_context_provider"]["robustct_shortcut_audit"] == "robustct.runtags:ShortcutAuditContext"
    if not any(isinstance(p, ShortcutAuditContext) for p in _run_context_provider_registry):
        monkeypatch.setattr(_run_context_provider_registry, "_registry",
                            [*_run_context_provider_registry._registry, ShortcutAuditContext()])
    monkeypatch.chdir(tmp_path)
    mlflow = tracking.setup(root=tmp_path / "mlruns")
    with mlflow.start_run(run_name="before-validation") as r0:
        pass
    (tmp_path / "outputs" / "validate").mkdir(parents=True)
    (tmp_path / "outputs" / "validate" / "shortcut_audit.json").write_text(
        json.dumps({"max_auc": 0.7, "raw": {"auc": 0.93}, "processed": {"auc": 0.74}}))
    with mlflow.start_run(run_name="train", tags={"stage": "train"}) as r1:
        pass
    client = mlflow.tracking.MlflowClient()
    assert "data.shortcut_warning" not in client.get_run(r0.info.run_id).data.tags
    tags = client.get_run(r1.info.run_id).data.tags
    assert tags["data.shortcut_warning"] == "raw,processed" and tags["data.shortcut_auc_processed"] == "0.740"
    assert tags["stage"] == "train"


def test_provider_registers_whichever_module_is_imported_first():
    """Importing robustct.runtags before mlflow once made a circular import: the provider silently failed to
    register (one UserWarning) in that process. Checked in a fresh interpreter, where import order is real."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    if not any(e.name == "robustct_shortcut_audit" for e in entry_points(group="mlflow.run_context_provider")):
        pytest.skip("robustct is not installed in this environment (no entry point); scripts/setup_env.sh installs it")
    code = ("import warnings\n"
            "warnings.filterwarnings('error', message='Failure attempting to register context provider')\n"
            "import robustct.runtags\n"
            "import mlflow\n"
            "from mlflow.tracking.context.registry import _run_context_provider_registry as reg\n"
            "print(sum(isinstance(p, robustct.runtags.ShortcutAuditContext) for p in reg))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "1"


def repo_params():
    from robustct.params import read_yaml

    return read_yaml(REPO / "params.yaml")


def test_repository_validate_params_are_valid():
    assert check_params({k: repo_params()[k] for k in ("validate", "split")}) == []


@pytest.mark.parametrize("section,change,message", [
    ("validate", {"on_error": "ignore"}, "validate.on_error: 'ignore' is not a valid choice; input should be 'fail' or"),
    ("validate", {"min_widht": 48}, "validate.min_widht: unknown key; valid: on_error, min_width, min_height,"),
    ("validate", {"min_width": "48"}, "validate.min_width: Input should be a valid integer (got '48')"),
    ("validate", {"min_height": 0}, "validate.min_height: Input should be greater than or equal to 1 (got 0)"),
    ("validate", {"expected_counts": {"covid": 349, "normal": 397}},
     "validate.expected_counts.normal.[key]: 'normal' is not a valid choice; input should be 'covid' or 'non_covid'"),
    ("validate", {"near_duplicates": {"max_hash_distance": 65, "min_ssim": 0.9}},
     "validate.near_duplicates.max_hash_distance: Input should be less than or equal to 64 (got 65)"),
    ("validate", {"shortcut": {"max_auc": 0.7, "folds": 1}},
     "validate.shortcut.folds: Input should be greater than or equal to 2 (got 1)"),
    ("validate", {"shortcut": {"max_acu": 0.7}},
     "validate.shortcut.max_acu: unknown key; valid: max_auc, folds, seed, image_size"),
    ("split", {"ratios": {"train": "0.8", "val": 0.1, "test": 0.1}},
     "split.ratios.train: Input should be a valid number (got '0.8')"),
    ("split", {"ratios": {"train": 0.8, "val": 0.1, "test": 0.2}}, "split.ratios: ratios must sum to 1, got 1.1"),
    ("split", {"ratios": {"train": 1.1, "val": 0.05, "test": 0.05}}, "split.ratios.train: Input should be less than 1"),
    ("split", {"scheme": "kfold"}, "split.scheme: 'kfold' is not a valid choice; input should be 'official', 'patient' or 'random'"),
    ("split", {"sed": 1}, "split.sed: unknown key; valid: scheme, official_keep_quarantined_test, ratios, seed"),
])
def test_one_message_per_problem_naming_the_key(section, change, message):
    params = repo_params()
    params[section] = {**params[section], **change}
    problems = check_params(params)
    assert len(problems) == 1, problems
    assert problems[0].startswith(message)


def test_split_stage_refuses_leaky_files_and_writes_nothing(tmp_path):
    from robustct.data.split import LeakageError
    from robustct.stages import split as split_stage

    rows = [dict(path=f"{lab}/{g}.png", label=lab, label_index=int(lab == "covid"), group=f"{lab}/p{g}",
                 decode_ok=True, quarantined=False, sha256=f"h{lab}{g}")
            for lab in ("covid", "non_covid") for g in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    # duplicates the table does not know about (no dup_cluster column): image 0 ~ every other COVID image
    pairs = pd.DataFrame({"path_a": ["covid/0.png"] * 19, "path_b": [f"covid/{g}.png" for g in range(1, 20)]})
    pairs.to_csv(tmp_path / "near_duplicates.csv", index=False)
    params = {"split": {"scheme": "patient", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}}
    with pytest.raises(LeakageError, match=r"near duplicates: covid/0.png \(\w+\) ~ covid/"):
        split_stage.run(params, tmp_path / "table.csv", tmp_path / "split")
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == []      # nothing half-written
    params["split"]["scheme"] = "random"                                     # the paper's leaky split: counted
    summary = split_stage.run(params, tmp_path / "table.csv", tmp_path / "split")
    assert summary["leakage"]["near_duplicates"] > 0 and summary["leakage"]["patient_groups"] == 0
    assert sum(summary[s]["images"] for s in ("train", "val", "test")) == 40
