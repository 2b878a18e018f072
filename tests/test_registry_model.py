"""The registered model is a usable nn.Module, pyfunc/JSON serving keep working, checkpoints load weights-only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from robustct import tracking
from robustct.models import build_model, load_checkpoint, read_checkpoint, save_checkpoint

LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np, torch, mlflow
    torch.set_num_threads(1)
    uri, x_path = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
    m = mlflow.pytorch.load_model("models:/tiny@champion")
    out = {"type": type(m).__name__, "is_module": isinstance(m, torch.nn.Module), "cuda": torch.cuda.is_available(),
           "loaded_training": m.training}
    m.train(); out["train_mode"] = [m.training, m.dropout.training]
    m.eval(); out["eval_mode"] = [m.training, m.dropout.training]
    out["n_params"] = sum(p.numel() for p in m.parameters())
    out["state_keys"] = len(m.state_dict())
    x = torch.from_numpy(np.load(x_path))
    for n in (1, 3, 5):
        out[f"batch_{n}"] = list(m(x[:n]).shape)
    xg = x[:3].clone().requires_grad_(True)
    m(xg)[:, 1].sum().backward()
    out["input_grad_abs"] = float(xg.grad.abs().sum())
    with torch.no_grad():
        out["logits"] = m(x).tolist()
    from robustct.models import load_registered
    out["safe_logits"] = load_registered("models:/tiny@champion")(x).detach().tolist()
    pf = mlflow.pyfunc.load_model("models:/tiny@champion")
    out["pyfunc"] = pf.predict(x.numpy()).tolist()
    out["signature"] = str(pf.metadata.get_input_schema())
    out["metadata"] = pf.metadata.metadata
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server
    r = TestClient(scoring_server.init(pf)).post("/invocations", json={"inputs": x.numpy().tolist()})
    out["served_status"] = r.status_code
    out["served"] = r.json()["predictions"]
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny efficientnet-lite0 classifier logged and registered as ``tiny@champion`` in a temp store."""
    tmp = tmp_path_factory.mktemp("registry")
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", "none", image_size=32, dropout=0.5)
    model.set_threshold(0.3)
    mlflow = tracking.setup(root=tmp / "mlruns")
    x_u8 = (torch.rand(6, 1, 32, 32) * 255).to(torch.uint8)
    with mlflow.start_run():
        uri = tracking.log_model(mlflow, model, x_u8)
    client = mlflow.MlflowClient()
    mv = mlflow.register_model(uri, "tiny")
    client.set_registered_model_alias("tiny", "champion", mv.version)
    x = x_u8.float().numpy() / 255.0
    np.save(tmp / "x.npy", x.astype("float32"))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x.astype("float32"))).numpy()
    return tmp, expected


def test_registered_model_is_a_usable_module_in_a_fresh_cpu_process(registered, tmp_path):
    tmp, expected = registered
    (tmp_path / "loader.py").write_text(LOADER)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("ROBUSTCT_MLRUNS", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, str(tmp_path / "loader.py"), tracking.sqlite_uri(tmp / "mlruns"),
                           str(tmp / "x.npy")], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    out = json.loads(line[0][7:])
    assert out["type"] == "Classifier" and out["is_module"] and not out["cuda"]
    assert out["loaded_training"] is False  # MLflow hands it back in eval mode
    assert out["train_mode"] == [True, True] and out["eval_mode"] == [False, False]
    assert out["n_params"] > 1000 and out["state_keys"] > 10
    assert out["batch_1"] == [1, 2] and out["batch_3"] == [3, 2] and out["batch_5"] == [5, 2]
    assert out["input_grad_abs"] > 0
    # the same numbers as the model that was logged, by every loading route
    for key in ("logits", "safe_logits", "pyfunc", "served"):
        np.testing.assert_allclose(np.array(out[key]), expected, rtol=1e-5, atol=1e-5, err_msg=key)
    assert out["signature"] == "[Tensor('float32', (-1, 1, 32, 32))]"
    assert out["served_status"] == 200
    assert out["metadata"]["input"] == "float32 (N, 1, 32, 32) grayscale in [0, 1]"
    assert out["metadata"]["threshold"] == 0.3


def test_checkpoint_loads_weights_only_with_numpy_values_in_extra(tmp_path):
    model = build_model("resnet18", "none", image_size=32)
    model.set_threshold(0.25)
    history = [{"epoch": 1, "val_accuracy": np.float64(0.75), "selected": np.bool_(True)}]
    save_checkpoint(model, tmp_path / "m.pt", extra={"history": history, "eps": (np.float32(0.5),)})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # raises if anything but plain data / tensors
    assert raw["extra"]["history"][0] == {"epoch": 1, "val_accuracy": 0.75, "selected": True}
    assert type(raw["extra"]["history"][0]["val_accuracy"]) is float and raw["extra"]["eps"] == [0.5]
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.config["threshold"] == 0.25 and back.config == raw["config"]
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(back(x), model.eval()(x))


def test_checkpoint_with_pickled_objects_is_refused_with_the_fix(tmp_path):
    import datetime

    # a Python object that is not plain data: torch's weights-only unpickler refuses its global
    torch.save({"config": {}, "state_dict": {}, "extra": {"o": datetime.date(2020, 1, 1)}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old\.pt: not a weights-only checkpoint.*dvc repro -f"):
        read_checkpoint(tmp_path / "old.pt")
