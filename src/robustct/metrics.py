"""Binary classification metrics with percentile-bootstrap confidence intervals.

Class 1 (positive) is COVID. Sensitivity = recall of COVID; specificity = recall of
non-COVID. Intervals: percentile bootstrap (Efron & Tibshirani, 1993) over test images, or,
when each image's patient group is given, the cluster bootstrap: patients are resampled with
replacement and every resampled patient contributes all its images (Field & Welsh, 2007,
"Bootstrapping clustered data"; Davison & Hinkley, 1997, sec. 3.8). Slices of one patient are
correlated, so resampling images understates the uncertainty.
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


IMAGE_BOOTSTRAP = "percentile bootstrap over images"
CLUSTER_BOOTSTRAP = "percentile cluster bootstrap over patients"


def interval_method(groups=None) -> str:
    """Name of the interval method :func:`bootstrap_ci` uses for these ``groups``."""
    return IMAGE_BOOTSTRAP if groups is None else CLUSTER_BOOTSTRAP


def bootstrap_ci(y_true, p_covid, threshold=0.5, n_boot=1000, seed=0, alpha=0.05, groups=None) -> dict:
    """Percentile-bootstrap ``(1 - alpha)`` intervals for every metric of :func:`point_metrics`.

    Args:
        y_true: int array (N,), 1 = COVID; p_covid: float array (N,) in [0, 1].
        groups: optional array (N,) of cluster keys (patient group per image, any hashable values).
            None: images are resampled (N draws). Given: the G distinct groups are resampled
            (G draws with replacement) and each drawn group contributes all its images, so the
            resample size varies. With one image per group both give identical results.
        n_boot: bootstrap replicates; seed: NumPy generator seed; alpha: two-sided level.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}``; replicates where a metric is undefined
        (e.g. AUC with one class) are skipped for that metric; NaN bounds if none is defined.

    Raises:
        ValueError: ``groups`` does not have one entry per image.
    """
    y_true, p_covid = np.asarray(y_true), np.asarray(p_covid)
    point = point_metrics(y_true, p_covid, threshold)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in point}
    if groups is None:
        members = [np.array([i]) for i in range(len(y_true))]
    else:
        groups = np.asarray(groups)
        if groups.shape != y_true.shape:
            raise ValueError(f"groups has shape {groups.shape}, expected one per image {y_true.shape}")
        _, codes = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)] if len(codes) else []
    n = len(members)
    for _ in range(n_boot):
        drawn = rng.integers(0, n, n)
        idx = np.concatenate([members[g] for g in drawn]) if n else np.array([], dtype=int)
        for k, v in point_metrics(y_true[idx], p_covid[idx], threshold).items():
            samples[k].append(v)
    out = {}
    for k, v in point.items():
        arr = np.asarray(samples[k], dtype=float)
        arr = arr[~np.isnan(arr)]
        lo, hi = (np.quantile(arr, [alpha / 2, 1 - alpha / 2]) if len(arr) else (np.nan, np.nan))
        out[k] = {"value": v, "ci_low": float(lo), "ci_high": float(hi)}
    return out


def evaluation_report(y_true, p_covid, threshold=0.5, n_boot=1000, seed=0, groups=None) -> dict:
    """Metrics with intervals, the confusion matrix and the ROC curve points.

    Args:
        groups: patient group per image (the split CSVs' ``group`` column); given, the intervals are
            the cluster bootstrap over patients (see :func:`bootstrap_ci`). ``interval_method`` and
            ``n_groups`` in the result say which was used.
    """
    y_true = np.asarray(y_true).astype(int)
    p_covid = np.asarray(p_covid, dtype=float)
    cm = confusion_matrix(y_true, (p_covid >= threshold).astype(int), labels=[0, 1])
    fpr, tpr, thr = roc_curve(y_true, p_covid) if len(np.unique(y_true)) == 2 else ([], [], [])
    return {
        "n": int(len(y_true)),
        "threshold": float(threshold),
        "interval_method": interval_method(groups),
        "n_groups": int(len(np.unique(np.asarray(groups)))) if groups is not None else int(len(y_true)),
        "n_boot": int(n_boot),
        "metrics": bootstrap_ci(y_true, p_covid, threshold, n_boot, seed, groups=groups),
        "confusion_matrix": {"labels": ["non_covid", "covid"], "rows_true_cols_pred": cm.tolist()},
        "roc": {"fpr": list(map(float, fpr)), "tpr": list(map(float, tpr)),
                "threshold": [float(min(t, 1.0)) for t in thr]},
    }


def best_threshold(y_true, p_covid, min_gap: float = 1e-5) -> float:
    """Threshold maximising balanced accuracy (Youden's J = sensitivity + specificity - 1) on the given
    (validation) data, placed strictly between two validation scores.

    Candidate rules are "COVID when ``p_covid`` is above a cut", with cuts between adjacent distinct scores
    (as in the ROC curve, :func:`sklearn.metrics.roc_curve`; tied scores always fall on one side). The
    returned threshold is the midpoint, in logit space, of the two scores around the best cut, so no
    validation score equals it and ``p >= t`` and ``p > t`` agree on every validation image; folded into the
    logits (:meth:`robustct.models.Classifier.set_threshold`) the deployed model classifies every validation
    image as the rule that chose it. Scores closer than ``min_gap`` are treated as tied (float32 logits and
    another device's arithmetic cannot separate them reliably). Ties in J go to the cut with the highest
    threshold (fewest COVID calls), as sklearn's ``roc_curve`` + ``argmax`` does.

    Args:
        y_true: int array (N,), 1 = COVID.
        p_covid: float array (N,), P(COVID) in [0, 1].
        min_gap: scores closer than this (probability units) count as one score.

    Returns:
        float in (0, 1); 0.5 when only one class is present.
    """
    y_true = np.asarray(y_true).astype(int)
    p = np.asarray(p_covid, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        return 0.5
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y_true[order]
    # group (descending) scores: a new group starts where the gap to the previous score is >= min_gap
    starts = np.r_[True, (p[:-1] - p[1:]) >= min_gap]
    gid = np.cumsum(starts) - 1
    n_groups = gid[-1] + 1
    pos = np.bincount(gid, weights=y, minlength=n_groups)
    neg = np.bincount(gid, weights=1 - y, minlength=n_groups)
    # cut k: the first k groups are called COVID (k = 0 .. n_groups)
    tpr = np.r_[0.0, np.cumsum(pos)] / pos.sum()
    fpr = np.r_[0.0, np.cumsum(neg)] / neg.sum()
    k = int(np.argmax(tpr - fpr))
    first = np.flatnonzero(starts)
    group_hi, group_lo = p[first], p[np.r_[first[1:] - 1, len(p) - 1]]  # highest / lowest score of each group
    upper = _logit(group_lo[k - 1]) if k > 0 else _LOGIT_MAX  # lowest score called COVID
    lower = _logit(group_hi[k]) if k < n_groups else -_LOGIT_MAX  # highest score not called COVID
    return float(1.0 / (1.0 + np.exp(-(upper + lower) / 2)))


_LOGIT_MAX = 30.0  # sigmoid(30) = 1 - 9.4e-14: thresholds stay inside (0, 1) in float64


def _logit(p: float) -> float:
    p = float(np.clip(p, 1.0 / (1.0 + np.exp(_LOGIT_MAX)), 1.0 / (1.0 + np.exp(-_LOGIT_MAX))))
    return float(np.clip(np.log(p / (1 - p)), -_LOGIT_MAX, _LOGIT_MAX))
