"""Patient-grouped, label-stratified k-fold cross-validation of a training recipe.

For comparing training recipes without touching the test split: the train and validation
splits are pooled, cut into ``k`` folds with no patient group in two folds (scikit-learn's
``StratifiedGroupKFold``), and for each fold the recipe is trained on the other folds and
scored on it. Inside the training folds, one more patient-grouped fold is held back for the
recipe's own checkpoint and threshold selection, so the scored fold is never used to select.

The tracker (``mlflow``) is passed in: each fold becomes a nested (child) run of the active run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from .metrics import point_metrics

#: ``train_fold(train, select, held_out_x) -> P(COVID) per held-out image`` (float array in [0, 1]);
#: ``train`` and ``select`` are ``(x, y)`` tensor pairs as the train stage uses them.
TrainFold = Callable[[tuple, tuple, torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class FoldResult:
    """One fold: sizes and held-out metrics (decision at P(COVID) >= 0.5, the model's folded threshold)."""

    fold: int
    n_train: int
    n_select: int
    n_held_out: int
    held_out_groups: int
    accuracy: float
    auc: float


@dataclass(frozen=True)
class CVResult:
    """Fold results with mean and sample standard deviation (ddof=1) of accuracy and AUC, and the
    out-of-fold predictions: ``p_covid[i]`` (float in [0, 1]) is image ``i``'s P(COVID) from the one
    model that did not train on it, ``fold[i]`` the fold that held it out (both length N, in input order).
    """

    k: int
    seed: int
    folds: list[FoldResult] = field(default_factory=list)
    y: np.ndarray | None = None
    p_covid: np.ndarray | None = None
    fold: np.ndarray | None = None

    def pooled(self) -> dict:
        """Metrics of all N out-of-fold predictions together (threshold 0.5): one number per recipe that
        does not weight small folds up; accuracy, auc, sensitivity, specificity, f1 (floats)."""
        if self.p_covid is None:
            raise ValueError("no out-of-fold predictions stored (CVResult built without y/p_covid)")
        return point_metrics(self.y, self.p_covid, 0.5)

    def summary(self, metric: str) -> dict:
        v = np.array([getattr(f, metric) for f in self.folds], dtype=float)
        return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else float("nan"),
                "min": float(np.nanmin(v)), "max": float(np.nanmax(v))}

    def to_dict(self, paths: list[str] | None = None) -> dict:
        """The ``cv.json`` contents. With ``paths`` (N image paths, input order) also ``out_of_fold``:
        ``{"path", "fold", "y", "p_covid"}`` lists, what :func:`compare_out_of_fold` pairs images by."""
        d = {"k": self.k, "seed": self.seed, "method": "patient-grouped stratified k-fold (StratifiedGroupKFold)",
             "accuracy": self.summary("accuracy"), "auc": self.summary("auc"),
             "folds": [asdict(f) for f in self.folds]}
        if self.p_covid is not None:
            d["pooled_out_of_fold"] = self.pooled()
            if paths is not None:
                if len(paths) != len(self.p_covid):
                    raise ValueError(f"{len(paths)} paths for {len(self.p_covid)} out-of-fold predictions")
                d["out_of_fold"] = {"path": list(paths), "fold": self.fold.tolist(), "y": self.y.tolist(),
                                    "p_covid": [round(float(v), 6) for v in self.p_covid]}
        return d


def patient_folds(labels, groups, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train indices, held-out indices) pairs; no group in both, labels stratified.

    Args:
        labels: int array (N,); groups: array (N,) of patient group keys.
        k: folds (>= 2); seed: shuffling seed.

    Raises:
        ValueError: ``k < 2`` or fewer groups of a label than ``k`` (names the counts).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if k < 2:
        raise ValueError(f"cross-validation needs k >= 2 folds, got {k}")
    for lab in np.unique(labels):
        n = len(np.unique(groups[labels == lab]))
        if n < k:
            raise ValueError(f"label {lab} has {n} patient groups, fewer than the {k} folds")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in cv.split(np.zeros(len(labels)), labels, groups)]


