"""Binary classification metrics with percentile-bootstrap confidence intervals.

Class 1 (positive) is COVID. Sensitivity = recall of COVID; specificity = recall of
non-COVID. Intervals: percentile bootstrap over test images (Efron & Tibshirani, 1993).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score, roc_curve


def point_metrics(y_true: np.ndarray, p_covid: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics at one decision threshold.

    Args:
        y_true: int array (N,), 1 = COVID.
        p_covid: float array (N,), P(COVID) in [0, 1].
        threshold: predict COVID when ``p_covid >= threshold``.

    Returns:
        dict of floats: accuracy, auc (NaN if one class only), sensitivity, specificity, f1.
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(p_covid) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float((tp + tn) / max(len(y_true), 1)),
        "auc": float(roc_auc_score(y_true, p_covid)) if both else float("nan"),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
    }


def bootstrap_ci(y_true, p_covid, threshold=0.5, n_boot=1000, seed=0, alpha=0.05) -> dict:
    """Percentile-bootstrap ``(1 - alpha)`` intervals for every metric of :func:`point_metrics`.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}``.
    """
    y_true, p_covid = np.asarray(y_true), np.asarray(p_covid)
    point = point_metrics(y_true, p_covid, threshold)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in point}
    n = len(y_true)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for k, v in point_metrics(y_true[idx], p_covid[idx], threshold).items():
            samples[k].append(v)
    out = {}
    for k, v in point.items():
        arr = np.asarray(samples[k], dtype=float)
        arr = arr[~np.isnan(arr)]
        lo, hi = (np.quantile(arr, [alpha / 2, 1 - alpha / 2]) if len(arr) else (np.nan, np.nan))
        out[k] = {"value": v, "ci_low": float(lo), "ci_high": float(hi)}
    return out


def evaluation_report(y_true, p_covid, threshold=0.5, n_boot=1000, seed=0) -> dict:
    """Metrics with intervals, the confusion matrix and the ROC curve points."""
    y_true = np.asarray(y_true).astype(int)
    p_covid = np.asarray(p_covid, dtype=float)
    cm = confusion_matrix(y_true, (p_covid >= threshold).astype(int), labels=[0, 1])
    fpr, tpr, thr = roc_curve(y_true, p_covid) if len(np.unique(y_true)) == 2 else ([], [], [])
    return {
        "n": int(len(y_true)),
        "threshold": float(threshold),
        "metrics": bootstrap_ci(y_true, p_covid, threshold, n_boot, seed),
        "confusion_matrix": {"labels": ["non_covid", "covid"], "rows_true_cols_pred": cm.tolist()},
        "roc": {"fpr": list(map(float, fpr)), "tpr": list(map(float, tpr)),
                "threshold": [float(min(t, 1.0)) for t in thr]},
    }


def best_threshold(y_true, p_covid) -> float:
    """Threshold maximising balanced accuracy (Youden's J) on the given (validation) data."""
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, p_covid)
    j = tpr - fpr
    t = float(thr[int(np.argmax(j))])
    return float(np.clip(t, 1e-4, 1 - 1e-4))
