"""Train / val / test splits: the dataset authors' official lists, a stable patient-level hash split, or images.

Schemes (``split.scheme``):

- ``official``: the patient-level split of the COVID-CT authors (Yang et al., 2020, arXiv:2003.13865;
  upstream ``Data-split/``), read from ``<data root>/official_split/`` and verified against the pinned
  checksums. Comparable with published results on this dataset (test: 98 COVID + 105 non-COVID).
- ``patient``: each unit (patient group, merged with every near-duplicate cluster it touches) goes to
  the split chosen by a hash of its key and the seed (:func:`hash_split`), so adding or removing images
  moves at most the units they belong to.
- ``random``: image level, as in the reference paper (leaks patients; kept for comparison only).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .duplicates import components
from .ingest import LABEL_DIRS, OFFICIAL_LISTS, OFFICIAL_SPLIT_DIR, pinned_checksums, verify_checksums

SPLITS = ("train", "val", "test")
SCHEMES = ("official", "patient", "random")


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


def unit_hash(key: str, seed: int) -> float:
    """Uniform number in [0, 1) from SHA-256 of ``"<seed>:<key>"`` (first 8 bytes / 2**64).

    Depends on nothing but the key and the seed: no other row, no order, no image content.
    """
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(units: pd.Series, ratios: dict[str, float], seed: int) -> pd.Series:
    """Assign each row to the split of its unit by :func:`unit_hash` (stable under data changes).

    A unit with hash ``u`` goes to ``train`` if ``u < r_train``, to ``val`` if ``u < r_train + r_val``,
    else to ``test``. Every unit is placed independently of every other, so removing or adding images
    changes only the units containing them; the shares match ``ratios`` in expectation (binomial spread
    over units, not exact, and not stratified by label).

    Args:
        units: unit key per row (e.g. from :func:`linked_groups`).
        ratios: ``{"train": .8, "val": .1, "test": .1}`` (sum 1).
        seed: part of the hash; another seed gives an independent split.

    Returns:
        A Series of split names aligned with ``units.index``.
    """
    total = sum(float(ratios[s]) for s in SPLITS)
    bounds = [sum(float(ratios[s]) for s in SPLITS[: i + 1]) / total for i in range(len(SPLITS) - 1)]

    def place(key: str) -> str:
        u = unit_hash(key, seed)
        return next((s for s, b in zip(SPLITS, bounds) if u < b), SPLITS[-1])

    where = {k: place(k) for k in units.unique()}
    return units.map(where).astype(object)


def linked_groups(table: pd.DataFrame, cols=("group", "dup_cluster")) -> pd.Series:
    """One split unit per connected set of rows sharing a value in any of ``cols``.

    With ``group`` (patient) and ``dup_cluster`` (duplicate cluster from validation), two
    patients whose images are near-duplicates of each other become one unit, so a duplicate
    can never sit in two splits.

    Returns:
        A Series aligned with ``table.index``: the unit id, the smallest value of the first column
        (``group``) in the unit. It changes only when the unit itself changes (its smallest patient
        group leaves or a new link joins it), not when an unrelated image or duplicate cluster changes.
    """
    cols = [c for c in cols if c in table.columns]
    keys = [[f"{c}={v}" for c, v in zip(cols, row)] for row in zip(*(table[c] for c in cols))]
    root = components(sorted({k for ks in keys for k in ks}), ((ks[0], k) for ks in keys for k in ks[1:]))
    first = {}
    for ks, v in zip(keys, table[cols[0]]):
        r = root[ks[0]]
        first[r] = min(first.get(r, v), v)
    return pd.Series([first[root[ks[0]]] for ks in keys], index=table.index, dtype=object)


def official_list_paths(root: Path) -> dict[tuple[str, str], Path]:
    """``{(split, label): path}`` of the six official list files under ``root/official_split``."""
    return {k: Path(root) / OFFICIAL_SPLIT_DIR / rel for k, rel in OFFICIAL_LISTS.items()}


def read_official_split(root: Path, expected: dict[str, str] | None = None) -> pd.Series:
    """The authors' assignment of every listed image, after verifying the six list files.

    Args:
        root: data root holding ``official_split/COVID/*.txt`` and ``official_split/NonCOVID/*.txt``
            (installed by ``robustct fetch-data``).
        expected: ``{relative path: sha256}``; defaults to the ``official_split/`` entries of the
            pinned checksums (:func:`robustct.data.ingest.pinned_checksums`).

    Returns:
        A Series indexed by image path relative to the data root (``CT_COVID/<name>`` or
        ``CT_NonCOVID/<name>``, as in the per-image table) with values ``train``, ``val`` or ``test``.

    Raises:
        ChecksumError: a list file is missing or differs from its pinned SHA-256 (names the file).
        ValueError: an image is on two lists (names it and both lists).
    """
    if expected is None:
        expected = {k: v for k, v in pinned_checksums().items() if k.startswith(OFFICIAL_SPLIT_DIR + "/")}
    verify_checksums(root, expected)
    label_dir = {label: d for d, label in LABEL_DIRS.items()}
    where: dict[str, str] = {}
    source: dict[str, Path] = {}
    for (split, label), path in official_list_paths(root).items():
        for name in path.read_text(encoding="utf-8").splitlines():
            if not name.strip():
                continue
            rel = f"{label_dir[label]}/{name}"
            if rel in where:
                raise ValueError(f"{rel} is on two official lists: {source[rel]} and {path}")
            where[rel], source[rel] = split, path
    return pd.Series(where, dtype=object).sort_index()


def official_usable(table: pd.DataFrame, official: pd.Series, keep_quarantined_test: bool = True) -> pd.Series:
    """Boolean mask of the table rows the official scheme uses.

    A row is used when it decodes and is not quarantined; with ``keep_quarantined_test`` a quarantined
    row that decodes and is on an official *test* list is used too, so the test set is the published one
    (203 images: comparable with published results). Quarantined files on train/val lists stay out, so a
    label-conflict twin of a test image is never trained on.

    Args:
        table: the validate stage's table (``path``, ``decode_ok``, ``quarantined``; booleans or their strings).
        official: from :func:`read_official_split`.
    """
    decodes = table.decode_ok.astype(str) == "True"
    clean = table.quarantined.astype(str) != "True"
    if keep_quarantined_test:
        clean = clean | (table.path.map(official) == "test")
    return decodes & clean


def make_split(table: pd.DataFrame, scheme: str, ratios: dict[str, float], seed: int,
               official: pd.Series | None = None) -> dict[str, pd.DataFrame]:
    """Split the usable rows of the per-image table.

    Args:
        table: rows with path, label, label_index, group, and optionally sha256 and
            dup_cluster (kept in the output for the audit of the written files).
        scheme: one of :data:`SCHEMES`: ``official`` (the authors' lists, needs ``official``),
            ``patient`` (stable hash split of units grouped by patient and duplicate cluster, see
            :func:`hash_split`) or ``random`` (image level, as in the reference paper; leaks patients
            and is kept for comparison only). ``ratios`` and ``seed`` do not apply to ``official``.
        official: image path -> split, from :func:`read_official_split` (``official`` scheme only).

    Returns:
        ``{"train": df, "val": df, "test": df}`` with columns path, label, label_index, group
        (the patient group key; the unit of the cluster bootstrap) plus sha256 and dup_cluster
        when the table has them.

    Raises:
        ValueError: unknown scheme; ``official`` without lists, or a usable image on no list (named).
        LeakageError: (patient scheme) a group in two splits.
    """
    cols = ["path", "label", "label_index", "group"] + [c for c in ("sha256", "dup_cluster") if c in table.columns]
    usable = table[cols].reset_index(drop=True)
    if scheme == "patient":
        where = hash_split(linked_groups(usable), ratios, seed)
    elif scheme == "random":
        where = grouped_stratified_split(usable.assign(_image=usable.path), ratios, seed, group_col="_image")
    elif scheme == "official":
        if official is None:
            raise ValueError("split.scheme official needs the official lists (read_official_split)")
        where = usable.path.map(official)
        missing = usable.path[where.isna()].tolist()
        if missing:
            raise ValueError(f"{len(missing)} image(s) are on no official list: {', '.join(missing[:10])}; "
                             "the data does not match the pinned dataset version (robustct fetch-data)")
    else:
        raise ValueError(f"split.scheme {scheme!r} is unknown; valid: {', '.join(SCHEMES)}")
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
    return find_leakage(frames, pairs)


def find_leakage(frames: dict[str, pd.DataFrame], pairs: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Like :func:`audit_split_files` on in-memory frames (columns path, and group / sha256 when present)."""
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
