"""Stage `validate`: per-image table + Great Expectations suite; stops the pipeline on a violation."""
from __future__ import annotations

import sys
from pathlib import Path

from ..data.table import build_table
from ..data.validate import run_suite
from .common import OUT, write_json


def run(params: dict, data_root: Path, out_dir: Path = OUT / "validate", track: bool = True) -> dict:
    """Validate ``data_root``; write table.csv, summary.json and data_docs/ under ``out_dir``.

    With ``on_error: fail`` a violation raises SystemExit(1) after the report is written;
    with ``quarantine`` the offending files are listed and marked, and the split excludes them.
    """
    cfg = params["validate"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = build_table(data_root, int(cfg.get("max_pixels", 50_000_000)))
    summary = run_suite(table, cfg, docs_dir=out_dir / "data_docs")
    on_error = cfg.get("on_error", "fail")
    quarantined = sorted(summary["offending_files"]) if on_error == "quarantine" else []
    table["quarantined"] = table.path.isin(quarantined)
    summary["on_error"] = on_error
    summary["quarantined"] = quarantined
    table.to_csv(out_dir / "table.csv", index=False)
    write_json(out_dir / "summary.json", summary)
    if track:
        from .. import tracking  # noqa: PLC0415

        mlflow = tracking.setup()
        with mlflow.start_run(run_name="validate", tags={**tracking.standard_tags(), "stage": "validate"}):
            mlflow.log_params({k: v for k, v in cfg.items() if not isinstance(v, dict)})
            mlflow.log_metrics({"files_checked": summary["files_checked"], "quarantined": len(quarantined),
                                "offending_files": len(summary["offending_files"]),
                                "success": float(summary["success"])})
            mlflow.log_artifact(str(out_dir / "summary.json"))
            mlflow.log_artifacts(str(out_dir / "data_docs"), "data_docs")
    if not summary["success"] and on_error == "fail":
        lines = [f"  {p}: {'; '.join(problems)}" for p, problems in sorted(summary["offending_files"].items())]
        failed = [e["expectation"] for e in summary["expectations"] if not e["success"]]
        failed += [c["check"] for c in summary["custom"] if not c["success"]]
        print(f"validation FAILED ({', '.join(failed)}); offending files:", *lines[:50], sep="\n", file=sys.stderr)
        print(f"report: {out_dir / 'summary.json'}, data docs: {out_dir / 'data_docs' / 'index.html'}; "
              "fix the files or set validate.on_error: quarantine", file=sys.stderr)
        raise SystemExit(1)
    return summary
