"""Cluster (patient-level) bootstrap intervals: known answers on toy cases."""
from __future__ import annotations

import numpy as np
import pytest

from robustct.metrics import (CLUSTER_BOOTSTRAP, IMAGE_BOOTSTRAP, bootstrap_ci, evaluation_report)


def test_two_patients_one_right_one_wrong_known_interval():
    # patient A: 10 images all correct, patient B: 10 images all wrong. Resampling 2 patients gives
    # accuracy 1, 0.5 or 0 with probabilities 1/4, 1/2, 1/4: the 95 % percentile interval is [0, 1].
    y = np.array([1] * 10 + [1] * 10)
    p = np.array([0.9] * 10 + [0.1] * 10)
    groups = np.array(["A"] * 10 + ["B"] * 10)
    ci = bootstrap_ci(y, p, n_boot=2000, seed=0, groups=groups)["accuracy"]
    assert (ci["value"], ci["ci_low"], ci["ci_high"]) == (0.5, 0.0, 1.0)
    # resampling the 20 images instead: Binomial(20, 0.5) / 20, 95 % interval about [0.3, 0.7]
    img = bootstrap_ci(y, p, n_boot=2000, seed=0)["accuracy"]
    assert 0.25 <= img["ci_low"] <= 0.35 and 0.65 <= img["ci_high"] <= 0.75


def test_singleton_groups_equal_the_image_bootstrap_exactly():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    p = np.clip(y * 0.3 + rng.random(40) * 0.7, 0, 1)
    assert bootstrap_ci(y, p, n_boot=200, seed=4, groups=np.arange(40)) == bootstrap_ci(y, p, n_boot=200, seed=4)


def test_replicated_patients_give_the_image_intervals_of_the_unreplicated_data():
    # every patient = m identical copies of one image: the cluster bootstrap of the replicated data draws
    # the same patients as the image bootstrap of the originals, and every metric is invariant to
    # replicating each drawn unit m times, so the intervals are identical; the naive image bootstrap of
    # the replicated data is narrower (it believes it has m times more evidence).
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    p = np.clip(0.35 * y + 0.65 * rng.random(30), 0, 1)
    m = 5
    yr, pr, gr = np.repeat(y, m), np.repeat(p, m), np.repeat(np.arange(30), m)
    cluster = bootstrap_ci(yr, pr, n_boot=300, seed=1, groups=gr)
    plain = bootstrap_ci(y, p, n_boot=300, seed=1)
    for k in plain:
        assert cluster[k] == pytest.approx(plain[k], abs=1e-12)
    naive = bootstrap_ci(yr, pr, n_boot=300, seed=1)
    for k in ("accuracy", "auc"):
        assert naive[k]["ci_high"] - naive[k]["ci_low"] < 0.7 * (cluster[k]["ci_high"] - cluster[k]["ci_low"])


def test_report_names_the_method_and_checks_groups():
    y, p = np.array([0, 1, 0, 1]), np.array([0.1, 0.7, 0.6, 0.9])
    assert evaluation_report(y, p, n_boot=20)["interval_method"] == IMAGE_BOOTSTRAP
    rep = evaluation_report(y, p, n_boot=20, groups=["a", "a", "b", "c"])
    assert rep["interval_method"] == CLUSTER_BOOTSTRAP and rep["n_groups"] == 3
    with pytest.raises(ValueError, match="one per image"):
        bootstrap_ci(y, p, n_boot=5, groups=["a", "b"])
