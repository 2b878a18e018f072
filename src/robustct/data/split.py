"""Train / val / test split grouped by patient and stratified by label."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .duplicates import components

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


def linked_groups(table: pd.DataFrame, cols=("group", "dup_cluster")) -> pd.Series:
    """One split unit per connected set of rows sharing a value in any of ``cols``.

    With ``group`` (patient) and ``dup_cluster`` (duplicate cluster from validation), two
    patients whose images are near-duplicates of each other become one unit, so a duplicate
    can never sit in two splits.

    Returns:
        A Series aligned with ``table.index``: the unit id (the smallest ``col=value`` key of it).
    """
    cols = [c for c in cols if c in table.columns]
    keys = [[f"{c}={v}" for c, v in zip(cols, row)] for row in zip(*(table[c] for c in cols))]
    root = components(sorted({k for ks in keys for k in ks}), ((ks[0], k) for ks in keys for k in ks[1:]))
    return pd.Series([root[ks[0]] for ks in keys], index=table.index, dtype=object)


def make_split(table: pd.DataFrame, scheme: str, ratios: dict[str, float], seed: int) -> dict[str, pd.DataFrame]:
    """Split the usable rows of the per-image table.

    Args:
        table: rows with path, label, label_index, group, and optionally sha256 and
            dup_cluster (kept in the output for the audit of the written files).
        scheme: ``patient`` (grouped by patient and by duplicate cluster) or ``random``
            (image level, as in the reference paper; leaks patients and is kept for comparison only).

    Returns:
        ``{"train": df, "val": df, "test": df}`` with columns path, label, label_index, group
        (plus sha256 and dup_cluster when the table has them).

    Raises:
        ValueError: unknown scheme.
        LeakageError: (patient scheme) a group in two splits.
    """
    cols = ["path", "label", "label_index", "group"] + [c for c in ("sha256", "dup_cluster") if c in table.columns]
    usable = table[cols].reset_index(drop=True)
    if scheme == "patient":
        where = grouped_stratified_split(usable.assign(_unit=linked_groups(usable)), ratios, seed, group_col="_unit")
    elif scheme == "random":
        where = grouped_stratified_split(usable.assign(_image=usable.path), ratios, seed, group_col="_image")
    else:
        raise ValueError(f"split.scheme {scheme!r} is unknown; valid: patient, random")
    out = {s: usable[where == s].sort_values("path").reset_index(drop=True) for s in SPLITS}
    if scheme == "patient":
        check_no_leakage(out)
    return out


def audit_split_files(split_files: dict[str, Path], pairs: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Read written split CSVs back and list everything that appears in two splits.

    Args:
        split_files: ``{"train": path, "val": path, "test": path}``.
        pairs: duplicate pairs (``path_a``, ``path_b``) from the validate stage's
            ``near_duplicates.csv``; None skips that check.

    Returns:
        ``{"patient_groups": [...], "identical_images": [...], "near_duplicates": [...]}``, each
        entry naming what is shared and by which splits; all empty when nothing leaks.
    """
    frames = {name: pd.read_csv(path, keep_default_na=False) for name, path in split_files.items()}
    out = {"patient_groups": _in_two_splits(frames, "group"), "identical_images": _in_two_splits(frames, "sha256"),
           "near_duplicates": []}
    if pairs is not None:
        where = {p: name for name, df in frames.items() for p in df.path}
        for a, b in zip(pairs.path_a, pairs.path_b):
            if a in where and b in where and where[a] != where[b]:
                out["near_duplicates"].append(f"{a} ({where[a]}) ~ {b} ({where[b]})")
    return out


def _in_two_splits(splits: dict[str, pd.DataFrame], col: str) -> list[str]:
    """``"<value> (<split> and <split>)"`` for each non-empty value of ``col`` found in two splits."""
    owner: dict[str, str] = {}
    clashes = []
    for name, df in splits.items():
        if col not in df.columns:
            continue
        for v in df[col].unique():
            if v != "" and owner.setdefault(v, name) != name:
                clashes.append(f"{v} ({owner[v]} and {name})")
    return clashes


def check_no_leakage(splits: dict[str, pd.DataFrame], group_col: str = "group") -> None:
    """Raise :class:`LeakageError` naming each patient group found in two splits."""
    clashes = _in_two_splits(splits, group_col)
    if clashes:
        raise LeakageError(f"{len(clashes)} patient group(s) in two splits: " + ", ".join(clashes[:10]))
