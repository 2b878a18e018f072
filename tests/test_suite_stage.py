"""The attack suite wired into the sweep: params, outputs, sanity flags, perceptibility, MLflow runs."""
import json

import numpy as np
import pytest
import torch

from robustct import perceptibility
from robustct.params import check_params
from robustct.robustness import curve_from_minimal
from robustct.sanity import sanity_flags
from robustct.sweep_report import log_sweep, sweep_and_write
from robustct.io import flat_sweep_metrics, sweep_config

PROFILE = {"pgd": {"steps": 5, "step_size": None, "restarts": 1},
           "bim": {"steps": 5}, "mim": {"steps": 5}, "apgd_ce": {"steps": 5},
           "fgsm_min_eps": {"epsilon_step": "1/255", "max_epsilon": "16/255"},
           "deepfool": {"max_iter": 10}, "cw_l2": {"max_iter": 5, "binary_search_steps": 2, "subset": 8},
           "square": {"max_iter": 10}}
ATTACK = {
    "fgsm_paper_epsilons": [0, 0.1, 0.2, 0.3, 1.0],
    "standard_epsilons": ["2/255", "8/255"],
    "worst_case": ["fgsm", "pgd", "apgd_ce", "square"],
    "suite": ["fgsm", "pgd", "bim", "mim", "apgd_ce", "fgsm_min_eps", "deepfool", "cw_l2", "square"],
    "profile": "cpu", "profiles": {"cpu": PROFILE},
    "targeted": {"attacks": ["pgd"], "scenarios": ["fraud", "missed_diagnosis"]},
    "perceptibility_epsilon": "2/255", "batch_size": 8, "grid_examples": 2, "seed": 0,
}


def pt(e, acc, attack="a", n=10, clean=0.8):
    return {"attack": attack, "epsilon": e, "robust_accuracy": acc, "clean_accuracy": clean, "n": n}


def test_sanity_flags_raise_on_bad_sweeps_and_not_on_good_ones():
    good = {"fgsm": [pt(0.01, 0.5, "fgsm"), pt(0.03, 0.3, "fgsm")], "pgd": [pt(0.01, 0.2, "pgd"), pt(0.03, 0.0, "pgd")],
            "square": [pt(0.01, 0.4, "square"), pt(0.03, 0.1, "square")]}
    flags = sanity_flags(good, 0.0)
    assert not flags["any"], flags
    bad = {"fgsm": [pt(0.01, 0.5, "fgsm"), pt(0.03, 0.7, "fgsm")],  # rises with epsilon (2 images)
           "pgd": [pt(0.01, 0.7, "pgd"), pt(0.03, 0.4, "pgd")],    # weaker than FGSM at 0.01, never near 0
           "square": [pt(0.01, 0.3, "square"), pt(0.03, 0.35, "square")]}  # black box beats PGD at 0.01
    f = sanity_flags(bad, 0.5)["flags"]
    assert f["non_monotone_curve"]["flag"] and "fgsm" in f["non_monotone_curve"]["detail"]
    assert f["iterative_weaker_than_fgsm"]["flag"] and "pgd@0.01" in f["iterative_weaker_than_fgsm"]["detail"]
    assert f["black_box_beats_white_box"]["flag"]
    assert f["accuracy_not_near_zero_at_largest_epsilon"]["flag"]
    assert f["vanishing_gradients"]["flag"]
    assert sanity_flags({"pgd": [pt(0.01, 0.9, "pgd", clean=0.8)]}, 0.0)["flags"]["robust_above_clean"]["flag"]
    # one-image tolerance: a rise of 1 image in 10 is noise, 2 is a flag
    assert not sanity_flags({"pgd": [pt(0.01, 0.0, "pgd"), pt(0.03, 0.1, "pgd")]}, 0)["flags"]["non_monotone_curve"]["flag"]


def test_curve_from_minimal_known_answer():
    e = torch.tensor([0.0, 0.01, 0.02, float("inf"), 0.05])
    correct = torch.tensor([False, True, True, True, True])
    assert curve_from_minimal(e, correct, [0.0, 0.01, 0.015, 0.05, 1.0]) == pytest.approx([0.8, 0.6, 0.6, 0.2, 0.2])


