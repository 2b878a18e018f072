"""The one project store: found from DVC experiment workspaces and any cwd, safe for concurrent writers,
movable, tagged for the UI, runs checked before a stage writes, splits logged as dataset inputs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from robustct import tracking
from robustct.models import build_model, save_checkpoint

SRC = Path(tracking.__file__).resolve().parents[1]


@pytest.fixture
def no_store_env(monkeypatch):
    monkeypatch.delenv("ROBUSTCT_MLRUNS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def make_project(root: Path) -> Path:
    (root / ".dvc").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root


def test_dvc_temp_and_queued_workspaces_use_the_project_store(tmp_path, monkeypatch, no_store_env):
    proj = make_project(tmp_path / "proj")
    # what `dvc exp run --temp` / a queue worker runs in: a full copy under .dvc/tmp/exps/<tmp>/
    ws = make_project(proj / ".dvc" / "tmp" / "exps" / "tmpa1b2c3")
    (ws / "outputs").mkdir()
    for cwd in (ws, ws / "outputs", proj, proj / ".dvc"):
        monkeypatch.chdir(cwd)
        assert tracking.project_root() == proj
        assert tracking.mlruns_dir() == proj / "mlruns"
        assert tracking.tracking_uri() == f"sqlite:///{proj / 'mlruns' / 'mlflow.db'}?timeout=60"
    monkeypatch.setenv("ROBUSTCT_MLRUNS", "team-mlruns")  # relative: from the project root, not the cwd
    monkeypatch.chdir(ws / "outputs")
    assert tracking.mlruns_dir() == proj / "team-mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.mlruns_dir() == proj / "team-mlruns"  # the explicit project store wins (tests set it)
    monkeypatch.delenv("ROBUSTCT_MLRUNS")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"


def test_runs_from_a_dvc_workspace_land_in_the_project_store(tmp_path, monkeypatch, no_store_env):
    proj = make_project(tmp_path / "proj")
    ws = make_project(proj / ".dvc" / "tmp" / "exps" / "tmpq")
    monkeypatch.chdir(ws)
    mlflow = tracking.setup()
    with mlflow.start_run(run_name="from-temp-workspace") as run:
        mlflow.log_metric("m", 1.0)
    shutil.rmtree(ws)  # DVC deletes the workspace afterwards
    monkeypatch.chdir(proj)
    mlflow = tracking.setup()
    assert mlflow.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert not (ws / "mlruns").exists() and (proj / "mlruns" / "mlflow.db").is_file()



def test_a_relative_tracking_uri_names_the_project_store_from_a_dvc_workspace(tmp_path, monkeypatch, no_store_env):
    """`MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db dvc exp run --temp ...` once logged a whole trial into a new
    store inside the temporary copy, which DVC then deleted: the relative path must be read from the project."""
    proj = make_project(tmp_path / "proj")
    ws = make_project(proj / ".dvc" / "tmp" / "exps" / "tmpr")
    monkeypatch.chdir(ws)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")
    assert tracking.tracking_uri() == f"sqlite:///{proj / 'mlruns' / 'mlflow.db'}"
    anchored = tracking.anchored_uri("sqlite:///team/x.db?timeout=5", proj)
    assert anchored == f"sqlite:///{proj / 'team' / 'x.db'}?timeout=5"
    assert tracking.anchored_uri("mlruns", proj) == str(proj / "mlruns")
    for unchanged in (f"sqlite:///{tmp_path}/abs.db", "http://127.0.0.1:5000", "postgresql://u@h/db",
                      "sqlite:///:memory:", "file:///srv/mlruns", str(tmp_path / "abs-folder")):
        assert tracking.anchored_uri(unchanged, proj) == unchanged
    mlflow = tracking.setup()
    with mlflow.start_run(run_name="relative-uri") as run:
        mlflow.log_metric("m", 2.0)
    shutil.rmtree(ws)
    monkeypatch.chdir(proj)
    assert tracking.setup().get_run(run.info.run_id).data.metrics == {"m": 2.0}
    assert (proj / "mlruns" / "mlflow.db").is_file()


WORKER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, os.environ["ROBUSTCT_SRC"])
    from robustct import tracking
    mlflow = tracking.setup()
    for i in range(int(sys.argv[1])):
        with mlflow.start_run(run_name=f"worker-{sys.argv[2]}-{i}"):
            mlflow.log_params({f"p{k}": k for k in range(10)})
            for step in range(5):
                mlflow.log_metrics({f"m{k}": k * step for k in range(4)}, step=step)
    print("worker ok")
""")


