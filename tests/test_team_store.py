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


def _status(uri: str, host_header: str) -> int:
    """HTTP status of a tracking API call to ``uri`` (loopback) sent with ``Host: host_header``, as a client
    using ``http://<host_header>`` sends it."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(uri)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        con.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host_header})
        return con.getresponse().status
    finally:
        con.close()


def test_a_server_named_in_allowed_hosts_answers_its_clients(tmp_path):
    """MLflow >= 3.5 checks the Host header: a client of `http://ct-tracking.example:5000` (the documented team
    server set-up) got 403 'Invalid Host header'. With --allowed-hosts it gets 200. All traffic stays on
    127.0.0.1: the name is only sent as the Host header."""
    from robustct.team_store import server_command

    name = "ct-tracking.example:5000"
    cmd = server_command("sqlite:///x.db", tmp_path, allowed_hosts=f"{name},localhost:*,127.0.0.1:*",
                         cors_allowed_origins="https://ct-tracking.example")
    assert cmd[cmd.index("--allowed-hosts") + 1].startswith(name)
    assert cmd[cmd.index("--cors-allowed-origins") + 1] == "https://ct-tracking.example"
    assert "--allowed-hosts" not in server_command("sqlite:///x.db", tmp_path)
    for allowed, expected in ((None, 403), (f"{name},localhost:*,127.0.0.1:*", 200)):
        d = tmp_path / ("allowed" if allowed else "default")
        d.mkdir()
        proc, uri = start_server(tracking.sqlite_uri(d), d / "artifacts", log_file=d / "server.log",
                                 allowed_hosts=allowed)
        try:
            assert uri.startswith("http://127.0.0.1:")
            assert _status(uri, uri.removeprefix("http://")) == 200  # loopback clients either way
            assert _status(uri, name) == expected, (d / "server.log").read_text()[-2000:]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
