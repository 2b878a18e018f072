"""No outbound calls: a real stage, run as the `robustct` command runs it, contacts only loopback addresses
(MLflow's telemetry used to look up config.mlflow-telemetry.io from every stage)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from conftest import write_dataset

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

RECORDER = textwrap.dedent('''
    import json, socket, sys, threading
    calls = []
    _gai, _connect, _connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host, *a, **k):
        calls.append(["getaddrinfo", str(host)])
        return _gai(host, *a, **k)

    def connect(self, address):
        calls.append(["connect", repr(address)])
        return _connect(self, address)

    def connect_ex(self, address):
        calls.append(["connect", repr(address)])
        return _connect_ex(self, address)

    socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = getaddrinfo, connect, connect_ex
    from robustct.cli import main
    rc = main(sys.argv[1:])
    for t in threading.enumerate():  # MLflow's telemetry looks its config up from a background thread
        if t is not threading.current_thread():
            t.join(timeout=5)
    try:
        from mlflow.telemetry.client import get_telemetry_client
        telemetry = get_telemetry_client() is not None
    except ImportError:
        telemetry = False
    print("CALLS " + json.dumps({"rc": rc, "calls": calls, "telemetry_client": telemetry}), flush=True)
''')



def is_local(call: list[str]) -> bool:
    kind, what = call
    if kind == "getaddrinfo":
        return what in ("localhost", "127.0.0.1", "::1", "None", "")
    addr = what.strip("()").split(",")[0].strip().strip("'\"") if what.startswith("(") else what.strip("'\"")
    return addr.startswith(("127.", "::1", "localhost", "/")) or addr == ""


def test_a_stage_contacts_only_loopback(tmp_path):
    root = tmp_path / "proj"
    (root / ".dvc").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    write_dataset(root / "data")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["root"] = "data"
    params["validate"]["expected_counts"] = {"covid": 4, "non_covid": 4}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    # a user's shell, not pytest's or a CI's: MLflow turns telemetry off by itself under those markers
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "ROBUSTCT_", "PYTEST_", "GX_", "DVC_")) and k not in (
               "CI", "DO_NOT_TRACK", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD")}
    env.update(PYTHONPATH=str(SRC), ROBUSTCT_MLRUNS=str(tmp_path / "mlruns"), HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", RECORDER, "validate"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("CALLS ")), None)
    assert line is not None, out.stderr[-3000:]
    got = json.loads(line[len("CALLS "):])
    assert got["rc"] == 0, out.stderr[-3000:]
    assert (root / "outputs" / "validate" / "summary.json").is_file()
    outbound = [c for c in got["calls"] if not is_local(c)]
    assert outbound == [], outbound
    assert got["telemetry_client"] is False


def test_dvc_sends_no_analytics_and_checks_no_updates():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc" / "config")
    assert cfg.getboolean("core", "analytics") is False
    assert cfg.getboolean("core", "check_update") is False  # else `dvc` contacts updater.dvc.org


def test_importing_the_package_turns_telemetry_off_but_lets_a_user_opt_in():
    code = "import os, robustct; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['GX_ANALYTICS_ENABLED'])"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "GX_ANALYTICS_ENABLED")}
    env["PYTHONPATH"] = str(SRC)
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,  # noqa: E731
                                   timeout=120).stdout.split()
    assert run(env) == ["true", "false"]
    assert run({**env, "MLFLOW_DISABLE_TELEMETRY": "false"}) == ["false", "false"]
