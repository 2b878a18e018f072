"""scripts/screen_cv.py to-cv: screening rows become a cv.json that `robustct cv-compare` pairs with a trial."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import REPO
from robustct.crossval import compare_out_of_fold, nested_folds


def _split(tmp_path):
    rng = np.random.default_rng(0)  # patients of 1-3 slices, one label each: folds differ between seeds
    rows, g = [], 0
    while len(rows) < 48:
        lab = int(rng.integers(2))
        rows += [dict(path=f"CT_{'COVID' if lab else 'NonCOVID'}/{len(rows) + j}.png", label_index=lab,
                      label="covid" if lab else "non_covid", group=f"p{g}") for j in range(int(rng.integers(1, 4)))]
        g += 1
    rows = rows[:48]
    split = tmp_path / "split"
    split.mkdir()
    table = pd.DataFrame(rows)
    table[:36].to_csv(split / "train.csv", index=False)
    table[36:].to_csv(split / "val.csv", index=False)
    return split, table


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "screen_cv.py"), "to-cv", *map(str, args)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})


def test_rows_become_out_of_fold_predictions_by_path_and_a_wrong_round_is_refused(tmp_path):
    split, table = _split(tmp_path)
    y = table.label_index.to_numpy()
    folds = nested_folds(y, table.group.to_numpy(), 3, 0)
    p_true = np.linspace(0.01, 0.99, 48)  # a known probability per image
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"kind": "train", "name": "r", "fold": f, "y": y[ho].tolist(),
                                        "p_covid": p_true[ho].tolist()}) + "\n" for f, (_, _, ho) in enumerate(folds)))
    out = tmp_path / "r.json"
    res = _run(rows, "--name", "r", "--out", out, "--split", split, "--folds", 3, "--seed", 0)
    assert res.returncode == 0, res.stderr
    cv = json.loads(out.read_text())
    assert cv["out_of_fold"]["path"] == table.path.tolist()
    assert cv["out_of_fold"]["p_covid"] == pytest.approx(p_true.tolist(), abs=5e-7)  # 6 decimals, as the stage's
    assert [f["n_held_out"] for f in cv["folds"]] == [len(ho) for *_, ho in folds]  # the stage's cv.json schema
    assert cv["pooled_out_of_fold"]["auc"] == pytest.approx(roc_auc_score(y, p_true))  # all 48 images pooled
    assert sorted(set(cv["out_of_fold"]["fold"])) == [0, 1, 2]
    assert compare_out_of_fold(cv, cv)["gained"] == 0  # pairs with itself: same images and folds

    res = _run(rows, "--name", "r", "--out", tmp_path / "x.json", "--split", split, "--folds", 3, "--seed", 5)
    assert res.returncode != 0 and "--seed 5" in res.stderr and not (tmp_path / "x.json").exists()
    res = _run(rows, "--name", "other", "--out", tmp_path / "x.json", "--split", split, "--folds", 3)
    assert res.returncode != 0 and "other lacks folds [0, 1, 2]" in res.stderr
