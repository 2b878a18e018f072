import pandas as pd
import pytest

from robustct.data.split import LeakageError, check_no_leakage, make_split


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


def test_patient_split_is_stratified_and_near_ratios():
    t = table(200)
    s = make_split(t, "patient", RATIOS, seed=0)
    for name, df in s.items():
        share = len(df) / len(t)
        assert share == pytest.approx(RATIOS[name], abs=0.03)
        covid_share = (df.label == "covid").mean()
        assert covid_share == pytest.approx((t.label == "covid").mean(), abs=0.06)


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
    with pytest.raises(ValueError, match="valid: patient, random"):
        make_split(table(), "kfold", RATIOS, 0)
