import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from robustct.gate import choose_champion, collapse, evaluate_gate, format_verdict, measurements
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


GATE = {"min_clean_accuracy": 0.7, "min_robust_accuracy": 0.3, "min_auc": 0.75, "attack": "worst_case",
        "epsilon": 1 / 255, "collapse": {"min_covid_rate": 0.1, "max_covid_rate": 0.9, "min_auc": 0.6},
        "veto_flags": ["black_box_beats_white_box"]}


def cand(clean=0.8, auc=0.8, rate=0.5, robust=0.3, flag=0, **kw):
    return {"clean_accuracy": clean, "auc": auc, "predicted_covid_rate": rate, "profile": "cpu",
            "robust.worst_case.1/255": robust, "robust.pgd.1/255": 0.9, "sanity.black_box_beats_white_box": flag, **kw}


def test_gate_reads_the_worst_case_not_one_attack():
    ok = evaluate_gate(cand(), GATE)
    assert ok["passed"] and ok["robust_accuracy"] == 0.3 and ok["robust_measure"] == "worst_case[cpu]@1/255"
    bad = evaluate_gate(cand(robust=0.29), GATE)  # PGD alone (0.9) would pass
    assert not bad["passed"] and [c["passed"] for c in bad["checks"]] == [True, True, False, True, True]
    assert evaluate_gate(cand(robust=0.29), {**GATE, "attack": "pgd"})["passed"]
    assert not evaluate_gate(cand(robust=None), GATE)["passed"]
    assert not evaluate_gate(cand(clean=math.nan), GATE)["passed"]
    assert not evaluate_gate({k: v for k, v in cand().items() if k != "robust.worst_case.1/255"}, GATE)["passed"]
    text = format_verdict("defended", bad)
    assert "FAIL robust_accuracy worst_case[cpu]@1/255: measured 0.2900 >= 0.3000" in text


@pytest.mark.parametrize("kw,reason", [({"rate": 0.95}, "predicted-COVID rate 0.950 outside [0.1, 0.9]"),
                                       ({"rate": 0.05}, "outside"), ({"auc": 0.55}, "AUC 0.550 < 0.6")])
def test_collapse_vetoes_whatever_the_robust_accuracy(kw, reason):
    v = evaluate_gate(cand(robust=1.0, clean=0.9, **kw), {**GATE, "min_auc": 0.5})
    assert not v["passed"] and reason in v["collapse"]
    assert collapse(cand(), GATE["collapse"]) is None


def test_masking_flag_vetoes():
    v = evaluate_gate(cand(flag=1), GATE)
    assert not v["passed"] and "no sanity flag black_box_beats_white_box: raised" in format_verdict("x", v)
    assert not evaluate_gate({k: v for k, v in cand().items() if not k.startswith("sanity")}, GATE)["passed"]


def test_champion_is_best_passing_or_none():
    v = [dict(name="a", passed=True, robust_accuracy=0.4, clean_accuracy=0.7),
         dict(name="b", passed=True, robust_accuracy=0.5, clean_accuracy=0.6),
         dict(name="c", passed=False, robust_accuracy=0.9, clean_accuracy=0.9)]
    assert choose_champion(v)["name"] == "b"
    assert choose_champion([v[2]]) is None


def test_measurements_from_written_outputs():
    evaluation = {"metrics": {"accuracy": {"value": 0.8}, "auc": {"value": 0.9}}, "predicted_covid_rate": 0.4}
    sweep = {"worst_case": [{"attack": "worst_case", "epsilon": 1 / 255, "robust_accuracy": 0.6, "profile": "cpu"}],
             "pgd": [{"attack": "pgd", "epsilon": 1 / 255, "robust_accuracy": 0.7}],
             "fgsm_paper": [{"attack": "fgsm", "epsilon": 0.1, "robust_accuracy": 0.1}],
             "sanity": {"flags": {"vanishing_gradients": {"flag": True, "detail": ""}}}}
    m = measurements(evaluation, sweep)
    assert m["robust.worst_case.1/255"] == 0.6 and m["robust.pgd.1/255"] == 0.7 and m["profile"] == "cpu"
    assert m["sanity.vanishing_gradients"] == 1 and "robust.fgsm_paper.0.1" not in m
