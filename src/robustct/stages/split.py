"""Stage `split`: train/val/test grouped by patient and duplicate cluster, stratified by label.

The split files are written to a temporary folder, read back and audited
(:func:`robustct.data.split.audit_split_files`: patient groups, identical images and
near-duplicate pairs found in two splits), and only then moved into place. With
``scheme: patient`` any finding is a :class:`~robustct.data.split.LeakageError` and nothing is
written; with ``scheme: random`` (the paper's leaky image-level split) the findings are counted
in ``summary.json`` under ``leakage``.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ..data.split import SPLITS, LeakageError, audit_split_files, make_split
from ..io import OUT, write_json


def run(params: dict, table_csv: Path = OUT / "validate" / "table.csv", out_dir: Path = OUT / "split",
        pairs_csv: Path | None = None) -> dict:
    """Split the usable rows of ``table_csv`` (decoded, not quarantined) into ``out_dir``.

    Args:
        pairs_csv: duplicate pairs from the validate stage (default: ``near_duplicates.csv``
            next to ``table_csv``; skipped when absent).

    Raises:
        FileNotFoundError: ``table_csv`` is missing.
        LeakageError: (patient scheme) the written files share a patient or a duplicate.
    """
    cfg = params["split"]
    table_csv = Path(table_csv)
    if not table_csv.is_file():
        raise FileNotFoundError(f"{table_csv}: not found; run `dvc repro validate` first")
    pairs_csv = Path(pairs_csv) if pairs_csv else table_csv.with_name("near_duplicates.csv")
    pairs = pd.read_csv(pairs_csv, keep_default_na=False) if pairs_csv.is_file() else None
    table = pd.read_csv(table_csv, keep_default_na=False)
    usable = table[(table.decode_ok.astype(str) == "True") & (table.quarantined.astype(str) != "True")]
    splits = make_split(usable, cfg["scheme"], {k: float(v) for k, v in cfg["ratios"].items()}, int(cfg["seed"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".split-partial-", dir=out_dir))
    try:
        for name, df in splits.items():
            df.to_csv(staging / f"{name}.csv", index=False)
        leakage = audit_split_files({s: staging / f"{s}.csv" for s in SPLITS}, pairs)
        found = {k: v for k, v in leakage.items() if v}
        if found and cfg["scheme"] == "patient":
            raise LeakageError("the split files share " + "; ".join(
                f"{len(v)} {k.replace('_', ' ')}: {', '.join(v[:5])}" for k, v in found.items())
                + "; this is a bug in the split, please report it with outputs/validate/table.csv")
        for name in SPLITS:
            (staging / f"{name}.csv").replace(out_dir / f"{name}.csv")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = {"scheme": cfg["scheme"], "seed": cfg["seed"], "excluded": int(len(table) - len(usable)),
               "leakage": {k: len(v) for k, v in leakage.items()}}
    for name, df in splits.items():
        summary[name] = {"images": int(len(df)), "patients": int(df.group.nunique()),
                         **{f"n_{k}": int(v) for k, v in df.label.value_counts().items()}}
    write_json(out_dir / "summary.json", summary)
    return summary