def nested_folds(labels, groups, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``k`` (fit, select, held-out) index triples: :func:`patient_folds`, and inside each fold's training
    part one more patient-grouped fold (seed ``seed + 1 + fold``) held back for checkpoint and threshold
    selection. No patient group is in two parts of a triple.

    Raises:
        ValueError: as :func:`patient_folds`.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    out = []
    for i, (tr, ho) in enumerate(patient_folds(labels, groups, k, seed)):
        fit_rel, sel_rel = patient_folds(labels[tr], groups[tr], k, seed + 1 + i)[0]
        out.append((tr[fit_rel], tr[sel_rel], ho))
    return out


def cross_validate(x: torch.Tensor, y: torch.Tensor, groups, k: int, seed: int, train_fold: TrainFold,
                   tracker=None, progress: Callable[[str], None] | None = print) -> CVResult:
    """Run the recipe ``train_fold`` on each of ``k`` patient-grouped folds.

    Args:
        x: (N, 1, H, W) images (uint8 or float in [0, 1]); y: int64 (N,) labels, 1 = COVID.
        groups: (N,) patient group keys.
        train_fold: trains on ``train``, selects on ``select`` (a patient-grouped part of the training
            folds), returns P(COVID) for ``held_out_x``.
        tracker: ``mlflow`` (module or client with ``start_run(run_name=, nested=True)`` and
            ``log_metrics``) or None; each fold is a child run of the active run.
        progress: one line per fold (None: silent).

    Returns:
        :class:`CVResult` with every image's out-of-fold P(COVID).

    Raises:
        ValueError: as :func:`patient_folds`, or ``train_fold`` returned a wrong number of probabilities.
    """
    y_np, groups = y.cpu().numpy(), np.asarray(groups)
    folds = []
    oof, fold_of = np.full(len(y_np), np.nan), np.full(len(y_np), -1)
    for i, (fit_idx, sel_idx, ho) in enumerate(nested_folds(y_np, groups, k, seed)):

        def one_fold():
            p = np.asarray(train_fold((x[fit_idx], y[fit_idx]), (x[sel_idx], y[sel_idx]), x[ho]), dtype=float)
            if p.shape != (len(ho),):
                raise ValueError(f"fold {i}: the recipe returned {p.shape} probabilities for {len(ho)} held-out images")
            oof[ho], fold_of[ho] = p, i
            m = point_metrics(y_np[ho], p, 0.5)
            return FoldResult(i, len(fit_idx), len(sel_idx), len(ho), int(len(np.unique(groups[ho]))),
                              m["accuracy"], m["auc"])

        if tracker is None:
            res = one_fold()
        else:
            with tracker.start_run(run_name=f"cv-fold-{i}", nested=True):
                tracker.log_params({"cv_fold": i, "cv_k": k, "cv_seed": seed})
                res = one_fold()
                tracker.log_metrics({"cv_accuracy": res.accuracy, "cv_auc": res.auc})
        folds.append(res)
        if progress:
            progress(f"cv fold {i + 1}/{k}: held-out accuracy {res.accuracy:.3f} auc {res.auc:.3f} "
                     f"({res.n_held_out} images, {res.held_out_groups} patients)")
    res = CVResult(k, seed, folds, y_np.astype(int), oof, fold_of)
    if tracker is not None:  # on the parent run: the numbers a recipe comparison reads
        pooled = res.pooled()
        tracker.log_metrics({"cv_pooled_accuracy": pooled["accuracy"], "cv_pooled_auc": pooled["auc"],
                             "cv_mean_accuracy": res.summary("accuracy")["mean"],
                             "cv_mean_auc": res.summary("auc")["mean"]})
    return res


def min_detectable_net_gain(discordant: int, alpha: float = 0.05) -> int | None:
    """The smallest net gain (images gained minus images lost) that the two-sided exact sign test calls
    significant (p < ``alpha``) when ``discordant`` images are right under only one of two recipes.

    It says what size of difference a paired comparison of that many discordant images can detect at all:
    e.g. 60 discordant images need a 39 / 21 split (net 18). scipy ``binomtest`` (exact binomial test, p = 0.5).

    Args:
        discordant: images right under exactly one recipe, >= 0.
        alpha: significance level in (0, 1).

    Returns:
        The net gain in images (same parity as ``discordant``), or None when even ``discordant`` / 0 is not
        significant (fewer than 6 discordant images at alpha 0.05).

    Raises:
        ValueError: ``discordant`` < 0 or ``alpha`` outside (0, 1).
    """
    from scipy.stats import binomtest  # noqa: PLC0415

    if discordant < 0 or not 0 < alpha < 1:
        raise ValueError(f"need discordant >= 0 and 0 < alpha < 1, got {discordant} and {alpha}")
    for gained in range((discordant + 1) // 2, discordant + 1):
        if discordant and binomtest(gained, discordant).pvalue < alpha:
            return 2 * gained - discordant
    return None


def _out_of_fold_table(d: dict, name: str) -> dict:
    """``d["out_of_fold"]`` as arrays sorted by image path (what pairs two results image by image), after checking
    that it is one well-formed table; ``name`` says which result in the error.

    Raises:
        ValueError: not a JSON object, no ``out_of_fold`` table, a missing key, lists of different lengths, a
            path listed twice, labels other than 0/1, or P(COVID) outside [0, 1] or not finite.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{name}: not a cv.json object (top level is {type(d).__name__})")
    oof = d.get("out_of_fold")
    if not oof:
        raise ValueError(f"{name} has no out_of_fold predictions (written by the train stage with "
                         "train.cv_folds > 0 since 2026-11-30; rerun that trial)")
    keys = ("path", "fold", "y", "p_covid")
    missing = [key for key in keys if not isinstance(oof.get(key), list)]
    if missing:
        raise ValueError(f"{name}: out_of_fold lacks the list(s) {', '.join(missing)}")
    lengths = {key: len(oof[key]) for key in keys}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{name}: out_of_fold lists of different lengths {lengths}: a damaged cv.json")
    if len(set(oof["path"])) != len(oof["path"]):
        raise ValueError(f"{name}: an image path is listed more than once in out_of_fold")
    try:
        p = np.asarray(oof["p_covid"], dtype=float)
        y = np.asarray(oof["y"], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: non-numeric y or p_covid in out_of_fold ({exc})") from None
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"{name}: p_covid must be probabilities in [0, 1] (found values from {np.nanmin(p):g} to "
                         f"{np.nanmax(p):g}, or not finite)")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"{name}: labels y must be 0 or 1")
    order = np.argsort(oof["path"], kind="stable")
    return {"path": np.asarray(oof["path"])[order], "fold": np.asarray(oof["fold"])[order],
            "y": y.astype(int)[order], "p_covid": p[order]}


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two fold-label arrays cut the images into the same groups (whatever the fold numbers)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def ensemble_out_of_fold(results: list[dict], names: list[str] | None = None) -> dict:
    """Out-of-fold estimate of a deep ensemble from cross-validation results that already exist, without training it.

    Each result (a ``cv.json``) holds, for every image, P(COVID) from a model that did not train on that image.
    Averaging the K results' probabilities image by image therefore gives every image a prediction from K models
    none of which saw it: the held-out performance of a K-member ensemble (probability averaging, as in
    Lakshminarayanan et al., NeurIPS 2017, "Simple and scalable predictive uncertainty estimation using deep
    ensembles"). The members may come from different ``train.seed`` values, whose fold assignments differ: each
    member then trained on a different ~(k-1)/k of the images, as bagged members do, and the estimate stays
    held out, but that extra diversity is one a deployed seed ensemble (every member fitted on the same images)
    would not have; members cross-validated on the same folds (``train.cv_seed``) estimate that one. On COVID-CT
    the different-fold pairs gained about twice what the same-fold pair did (docs/models.md, round 11).

    Args:
        results: K >= 2 ``cv.json`` contents (``out_of_fold`` = ``{"path", "fold", "y", "p_covid"}`` lists) on the
            same images and labels, matched by path.
        names: what to call each result in errors (e.g. its file name); default "result 1", "result 2", ...

    Returns:
        dict: ``members`` (pooled accuracy, AUC, sensitivity, specificity of each result at threshold 0.5, with
        its training ``seed``: ``train_seed``, else the folds' ``seed``), ``member_mean`` (their means),
        ``ensemble`` (the same metrics of the averaged probabilities), ``versus_members`` (per member: images the
        ensemble gets right that the member gets wrong = ``gained``, the reverse = ``lost``, the two-sided exact
        sign test p, scipy ``binomtest``), ``images``,
        ``k`` (members) and ``same_folds`` (True when every member cut the images into the same folds). The
        averaged probability is rounded to 9 decimals before the 0.5 threshold, so the order of the members
        cannot tip an exact tie.

    Raises:
        ValueError: fewer than two results, a malformed result (:func:`_out_of_fold_table`), different images or
            labels, or two results whose predictions agree to 1e-6 on every image (the same run given twice would
            count one model as two).
    """
    from scipy.stats import binomtest  # noqa: PLC0415

    if len(results) < 2:
        raise ValueError(f"an ensemble needs at least 2 cross-validation results, got {len(results)}")
    names = list(names) if names is not None else [f"result {i + 1}" for i in range(len(results))]
    if len(names) != len(results):
        raise ValueError(f"{len(names)} names for {len(results)} results")
    tables = [_out_of_fold_table(d, n) for d, n in zip(results, names)]
    first = tables[0]
    for n, t in zip(names[1:], tables[1:]):
        if not np.array_equal(t["path"], first["path"]):
            raise ValueError(f"{n} holds out different images than {names[0]}: not the same data version")
        if not np.array_equal(t["y"], first["y"]):
            raise ValueError(f"{n} labels the images differently than {names[0]}")
    for i in range(len(tables)):
        for j in range(i + 1, len(tables)):
            if np.allclose(tables[i]["p_covid"], tables[j]["p_covid"], rtol=0, atol=1e-6):
                raise ValueError(f"{names[i]} and {names[j]} have the same predictions: the same run twice")
    y = first["y"]
    p_ens = np.round(np.mean([t["p_covid"] for t in tables], axis=0), 9)
    keys = ("accuracy", "auc", "sensitivity", "specificity")
    members = []
    for d, t in zip(results, tables):
        m = point_metrics(y, t["p_covid"], 0.5)
        members.append({"seed": d.get("train_seed", d.get("seed")), **{key: m[key] for key in keys}})
    ens = point_metrics(y, p_ens, 0.5)
    right_ens = (p_ens >= 0.5) == y
    versus = []
    for t in tables:
        right = (t["p_covid"] >= 0.5) == y
        gained, lost = int((right_ens & ~right).sum()), int((~right_ens & right).sum())
        versus.append({"gained": gained, "lost": lost,
                       "sign_test_p": float(binomtest(gained, gained + lost).pvalue) if gained + lost else 1.0})
    return {"members": members, "member_mean": {key: float(np.mean([m[key] for m in members])) for key in keys},
            "ensemble": {key: ens[key] for key in keys}, "versus_members": versus, "images": int(len(y)),
            "k": len(tables), "same_folds": all(_same_partition(t["fold"], first["fold"]) for t in tables)}


def compare_out_of_fold(challenger: dict, default: dict, min_folds_higher: int | None = None) -> dict:
    """Paired comparison of two recipes' cross-validation results on the same images and folds.

    The adoption rule of docs/models.md: the challenger replaces the default only if its pooled out-of-fold
    accuracy **and** AUC are both higher and its accuracy is higher on at least ``min_folds_higher`` folds
    (default: a majority, ``k // 2 + 1``). Images are matched by path; the exact two-sided sign test on the
    images only one recipe gets right (scipy ``binomtest``) says how far the difference is from chance.

    Args:
        challenger, default: ``cv.json`` contents written by the train stage with ``train.cv_folds`` > 0
            (keys ``k`` and ``out_of_fold`` = ``{"path", "fold", "y", "p_covid"}`` lists).

    Returns:
        dict: ``pooled`` (accuracy, AUC, sensitivity, specificity of each), ``fold_accuracy`` (two lists of
        k), ``folds_higher``, ``folds_equal``, ``gained`` / ``lost`` (images the challenger gets right / wrong
        that the default gets wrong / right, threshold 0.5), ``sign_test_p``, ``detectable_net_gain`` (the
        smallest net gain in images the sign test could call significant at 0.05 with this many discordant images,
        :func:`min_detectable_net_gain`; None if none could be), ``images``, ``passes`` (bool) and ``rule`` (text).

    Raises:
        ValueError: a result without out-of-fold predictions, different images, labels or folds (the two were
            not cross-validated on the same folds and cannot be compared pairwise).
    """
    from scipy.stats import binomtest  # noqa: PLC0415

    a, b = _out_of_fold_table(challenger, "the challenger result"), _out_of_fold_table(default, "the default result")
    if not np.array_equal(a["path"], b["path"]):
        raise ValueError("the two results hold out different images: not the same data version or split")
    if not (np.array_equal(a["y"], b["y"]) and np.array_equal(a["fold"], b["fold"])):
        raise ValueError("the two results use different labels or folds (train.seed or cv_folds differ): "
                         "a paired comparison needs the same folds")
    k = int(challenger["k"])
    need = k // 2 + 1 if min_folds_higher is None else int(min_folds_higher)
    right_a, right_b = (a["p_covid"] >= 0.5) == a["y"], (b["p_covid"] >= 0.5) == b["y"]
    pooled = {n: point_metrics(t["y"], t["p_covid"], 0.5) for n, t in (("challenger", a), ("default", b))}
    acc = {n: [float(r[t["fold"] == f].mean()) for f in range(k)] for n, t, r in
           (("challenger", a, right_a), ("default", b, right_b))}
    higher = sum(x > y for x, y in zip(acc["challenger"], acc["default"]))
    gained, lost = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    passes = (pooled["challenger"]["accuracy"] > pooled["default"]["accuracy"]
              and pooled["challenger"]["auc"] > pooled["default"]["auc"] and higher >= need)
    return {"pooled": {n: {m: pooled[n][m] for m in ("accuracy", "auc", "sensitivity", "specificity")}
                       for n in pooled},
            "fold_accuracy": acc, "folds_higher": int(higher),
            "folds_equal": int(sum(x == y for x, y in zip(acc["challenger"], acc["default"]))),
            "gained": gained, "lost": lost,
            "sign_test_p": float(binomtest(gained, gained + lost).pvalue) if gained + lost else 1.0,
            "detectable_net_gain": min_detectable_net_gain(gained + lost), "images": int(len(a["y"])),
            "passes": bool(passes),
            "rule": f"pooled accuracy and AUC both higher, accuracy higher on >= {need} of {k} folds"}


__all__ = ["CVResult", "FoldResult", "TrainFold", "compare_out_of_fold", "cross_validate", "ensemble_out_of_fold",
           "min_detectable_net_gain", "nested_folds", "patient_folds"]
