"""Patient-grouped k-fold cross-validation: fold invariants, selection kept apart, child runs, summary."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from robustct.crossval import cross_validate, nested_folds, patient_folds


def data(n_groups=30, per=3):
    groups = np.repeat([f"p{g}" for g in range(n_groups)], per)
    y = torch.as_tensor(np.repeat(np.arange(n_groups) % 2, per), dtype=torch.long)
    x = y.view(-1, 1, 1, 1).float().expand(-1, 1, 2, 2).clone()  # the image encodes the label
    return x, y, groups


def test_folds_partition_images_and_never_split_a_patient():
    _, y, groups = data()
    folds = patient_folds(y.numpy(), groups, 5, seed=0)
    held = np.concatenate([ho for _, ho in folds])
    assert sorted(held) == list(range(len(y)))  # every image held out exactly once
    for tr, ho in folds:
        assert not set(groups[tr]) & set(groups[ho])
        assert 0.3 < y.numpy()[ho].mean() < 0.7  # stratified
    with pytest.raises(ValueError, match="fewer than the 40 folds"):
        patient_folds(y.numpy(), groups, 40, 0)


def test_nested_folds_keep_fit_select_and_held_out_patients_apart():
    _, y, groups = data()
    triples = nested_folds(y.numpy(), groups, 5, seed=0)
    assert sorted(np.concatenate([ho for *_, ho in triples])) == list(range(len(y)))
    for (fit, sel, ho), (tr, ho2) in zip(triples, patient_folds(y.numpy(), groups, 5, 0)):
        assert np.array_equal(ho, ho2) and sorted(np.concatenate([fit, sel])) == sorted(tr)
        assert not set(groups[fit]) & set(groups[sel]) and not set(groups[sel]) & set(groups[ho])
        assert len(sel) > 0 and len(fit) > len(sel)


class FakeTracker:
    def __init__(self):
        self.runs, self.metrics = [], []

    @contextmanager
    def start_run(self, run_name, nested):
        self.runs.append((run_name, nested))
        yield

    def log_params(self, p):
        pass

    def log_metrics(self, m):
        self.metrics.append(m)


def test_perfect_and_chance_recipes_give_known_means_and_selection_is_separate():
    x, y, groups = data()
    seen = []

    def oracle(train, select, held_x):
        seen.append((len(train[0]), len(select[0]), len(held_x)))
        return held_x.flatten(1)[:, 0].numpy()  # P(COVID) = pixel = label

    tracker = FakeTracker()
    res = cross_validate(x, y, groups, 3, 0, oracle, tracker=tracker, progress=None)
    d = res.to_dict()
    assert d["accuracy"] == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0} and d["auc"]["mean"] == 1.0
    assert tracker.runs == [("cv-fold-0", True), ("cv-fold-1", True), ("cv-fold-2", True)]
    assert [m["cv_accuracy"] for m in tracker.metrics[:3]] == [1.0, 1.0, 1.0]
    assert all(a + b + c == len(y) and b > 0 for a, b, c in seen)  # fit + select + held out = all
    assert np.array_equal(res.p_covid, y.numpy()) and sorted(set(res.fold)) == [0, 1, 2]  # in input order
    assert d["pooled_out_of_fold"]["accuracy"] == 1.0 and d["pooled_out_of_fold"]["auc"] == 1.0
    assert tracker.metrics[-1] == {"cv_pooled_accuracy": 1.0, "cv_pooled_auc": 1.0, "cv_mean_accuracy": 1.0,
                                   "cv_mean_auc": 1.0}  # on the parent run

    res = cross_validate(x, y, groups, 3, 0, lambda tr, sel, hx: np.ones(len(hx)), progress=None)
    acc = [f.accuracy for f in res.folds]  # always COVID: accuracy = COVID share of the fold
    assert res.to_dict()["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert res.to_dict()["accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1))
    assert all(f.auc == 0.5 for f in res.folds)
    # pooled: the COVID share of all images (not the mean of the folds' shares), sensitivity 1, specificity 0
    assert res.pooled()["accuracy"] == pytest.approx(y.numpy().mean())
    assert res.pooled()["sensitivity"] == 1.0 and res.pooled()["specificity"] == 0.0


def test_pooled_accuracy_weights_folds_by_size_not_equally():
    x, y, groups = data(n_groups=31, per=1)  # 31 images in 3 folds: sizes differ
    calls = []

    def wrong_on_fold_0(train, select, held_x):
        calls.append(1)
        p = held_x.flatten(1)[:, 0].numpy()
        return 1 - p if len(calls) == 1 else p

    res = cross_validate(x, y, groups, 3, 0, wrong_on_fold_0, progress=None)
    n0 = res.folds[0].n_held_out
    assert [f.accuracy for f in res.folds] == [0.0, 1.0, 1.0]
    assert res.pooled()["accuracy"] == pytest.approx(1 - n0 / 31)
    assert res.summary("accuracy")["mean"] == pytest.approx(2 / 3)


def test_a_recipe_returning_the_wrong_number_of_probabilities_is_an_error():
    x, y, groups = data()
    with pytest.raises(ValueError, match="fold 0: the recipe returned"):
        cross_validate(x, y, groups, 3, 0, lambda tr, sel, hx: np.ones(len(hx) + 1), progress=None)
    res = cross_validate(x, y, groups, 3, 0, lambda tr, sel, hx: np.ones(len(hx)), progress=None)
    with pytest.raises(ValueError, match="89 paths for 90 out-of-fold predictions"):
        res.to_dict(paths=[f"{i}.png" for i in range(89)])



def _tiny_split(tmp_path):
    """24 synthetic images (12 patients per label); train = patients ending 0-3, val = 4-5."""
    import pandas as pd

    from conftest import write_dataset

    root = tmp_path / "data"
    write_dataset(root, n_covid=12, n_non=12, size=40)
    cov = pd.read_csv(root / "COVID-CT-MetaInfo.csv")
    non = pd.read_csv(root / "NonCOVID-CT-MetaInfo.csv")
    rows = [dict(path=f"CT_COVID/{f}", label="covid", label_index=1, group=f"covid/{p}")
            for f, p in zip(cov["File name"], cov["Patient ID"])]
    rows += [dict(path=f"CT_NonCOVID/{f}", label="non_covid", label_index=0, group=f"non_covid/{p}")
             for f, p in zip(non["image name"], non["patient id"])]
    table = pd.DataFrame(rows)
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    table[table.group.str[-1].isin(list("0123"))].to_csv(split_dir / "train.csv", index=False)
    table[table.group.str[-1].isin(list("45"))].to_csv(split_dir / "val.csv", index=False)
    return root, split_dir


def test_train_stage_writes_cv_json_with_one_result_per_fold(tmp_path):
    import json

    import yaml

    from conftest import REPO
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=8, cv_folds=2)
    train_stage.run(params, root, split_dir, tmp_path / "train", track=False)
    cv = json.loads((tmp_path / "train" / "cv.json").read_text())
    assert cv["k"] == 2 and len(cv["folds"]) == 2
    assert sum(f["n_held_out"] for f in cv["folds"]) == 24  # every train+val image held out once
    assert all(0 <= f["accuracy"] <= 1 for f in cv["folds"])
    assert cv["accuracy"]["mean"] == sum(f["accuracy"] for f in cv["folds"]) / 2
    oof = cv["out_of_fold"]  # one prediction per train+val image, named by its path, from the fold holding it out
    assert len(set(oof["path"])) == 24 and all(0 <= p <= 1 for p in oof["p_covid"])
    for i, f in enumerate(cv["folds"]):
        sel = [j for j, fo in enumerate(oof["fold"]) if fo == i]
        assert len(sel) == f["n_held_out"]
        correct = sum((oof["p_covid"][j] >= 0.5) == oof["y"][j] for j in sel)
        assert correct / len(sel) == pytest.approx(f["accuracy"], abs=1e-9)
    assert 0 <= cv["pooled_out_of_fold"]["accuracy"] <= 1
    assert (cv["seed"], cv["train_seed"]) == (0, 0)


def test_cv_seed_fixes_the_folds_while_the_training_seed_changes(tmp_path):
    import json

    import yaml

    from conftest import REPO
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=8, cv_folds=3)
    out = {}
    for name, seed, cv_seed in (("s0", 0, None), ("s1_folds0", 1, 0)):
        params["train"].update(seed=seed, cv_seed=cv_seed)
        train_stage.run(params, root, split_dir, tmp_path / name, track=False)
        out[name] = json.loads((tmp_path / name / "cv.json").read_text())
    a, b = out["s0"], out["s1_folds0"]
    assert (b["seed"], b["train_seed"]) == (0, 1)
    assert a["out_of_fold"]["path"] == b["out_of_fold"]["path"] and a["out_of_fold"]["fold"] == b["out_of_fold"]["fold"]
    assert a["out_of_fold"]["p_covid"] != b["out_of_fold"]["p_covid"]  # another training seed, another model
    from robustct.crossval import compare_out_of_fold, ensemble_out_of_fold

    compare_out_of_fold(b, a)  # same folds: pairable fold by fold
    res = ensemble_out_of_fold([a, b])
    assert res["same_folds"] and [m["seed"] for m in res["members"]] == [0, 1]


def test_refit_on_train_val_trains_on_both_and_names_val_numbers_in_sample(tmp_path, monkeypatch):
    import json

    from conftest import REPO
    from robustct.io import read_split
    from robustct.params import load_params
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    n_train, n_val = len(read_split(split_dir, "train")), len(read_split(split_dir, "val"))
    seen = []
    real_fit = train_stage.fit

    def spy(model, train, val, **kw):
        seen.append((len(train[0]), len(val[0]), kw["select"], kw["progress"].val_label))
        return real_fit(model, train, val, **kw)

    monkeypatch.setattr(train_stage, "fit", spy)
    params = load_params(REPO / "params.yaml")
    params["train"].update(backbone="resnet18", weights="none", image_size=32, epochs=2, batch_size=8,
                           fit_on="train_val", checkpoint="last", cv_folds=2)
    train_stage.run(params, root, split_dir, tmp_path / "train", track=False)
    assert seen[0] == (n_train + n_val, n_val, "last", "val (in-sample)")  # every train and val image
    fold_sizes = [f["n_train"] + f["n_select"] for f in json.loads((tmp_path / "train" / "cv.json").read_text())["folds"]]
    assert [s[0] for s in seen[1:]] == fold_sizes  # each CV fold refits on its fit + select parts too
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert "val_in_sample_accuracy" in metrics and "val_accuracy" not in metrics
    assert metrics["selected_epoch"] == 2


def test_train_stage_tta_changes_predictions_not_training(tmp_path):
    """train.tta: hflip trains the same weights, saves them with the mirror TTA built in, and the CV folds'
    held-out probabilities are those of the TTA model (so the trial measures what would be deployed)."""
    import json

    from conftest import REPO
    from robustct.models import read_checkpoint
    from robustct.params import load_params
    from robustct.stages import train as train_stage

    root, split_dir = _tiny_split(tmp_path)
    params = load_params(REPO / "params.yaml")
    out = {}
    for tta in ("none", "hflip"):
        params["train"].update(backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=8,
                               cv_folds=2, tta=tta)
        train_stage.run(params, root, split_dir, tmp_path / tta, track=False)
        out[tta] = (read_checkpoint(tmp_path / tta / "model.pt"),
                    json.loads((tmp_path / tta / "cv.json").read_text())["out_of_fold"])
    (plain, oof_plain), (mirrored, oof_tta) = out["none"], out["hflip"]
    assert plain["config"].get("tta", "none") == "none" and mirrored["config"]["tta"] == "hflip"
    assert all(torch.equal(v, mirrored["state_dict"][k]) for k, v in plain["state_dict"].items())  # same training
    assert oof_plain["path"] == oof_tta["path"]
    assert oof_plain["p_covid"] != oof_tta["p_covid"]  # the held-out images were scored through both views


def _cv(p, fold, y, paths=None):
    paths = paths or [f"img{i:02d}.png" for i in range(len(p))]
    return {"k": int(max(fold)) + 1, "out_of_fold": {"path": paths, "fold": fold, "y": y, "p_covid": p}}


def test_compare_counts_gained_and_lost_images_folds_and_the_sign_test():
    y = [1, 1, 0, 0, 1, 1, 0, 0, 1, 0]
    fold = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    default = [0.9, 0.4, 0.1, 0.6, 0.9, 0.4, 0.1, 0.2, 0.7, 0.3]  # wrong: images 1, 3, 5
    better = [0.9, 0.6, 0.1, 0.4, 0.9, 0.6, 0.1, 0.2, 0.7, 0.3]   # right on all
    from robustct.crossval import compare_out_of_fold

    res = compare_out_of_fold(_cv(better, fold, y), _cv(default, fold, y))
    assert (res["gained"], res["lost"]) == (3, 0) and res["sign_test_p"] == pytest.approx(0.25)  # 2 * 0.5**3
    assert res["fold_accuracy"]["default"] == [0.5, 0.75, 1.0] and res["fold_accuracy"]["challenger"] == [1, 1, 1]
    assert (res["folds_higher"], res["folds_equal"]) == (2, 1)
    assert res["pooled"]["challenger"]["accuracy"] == 1.0 and res["pooled"]["default"]["accuracy"] == 0.7
    assert res["passes"] and "2 of 3 folds" in res["rule"]
    assert res["detectable_net_gain"] is None and res["images"] == 10  # 3 discordant images can never reach 0.05
    assert not compare_out_of_fold(_cv(better, fold, y), _cv(default, fold, y), min_folds_higher=3)["passes"]
    assert not compare_out_of_fold(_cv(default, fold, y), _cv(better, fold, y))["passes"]
    # matched by path, not by position
    rev = _cv(better[::-1], fold[::-1], y[::-1], [f"img{i:02d}.png" for i in range(10)][::-1])
    assert compare_out_of_fold(rev, _cv(default, fold, y))["gained"] == 3


def test_min_detectable_net_gain_known_answers():
    """Two-sided exact sign test at 0.05: 6 / 0 is the first significant split (p = 2 * 0.5**6 = 0.031; 5 / 0 gives
    0.0625); 60 discordant need 39 / 21 (p = 0.027; 38 / 22 gives 0.052); 20 need 15 / 5 (p = 0.041)."""
    from scipy.stats import binomtest

    from robustct.crossval import min_detectable_net_gain

    assert [min_detectable_net_gain(d) for d in (0, 5, 6, 7)] == [None, None, 6, 7]
    assert min_detectable_net_gain(60) == 18 and min_detectable_net_gain(20) == 10
    assert binomtest(39, 60).pvalue < 0.05 < binomtest(38, 60).pvalue  # the known answer's two sides
    assert min_detectable_net_gain(60, alpha=0.01) > 18
    for bad in ((-1, 0.05), (10, 0.0), (10, 1.0)):
        with pytest.raises(ValueError):
            min_detectable_net_gain(*bad)


def test_compare_refuses_results_from_different_folds_or_without_predictions():
    from robustct.crossval import compare_out_of_fold

    y, p = [1, 0, 1, 0], [0.6, 0.4, 0.6, 0.4]
    with pytest.raises(ValueError, match="different labels or folds"):
        compare_out_of_fold(_cv(p, [0, 0, 1, 1], y), _cv(p, [0, 1, 0, 1], y))
    with pytest.raises(ValueError, match="different images"):
        compare_out_of_fold(_cv(p, [0, 0, 1, 1], y), _cv(p, [0, 0, 1, 1], y, ["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match="no out_of_fold predictions"):
        compare_out_of_fold({"k": 2, "accuracy": {}}, _cv(p, [0, 0, 1, 1], y))


def test_cv_compare_command_exit_codes(tmp_path, capsys):
    import json

    from robustct.cli import main

    y, fold = [1, 0, 1, 0, 1, 0], [0, 0, 1, 1, 2, 2]
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_cv([0.9, 0.1, 0.8, 0.2, 0.7, 0.3], fold, y)))
    bad.write_text(json.dumps(_cv([0.4, 0.1, 0.8, 0.6, 0.7, 0.3], fold, y)))
    assert main(["cv-compare", str(good), str(bad)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "2 discordant images no split reaches p < 0.05" in out
    assert main(["cv-compare", str(bad), str(good)]) == 1
    assert main(["cv-compare", str(bad), str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_ensemble_averages_out_of_fold_probabilities_known_answer():
    """Two members that are each wrong on different images; the mean P(COVID) is right where the other member is
    confident enough: known accuracy, AUC and gained / lost counts, matched by path across different folds."""
    from robustct.crossval import ensemble_out_of_fold

    y = [1, 1, 1, 0, 0, 0]
    a = [0.4, 0.9, 0.8, 0.2, 0.3, 0.45]  # wrong on image 0 only
    b = [0.9, 0.45, 0.7, 0.6, 0.1, 0.2]  # wrong on images 1 and 3
    # member b comes in reversed order and with another fold assignment (another train.seed)
    paths = [f"img{i:02d}.png" for i in range(6)]
    ra = _cv(a, [0, 0, 1, 1, 2, 2], y) | {"seed": 0}
    rb = _cv(b[::-1], [1, 2, 0, 2, 0, 1], y[::-1], paths[::-1]) | {"seed": 1}
    res = ensemble_out_of_fold([ra, rb])
    # mean: 0.65, 0.675, 0.75, 0.4, 0.2, 0.325 -> all right
    assert res["ensemble"]["accuracy"] == 1.0 and res["ensemble"]["auc"] == 1.0
    assert [m["accuracy"] for m in res["members"]] == pytest.approx([5 / 6, 4 / 6])
    assert [m["seed"] for m in res["members"]] == [0, 1]
    assert res["member_mean"]["accuracy"] == pytest.approx(0.75)
    assert [(v["gained"], v["lost"]) for v in res["versus_members"]] == [(1, 0), (2, 0)]
    assert res["versus_members"][1]["sign_test_p"] == pytest.approx(0.5)  # 2 * 0.5**2
    assert (res["k"], res["images"], res["same_folds"]) == (2, 6, False)
    # an ensemble can also lose images: a confident wrong member outvotes a barely right one
    c = [0.55, 0.9, 0.8, 0.2, 0.3, 0.2]
    d = [0.1, 0.9, 0.8, 0.2, 0.3, 0.2]
    res = ensemble_out_of_fold([_cv(c, [0, 0, 1, 1, 2, 2], y), _cv(d, [0, 0, 1, 1, 2, 2], y)])
    assert res["versus_members"][0] == {"gained": 0, "lost": 1, "sign_test_p": 1.0}
    assert res["same_folds"] and res["ensemble"]["accuracy"] == pytest.approx(5 / 6)


def test_ensemble_refuses_one_member_the_same_run_twice_and_other_images():
    from robustct.crossval import ensemble_out_of_fold

    y, fold = [1, 0, 1, 0], [0, 0, 1, 1]
    r = _cv([0.6, 0.4, 0.7, 0.2], fold, y)
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_out_of_fold([r])
    with pytest.raises(ValueError, match="the same run twice"):
        ensemble_out_of_fold([r, _cv([0.6, 0.4, 0.7, 0.2], [1, 1, 0, 0], y)])
    with pytest.raises(ValueError, match="different images"):
        ensemble_out_of_fold([r, _cv([0.6, 0.4, 0.7, 0.2], fold, y, ["a", "b", "c", "d"])])
    with pytest.raises(ValueError, match="labels the images differently"):
        ensemble_out_of_fold([r, _cv([0.5, 0.4, 0.7, 0.2], fold, [0, 1, 1, 0])])
    with pytest.raises(ValueError, match="no out_of_fold predictions"):
        ensemble_out_of_fold([r, {"k": 2}])


def test_cv_ensemble_command_prints_members_and_ensemble(tmp_path, capsys):
    import json

    from robustct.cli import main

    y = [1, 1, 1, 0, 0, 0]
    files = []
    for i, (p, fold) in enumerate((([0.4, 0.9, 0.8, 0.2, 0.3, 0.45], [0, 0, 1, 1, 2, 2]),
                                   ([0.9, 0.45, 0.7, 0.6, 0.1, 0.2], [2, 1, 0, 2, 0, 1]))):
        f = tmp_path / f"s{i}.json"
        f.write_text(json.dumps(_cv(p, fold, y) | {"seed": i}))
        files.append(str(f))
    assert main(["cv-ensemble", *files]) == 0
    out = capsys.readouterr().out
    assert "seed 1): pooled accuracy 0.667" in out and "ensemble gains 2, loses 0" in out
    assert "ensemble of 2 (mean P(COVID), 6 images, different folds): pooled accuracy 1.000 AUC 1.000" in out
    assert main(["cv-ensemble", files[0], "--json"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["cv-ensemble", files[0], files[1], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ensemble"]["accuracy"] == 1.0


def test_ensemble_refuses_malformed_tables_naming_the_result():
    from robustct.crossval import ensemble_out_of_fold

    y, fold = [1, 0, 1, 0], [0, 0, 1, 1]
    good = _cv([0.6, 0.4, 0.7, 0.2], fold, y)
    bad = {
        "lengths": _cv([0.6, 0.4, 0.7], fold, y),
        "probabilities": _cv([60, 40, 70, 20], fold, y),
        "finite": _cv([0.6, float("nan"), 0.7, 0.2], fold, y),
        "non-numeric": _cv([0.6, "x", 0.7, 0.2], fold, y),
        "or not finite": _cv([0.6, None, 0.7, 0.2], fold, y),
        "more than once": _cv([0.6, 0.4, 0.7, 0.2], fold, y, ["a", "a", "c", "d"]),
        "labels y": _cv([0.6, 0.4, 0.7, 0.2], fold, [2, 0, 1, 0]),
        "lacks": {"k": 2, "out_of_fold": {"path": ["a"], "y": [1], "p_covid": [0.5]}},
        "not a cv.json object": [1, 2],
    }
    for match, b in bad.items():
        with pytest.raises(ValueError, match=match) as err:
            ensemble_out_of_fold([good, b], names=["a.json", "b.json"])
        assert "b.json" in str(err.value)
    with pytest.raises(ValueError, match="the same run twice"):  # a re-serialised copy, not the same numbers
        ensemble_out_of_fold([good, _cv([0.6000004, 0.4, 0.7, 0.2], fold, y)])


def test_ensemble_decision_does_not_depend_on_member_order_and_folds_compare_as_partitions():
    from itertools import permutations

    from robustct.crossval import ensemble_out_of_fold

    y = [1, 0]
    members = [_cv([0.1, 0.2], [0, 1], y), _cv([0.7, 0.6], [1, 0], y), _cv([0.7, 0.7], [0, 1], y)]
    # image 0: (0.1 + 0.7 + 0.7) / 3 = 0.5 exactly, so COVID; the float sum order must not tip it
    accs = {ensemble_out_of_fold(list(order))["ensemble"]["accuracy"] for order in permutations(members)}
    assert accs == {0.5}
    assert ensemble_out_of_fold(members)["same_folds"]  # {0,1} numbered 0/1 or 1/0: the same partition
    assert not ensemble_out_of_fold([_cv([0.1, 0.2, 0.3], [0, 0, 1], [1, 0, 0]),
                                     _cv([0.2, 0.2, 0.3], [0, 1, 1], [1, 0, 0])])["same_folds"]


def test_cv_ensemble_json_is_strict_json_when_auc_is_undefined(tmp_path, capsys):
    import json

    from robustct.cli import main

    files = []
    for i, p in enumerate(([0.6, 0.7], [0.8, 0.4])):
        f = tmp_path / f"one_class{i}.json"
        f.write_text(json.dumps(_cv(p, [0, 1], [1, 1])))
        files.append(str(f))
    assert main(["cv-ensemble", *files, "--json"]) == 0
    res = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert res["ensemble"]["auc"] is None and res["ensemble"]["accuracy"] == 1.0
