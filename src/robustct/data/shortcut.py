"""Shortcut audit: can a trivial classifier predict the label from file properties alone?

If the file format, colour mode or size predicts the label, a CNN can learn the encoding
instead of the lungs (on COVID-CT every RGBA image is COVID). The audit fits a depth-3
decision tree (scikit-learn) on such properties and reports its cross-validated ROC AUC,
once on the raw file properties and once on properties of the preprocessed images (all the
model sees: intensity statistics of a (size, size) grayscale image). Folds are grouped by
patient (``StratifiedGroupKFold``), so slices of one patient never sit on both sides.

An AUC near 0.5 means the properties carry no label information; 1.0 means they give it away.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .table import PROCESSED_COLUMNS

RAW_CATEGORICAL = ("extension", "format", "mode")
RAW_NUMERIC = ("bit_depth", "width", "height", "aspect_ratio", "bytes")
RAW_PROPERTIES = RAW_CATEGORICAL + RAW_NUMERIC
PROCESSED_PROPERTIES = PROCESSED_COLUMNS


def _features(table: pd.DataFrame, columns) -> pd.DataFrame:
    derived = {"aspect_ratio": lambda t: t.width / t.height.where(t.height > 0),
               "extension": lambda t: t.path.str.extract(r"(\.[^./]*)$", expand=False).str.lower().fillna("")}
    return table.assign(**{c: f for c, f in derived.items() if c in columns})[list(columns)]


def cross_validated_auc(table: pd.DataFrame, columns, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated ROC AUC of a depth-3 decision tree predicting ``label_index`` from ``columns``.

    Args:
        table: rows with ``label_index`` (0/1), ``group`` (patient) and the property columns
            (categorical: extension, format, mode; ``extension`` is derived from ``path`` and
            ``aspect_ratio`` from width and height).
        columns: property names, any of :data:`RAW_PROPERTIES` or :data:`PROCESSED_PROPERTIES`.
        folds: number of patient-grouped, label-stratified folds (2..20).
        seed: fold shuffling seed; the tree itself is deterministic.

    Returns:
        ``{"auc": mean fold AUC in [0, 1], "auc_std", "fold_aucs": [...], "n": rows used}``.

    Raises:
        ValueError: fewer than ``folds`` patients of each label, or one label only.
    """
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415  (only validation needs sklearn)
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import OneHotEncoder  # noqa: PLC0415
    from sklearn.tree import DecisionTreeClassifier  # noqa: PLC0415

    columns = list(columns)
    x = _features(table, columns)
    y = table.label_index.to_numpy()
    groups = table.group.to_numpy()
    for label in (0, 1):
        n_groups = len(set(groups[y == label]))
        if n_groups < folds:
            raise ValueError(f"shortcut audit: {n_groups} patient(s) with label {label}, need at least "
                             f"{folds} (validate.shortcut.folds); lower the number of folds")
    cat = [c for c in columns if c in RAW_CATEGORICAL]
    num = [c for c in columns if c not in RAW_CATEGORICAL]
    model = make_pipeline(
        ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cat), ("num", "passthrough", num)]),
        DecisionTreeClassifier(max_depth=3, min_samples_leaf=5, random_state=0),
    )
    x = x.astype({c: str for c in cat}).fillna({c: 0.0 for c in num})
    aucs = []
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups):
        if len(set(y[test])) < 2:
            continue
        model.fit(x.iloc[train], y[train])
        aucs.append(float(roc_auc_score(y[test], model.predict_proba(x.iloc[test])[:, 1])))
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "fold_aucs": aucs, "n": int(len(y))}


def audit(table: pd.DataFrame, max_auc: float, folds: int = 5, seed: int = 0) -> dict:
    """The full audit on the usable rows (decoded, known label) of the per-image table.

    Returns:
        ``{"raw": {...}, "processed": {...}, "max_auc", "warnings": [text, ...]}`` where ``raw``
        and ``processed`` are :func:`cross_validated_auc` results over all their properties,
        each with ``per_property`` AUCs of every property alone. A warning is added for each
        of raw / processed whose AUC exceeds ``max_auc``.
    """
    usable = table[table.decode_ok.astype(bool) & table.label_index.isin([0, 1])].reset_index(drop=True)
    out: dict = {"max_auc": float(max_auc), "warnings": []}
    for name, cols in (("raw", RAW_PROPERTIES), ("processed", PROCESSED_PROPERTIES)):
        res = cross_validated_auc(usable, cols, folds, seed)
        res["properties"] = list(cols)
        res["per_property"] = {c: round(cross_validated_auc(usable, [c], folds, seed)["auc"], 4) for c in cols}
        out[name] = res
        if res["auc"] > max_auc:
            top = max(res["per_property"], key=res["per_property"].get)
            out["warnings"].append(
                f"shortcut: {name} properties predict the label with cross-validated AUC {res['auc']:.3f} "
                f"> validate.shortcut.max_auc {max_auc} (strongest alone: {top}, AUC "
                f"{res['per_property'][top]:.3f}); the model could learn the encoding instead of the image"
                + ("; the preprocessing removes these properties, check the 'processed' AUC" if name == "raw" else
                   "; normalise what differs between the classes (borders, intensity range) before training")
            )
    return out
