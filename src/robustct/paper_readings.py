"""The reference paper's FGSM table under its two possible epsilon units, and which one its numbers fit.

The paper lists FGSM epsilons 0, 0.1, ..., 1.0 without a unit. Two readings:

- ``pixel``: epsilon in [0, 1] pixel units (the field's convention; 0.1 is 25.5 grey levels), and
- ``grey_levels``: epsilon in grey levels of 0-255 images, i.e. ``epsilon / 255`` in pixel units.

:func:`readings_table` puts our FGSM accuracy under both readings next to the paper's values;
:func:`consistent_reading` (a pure function) says which reading the paper's curve is closer to, by
the mean absolute difference of accuracies over the listed epsilons (an L1 curve distance).
"""
from __future__ import annotations

from dataclasses import dataclass

READINGS = ("pixel", "grey_levels")
SCALE = {"pixel": 1.0, "grey_levels": 1.0 / 255.0}
"""Reading -> factor from the paper's listed epsilon to our [0, 1] pixel units."""


@dataclass(frozen=True)
class ReadingVerdict:
    """Which reading the paper's curve fits.

    Attributes:
        reading: ``pixel``, ``grey_levels`` or ``neither`` (closest distance above ``tolerance``).
        distances: ``{reading: mean |ours - paper|}`` over the common listed epsilons (accuracy units, [0, 1]).
        tolerance: the largest distance still called consistent.
        n_points: listed epsilons compared.
    """

    reading: str
    distances: dict
    tolerance: float
    n_points: int


def attack_epsilons(paper_epsilons: list[float]) -> dict[str, list[float]]:
    """``{reading: [epsilon in pixel units, ...]}``: the FGSM epsilons to run for each reading."""
    return {r: [float(e) * SCALE[r] for e in paper_epsilons] for r in READINGS}


def curve_from_points(points: list[dict], paper_epsilons: list[float], reading: str,
                      key: str = "robust_accuracy_non_covid") -> dict[float, float]:
    """Our accuracy keyed by the paper's listed epsilon, from sweep points run at ``attack_epsilons``.

    Args:
        points: attack sweep points (``epsilon`` in pixel units and ``key``), e.g. from ``fgsm_sweep``.
        paper_epsilons: the listed epsilons (``attack.fgsm_paper_epsilons``).
        reading: ``pixel`` or ``grey_levels``.
        key: the accuracy to read; the paper's table is on its non-COVID test images.

    Raises:
        KeyError: a needed epsilon was not run (names it).
    """
    by_eps = {round(p["epsilon"], 9): p[key] for p in points}
    out = {}
    for e in paper_epsilons:
        run = round(float(e) * SCALE[reading], 9)
        if run not in by_eps:
            raise KeyError(f"FGSM at epsilon {run:g} (listed {e:g}, reading {reading}) was not run")
        out[round(float(e), 6)] = float(by_eps[run])
    return out


def curve_distance(ours: dict[float, float], paper: dict[float, float]) -> tuple[float, int]:
    """Mean absolute accuracy difference over the epsilons both curves list (NaN values skipped).

    Returns:
        (distance in [0, 1], number of epsilons compared).

    Raises:
        ValueError: no epsilon in common.
    """
    common = [e for e in paper if e in ours and ours[e] == ours[e] and paper[e] == paper[e]]
    if not common:
        raise ValueError("the curves share no epsilon; run FGSM at the paper's listed epsilons")
    return sum(abs(ours[e] - paper[e]) for e in common) / len(common), len(common)


def consistent_reading(paper: dict[float, float], ours: dict[str, dict[float, float]],
                       tolerance: float = 0.15) -> ReadingVerdict:
    """Which reading of the paper's epsilons our curves match (pure function).

    Args:
        paper: ``{listed epsilon: accuracy}`` (e.g. ``io.PAPER_FGSM_NON_COVID``).
        ours: ``{reading: {listed epsilon: our accuracy}}`` for ``pixel`` and ``grey_levels``.
        tolerance: mean absolute difference above which neither reading is called consistent.

    Returns:
        :class:`ReadingVerdict` with the closer reading (ties: ``pixel``) or ``neither``.
    """
    dist, n = {}, 0
    for r in READINGS:
        dist[r], n = curve_distance(ours[r], paper)
    best = min(READINGS, key=lambda r: dist[r])
    return ReadingVerdict(best if dist[best] <= tolerance else "neither", dist, float(tolerance), n)


def readings_table(paper: dict[float, float], ours: dict[str, dict[float, float]]) -> list[dict]:
    """Rows ``epsilon`` (as listed), ``paper_accuracy``, ``accuracy_pixel``, ``epsilon_pixel``,
    ``accuracy_grey_levels``, ``epsilon_grey_levels`` (the epsilons actually run, pixel units)."""
    rows = []
    for e in sorted(paper):
        row = {"epsilon": e, "paper_accuracy": paper[e]}
        for r in READINGS:
            row[f"accuracy_{r}"] = ours[r].get(e)
            row[f"epsilon_{r}"] = e * SCALE[r]
        rows.append(row)
    return rows


def readings_markdown(rows: list[dict], verdict: ReadingVerdict) -> str:
    """The side-by-side table and the verdict as Markdown."""
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| epsilon (paper) | paper | ours, epsilon in [0, 1] | ours, epsilon / 255 |", "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['epsilon']:g} | {fmt(r['paper_accuracy'])} | {fmt(r['accuracy_pixel'])} | "
              f"{fmt(r['accuracy_grey_levels'])} |" for r in rows]
    d = verdict.distances
    lines += ["", f"Mean |ours - paper| over {verdict.n_points} epsilons: [0, 1] reading {d['pixel']:.3f}, "
              f"/255 reading {d['grey_levels']:.3f}; consistent with: **{verdict.reading}** "
              f"(tolerance {verdict.tolerance:g})."]
    return "\n".join(lines) + "\n"


__all__ = ["READINGS", "SCALE", "ReadingVerdict", "attack_epsilons", "consistent_reading", "curve_distance",
           "curve_from_points", "readings_markdown", "readings_table"]
