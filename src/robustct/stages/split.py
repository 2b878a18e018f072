"""Stage `split`: train/val/test grouped by patient, stratified by label."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data.split import make_split
from .common import OUT, write_json


def run(params: dict, table_csv: Path = OUT / "validate" / "table.csv", out_dir: Path = OUT / "split") -> dict:
    cfg = params["split"]
    if not Path(table_csv).is_file():
        raise FileNotFoundError(f"{table_csv}: not found; run `dvc repro validate` first")
    table = pd.read_csv(table_csv, keep_default_na=False)
    usable = table[(table.decode_ok.astype(str) == "True") & (table.quarantined.astype(str) != "True")]
    splits = make_split(usable, cfg["scheme"], {k: float(v) for k, v in cfg["ratios"].items()}, int(cfg["seed"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"scheme": cfg["scheme"], "seed": cfg["seed"], "excluded": int(len(table) - len(usable))}
    for name, df in splits.items():
        df.to_csv(out_dir / f"{name}.csv", index=False)
        summary[name] = {"images": int(len(df)), "patients": int(df.group.nunique()),
                         **{f"n_{k}": int(v) for k, v in df.label.value_counts().items()}}
    write_json(out_dir / "summary.json", summary)
    return summary
