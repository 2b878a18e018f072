"""Stage `defend`: trains only and writes exactly its declared outputs, with one column set per history row."""
import csv
import json
import math

import pandas as pd

from robustct.models import build_model, load_checkpoint, save_checkpoint
from robustct.stages import defend
from robustct.stages.defend import uniform_rows

from conftest import write_dataset


def test_uniform_rows_fills_missing_keys():
    rows = uniform_rows([{"epoch": 1, "selected": True, "phase": "prefit"},
                         {"epoch": 2, "val_robust_accuracy": 0.5, "collapsed": False, "phase": "trades"}])
    assert list(rows[0]) == list(rows[1]) == ["epoch", "selected", "phase", "val_robust_accuracy", "collapsed"]
    assert math.isnan(rows[0]["val_robust_accuracy"]) and rows[0]["collapsed"] is False
    assert rows[1]["selected"] is False


def test_defend_stage_writes_its_outputs(tmp_path):
    data = tmp_path / "data"
    sums = write_dataset(data, n_covid=6, n_non=6, size=40)
    images = sorted(p for p in sums if p.startswith("CT_"))
    split = tmp_path / "split"
    split.mkdir()
    for name, part in (("train", images), ("val", images)):
        pd.DataFrame({"path": part, "label": ["covid" if p.startswith("CT_COVID") else "non_covid" for p in part],
                      "label_index": [int(p.startswith("CT_COVID")) for p in part],
                      "group": part}).to_csv(split / f"{name}.csv", index=False)
    base = tmp_path / "base.pt"
    save_checkpoint(build_model("small_cnn", "none", image_size=32, dropout=0.0), base)
    cfg = {"method": "trades", "epsilon": "2/255", "steps": 1, "epochs": 2, "batch_size": 8, "seed": 0,
           "init": "new", "resize_to": 16, "prefit_epochs": 1, "val_steps": 1, "threshold": "0.5"}
    out = tmp_path / "out"
    metrics = defend.run({"defend": cfg}, data, base_model=base, split_dir=split, out_dir=out, track=False)
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "model.pt", "run.json",
                                                      "training_curves.png"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["prefit", "trades", "trades"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["selected_epoch"] == metrics["selected_epoch"] and saved["epochs_run"] == 3
    model = load_checkpoint(out / "model.pt")
    assert model.config["resize_to"] == 16 and model.config["image_size"] == 32