def test_perceptibility_known_answers():
    x = torch.full((3, 1, 16, 16), 0.5)
    xa = x.clone()
    xa[1, 0, 0, 0] += 0.1          # one pixel: L0 1, Linf 0.1, L2 0.1, MSE 0.01/256
    xa[2] += 2 / 255               # every pixel: L0 256, Linf 2/255
    s = perceptibility.per_sample(x, xa)
    np.testing.assert_allclose(s["l0"], [0, 1, 256])
    np.testing.assert_allclose(s["linf"], [0, 0.1, 2 / 255], atol=1e-7)
    np.testing.assert_allclose(s["l2"], [0, 0.1, 16 * 2 / 255], atol=1e-6)
    assert np.isinf(s["psnr"][0]) and s["ssim"][0] == 1.0
    np.testing.assert_allclose(s["psnr"][1], 10 * np.log10(1 / (0.01 / 256)), rtol=1e-6)
    np.testing.assert_allclose(s["psnr"][2], 20 * np.log10(255 / 2), rtol=1e-5)
    assert 0 < s["ssim"][1] < 1
    m = perceptibility.medians(s, np.array([False, True, True]))
    assert m["median_l0"] == pytest.approx(128.5)


def test_params_validate_attack_suite():
    from robustct.params import read_yaml

    params = read_yaml("params.yaml")
    assert check_params(params) == []
    params["attack"]["suite"] = ["pgd", "apgd_dlr", "jsma"]
    problems = check_params(params)
    assert any("'apgd_dlr' does not apply" in p and "3 classes" in p for p in problems)
    assert any("unknown attack 'jsma'; valid: fgsm, pgd, bim, mim, apgd_ce, square, cw_l2, deepfool, fgsm_min_eps" in p
               for p in problems)
    params["attack"]["suite"] = []
    params["attack"]["worst_case"] = ["pgd", "deepfool"]  # a minimal-perturbation attack has no fixed budget
    params["attack"]["targeted"] = {"attacks": ["square"], "scenarios": ["fraud", "theft"]}
    params["attack"]["profiles"]["cpu"]["bim"] = {"steps": 0}
    text = "; ".join(check_params(params))
    assert "'square'] cannot run targeted" in text and "attack.targeted.scenarios.1: 'theft'" in text
    assert "attack.profiles.cpu.bim.steps" in text
    assert "unknown fixed-budget L-inf attack 'deepfool'" in text
    with pytest.raises(ValueError, match="above 1"):
        sweep_config({**params["attack"], "perceptibility_epsilon": 8})


