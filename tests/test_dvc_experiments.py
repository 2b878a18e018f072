"""Real DVC experiments (a temporary one, two queued ones run by two workers at once) log into the
project's one MLflow store, not into DVC's throw-away workspaces."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from robustct import tracking

pytestmark = pytest.mark.dvc_exp
SRC = Path(tracking.__file__).resolve().parents[1]
STAGE = """
import os, yaml
from robustct import tracking
p = yaml.safe_load(open("params.yaml"))["p"]
mlflow = tracking.setup()
with mlflow.start_run(run_name=f"exp-{p}"):
    mlflow.log_param("p", p)
    for step in range(5):
        mlflow.log_metric("m", p * step, step=step)
os.makedirs("out", exist_ok=True)
open("out/m.txt", "w").write(str(p))
print("workspace", os.getcwd())
"""


def sh(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def test_temp_and_parallel_queued_experiments_keep_their_runs(tmp_path):
    dvc = Path(sys.executable).parent / "dvc"
    if shutil.which("git") is None or not dvc.is_file():
        pytest.skip("git or dvc is not installed")
    proj = tmp_path / "proj"
    proj.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ROBUSTCT_MLRUNS", "MLFLOW_TRACKING_URI",
                                                              "MLFLOW_REGISTRY_URI")}
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", PATH=f"{dvc.parent}{os.pathsep}{env.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               DVC_NO_ANALYTICS="1")
    sh(["git", "init", "-q"], proj, env)
    sh(["dvc", "init", "-q"], proj, env)
    (proj / "log_run.py").write_text(STAGE)
    (proj / "params.yaml").write_text("p: 1\n")
    (proj / "dvc.yaml").write_text("stages:\n  log:\n    cmd: python log_run.py\n    deps: [log_run.py]\n"
                                   "    params: [p]\n    outs: [out]\n")
    (proj / ".gitignore").write_text("/mlruns/\n")
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "init"], proj, env)

    sh(["dvc", "exp", "run", "--temp", "-S", "p=2"], proj, env)
    sh(["dvc", "exp", "run", "--queue", "-S", "p=3"], proj, env)
    sh(["dvc", "exp", "run", "--queue", "-S", "p=4"], proj, env)
    out = sh(["dvc", "exp", "run", "--run-all", "--jobs", "2"], proj, env)
    assert "database is locked" not in out
    status = sh(["dvc", "queue", "status"], proj, env)
    assert status.count("Success") == 2 and "Failed" not in status, status

    db = proj / "mlruns" / "mlflow.db"
    assert db.is_file(), "the experiments did not log into the project's mlruns/"
    runs = sqlite3.connect(db).execute("SELECT name, status FROM runs ORDER BY name").fetchall()
    assert runs == [("exp-2", "FINISHED"), ("exp-3", "FINISHED"), ("exp-4", "FINISHED")]
    steps = sqlite3.connect(db).execute("SELECT COUNT(*) FROM metrics WHERE key = 'm'").fetchone()[0]
    assert steps == 15
    assert not list((proj / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing logged inside DVC's workspaces
