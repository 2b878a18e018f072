"""Great Expectations suite over the per-image table, plus checks GX cannot express.

The suite is code (:func:`expectation_specs`): one GX expectation per rule that is a property
of one row or one column (decodes completely, known label folder, metadata row, format, minimum
size, unique content). Rules over pairs of images (a duplicate under two labels) and the
expected per-label counts are :func:`custom_checks`, reported alongside in the same summary.
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
         "unknown label folder: move the file into CT_COVID/ or CT_NonCOVID/, or delete the folder"),
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


def custom_checks(table: pd.DataFrame, rules: dict, pairs: pd.DataFrame | None = None) -> list[dict]:
    """Checks outside GX: per-label counts and duplicates under two labels.

    Args:
        table: the per-image table.
        rules: the ``validate`` params section (``expected_counts``).
        pairs: :func:`robustct.data.duplicates.find_duplicates` output; without it only
            identical content (SHA-256) is compared across labels.

    Returns:
        ``[{check, success, observed, offending: [paths], fix}, ...]``.
    """
    results = []
    counts = table[table.decode_ok.astype(bool)].label.value_counts().to_dict()
    for label, want in rules["expected_counts"].items():
        got = int(counts.get(label, 0))
        results.append(dict(
            check=f"count[{label}] == {want}", success=got == want, observed=got, offending=[],
            fix="" if got == want else f"expected {want} {label} images, found {got}; obtain the dataset again",
        ))
    if pairs is None:
        dup = table[table.sha256 != ""].groupby("sha256").label.nunique()
        conflict = table[table.sha256.isin(dup[dup > 1].index)].path.tolist()
    else:
        hits = pairs[pairs.kind == "label_conflict"]
        conflict = sorted(set(hits.path_a) | set(hits.path_b))
    results.append(dict(
        check="no identical or near-duplicate image under two labels", success=not conflict,
        observed=len(conflict), offending=conflict,
        fix="" if not conflict else "label conflict: the same image is COVID and non-COVID "
        "(see near_duplicates.csv); remove both or correct the label",
    ))
    return results


def run_suite(table: pd.DataFrame, rules: dict, docs_dir: Path | None = None,
              pairs: pd.DataFrame | None = None) -> dict:
    """Validate the per-image table with Great Expectations and :func:`custom_checks`.

    Args:
        table: output of :func:`robustct.data.table.build_table`.
        rules: the ``validate`` params section.
        docs_dir: where to put the GX data-docs HTML site (optional); replaced in one rename.
        pairs: duplicate pairs for the cross-label check (see :func:`custom_checks`).

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
            docs_dir = Path(docs_dir)
            staging = docs_dir.with_name(docs_dir.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(site, staging)
            shutil.rmtree(docs_dir, ignore_errors=True)
            staging.rename(docs_dir)
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
    custom = custom_checks(table, rules, pairs)
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
