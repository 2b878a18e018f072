"""The validation-chosen threshold never sits on a validation score, so the folded model keeps the chosen rule."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_curve

from robustct.metrics import best_threshold
from robustct.models import build_model
from robustct.robustness import predict


def sklearn_best_j(y, p):
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return float(np.max(tpr - fpr))


def test_threshold_lies_between_scores_with_exact_ties():
    p = np.array([0.95, 0.8, 0.8, 0.8, 0.8, 0.6, 0.6, 0.3, 0.3, 0.1])
    y = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    t = best_threshold(y, p)
    assert not np.isin(t, p)
    assert np.array_equal(p >= t, p > t)  # the rule does not depend on how ties at t are broken
    assert 0.6 < t < 0.8  # known answer: COVID for the five scores >= 0.8 gives J = 4/5 - 1/5
    assert np.isclose(balanced_accuracy_score(y, p >= t), (1 + sklearn_best_j(y, p)) / 2, rtol=0, atol=1e-12)


def test_threshold_matches_sklearn_best_j_on_random_scores_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = np.round(rng.random(60), 2)  # many exact ties
        y = (rng.random(60) < p).astype(int)
        t = best_threshold(y, p)
        assert not np.isin(t, p) and 0 < t < 1
        assert np.isclose(balanced_accuracy_score(y, p >= t), (1 + sklearn_best_j(y, p)) / 2)


def test_scores_closer_than_min_gap_are_one_score():
    p = np.array([0.9, 0.5 + 1e-7, 0.5, 0.2])
    y = np.array([1, 1, 0, 0])
    t = best_threshold(y, p, min_gap=1e-5)
    assert np.min(np.abs(p - t)) > 1e-3  # no cut squeezed between the two near-equal scores


def test_folded_model_classifies_every_validation_image_as_the_chosen_rule():
    torch.manual_seed(0)
    model = build_model("resnet18", "none", image_size=32).eval()
    x = torch.rand(24, 1, 32, 32)
    x[5:9] = x[4]  # five identical images: an exact tie in the scores
    p = predict(model, x)[:, 1].numpy()
    tied = p[4]
    y = (p >= tied).astype(int)
    y[np.argmax(p)] = 0  # two mistakes far from the boundary keep the task imperfect
    y[np.argmin(p)] = 1
    t = best_threshold(y, p)
    assert not np.isin(t, p)
    chosen = p >= t
    assert chosen[4:9].all() and chosen.sum() == (p >= tied).sum()  # the best cut is just below the tie
    model.set_threshold(t)
    deployed = predict(model, x).argmax(1).numpy().astype(bool)
    assert np.array_equal(deployed, chosen)
    assert np.isclose(balanced_accuracy_score(y, deployed), (1 + sklearn_best_j(y, p)) / 2, rtol=0, atol=1e-12)
