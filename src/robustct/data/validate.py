"""Great Expectations suite over the per-image table, plus checks GX cannot express.

Great Expectations is imported inside :func:`run_suite` only, so that other commands
start fast.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .table import LABELS


def expectation_specs(rules: dict) -> list[tuple[str, dict, str]]:
    """The suite as data: ``(GX expectation class name, kwargs, fix hint)``.

    Args:
        rules: the ``validate`` section of params (``min_width``, ``min_height``, ``expected_counts``).
    """
    total = int(sum(rules["expected_counts"].values()))
    return [
        ("ExpectTableRowCountToEqual", dict(value=total),
         f"the dataset must hold {total} images; obtain it again (robustct fetch-data)"),
        ("ExpectColumnValuesToBeInSet", dict(column="decode_ok", value_set=[True]),
         "replace the file with an intact copy"),
        ("ExpectColumnValuesToBeInSet", dict(column="label", value_set=list(LABELS)),
         "move the file into CT_COVID/ or CT_NonCOVID/"),
        ("ExpectColumnValuesToBeInSet", dict(column="in_metadata", value_set=[True]),
         "add a row for the file to the metadata CSV (patient id) or remove the file"),
        ("ExpectColumnValuesToNotBeNull", dict(column="group"), "give the image a patient id"),
        ("ExpectColumnValuesToBeInSet", dict(column="format", value_set=["PNG", "JPEG"]),
         "convert the image to PNG"),
        ("ExpectColumnValuesToBeBetween", dict(column="width", min_value=int(rules["min_width"])),
         "the image is too small to be a CT slice; remove it or lower validate.min_width"),
        ("ExpectColumnValuesToBeBetween", dict(column="height", min_value=int(rules["min_height"])),
         "the image is too small to be a CT slice; remove it or lower validate.min_height"),
        ("ExpectColumnValuesToBeUnique", dict(column="sha256"),
         "exact duplicate content: keep one copy"),
    ]


def custom_checks(table: pd.DataFrame, rules: dict) -> list[dict]:
    """Checks outside GX: per-label counts and duplicate content across labels."""
    results = []
    counts = table[table.decode_ok].label.value_counts().to_dict()
    for label, want in rules["expected_counts"].items():
        got = int(counts.get(label, 0))
        results.append(dict(
            check=f"count[{label}] == {want}", success=got == want, observed=got, offending=[],
            fix="" if got == want else f"expected {want} {label} images, found {got}; obtain the dataset again",
        ))
    dup = table[table.sha256 != ""].groupby("sha256").label.nunique()
    conflict = table[table.sha256.isin(dup[dup > 1].index)].path.tolist()
    results.append(dict(
        check="no identical content under two labels", success=not conflict, observed=len(conflict),
        offending=conflict, fix="" if not conflict else "label conflict: the same image is COVID and non-COVID; remove both",
    ))
    return results


def run_suite(table: pd.DataFrame, rules: dict, docs_dir: Path | None = None) -> dict:
    """Validate the per-image table with Great Expectations.

    Args:
        table: output of :func:`robustct.data.table.build_table`.
        rules: the ``validate`` params section.
        docs_dir: where to copy the GX data-docs HTML site (optional).

    Returns:
        ``{"success", "files_checked", "counts", "expectations": [...], "custom": [...],
        "offending_files": {path: [problems]}}``.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # noqa: PLC0415  (heavy; only this stage needs it)
    import great_expectations.expectations as gxe  # noqa: PLC0415

    table = table.reset_index(drop=True)
    specs = expectation_specs(rules)
    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        ctx = gx.get_context(mode="file", project_root_dir=tmp)
        batch_def = ctx.data_sources.add_pandas("covid_ct").add_dataframe_asset("images") \
            .add_batch_definition_whole_dataframe("all_images")
        suite = ctx.suites.add(gx.ExpectationSuite(name="covid_ct_images"))
        for cls, kwargs, _ in specs:
            suite.add_expectation(getattr(gxe, cls)(**kwargs))
        vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name="images", data=batch_def, suite=suite))
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name="validate", validation_definitions=[vdef],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE"},
        ))
        result = checkpoint.run(batch_parameters={"dataframe": table})
        if docs_dir is not None:
            site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
            shutil.rmtree(docs_dir, ignore_errors=True)
            shutil.copytree(site, docs_dir)
    fixes = {(cls, kw.get("column")): fix for cls, kw, fix in specs}
    expectations, offending = [], {}
    for vres in result.run_results.values():
        for r in vres.results:
            cfg = r.expectation_config
            column = cfg.kwargs.get("column")
            idx = r.result.get("unexpected_index_list") or []
            paths = [table.path[i] for i in idx if isinstance(i, int)]
            name = f"{cfg.type}({column})" if column else cfg.type
            fix = fixes.get((_camel(cfg.type), column), "")
            for p in paths:
                offending.setdefault(p, []).append(f"{name}: {fix}")
            expectations.append(dict(expectation=name, success=bool(r.success),
                                     observed=r.result.get("observed_value"), offending=paths, fix=fix))
    custom = custom_checks(table, rules)
    for c in custom:
        for p in c["offending"]:
            offending.setdefault(p, []).append(f"{c['check']}: {c['fix']}")
    for p, err in zip(table.path, table.error):
        if err and p in offending:
            offending[p].insert(0, err)
    return dict(
        success=all(e["success"] for e in expectations) and all(c["success"] for c in custom),
        files_checked=int(len(table)),
        counts={k: int(v) for k, v in table.label.value_counts().items()},
        expectations=expectations, custom=custom, offending_files=offending,
    )


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
