"""Train / val / test split grouped by patient and stratified by label."""
from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


class LeakageError(RuntimeError):
    """A patient group appears in more than one split."""


def grouped_stratified_split(table: pd.DataFrame, ratios: dict[str, float], seed: int,
                             group_col: str = "group") -> pd.Series:
    """Assign every row to a split; all rows of a group go to the same split.

    Per label, groups are shuffled with ``seed``, ordered largest first, and each is
    given to the split furthest below its target share of that label's images. This
    keeps label proportions close to ``ratios`` in every split.

    Args:
        table: rows with ``label`` and ``group_col`` columns.
        ratios: ``{"train": .8, "val": .1, "test": .1}`` (sum 1).
        seed: shuffling seed; the same seed gives the same split.

    Returns:
        A Series of split names aligned with ``table.index``.
    """
    rng = np.random.default_rng(seed)
    assignment = pd.Series(index=table.index, dtype=object)
    for label in sorted(table.label.unique()):
        rows = table[table.label == label]
        sizes = rows.groupby(group_col).size()
        groups = list(sizes.index)
        rng.shuffle(groups)
        groups.sort(key=lambda g: -sizes[g])  # stable: ties keep the shuffled order
        target = {s: ratios[s] * len(rows) for s in SPLITS}
        filled = dict.fromkeys(SPLITS, 0)
        for g in groups:
            best = max(SPLITS, key=lambda s: (target[s] - filled[s]) / max(target[s], 1e-9))
            filled[best] += sizes[g]
            assignment[rows.index[rows[group_col] == g]] = best
    return assignment


def make_split(table: pd.DataFrame, scheme: str, ratios: dict[str, float], seed: int) -> dict[str, pd.DataFrame]:
    """Split the usable rows of the per-image table.

    Args:
        scheme: ``patient`` (grouped by patient) or ``random`` (image level, as in the
            reference paper; leaks patients and is kept for comparison only).

    Returns:
        ``{"train": df, "val": df, "test": df}`` with columns path, label, label_index, group.

    Raises:
        ValueError: unknown scheme.
        LeakageError: (patient scheme) a group in two splits.
    """
    cols = ["path", "label", "label_index", "group"]
    usable = table[cols].reset_index(drop=True)
    if scheme == "patient":
        where = grouped_stratified_split(usable, ratios, seed)
    elif scheme == "random":
        where = grouped_stratified_split(usable.assign(_image=usable.path), ratios, seed, group_col="_image")
    else:
        raise ValueError(f"split.scheme {scheme!r} is unknown; valid: patient, random")
    out = {s: usable[where == s].sort_values("path").reset_index(drop=True) for s in SPLITS}
    if scheme == "patient":
        check_no_leakage(out)
    return out


def check_no_leakage(splits: dict[str, pd.DataFrame], group_col: str = "group") -> None:
    """Raise :class:`LeakageError` naming each patient group found in two splits."""
    owner: dict[str, str] = {}
    clashes = []
    for name, df in splits.items():
        for g in df[group_col].unique():
            if g in owner and owner[g] != name:
                clashes.append(f"{g} ({owner[g]} and {name})")
            owner.setdefault(g, name)
    if clashes:
        raise LeakageError(f"{len(clashes)} patient group(s) in two splits: " + ", ".join(clashes[:10]))