def test_concurrent_writers_on_a_fresh_store(tmp_path):
    """Queued DVC experiments run in parallel workers: several processes create and write one SQLite store."""
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "ROBUSTCT_MLRUNS": str(tmp_path / "mlruns"), "ROBUSTCT_SRC": str(SRC),
           "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), "8", str(i)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "worker ok" in out, out[-2000:]
        assert "database is locked" not in out
    import mlflow

    client = mlflow.MlflowClient(tracking.sqlite_uri(tmp_path / "mlruns"))
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 24 and all(len(r.data.metrics) == 4 for r in runs)
    import sqlite3

    assert sqlite3.connect(tmp_path / "mlruns" / "mlflow.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_experiment_is_tagged_for_model_development(tmp_path):
    mlflow = tracking.setup(root=tmp_path / "mlruns")
    exp = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # an experiment created before the tag existed gets it on the next set-up
    mlflow.MlflowClient().delete_experiment_tag(exp.experiment_id, tracking.EXPERIMENT_KIND_TAG)
    tracking.setup(root=tmp_path / "mlruns")
    assert mlflow.get_experiment(exp.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_moved_project_still_loads_its_registered_model(tmp_path, monkeypatch, no_store_env, capsys):
    import mlflow

    old = make_project(tmp_path / "project")
    monkeypatch.chdir(old)
    tracking.setup()
    net = torch.nn.Linear(3, 2)
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/readme.txt")
        info = mlflow.pytorch.log_model(net, name="model", serialization_format="pickle")
    mlflow.register_model(info.model_uri, "moved")
    new = tmp_path / "project2"
    monkeypatch.chdir(tmp_path)
    old.rename(new)
    monkeypatch.chdir(new)
    tracking.setup()
    assert "the MLflow store moved from" in capsys.readouterr().err
    loaded = mlflow.pytorch.load_model("models:/moved/1")
    x = torch.rand(4, 3)
    assert torch.equal(loaded(x), net(x))
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/readme.txt") == "hello"
    exp = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.artifact_location == (new / "mlruns" / "artifacts").as_uri()
    assert tracking.relocate_store(new / "mlruns", exp.artifact_location) == 0  # idempotent


def tiny_stage_inputs(tmp_path):
    from conftest import write_dataset

    data = tmp_path / "data"
    write_dataset(data)
    split = tmp_path / "split"
    split.mkdir()
    rows = ["path,label,label_index,group"]
    rows += [f"CT_COVID/{p.name},covid,1,g{i}" for i, p in enumerate(sorted((data / "CT_COVID").iterdir()))]
    rows += [f"CT_NonCOVID/{p.name},non_covid,0,n{i}" for i, p in enumerate(sorted((data / "CT_NonCOVID").iterdir()))]
    for name in ("train", "val", "test"):
        (split / f"{name}.csv").write_text("\n".join(rows) + "\n")
    model_dir = tmp_path / "train"
    save_checkpoint(build_model("resnet18", "none", image_size=32), model_dir / "model.pt")
    return data, split, model_dir


def test_missing_run_stops_evaluate_before_it_writes(tmp_path, monkeypatch, capsys):
    from robustct.stages import evaluate

    monkeypatch.setenv("ROBUSTCT_MLRUNS", str(tmp_path / "fresh-mlruns"))  # a store without that run
    data, split, model_dir = tiny_stage_inputs(tmp_path)
    (model_dir / "run.json").write_text('{"run_id": "0123456789abcdef0123456789abcdef", "model_uri": "models:/m-1"}')
    out = tmp_path / "evaluate"
    with pytest.raises(tracking.MissingRunError) as err:
        evaluate.run({"evaluate": {"bootstrap": 10, "seed": 0}}, data, "baseline", model_dir, split, out,
                     tmp_path / "evaluate.json")
    msg = str(err.value)
    assert "\n" not in msg and str(model_dir / "run.json") in msg and "dvc repro -f train" in msg
    assert not out.exists() and not (tmp_path / "evaluate.json").exists()


def stage_project(tmp_path):
    """A project folder laid out like the pipeline's (``params.yaml``, ``data/``, ``outputs/split``,
    ``outputs/train/model.pt``) for running a stage through the command line; returns the folder."""
    import yaml

    root = make_project(tmp_path / "proj")
    data, split, model_dir = tiny_stage_inputs(root)
    shutil.move(str(data), root / "data")
    (root / "outputs").mkdir()
    shutil.move(str(split), root / "outputs" / "split")
    shutil.move(str(model_dir), root / "outputs" / "train")
    params = yaml.safe_load((SRC.parent / "params.yaml").read_text())
    params["data"]["root"] = "data"
    params["evaluate"]["bootstrap"] = 10
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_a_deleted_training_run_stops_evaluate_before_it_writes(tmp_path, monkeypatch, capsys):
    """The run named by outputs/train/run.json was deleted (UI / `mlflow runs delete`): get_run still answers, so
    evaluate used to write its outputs and only then fail to resume the run. Now: one line, exit 1, nothing
    written (the outputs of an earlier evaluation stay byte for byte)."""
    from robustct.cli import main

    monkeypatch.setenv("ROBUSTCT_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = stage_project(tmp_path)
    monkeypatch.chdir(root)
    mlflow = tracking.setup()
    with mlflow.start_run(run_name="train-resnet18") as run:
        pass
    (root / "outputs/train/run.json").write_text(f'{{"run_id": "{run.info.run_id}"}}')
    mlflow.MlflowClient().delete_run(run.info.run_id)
    out = root / "outputs" / "baseline"
    (out / "evaluate").mkdir(parents=True)
    earlier = {out / "evaluate" / "metrics.json": "earlier\n", out / "evaluate.json": "earlier\n"}
    for f, text in earlier.items():
        f.write_text(text)
    capsys.readouterr()  # the store's set-up lines
    rc = main(["evaluate", "--candidate", "baseline"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert "\n" not in err and err.startswith("error: outputs/train/run.json") and "was deleted" in err, err
    assert "dvc repro -f train" in err
    assert sorted(p.name for p in (out / "evaluate").iterdir()) == ["metrics.json"]
    assert all(f.read_text() == text for f, text in earlier.items())


def test_a_run_whose_experiment_was_deleted_is_not_usable(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTCT_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow = tracking.setup()
    with mlflow.start_run() as run:
        pass
    assert tracking.run_problem(mlflow, {"run_id": run.info.run_id}, "train") is None
    mlflow.MlflowClient().delete_experiment(run.info.experiment_id)
    assert "experiment" in tracking.run_problem(mlflow, {"run_id": run.info.run_id}, "train")


def test_evaluate_logs_to_its_own_run_and_leaves_the_training_run_as_it_ended(tmp_path, monkeypatch):
    """evaluate used to resume and re-end the training run, so the training run's duration included the
    evaluation (273 s shown for 157 s of training). Now the training run's end time, status and metrics stay as
    training left them; the evaluation is its own run, linked by the tag model_run_id."""
    from robustct.stages import evaluate

    monkeypatch.setenv("ROBUSTCT_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, split, model_dir = tiny_stage_inputs(tmp_path)
    mlflow = tracking.setup()
    with mlflow.start_run(run_name="train-resnet18", tags={"stage": "train"}) as run:
        mlflow.log_metric("val_accuracy", 0.5)
    (model_dir / "run.json").write_text(f'{{"run_id": "{run.info.run_id}"}}')
    client = mlflow.MlflowClient()
    before = client.get_run(run.info.run_id)
    evaluate.run({"evaluate": {"bootstrap": 10, "seed": 0}}, data, "baseline", model_dir, split,
                 tmp_path / "evaluate", tmp_path / "evaluate.json")
    after = client.get_run(run.info.run_id)
    assert (after.info.start_time, after.info.end_time, after.info.status) == \
        (before.info.start_time, before.info.end_time, "FINISHED")
    assert after.data.metrics == before.data.metrics
    evals = client.search_runs([run.info.experiment_id], f"tags.model_run_id = '{run.info.run_id}'")
    assert len(evals) == 1
    ev = evals[0]
    assert ev.info.run_id != run.info.run_id and ev.info.status == "FINISHED"
    assert ev.info.run_name == "evaluate-baseline"
    assert {"stage": "evaluate", "candidate": "baseline"}.items() <= ev.data.tags.items()
    assert {"test_accuracy", "test_auc", "test_predicted_covid_rate"} <= set(ev.data.metrics)
    assert ev.info.start_time >= before.info.end_time
    assert [d.dataset.name for d in ev.inputs.dataset_inputs] == ["covid-ct-test"]


def test_resolve_run_warns_and_asks_for_a_new_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTCT_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    f = tmp_path / "run.json"
    f.write_text('{"run_id": "ffffffffffffffffffffffffffffffff"}')
    ref = tracking.resolve_run(f, "train", on_missing="new")
    assert ref.run_id is None and "logging to a new run" in capsys.readouterr().err
    mlflow = tracking.setup()
    with mlflow.start_run() as run:
        pass
    f.write_text(f'{{"run_id": "{run.info.run_id}"}}')
    assert tracking.resolve_run(f, "train").run_id == run.info.run_id
    f.write_text("{}")  # written with --no-track
    with pytest.raises(tracking.MissingRunError, match="--no-track"):
        tracking.resolve_run(f, "train")


def test_split_is_logged_as_a_dataset_input_with_a_data_version_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTCT_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, split, _ = tiny_stage_inputs(tmp_path)
    with tracking.stage_run("train", run_name="t", split_dir=split, splits=("train", "val")) as (mlflow, run):
        pass
    got = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    by_name = {d.dataset.name: d for d in got}
    assert set(by_name) == {"covid-ct-train", "covid-ct-val"}
    version = tracking.data_version()
    assert by_name["covid-ct-val"].dataset.digest == tracking.split_digest(version, split / "val.csv")
    contexts = {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"] for d in got}
    assert contexts == {"covid-ct-train": "training", "covid-ct-val": "validation"}
    # the digest follows both the data version and the split file
    assert tracking.split_digest("dvc-md5:other", split / "val.csv") != by_name["covid-ct-val"].dataset.digest
    (split / "val.csv").write_text((split / "val.csv").read_text() + "extra,covid,1,gx\n")
    assert tracking.split_digest(version, split / "val.csv") != by_name["covid-ct-val"].dataset.digest


def test_a_killed_stage_marks_its_mlflow_run_failed_not_running(tmp_path):
    """SIGTERM inside an open run (what `kill` of a stage does): with the CLI's handler the run ends FAILED and
    the process exits 143; without it the run would stay RUNNING in the store for ever."""
    import os
    import subprocess
    import sys

    code = (
        "import os, signal, time, mlflow\n"
        "from robustct.cli import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
        f"mlflow.set_tracking_uri('sqlite:///{tmp_path}/mlflow.db')\n"
        "with mlflow.start_run() as r:\n"
        "    print(r.info.run_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "print('not reached', flush=True)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ROBUSTCT_"))}  # no store of others
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 143, out.stderr[-2000:]
    run_id = out.stdout.split()[0]
    assert "not reached" not in out.stdout
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(run_id).info.status == "FAILED"


def test_every_run_is_tagged_with_what_decides_the_bits_of_a_model():
    import torch

    tags = tracking.standard_tags()
    assert tags["torch_num_threads"] == str(torch.get_num_threads()) and tags["torch_version"] == torch.__version__
    assert tags["device"] in ("cpu", "cuda") or tags["device"].startswith("cuda:")
    assert tags["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert tags["cpu_model"] == tracking.cpu_model() != ""
    torch.set_num_threads(1)
    try:
        assert tracking.standard_tags()["torch_num_threads"] == "1"
    finally:
        torch.set_num_threads(int(tags["torch_num_threads"]))


def test_git_commit_is_dirty_for_code_changes_not_for_what_dvc_repro_writes(tmp_path, monkeypatch):
    """During one `dvc repro`, DVC rewrites dvc.lock after every stage and the report stage its page; the later
    stages' runs must still record the clean commit, while an edited source file marks it dirty."""
    import subprocess

    from robustct.tracking import git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "docs" / "results").mkdir(parents=True)
    for f in ("code.py", "dvc.lock", "docs/results/README.md", "docs/notes.md"):
        (tmp_path / f).write_text("v1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path / "docs")  # from a subfolder too: the exclusions are from the top
    assert git_commit() == sha
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "docs" / "results" / "README.md").write_text("v2\n")
    (tmp_path / "untracked.txt").write_text("new\n")
    assert git_commit() == sha
    (tmp_path / "docs" / "notes.md").write_text("v2\n")
    assert git_commit() == sha + "-dirty"
    git("checkout", "--", "docs/notes.md")
    (tmp_path / "code.py").write_text("v2\n")
    assert git_commit() == sha + "-dirty"


def test_cpu_model_reads_the_first_model_name_and_falls_back(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"
                    "processor\t: 1\nmodel name\t: something else\n")
    assert tracking.cpu_model(info) == "AMD EPYC 9654 96-Core Processor"
    import platform

    assert tracking.cpu_model(tmp_path / "missing") == (platform.processor() or "unknown")
