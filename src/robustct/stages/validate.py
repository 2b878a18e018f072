"""Stage `validate`: per-image table, duplicates, shortcut audit, Great Expectations suite.

Outputs (under ``out_dir``), each written to a temporary name and renamed into place:

- ``table.csv``: one row per file (see :func:`robustct.data.table.build_table`) plus
  ``dup_cluster`` (duplicate cluster id, used by the split) and ``quarantined``;
- ``near_duplicates.csv``: every exact / near-duplicate pair with its kind;
- ``quarantine.csv``: the quarantined files and why (empty with ``on_error: fail``);
- ``shortcut_audit.json``: the shortcut audit (also read by :mod:`robustct.runtags`, which
  tags every later MLflow run of this project with its AUCs and warnings);
- ``summary.json``: the whole report; ``data_docs/``: the GX HTML data docs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..data.duplicates import clusters, find_duplicates
from ..data.shortcut import audit
from ..data.table import build_table
from ..data.validate import run_suite
from ..io import OUT, write_json

DEFAULTS = {"on_error": "fail", "max_pixels": 50_000_000,
            "near_duplicates": {"max_hash_distance": 8, "min_ssim": 0.9},
            "shortcut": {"max_auc": 0.7, "folds": 5, "seed": 0, "image_size": 160}}


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def run(params: dict, data_root: Path, out_dir: Path = OUT / "validate", track: bool = True) -> dict:
    """Validate ``data_root`` and write the report under ``out_dir``.

    With ``on_error: fail`` any error raises SystemExit(1) after the report is written (the
    pipeline stops before training); with ``quarantine`` the offending files are listed in
    ``quarantine.csv`` and marked in ``table.csv``, and the split excludes them. Warnings
    (near-duplicates under one label, shortcut audit above ``shortcut.max_auc``) never stop
    the pipeline.

    Returns:
        the summary dict written to ``summary.json``.
    """
    cfg = params["validate"]
    on_error = cfg.get("on_error", DEFAULTS["on_error"])
    dup_cfg = {**DEFAULTS["near_duplicates"], **cfg.get("near_duplicates", {})}
    sc_cfg = {**DEFAULTS["shortcut"], **cfg.get("shortcut", {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    table = build_table(data_root, int(cfg.get("max_pixels", DEFAULTS["max_pixels"])), int(sc_cfg["image_size"]))
    pairs = find_duplicates(table, data_root, int(dup_cfg["max_hash_distance"]), float(dup_cfg["min_ssim"]))
    cluster_of = clusters(table.path, pairs)
    table["dup_cluster"] = table.path.map(cluster_of)
    summary = run_suite(table, cfg, docs_dir=out_dir / "data_docs", pairs=pairs)

    warnings = [f"near-duplicate images under one label (kept in one split): {a} ~ {b} "
                f"(phash distance {d}, SSIM {s:.3f})"
                for a, b, d, s in pairs[pairs.kind == "near_duplicate"][["path_a", "path_b", "hash_distance", "ssim"]]
                .itertuples(index=False)]
    quarantined = sorted(summary["offending_files"]) if on_error == "quarantine" else []
    table["quarantined"] = table.path.isin(quarantined)
    try:  # on the images the split will use
        shortcut = audit(table[~table.quarantined], float(sc_cfg["max_auc"]), int(sc_cfg["folds"]), int(sc_cfg["seed"]))
    except ValueError as exc:  # too few patients for the folds: say so, do not fail the data
        shortcut = {"max_auc": float(sc_cfg["max_auc"]), "skipped": str(exc), "warnings": [f"shortcut audit skipped: {exc}"]}
    warnings += shortcut["warnings"]
    summary.update(
        on_error=on_error, quarantined=quarantined, warnings=warnings,
        near_duplicates={"pairs": int(len(pairs)), **{k: int((pairs.kind == k).sum()) for k in
                                                     ("near_duplicate", "exact_duplicate", "label_conflict")},
                         **dup_cfg},
        shortcut_audit={k: v for k, v in shortcut.items() if k != "warnings"},
    )
    quarantine = pd.DataFrame([(p, " | ".join(summary["offending_files"][p])) for p in quarantined],
                              columns=["path", "problems"])
    _write_csv(table, out_dir / "table.csv")
    _write_csv(pairs, out_dir / "near_duplicates.csv")
    _write_csv(quarantine, out_dir / "quarantine.csv")
    write_json(out_dir / "shortcut_audit.json", shortcut)
    write_json(out_dir / "summary.json", summary)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if track:
        _log_run(cfg, summary, shortcut, out_dir)
    if not summary["success"] and on_error == "fail":
        lines = [f"  {p}: {'; '.join(problems)}" for p, problems in sorted(summary["offending_files"].items())]
        failed = [e["expectation"] for e in summary["expectations"] if not e["success"]]
        failed += [c["check"] for c in summary["custom"] if not c["success"]]
        print(f"validation FAILED ({', '.join(failed)}); offending files:", *lines[:50], sep="\n", file=sys.stderr)
        print(f"report: {out_dir / 'summary.json'}, data docs: {out_dir / 'data_docs' / 'index.html'}; "
              "fix the files or set validate.on_error: quarantine", file=sys.stderr)
        raise SystemExit(1)
    return summary


def _log_run(cfg: dict, summary: dict, shortcut: dict, out_dir: Path) -> None:
    from .. import tracking  # noqa: PLC0415

    mlflow = tracking.setup()
    with mlflow.start_run(run_name="validate", tags={**tracking.standard_tags(), "stage": "validate"}):
        mlflow.log_params({k: v for k, v in cfg.items() if not isinstance(v, dict)})
        mlflow.log_params({f"{sec}.{k}": v for sec in ("near_duplicates", "shortcut")
                           for k, v in cfg.get(sec, {}).items()})
        metrics = {"files_checked": summary["files_checked"], "quarantined": len(summary["quarantined"]),
                   "offending_files": len(summary["offending_files"]), "success": float(summary["success"]),
                   "warnings": len(summary["warnings"]),
                   **{f"dup_{k}": v for k, v in summary["near_duplicates"].items()
                      if k in ("pairs", "near_duplicate", "exact_duplicate", "label_conflict")}}
        for name in ("raw", "processed"):
            if name in shortcut:
                metrics[f"shortcut_auc_{name}"] = shortcut[name]["auc"]
        mlflow.log_metrics(metrics)
        mlflow.set_tag("quarantined_files", ", ".join(summary["quarantined"])[:5000] or "none")
        for f in ("summary.json", "shortcut_audit.json", "quarantine.csv", "near_duplicates.csv"):
            mlflow.log_artifact(str(out_dir / f))
        mlflow.log_artifacts(str(out_dir / "data_docs"), "data_docs")
