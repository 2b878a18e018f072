import pandas as pd
import pytest

from robustct.data.split import LeakageError, check_no_leakage, hash_split, make_split, unit_hash


def table(n_groups=60, per_group=3):
    rows = []
    for g in range(n_groups):
        label = "covid" if g % 2 else "non_covid"
        for k in range(per_group + g % 3):
            rows.append(dict(path=f"{label}/{g}_{k}.png", label=label, label_index=int(label == "covid"),
                             group=f"{label}/p{g}"))
    return pd.DataFrame(rows)


RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_patient_split_has_no_leakage_and_keeps_every_image():
    t = table()
    s = make_split(t, "patient", RATIOS, seed=3)
    groups = [set(df.group) for df in s.values()]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sorted(pd.concat(s.values()).path) == sorted(t.path)


def test_patient_split_is_near_ratios():
    # hash placement: shares match the ratios in expectation (binomial over 2000 groups: sd ~ 0.007)
    t = table(2000)
    s = make_split(t, "patient", RATIOS, seed=0)
    for name, df in s.items():
        assert len(df) / len(t) == pytest.approx(RATIOS[name], abs=0.03)
        assert (df.label == "covid").mean() == pytest.approx((t.label == "covid").mean(), abs=0.06)


def test_random_split_is_stratified():
    t = table(200)
    s = make_split(t, "random", RATIOS, seed=0)
    for name, df in s.items():
        assert (df.label == "covid").mean() == pytest.approx((t.label == "covid").mean(), abs=0.03)


def test_removing_any_one_image_keeps_every_other_test_image_in_test():
    t = table(40)
    t["dup_cluster"] = t.path
    t.loc[t.path == "covid/1_0.png", "dup_cluster"] = "non_covid/2_0.png"  # a duplicate links patients 1 and 2
    t.loc[t.path == "non_covid/2_0.png", "dup_cluster"] = "non_covid/2_0.png"
    base = make_split(t, "patient", RATIOS, seed=5)
    test = set(base["test"].path)
    assert 3 <= len(test) < len(t) // 2
    for i in t.index:
        removed = t.path[i]
        after = make_split(t.drop(index=i), "patient", RATIOS, seed=5)
        moved = (test - {removed}) - set(after["test"].path)
        assert not moved, f"removing {removed} moved {sorted(moved)} out of test"


def test_hash_split_depends_only_on_key_and_seed():
    units = pd.Series(["a", "b", "c", "a"])
    where = hash_split(units, RATIOS, seed=1)
    assert where[0] == where[3]
    assert where[1] == hash_split(pd.Series(["b"]), RATIOS, seed=1)[0]
    u = unit_hash("a", 1)
    assert 0 <= u < 1 and u == unit_hash("a", 1) != unit_hash("a", 2)
    expected = "train" if u < 0.8 else "val" if u < 0.9 else "test"
    assert where[0] == expected


def test_same_seed_same_split_other_seed_differs():
    t = table()
    a, b, c = (make_split(t, "patient", RATIOS, seed=s) for s in (1, 1, 2))
    assert a["test"].path.tolist() == b["test"].path.tolist()
    assert a["test"].path.tolist() != c["test"].path.tolist()


def test_random_scheme_splits_images_and_can_leak():
    t = table(100)
    s = make_split(t, "random", RATIOS, seed=0)
    assert len(s["test"]) == pytest.approx(0.1 * len(t), abs=2)
    with pytest.raises(LeakageError):
        check_no_leakage(s)


def test_leakage_is_named():
    s = {"train": pd.DataFrame({"group": ["a", "b"]}), "test": pd.DataFrame({"group": ["b"]})}
    with pytest.raises(LeakageError, match=r"b \(train and test\)"):
        check_no_leakage(s)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="valid: official, patient, random"):
        make_split(table(), "kfold", RATIOS, 0)