def test_suite_outputs_and_invariants(tiny_model, tmp_path):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(16, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    y = torch.tensor([0, 1] * 8)
    cfg = sweep_config(ATTACK)
    res = sweep_and_write(tiny_model, x, y, cfg, tmp_path, progress=lambda s: None)
    for key in ("fgsm_paper", "fgsm", "pgd", "bim", "mim", "apgd_ce", "square", "cw_l2", "deepfool", "fgsm_min_eps"):
        pts = res[key]
        assert [round(p["epsilon"], 6) for p in pts] == ([0, 0.1, 0.2, 0.3, 1.0] if key == "fgsm_paper"
                                                         else [round(2 / 255, 6), round(8 / 255, 6)])
        for p in pts:
            assert p["robust_accuracy"] <= p["clean_accuracy"] + 1e-9
    assert res["cw_l2"][0]["n"] == 8 and res["pgd"][0]["n"] == 16
    for key in ("bim", "mim", "apgd_ce"):
        assert all(p["robust_accuracy"] <= f["robust_accuracy"] + 1e-9 for p, f in zip(res[key], res["fgsm"]))
    assert set(res["targeted"]) == {"pgd/fraud", "pgd/missed_diagnosis"}
    fraud = res["targeted"]["pgd/fraud"]
    assert fraud[0]["source"] == "non_covid" and fraud[0]["target"] == "covid" and fraud[0]["n"] == 8
    assert all(0 <= p["targeted_success_rate"] <= 1 for p in fraud)
    assert [round(p["epsilon"], 6) for p in fraud] == [round(2 / 255, 6), round(8 / 255, 6)]  # null: standard grid
    # the curve from one minimal-epsilon run agrees with the explicit fixed-epsilon FGSM runs
    check = res["minimal_epsilon"]["check"]
    assert len(check) >= 2 and all(c["difference"] <= 1e-9 for c in check)
    assert sum(abs(c["difference"]) for c in check) <= 2 / 16 * len(check)
    assert {"fgsm_min_eps", "deepfool_linf", "cw_l2_linf", "pgd_union"} <= set(res["minimal_epsilon"]["curves"])
    for curve in res["minimal_epsilon"]["curves"].values():
        assert all(b <= a + 1e-9 for a, b in zip(curve, curve[1:]))
    perc = {(r["attack"], str(r["epsilon"])): r for r in res["perceptibility"]}
    r = perc[("pgd", str(2 / 255))]
    assert r["n_success"] == 0 or r["median_linf"] <= 2 / 255 + 1e-6
    assert set(res["sanity"]["flags"]) >= {"accuracy_not_near_zero_at_largest_epsilon", "non_monotone_curve",
                                           "black_box_beats_white_box", "vanishing_gradients"}
    for f in ("sweep.json", "metrics.json", "targeted.csv", "perceptibility.csv", "minimal_epsilon.csv",
              "minimal_epsilon_check.csv", "suite_table.md", "fgsm_fig5_grid.png", "original_vs_adversarial.png",
              "minimal_epsilon.png", "square.csv", "cw_l2.csv"):
        assert (tmp_path / f).is_file(), f
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "2/255" in metrics["apgd_ce"] and "sanity" in metrics and "pgd/fraud" in metrics["targeted"]
    assert metrics == json.loads(json.dumps(flat_sweep_metrics(res)))


@pytest.mark.parametrize("suite, keys", [
    (["fgsm", "pgd", "apgd_ce", "deepfool", "fgsm_min_eps"],
     {"fgsm_paper", "fgsm", "pgd", "apgd_ce", "deepfool", "fgsm_min_eps", "worst_case", "targeted", "analysis",
      "paper_readings", "write"}),
    (["fgsm", "pgd"], {"fgsm_paper", "fgsm", "pgd", "worst_case", "analysis", "paper_readings", "write"}),
])
def test_timings_name_every_part_of_the_sweep_and_change_no_output(tiny_model, tmp_path, suite, keys):
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(12, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    y = torch.tensor([0, 1] * 6)
    cfg = sweep_config({**ATTACK, "suite": suite, "worst_case": ["fgsm", "pgd", "apgd_ce"], "grid_examples": 2})
    timings: dict = {}
    torch.manual_seed(0)
    timed = sweep_and_write(tiny_model, x, y, cfg, tmp_path / "timed", progress=None, timings=timings)
    torch.manual_seed(0)
    plain = sweep_and_write(tiny_model, x, y, cfg, tmp_path / "plain", progress=None)
    assert set(timings) == keys
    assert all(isinstance(v, float) and v >= 0 for v in timings.values())
    assert json.dumps(timed, sort_keys=True) == json.dumps(plain, sort_keys=True)
    files = sorted(p.name for p in (tmp_path / "timed").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "plain").iterdir()) and "examples.png" in files
    for f in files:  # figures included: the timing changes no output
        assert (tmp_path / "timed" / f).read_bytes() == (tmp_path / "plain" / f).read_bytes(), f


class FakeRun:
    def __init__(self, log, name, nested, tags):
        self.log, self.name = log, name
        log.append({"name": name, "nested": nested, "tags": tags, "params": {}, "metrics": {}})

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class FakeMlflow:
    def __init__(self):
        self.runs, self.parent = [], {"params": {}, "metrics": {}, "tags": {}, "artifacts": []}

    def start_run(self, run_name=None, nested=False, tags=None):
        return FakeRun(self.runs, run_name, nested, tags)

    def log_params(self, p):
        self.runs[-1]["params"].update(p)

    def log_metrics(self, m):
        (self.runs[-1] if self.runs and self.runs[-1].get("open", True) else self.parent)["metrics"].update(m)

    def set_tags(self, t):
        self.parent["tags"].update(t)

    def log_artifact(self, path, where=None):
        self.parent["artifacts"].append(path)


def test_log_sweep_nested_run_per_attack_epsilon_and_target_mode(tmp_path):
    sweeps = {"fgsm_paper": [pt(0.0, 0.8, "fgsm")], "fgsm": [pt(2 / 255, 0.5, "fgsm")],
              "pgd": [{**pt(2 / 255, 0.2, "pgd"), "config": {"attack": "pgd", "steps": 10, "restarts": 1}}],
              "square": [pt(2 / 255, 0.4, "square")],
              "targeted": {"pgd/fraud": [{**pt(2 / 255, 0.1, "pgd"), "target_mode": "fraud",
                                          "targeted_success_rate": 0.7, "targeted_success_rate_all": 0.6,
                                          "mean_linf": 0.0, "mean_l2": 0.0, "config": {"attack": "pgd"}}]}}
    (tmp_path / "a.csv").write_text("x\n")
    ml = FakeMlflow()
    log_sweep(ml, sweeps, tmp_path)
    names = [r["name"] for r in ml.runs]
    assert names == ["fgsm_paper@0", "fgsm@2/255", "pgd@2/255", "square@2/255", "pgd/fraud@2/255"]
    assert all(r["nested"] for r in ml.runs)
    assert ml.runs[2]["params"]["steps"] == 10 and ml.runs[2]["params"]["target_mode"] == "untargeted"
    assert ml.runs[4]["tags"]["target_mode"] == "fraud" and ml.runs[4]["metrics"]["targeted_success_rate"] == 0.7


WRITTEN = ("sweep.json", "metrics.json", "suite_table.md", "paper_table.md", "paper_table.csv", "worst_case.csv",
           "fgsm.csv", "pgd.csv", "fgsm_paper.csv", "fgsm_paper_grid.png", "standard_grid.png", "examples.png")


@pytest.mark.parametrize("suite", [["fgsm", "pgd"], ["fgsm", "pgd", "deepfool"]])
def test_the_same_files_are_written_with_or_without_the_suite(tiny_model, tmp_path, suite):
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(6, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    y = torch.tensor([0, 1] * 3)
    params = {**ATTACK, "fgsm_paper_epsilons": [0, 0.5], "standard_epsilons": ["8/255"], "suite": suite,
              "profiles": {"cpu": {**PROFILE, "pgd": {"steps": 2, "step_size": None, "restarts": 1}}},
              "grid_examples": 1, "targeted": {"attacks": ["pgd"] if len(suite) > 2 else [], "scenarios": ["fraud"]}}
    res = sweep_and_write(tiny_model, x, y, sweep_config(params), tmp_path, progress=lambda s: None)
    missing = [f for f in WRITTEN if not (tmp_path / f).is_file()]
    assert not missing
    assert [p["epsilon"] for p in res["worst_case"]] == [pytest.approx(8 / 255)]


def test_targeted_epsilons_subset_runs_only_those_budgets(tiny_model, tmp_path):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(16, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    y = torch.tensor([0, 1] * 8)
    cfg = sweep_config({**ATTACK, "suite": ["fgsm", "fgsm_min_eps"], "worst_case": ["fgsm"],
                        "targeted": {"attacks": ["pgd"], "scenarios": ["fraud"], "epsilons": ["8/255"]}})
    res = sweep_and_write(tiny_model, x, y, cfg, tmp_path, progress=lambda s: None)
    assert [round(p["epsilon"], 6) for p in res["targeted"]["pgd/fraud"]] == [round(8 / 255, 6)]
    lines = (tmp_path / "suite_table.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| targeted attack"))
    assert lines[header] == "| targeted attack / scenario | n | 8/255 |"
    assert lines[header + 2].startswith("| pgd/fraud | 8 | ") and lines[header + 2].count("|") == 4


def test_fgsm_pgd_only_suite_still_gives_the_gate_every_veto_flag(tiny_model, tmp_path):
    """A suite cut to FGSM + PGD (to save time) still computes the sanity flags: without them the gate's veto flags
    read "missing" and no candidate could ever pass (measured on the real data before the fix)."""
    from robustct.gate import VETO_FLAGS, evaluate_gate, measurements
    from robustct.robustness import gradient_zero_fraction
    from robustct.sanity import FLAG_NAMES

    g = torch.Generator().manual_seed(6)
    x = (torch.rand(10, 1, 16, 16, generator=g) * 255).to(torch.uint8)
    y = torch.tensor([0, 1] * 5)
    cfg = sweep_config({**ATTACK, "suite": ["fgsm", "pgd"], "worst_case": ["fgsm", "pgd", "square"]})
    res = sweep_and_write(tiny_model, x, y, cfg, tmp_path, progress=None)
    assert set(res["sanity"]["flags"]) == set(FLAG_NAMES)
    result = {k: v for k, v in res.items() if k != "sanity"}
    expected = sanity_flags(result, gradient_zero_fraction(tiny_model, x, y, cfg["batch_size"]), cfg["sanity"])
    assert res["sanity"] == expected
    written = json.loads((tmp_path / "sweep.json").read_text())
    m = measurements({"metrics": {"accuracy": {"value": 1.0}, "auc": {"value": 1.0}}, "predicted_covid_rate": 0.5},
                     written)
    gate = {"attack": "worst_case", "epsilon": 8 / 255, "veto_flags": list(VETO_FLAGS)}
    vetoes = [c for c in evaluate_gate(m, gate)["checks"] if c["name"].startswith("no sanity flag")]
    assert len(vetoes) == len(VETO_FLAGS)
    assert all(c["measured"] in ("ok", "raised") for c in vetoes), vetoes
    assert json.loads((tmp_path / "metrics.json").read_text())["sanity"]["any"] == int(expected["any"])
