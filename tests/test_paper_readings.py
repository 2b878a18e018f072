"""The paper's FGSM table under both epsilon readings: known answers for the verdict and the table."""
from __future__ import annotations

import pytest

from robustct.io import PAPER_FGSM_NON_COVID as PAPER
from robustct.paper_readings import (attack_epsilons, consistent_reading, curve_distance, curve_from_points,
                                     readings_markdown, readings_table)

EPS = sorted(PAPER)


def test_attack_epsilons_scale_the_listed_values():
    eps = attack_epsilons([0, 0.5, 1.0])
    assert eps["pixel"] == [0, 0.5, 1.0]
    assert eps["grey_levels"] == pytest.approx([0, 0.5 / 255, 1 / 255])


def test_paper_curve_equal_to_one_reading_selects_it():
    collapsed = {e: (0.8 if e == 0 else 0.0) for e in EPS}  # undefended model: 0 at 0.1 pixel units
    assert consistent_reading(PAPER, {"pixel": collapsed, "grey_levels": dict(PAPER)}).reading == "grey_levels"
    v = consistent_reading(PAPER, {"pixel": dict(PAPER), "grey_levels": collapsed})
    assert v.reading == "pixel" and v.distances["pixel"] == 0.0 and v.n_points == 11
    # distance of the collapsed curve: mean of the paper's accuracies at epsilon > 0
    assert v.distances["grey_levels"] == pytest.approx(sum(PAPER[e] for e in EPS if e > 0) / 11)


def test_neither_reading_when_both_are_far():
    flat = {e: 1.0 for e in EPS}
    v = consistent_reading(PAPER, {"pixel": flat, "grey_levels": flat}, tolerance=0.1)
    assert v.reading == "neither" and v.distances["pixel"] == v.distances["grey_levels"] > 0.1


def test_curve_distance_needs_a_common_epsilon():
    assert curve_distance({0.1: 0.5, 0.2: 0.1}, {0.1: 0.7, 0.3: 0.0}) == (pytest.approx(0.2), 1)
    with pytest.raises(ValueError, match="share no epsilon"):
        curve_distance({0.5: 1.0}, {0.1: 1.0})


def test_curve_from_points_keys_by_listed_epsilon_and_names_missing_runs():
    pts = [{"epsilon": e / 255, "robust_accuracy_non_covid": 1 - e} for e in (0.0, 0.5, 1.0)]
    assert curve_from_points(pts, [0, 0.5, 1.0], "grey_levels") == {0.0: 1.0, 0.5: 0.5, 1.0: 0.0}
    with pytest.raises(KeyError, match="epsilon 0.5 .*reading pixel"):
        curve_from_points(pts, [0, 0.5], "pixel")


def test_table_rows_side_by_side():
    ours = {"pixel": {e: 0.0 for e in EPS}, "grey_levels": dict(PAPER)}
    rows = readings_table(PAPER, ours)
    assert rows[1] == {"epsilon": 0.1, "paper_accuracy": 0.8, "accuracy_pixel": 0.0, "epsilon_pixel": 0.1,
                       "accuracy_grey_levels": 0.8, "epsilon_grey_levels": pytest.approx(0.1 / 255)}
    md = readings_markdown(rows, consistent_reading(PAPER, ours))
    assert "| 0.1 | 0.800 | 0.000 | 0.800 |" in md and "**grey_levels**" in md
