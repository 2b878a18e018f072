import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from robustct.gate import choose_champion, evaluate_gate, format_verdict
from robustct.metrics import best_threshold, bootstrap_ci, evaluation_report, point_metrics


def test_point_metrics_known_answer():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.4])
    m = point_metrics(y, p)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))


def test_bootstrap_interval_contains_point_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    a = bootstrap_ci(y, p, n_boot=300, seed=1)
    b = bootstrap_ci(y, p, n_boot=300, seed=1)
    assert a == b
    for v in a.values():
        assert v["ci_low"] <= v["value"] <= v["ci_high"]
        assert v["ci_high"] - v["ci_low"] < 0.3


def test_report_confusion_matrix_and_roc():
    y = np.array([0, 0, 1, 1])
    rep = evaluation_report(y, np.array([0.1, 0.7, 0.6, 0.9]), n_boot=50)
    assert rep["confusion_matrix"]["rows_true_cols_pred"] == [[1, 1], [0, 2]]
    assert rep["roc"]["fpr"][0] == 0 and rep["roc"]["tpr"][-1] == 1


def test_best_threshold_separates():
    y = np.array([0, 0, 0, 1, 1, 1])
    t = best_threshold(y, np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.4]))
    assert 0.2 < t <= 0.25


GATE = {"min_clean_accuracy": 0.7, "min_robust_accuracy": 0.3, "min_auc": 0.75, "attack": "pgd", "epsilon": 1 / 255}


def test_gate_pass_fail_and_missing():
    ok = evaluate_gate({"clean_accuracy": 0.8, "robust_accuracy": 0.3, "auc": 0.8}, GATE)
    assert ok["passed"] and len(ok["checks"]) == 3
    bad = evaluate_gate({"clean_accuracy": 0.8, "robust_accuracy": 0.29, "auc": 0.8}, GATE)
    assert not bad["passed"] and [c["passed"] for c in bad["checks"]] == [True, False, True]
    assert not evaluate_gate({"clean_accuracy": 0.8, "robust_accuracy": None, "auc": 0.8}, GATE)["passed"]
    assert not evaluate_gate({"clean_accuracy": math.nan, "robust_accuracy": 1, "auc": 1}, GATE)["passed"]
    text = format_verdict("defended", bad)
    assert "FAIL robust_accuracy[pgd@0.00392157]: measured 0.2900 >= 0.3000" in text


def test_champion_is_best_passing_or_none():
    v = [dict(name="a", passed=True, robust_accuracy=0.4, clean_accuracy=0.7),
         dict(name="b", passed=True, robust_accuracy=0.5, clean_accuracy=0.6),
         dict(name="c", passed=False, robust_accuracy=0.9, clean_accuracy=0.9)]
    assert choose_champion(v)["name"] == "b"
    assert choose_champion([v[2]]) is None
