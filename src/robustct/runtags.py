"""MLflow run-context provider: every run carries the validation's shortcut-audit verdict.

Registered through the ``mlflow.run_context_provider`` entry point (``pyproject.toml``), so
every ``mlflow.start_run`` in this project (train, attack, defend, promote, ...) gets, while
``outputs/validate/shortcut_audit.json`` exists in the working directory, the tags

- ``data.shortcut_warning``: ``none`` or the audits above the threshold (``raw``, ``processed``);
- ``data.shortcut_auc_raw`` / ``data.shortcut_auc_processed``: cross-validated AUCs (3 decimals).

Kept free of imports of MLflow itself: MLflow imports this module while it initialises (its context
registry loads the entry points), so a module-level ``from mlflow... import RunContextProvider`` here
made a circular import whenever this module was imported before ``mlflow`` (the provider then failed to
register, with only a warning). The provider implements the two methods of MLflow's
``RunContextProvider`` interface (``in_context``, ``tags``), which is all the registry calls.
"""
from __future__ import annotations

import json
from pathlib import Path

AUDIT_FILE = Path("outputs") / "validate" / "shortcut_audit.json"


def shortcut_tags(audit_file: Path = AUDIT_FILE) -> dict[str, str]:
    """The tags for an audit file written by the validate stage (empty dict if none or unreadable)."""
    try:
        audit = json.loads(Path(audit_file).read_text())
    except (OSError, ValueError):
        return {}
    if "skipped" in audit:
        return {"data.shortcut_warning": "audit skipped"}
    tags, above = {}, []
    for name in ("raw", "processed"):
        if name in audit:
            auc = float(audit[name]["auc"])
            tags[f"data.shortcut_auc_{name}"] = f"{auc:.3f}"
            if auc > float(audit["max_auc"]):
                above.append(name)
    tags["data.shortcut_warning"] = ",".join(above) or "none"
    return tags


class ShortcutAuditContext:
    """Adds :func:`shortcut_tags` to every run started while the audit file exists."""

    def in_context(self) -> bool:
        return AUDIT_FILE.is_file()

    def tags(self) -> dict[str, str]:
        return shortcut_tags(AUDIT_FILE)
