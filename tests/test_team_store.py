"""A team store: mlflow server on a real PostgreSQL with a shared artifact root; train, register, alias, load."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from robustct import tracking
from robustct.models import build_model
from robustct.team_store import Postgres, StoreStartError, find_postgres_bin, free_port, start_server
from robustct.train import fit

pytestmark = pytest.mark.store


@pytest.fixture(scope="module")
def team_server():
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg (pip install 'psycopg[binary]') is missing")
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL binaries (initdb/pg_ctl/postgres on PATH, /usr/lib/postgresql/*/bin or pgserver)")
    # PostgreSQL may run as another account (when we are root): its folder must be reachable by it
    base = Path(tempfile.mkdtemp(prefix="robustct-pg-"))
    os.chmod(base, 0o755)
    pg = Postgres(base / "pg", free_port())
    try:
        pg.start()
    except StoreStartError as exc:
        pytest.skip(f"PostgreSQL could not start here: {exc}")
    proc = None
    try:
        proc, uri = start_server(pg.uri, base / "shared-artifacts", log_file=base / "server.log")
        yield uri, base, pg
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_train_register_alias_round_trip_through_the_server(team_server, monkeypatch, tmp_path):
    uri, base, pg = team_server
    assert uri.startswith("http://127.0.0.1:")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("ROBUSTCT_MLRUNS", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    y = torch.tensor([0, 1] * 4)
    model = build_model("resnet18", "none", image_size=32)
    mlflow = tracking.setup()
    assert mlflow.get_tracking_uri() == uri
    with mlflow.start_run(run_name="tiny-train") as run:
        model, history = fit(model, (x, y), (x, y), epochs=1, lr=1e-3, batch_size=4, seed=0,
                             log=lambda m, step: mlflow.log_metrics(m, step=step))
        model_uri = tracking.log_model(mlflow, model, x)
    client = mlflow.MlflowClient()
    mv = mlflow.register_model(model_uri, "team-tiny")
    client.set_registered_model_alias("team-tiny", "champion", mv.version)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied through the server
    assert client.get_run(run.info.run_id).data.metrics["val_accuracy"] == history[-1]["val_accuracy"]
    champ = client.get_model_version_by_alias("team-tiny", "champion")
    assert champ.version == mv.version
    loaded = mlflow.pytorch.load_model("models:/team-tiny@champion")
    xf = x.float() / 255
    assert torch.allclose(loaded(xf), model.cpu().eval()(xf), atol=1e-6)
    # the artifacts live in the shared root, the metadata in PostgreSQL (not in a local mlruns/)
    assert any((base / "shared-artifacts").rglob("MLmodel"))
    assert not (tmp_path / "mlruns").exists()
    import psycopg

    with psycopg.connect(host=pg.host, port=pg.port, user="mlflow", dbname="mlflow") as con:
        assert con.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone() == ("FINISHED",)
        assert con.execute("SELECT name FROM registered_model_aliases WHERE alias = 'champion'").fetchone() == ("team-tiny",)
