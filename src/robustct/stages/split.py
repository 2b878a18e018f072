"""Stage `split`: train/val/test by the authors' official lists, a stable patient hash split, or images.

The split files are written to a temporary folder, read back and audited
(:func:`robustct.data.split.audit_split_files`: patient groups, identical images and
near-duplicate pairs found in two splits), and only then moved into place. With
``scheme: patient`` any finding is a :class:`~robustct.data.split.LeakageError` and nothing is
written; with ``scheme: official`` (the authors' split, kept as published) and ``scheme: random``
(the paper's leaky image-level split) the findings are listed in ``summary.json`` under ``leakage``
and printed as warnings.

Official scheme and quarantine (``split.official_keep_quarantined_test``, default true): quarantined
files on the official *test* lists stay in test, so the test set is the published one (203 images);
quarantined files on train/val lists are left out. ``summary.json`` lists both under ``official`` and
audits the unfiltered lists too (``official.list_leakage``): on the real data the two label-conflict
pairs span the lists (``CT_COVID/kjr-21-e24-p5-29.png``, ``-31.png`` in test;
their non-COVID twins ``CT_NonCOVID/71%0.jpg``, ``71%1.jpg`` in train, which are therefore not trained on).
Each split CSV has a ``group`` column (patient group key), the unit of the cluster bootstrap.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

import sys

from ..data.split import (SPLITS, LeakageError, audit_split_files, find_leakage, make_split, official_usable,
                          read_official_split)
from ..io import OUT, write_json


def run(params: dict, table_csv: Path = OUT / "validate" / "table.csv", out_dir: Path = OUT / "split",
        pairs_csv: Path | None = None, data_root: Path = Path("data")) -> dict:
    """Split the usable rows of ``table_csv`` (decoded, not quarantined) into ``out_dir``.

    Args:
        data_root: dataset root; the ``official`` scheme reads ``official_split/`` there.
        pairs_csv: duplicate pairs from the validate stage (default: ``near_duplicates.csv``
            next to ``table_csv``; skipped when absent).

    Raises:
        FileNotFoundError: ``table_csv`` is missing.
        ChecksumError: (official scheme) a list file is missing or altered (names it).
        LeakageError: (patient scheme) the written files share a patient or a duplicate.
    """
    cfg = params["split"]
    table_csv = Path(table_csv)
    if not table_csv.is_file():
        raise FileNotFoundError(f"{table_csv}: not found; run `dvc repro validate` first")
    pairs_csv = Path(pairs_csv) if pairs_csv else table_csv.with_name("near_duplicates.csv")
    pairs = pd.read_csv(pairs_csv, keep_default_na=False) if pairs_csv.is_file() else None
    table = pd.read_csv(table_csv, keep_default_na=False)
    scheme = cfg.get("scheme", "official")
    official, official_info = None, {}
    if scheme == "official":
        official = read_official_split(data_root)
        keep = bool(cfg.get("official_keep_quarantined_test", True))
        mask = official_usable(table, official, keep)
        quarantined = table.quarantined.astype(str) == "True"
        listed = table.assign(split=table.path.map(official))
        official_info = {
            "keep_quarantined_test": keep,
            "quarantined_kept": sorted(f"{p} ({s})" for p, s in listed[mask & quarantined][["path", "split"]].values),
            "quarantined_dropped": sorted(f"{p} ({s})" for p, s in listed[~mask & quarantined][["path", "split"]].values),
            "listed_not_usable": sorted(set(official.index) - set(table.path[mask])),
            "list_leakage": find_leakage({s: listed[listed.split == s] for s in SPLITS}, pairs),
        }
    else:
        mask = (table.decode_ok.astype(str) == "True") & (table.quarantined.astype(str) != "True")
    usable = table[mask]
    splits = make_split(usable, scheme, {k: float(v) for k, v in cfg.get("ratios", {}).items()} or
                        {"train": 0.8, "val": 0.1, "test": 0.1}, int(cfg.get("seed", 42)), official=official)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".split-partial-", dir=out_dir))
    try:
        for name, df in splits.items():
            df.to_csv(staging / f"{name}.csv", index=False)
        leakage = audit_split_files({s: staging / f"{s}.csv" for s in SPLITS}, pairs)
        found = {k: v for k, v in leakage.items() if v}
        if found and scheme == "patient":
            raise LeakageError("the split files share " + "; ".join(
                f"{len(v)} {k.replace('_', ' ')}: {', '.join(v[:5])}" for k, v in found.items())
                + "; this is a bug in the split, please report it with outputs/validate/table.csv")
        for name in SPLITS:
            (staging / f"{name}.csv").replace(out_dir / f"{name}.csv")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = {"scheme": scheme, "seed": cfg.get("seed") if scheme != "official" else None,
               "excluded": int(len(table) - len(usable)), "leakage": {k: len(v) for k, v in leakage.items()},
               "leakage_found": found}
    if official_info:
        summary["official"] = official_info
    for k, v in {**found, **{f"official lists: {k}": v for k, v in official_info.get("list_leakage", {}).items()
                             if v}}.items():
        print(f"warning: split ({scheme}) {k.replace('_', ' ')} in two splits: {'; '.join(v[:5])}", file=sys.stderr)
    for name, df in splits.items():
        summary[name] = {"images": int(len(df)), "patients": int(df.group.nunique()),
                         **{f"n_{k}": int(v) for k, v in df.label.value_counts().items()}}
    write_json(out_dir / "summary.json", summary)
    return summary
