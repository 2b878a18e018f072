"""Command line: one subcommand per pipeline stage (``robustct <stage> --help``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

STAGES = {
    "fetch-data": "obtain the COVID-CT dataset into data/ (folder or upstream URLs), verified against SHA256SUMS",
    "validate": "per-image table, duplicates, shortcut audit and Great Expectations suite; with "
                "validate.on_error: quarantine offending files are listed in quarantine.csv and left out of the "
                "split, with validate.on_error: fail the stage stops with a non-zero exit",
    "split": "train/val/test grouped by patient, stratified by label",
    "train": "transfer-learning classifier; checkpoint chosen on validation; MLflow run",
    "evaluate": "one candidate's clean test metrics with 95% bootstrap intervals, ROC, confusion matrix",
    "attack": "one candidate's worst-case robust accuracy (attack.worst_case cascade), FGSM paper grid, every "
              "suite attack (attack.suite; attacks: {attacks}), targeted scenarios, minimal epsilon, "
              "perceptibility, sanity flags",
    "defend": "train the defended candidate (defend.method); evaluate and attack judge it like every candidate",
    "promote": "register candidates in the MLflow Model Registry; `champion` only on a gate pass, removed when it "
               "fails the current gate",
    "report": "write the results page (docs/results/) from the run's outputs and log it with the promote run",
    "gate": "CI gate: exit 0 if the candidate passes every check of params.yaml gate, else 1",
}
"""Subcommand -> one-line description (plain text: argparse ``%`` escaping is applied where needed)."""

UPSTREAM = "https://github.com/UCSD-AI4H/COVID-CT/raw/master"
UPSTREAM_FILES = {
    "CT_COVID.zip": f"{UPSTREAM}/Images-processed/CT_COVID.zip",
    "CT_NonCOVID.zip": f"{UPSTREAM}/Images-processed/CT_NonCOVID.zip",
    "COVID-CT-MetaInfo.csv": f"{UPSTREAM}/Data-split/COVID-CT-MetaInfo.csv",
    "NonCOVID-CT-MetaInfo.csv": f"{UPSTREAM}/Data-split/NonCOVID-CT-MetaInfo.csv",
    **{f"official_split/{rel}": f"{UPSTREAM}/Data-split/{rel}" for rel in (
        "COVID/trainCT_COVID.txt", "COVID/valCT_COVID.txt", "COVID/testCT_COVID.txt",
        "NonCOVID/trainCT_NonCOVID.txt", "NonCOVID/valCT_NonCOVID.txt", "NonCOVID/testCT_NonCOVID.txt")},
}


def build_parser() -> argparse.ArgumentParser:
    from .attack_registry import ATTACK_SPECS  # noqa: PLC0415  (no torch; the one list of attack names)

    parser = argparse.ArgumentParser(prog="robustct", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in STAGES.items():
        text = text.format(attacks=", ".join(ATTACK_SPECS)) if name == "attack" else text
        p = sub.add_parser(name, help=text.replace("%", "%%"), description=text)  # help= is %-formatted
        p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
        if name not in ("fetch-data", "gate", "split"):
            p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
        if name == "fetch-data":
            p.add_argument("--source", help="local COVID-CT folder (default: params data.source)")
            p.add_argument("--split-source", help="folder with the authors' official split lists "
                           "(default: params data.split_source, else covid-ct-official-split next to --source)")
            p.add_argument("--url", action="store_true",
                           help="download the upstream archives and metadata instead of copying a folder")
        if name in ("gate", "evaluate", "attack"):
            p.add_argument("--candidate", default="defended" if name == "gate" else "baseline",
                           help="a name of params.yaml candidates (default: %(default)s)")
        if name in ("evaluate", "attack"):
            p.add_argument("--model-dir", help="folder with the candidate's model.pt and run.json "
                                               "(default: params.yaml candidates.<candidate>.model)")
    cmp = sub.add_parser("cv-compare", help=CV_COMPARE, description=CV_COMPARE)
    cmp.add_argument("challenger", help="cv.json of the challenger recipe (outputs/train/cv.json or the MLflow "
                                        "artifact of its train run)")
    cmp.add_argument("default", help="cv.json of the current default recipe, cross-validated on the same folds")
    cmp.add_argument("--min-folds-higher", type=int, help="folds on which the challenger's accuracy must be "
                                                          "higher (default: a majority of the folds)")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    ens = sub.add_parser("cv-ensemble", help=CV_ENSEMBLE, description=CV_ENSEMBLE)
    ens.add_argument("results", nargs="+", help="two or more cv.json files of the members (e.g. one recipe with "
                                                 "different train.seed)")
    ens.add_argument("--json", action="store_true", help="print the estimate as JSON")
    return parser


CV_COMPARE = ("compare two recipes' cross-validation results (train.cv_folds) image by image: pooled accuracy "
              "and AUC, per-fold accuracy, images gained and lost, exact sign test; exit 0 if the challenger "
              "passes the adoption rule of docs/models.md, else 1")


def json_safe(obj):
    """``obj`` with every non-finite float (an AUC of one class only is NaN) replaced by None, so that
    ``json.dumps`` writes strict JSON (``null``) instead of the bare ``NaN`` other parsers refuse."""
    import math  # noqa: PLC0415

    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


CV_ENSEMBLE = ("estimate a deep ensemble's held-out accuracy and AUC from existing cross-validation results "
               "(train.cv_folds), without training it: every image's out-of-fold P(COVID) averaged over the "
               "members, against each member (images gained and lost, exact sign test); exit 0, or 2 on "
               "unreadable or incompatible files")


def cv_ensemble_main(args) -> int:
    """``robustct cv-ensemble``: print :func:`robustct.crossval.ensemble_out_of_fold`; exit 0, or 2 on unreadable
    or incompatible files."""
    import json  # noqa: PLC0415

    from .crossval import ensemble_out_of_fold  # noqa: PLC0415

    try:
        res = ensemble_out_of_fold([json.loads(Path(f).read_text()) for f in args.results], names=args.results)
    except (OSError, json.JSONDecodeError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(json_safe(res), indent=2, allow_nan=False))
        return 0

    def line(m: dict) -> str:
        return (f"pooled accuracy {m['accuracy']:.3f} AUC {m['auc']:.3f} sensitivity {m['sensitivity']:.3f} "
                f"specificity {m['specificity']:.3f}")

    for i, (f, m, v) in enumerate(zip(args.results, res["members"], res["versus_members"]), start=1):
        print(f"member {i} ({f}, seed {m['seed']}): {line(m)} | ensemble gains {v['gained']}, loses {v['lost']} "
              f"(sign test p = {v['sign_test_p']:.2f})")
    print(f"member mean: {line(res['member_mean'])}")
    print(f"ensemble of {res['k']} (mean P(COVID), {res['images']} images, "
          f"{'same' if res['same_folds'] else 'different'} folds): {line(res['ensemble'])}")
    return 0


def cv_compare_main(args) -> int:
    """``robustct cv-compare``: print :func:`robustct.crossval.compare_out_of_fold`; exit 0 on a pass, 1 if the
    challenger does not pass, 2 on unreadable or incomparable files."""
    import json  # noqa: PLC0415

    from .crossval import compare_out_of_fold  # noqa: PLC0415

    try:
        a, b = (json.loads(Path(f).read_text()) for f in (args.challenger, args.default))
        res = compare_out_of_fold(a, b, args.min_folds_higher)
    except (OSError, json.JSONDecodeError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(json_safe(res), indent=2, allow_nan=False))
    else:
        for name in ("challenger", "default"):
            p = res["pooled"][name]
            folds = " ".join(f"{v:.3f}" for v in res["fold_accuracy"][name])
            print(f"{name:>10}: pooled accuracy {p['accuracy']:.3f} AUC {p['auc']:.3f} sensitivity "
                  f"{p['sensitivity']:.3f} specificity {p['specificity']:.3f} | per-fold accuracy {folds}")
        print(f"challenger higher on {res['folds_higher']} folds ({res['folds_equal']} equal); images gained "
              f"{res['gained']}, lost {res['lost']} (two-sided exact sign test p = {res['sign_test_p']:.2f})")
        need = res["detectable_net_gain"]
        discordant = res["gained"] + res["lost"]
        print(f"with {discordant} discordant images the sign test detects only a net gain of >= {need} images "
              f"({need / res['images']:.3f} accuracy) at p < 0.05" if need is not None else
              f"with {discordant} discordant images no split reaches p < 0.05 in the sign test (it needs >= 6)")
        print(f"rule ({res['rule']}): {'PASS' if res['passes'] else 'not passed'}")
    return 0 if res["passes"] else 1


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a CI timeout, a stopped ``dvc exp`` worker) into ``SystemExit(143)``.

    By default SIGTERM ends the process on the spot: an open MLflow run stays ``RUNNING`` in the store forever and
    no ``finally`` block or ``with`` exit runs. As an exception it unwinds the stage like an error does:
    ``mlflow.start_run``'s context marks the run ``FAILED`` and temporary directories are removed.
    """
    import signal  # noqa: PLC0415

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_sigterm()
    if hasattr(sys.stdout, "reconfigure"):  # under `dvc repro` stdout is a pipe: show progress lines as they happen
        sys.stdout.reconfigure(line_buffering=True)
    from .params import ParamsError, load_params  # noqa: PLC0415

    if args.command == "cv-compare":
        return cv_compare_main(args)
    if args.command == "cv-ensemble":
        return cv_ensemble_main(args)
    try:
        params = load_params(args.params)
    except (ParamsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data_root = Path(params.get("data", {}).get("root", "data"))
    track = not getattr(args, "no_track", False)
    cmd = args.command
    if cmd == "fetch-data":
        from .data import ingest  # noqa: PLC0415

        try:
            if args.url:
                changed = ingest.fetch_from_urls(UPSTREAM_FILES, data_root)
            else:
                split_source = args.split_source or params["data"].get("split_source")
                changed = ingest.fetch_from_folder(Path(args.source or params["data"]["source"]), data_root,
                                                   split_source=Path(split_source) if split_source else None)
        except (ingest.ChecksumError, FileNotFoundError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{data_root}: {'installed and verified' if changed else 'already present and verified'}")
        return 0
    if cmd in ("gate", "evaluate", "attack") and args.candidate not in params["candidates"]:
        print(f"error: unknown candidate {args.candidate!r}; valid: {', '.join(params['candidates'])} "
              f"(params.yaml candidates)", file=sys.stderr)
        return 2
    if cmd == "gate":
        from .stages.promote import gate_main  # noqa: PLC0415

        try:
            return gate_main(params, args.candidate)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    import importlib  # noqa: PLC0415

    stage = importlib.import_module(f".stages.{cmd}", __package__)
    kwargs = {"track": track} if cmd != "split" else {}
    if cmd in ("validate", "split", "train", "evaluate", "attack", "defend"):
        kwargs["data_root"] = data_root
    if cmd in ("evaluate", "attack"):
        kwargs["candidate"] = args.candidate
        kwargs["model_dir"] = Path(args.model_dir or params["candidates"][args.candidate]["model"])
    try:
        stage.run(params, **kwargs)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
