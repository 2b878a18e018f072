"""Writing and tracking a robustness sweep: JSON, CSVs, Markdown tables, plots, nested MLflow runs.

Used by the ``attack`` stage for every candidate. The tracker is passed in (``log_sweep``), never imported.
"""
from __future__ import annotations

from pathlib import Path

from . import plots
from .models import LABELS
from .epsilon import format_epsilon
from .robustness import paper_table, predict, standard_suite
from .io import PAPER_FGSM_NON_COVID, flat_sweep_metrics, point_lists, write_csv, write_json
from .progress import section_timer, timed

POINT_FIELDS = ["attack", "epsilon", "n", "clean_accuracy", "robust_accuracy", "robust_accuracy_non_covid",
                "robust_accuracy_covid", "attack_success_rate", "mean_linf", "mean_l2"]
TARGETED_FIELDS = ["attack", "target_mode", "source", "target", "epsilon", "n", "clean_accuracy",
                   "targeted_success_rate", "targeted_success_rate_all", "robust_accuracy", "mean_linf", "mean_l2"]
WORST_CASE_FIELDS = ["attack", "profile", "epsilon", "n", "clean_accuracy", "robust_accuracy", "attacks",
                     "robust_after", "broken_by", "attacked"]
PERCEPTIBILITY_FIELDS = ["attack", "epsilon", "n", "n_success"] + [f"median_{k}" for k in (
    "linf", "l2", "l0", "l0_fraction", "psnr", "ssim")]


def sweep_and_write(model, x, y, cfg: dict, out_dir: Path, progress=print, timings: dict | None = None) -> dict:
    """Run the standard suite and write sweep.json, metrics.json, CSVs, the paper table and plots.

    ``timings`` (None or a dict) receives the wall-clock seconds of each part: those of
    :func:`robustct.robustness.standard_suite`, ``paper_readings`` (the grey-level FGSM sweep) and ``write`` (files
    and figures). They are not written to ``out_dir``: the outputs stay identical from run to run.

    Returns:
        the JSON-able part of the result: one point list per attack, ``paper_table_non_covid`` and,
        when the suite runs, ``targeted``, ``minimal_epsilon``, ``perceptibility``, ``sanity``; always
        ``paper_readings``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = standard_suite(model, x, y, cfg, timed(progress) if progress else None,  # elapsed time per line
                            timings=timings)
    table = paper_table(result["fgsm_paper"], PAPER_FGSM_NON_COVID)
    with section_timer(timings, "paper_readings"):
        result["paper_readings"] = paper_readings(model, x, y, cfg, result["fgsm_paper"])
    sweeps = point_lists(result)
    extra = {k: result[k] for k in ("targeted", "minimal_epsilon", "perceptibility", "sanity", "paper_readings")
             if k in result}
    with section_timer(timings, "write"):
        _write(model, x, y, cfg, out_dir, result, table, sweeps, extra)
    return {**sweeps, "paper_table_non_covid": table, **extra}


def _write(model, x, y, cfg: dict, out_dir: Path, result: dict, table: list[dict], sweeps: dict, extra: dict) -> None:
    """The files and figures of :func:`sweep_and_write`."""
    write_json(out_dir / "sweep.json", {**sweeps, "paper_table_non_covid": table, **extra})
    write_json(out_dir / "metrics.json", flat_sweep_metrics(result))
    for key, pts in sweeps.items():
        if key == "worst_case":
            write_csv(out_dir / "worst_case.csv", [{**p, **{k: _compact(p[k]) for k in (
                "attacks", "robust_after", "broken_by", "attacked")}} for p in pts], WORST_CASE_FIELDS)
        else:
            write_csv(out_dir / f"{key}.csv", pts, POINT_FIELDS)
    write_csv(out_dir / "paper_table.csv", table, ["epsilon", "correct", "total", "accuracy", "paper_accuracy"])
    (out_dir / "paper_table.md").write_text(paper_table_markdown(table))
    plots.accuracy_vs_epsilon({"FGSM (all test)": result["fgsm_paper"],
                               "FGSM (non-COVID)": [dict(epsilon=r["epsilon"], robust_accuracy=r["accuracy"])
                                                    for r in table]},
                              out_dir / "fgsm_paper_grid.png", paper=PAPER_FGSM_NON_COVID,
                              title="FGSM, paper grid")
    plots.accuracy_vs_epsilon({k.upper(): v for k, v in sweeps.items() if k != "fgsm_paper"},
                              out_dir / "standard_grid.png", title="standard grid", log_x=True)
    if "targeted" not in result:  # suite not run: the declared outputs exist, empty
        for name, fields in (("targeted", TARGETED_FIELDS), ("perceptibility", PERCEPTIBILITY_FIELDS),
                             ("minimal_epsilon", ["epsilon"]), ("minimal_epsilon_check", ["epsilon"])):
            write_csv(out_dir / f"{name}.csv", [], fields)
        plots.accuracy_vs_epsilon({}, out_dir / "minimal_epsilon.png", title="minimal epsilon: suite not run")
    else:
        rows = [p for pts in result["targeted"].values() for p in pts]
        write_csv(out_dir / "targeted.csv", rows, TARGETED_FIELDS)
        write_csv(out_dir / "perceptibility.csv", result["perceptibility"], PERCEPTIBILITY_FIELDS)
        me = result["minimal_epsilon"]
        names = list(me["curves"])
        write_csv(out_dir / "minimal_epsilon.csv",
                  [{"epsilon": e, **{n: me["curves"][n][i] for n in names}} for i, e in enumerate(me["grid"])],
                  ["epsilon"] + names)
        write_csv(out_dir / "minimal_epsilon_check.csv", me["check"],
                  ["attack", "epsilon", "from_minimal", "fixed", "difference"])
        plots.accuracy_vs_epsilon({n: [{"epsilon": e, "robust_accuracy": me["curves"][n][i]}
                                       for i, e in enumerate(me["grid"])] for n in names},
                                  out_dir / "minimal_epsilon.png", title="robust accuracy from per-image minimal epsilon")
    (out_dir / "suite_table.md").write_text(suite_markdown(sweeps, result, cfg))
    k = cfg["grid_examples"]
    if k:
        xs = x[:k].float() / 255.0
        clean_prob = predict(model, xs)[:, 1].numpy()
        labels = [LABELS[i] for i in y[:k].tolist()]
        shown = {e: v for e, v in result["examples"].items() if v is not None and e in (0.1, 0.3, 2 / 255, 8 / 255)}
        probs = {e: predict(model, v)[:, 1].numpy() for e, v in shown.items()}
        plots.adversarial_grid(xs, shown, clean_prob, probs, labels, out_dir / "examples.png")
        fig5 = {e: v for e, v in result["examples"].items() if v is not None and round(e, 6) in (0.1, 0.2, 0.3)}
        if not fig5:  # grid without 0.1-0.3: its first three positive paper epsilons
            fig5 = {e: result["examples"][e] for e in sorted(e for e in cfg["paper_epsilons"] if e > 0)[:3]}
        if fig5:  # the paper's figure 5: FGSM at epsilon 0.1, 0.2, 0.3
            plots.adversarial_grid(xs, fig5, clean_prob, {e: predict(model, v)[:, 1].numpy() for e, v in fig5.items()},
                                   labels, out_dir / "fgsm_fig5_grid.png")
        if "adversarial" in result:  # the paper's figure 3: original vs adversarial, predictions and confidences
            eps_p = cfg.get("perceptibility_epsilon", 2 / 255)
            if result["adversarial"] and eps_p not in result["adversarial"].get("pgd", {eps_p: None}):
                eps_p = next(iter(result["adversarial"]["pgd"]))  # suite not run: PGD's first epsilon
            full = {n for n, idx in result.get("subsets", {}).items() if len(idx) < len(x)}  # other images
            advs = {n: d[eps_p][:k] for n, d in result["adversarial"].items() if eps_p in d and n not in full}
            plots.original_vs_adversarial(xs, advs, predict(model, xs).numpy(),
                                          {n: predict(model, v).numpy() for n, v in advs.items()}, labels,
                                          out_dir / "original_vs_adversarial.png",
                                          title=f"epsilon = {format_epsilon(eps_p)}")


def paper_readings(model, x, y, cfg: dict, pixel_points: list[dict]) -> dict:
    """The paper's FGSM table under both readings of its epsilons: [0, 1] pixel units (the paper-grid sweep
    already run) and grey levels (epsilon / 255, one more FGSM sweep), side by side with the paper's values,
    and which reading the paper's numbers are consistent with (:mod:`robustct.paper_readings`)."""
    from dataclasses import asdict  # noqa: PLC0415

    from . import paper_readings as pr  # noqa: PLC0415
    from .robustness import fgsm_sweep  # noqa: PLC0415

    listed = cfg["paper_epsilons"]
    grey = fgsm_sweep(model, x, y, pr.attack_epsilons(listed)["grey_levels"], cfg.get("batch_size", 32))[0]
    ours = {"pixel": pr.curve_from_points(pixel_points, listed, "pixel"),
            "grey_levels": pr.curve_from_points(grey, listed, "grey_levels")}
    verdict = pr.consistent_reading(PAPER_FGSM_NON_COVID, ours)
    rows = pr.readings_table(PAPER_FGSM_NON_COVID, ours)
    return {"rows": rows, "verdict": asdict(verdict), "markdown": pr.readings_markdown(rows, verdict)}


def _compact(v) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items())
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def headline(sweeps: dict) -> dict:
    """The few robustness numbers ``dvc metrics show`` lists per candidate: worst-case robust accuracy at
    each standard epsilon (``{"worst_case": {"1/255": 0.6, ...}}``); the profile is in ``sweep.json``."""
    return {"worst_case": {format_epsilon(p["epsilon"]): round(p["robust_accuracy"], 4)
                           for p in sweeps.get("worst_case", [])}}


def worst_case_markdown(points: list[dict]) -> str:
    """Markdown table: worst-case robust accuracy per epsilon, with what each attack of the cascade broke."""
    if not points:
        return "worst case not run\n"
    attacks = points[0]["attacks"]
    lines = [f"Worst case over {', '.join(attacks)} (profile `{points[0].get('profile', 'custom')}`, "
             f"{points[0]['n']} images, clean accuracy {points[0]['clean_accuracy']:.3f}); "
             "cells: images newly broken by each attack / images it ran on.", "",
             "| epsilon | worst-case robust accuracy | " + " | ".join(attacks) + " |",
             "|---" * (2 + len(attacks)) + "|"]
    for p in points:
        cells = [f"{p['broken_by'][a]} / {p['attacked'][a]}" for a in attacks]
        lines.append(f"| {format_epsilon(p['epsilon'])} | {p['robust_accuracy']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def suite_markdown(sweeps: dict, result: dict, cfg: dict) -> str:
    """Markdown tables: worst case, robust accuracy per attack and epsilon, targeted success, perceptibility,
    sanity flags."""
    eps = cfg["standard_epsilons"]
    lines = [worst_case_markdown(sweeps.get("worst_case", [])),
             "| attack | n | clean | " + " | ".join(format_epsilon(e) for e in eps) + " |",
             "|---" * (3 + len(eps)) + "|"]
    for key, pts in sweeps.items():
        if key in ("fgsm_paper", "worst_case"):
            continue
        by = {round(p["epsilon"], 9): p for p in pts}
        row = [f"{by[round(e, 9)]['robust_accuracy']:.3f}" if round(e, 9) in by else "" for e in eps]
        lines.append(f"| {key} | {pts[0]['n']} | {pts[0]['clean_accuracy']:.3f} | " + " | ".join(row) + " |")
    targeted = result.get("targeted", {})
    t_eps = sorted({p["epsilon"] for pts in targeted.values() for p in pts}) or eps
    lines += ["", "| targeted attack / scenario | n | " + " | ".join(format_epsilon(e) for e in t_eps) + " |",
              "|---" * (2 + len(t_eps)) + "|"]
    for name, pts in targeted.items():
        by = {round(p["epsilon"], 9): p for p in pts}
        row = [f"{by[round(e, 9)]['targeted_success_rate']:.3f}" if round(e, 9) in by else "" for e in t_eps]
        lines.append(f"| {name} | {pts[0]['n']} | " + " | ".join(row) + " |")
    lines += ["", "| attack | epsilon | n success / n | median Linf | median L2 | median L0 | median PSNR (dB) | "
              "median SSIM |", "|---|---|---|---|---|---|---|---|"]
    for r in result.get("perceptibility", []):
        e = r["epsilon"] if isinstance(r["epsilon"], str) else format_epsilon(r["epsilon"])
        lines.append(f"| {r['attack']} | {e} | {r['n_success']}/{r['n']} | {r['median_linf']:.4f} | "
                     f"{r['median_l2']:.3f} | {r['median_l0']:.0f} | {r['median_psnr']:.1f} | {r['median_ssim']:.4f} |")
    flags = result.get("sanity", {}).get("flags", {})
    lines += ["", "| sanity check | raised | detail |", "|---|---|---|"]
    lines += [f"| {k} | {'YES' if v['flag'] else 'no'} | {v['detail']} |" for k, v in flags.items()]
    return "\n".join(lines) + "\n"


def paper_table_markdown(rows: list[dict]) -> str:
    lines = ["| epsilon | predicted correct | total | accuracy | paper accuracy |", "|---|---|---|---|---|"]
    for r in rows:
        paper = "" if r["paper_accuracy"] is None else f"{r['paper_accuracy']:.3f}"
        lines.append(f"| {r['epsilon']:g} | {r['correct']} | {r['total']} | {r['accuracy']:.3f} | {paper} |")
    return "\n".join(lines) + "\n"


def log_sweep(mlflow, sweeps: dict, out_dir: Path) -> None:
    """One nested run per (attack, epsilon, target mode) under the active parent run, with the attack's
    full configuration as parameters; sanity flags and perceptibility medians and artifacts on the parent."""
    for key, pts in point_lists(sweeps).items():
        for p in pts:
            _nested(mlflow, f"{key}@{format_epsilon(p['epsilon'])}", p, key, "untargeted", POINT_FIELDS[3:])
    for p in sweeps.get("worst_case") or []:
        mlflow.log_metric(f"worst_case_robust_accuracy.{format_epsilon(p['epsilon']).replace('/', '_')}",
                          p["robust_accuracy"])
    for name, pts in (sweeps.get("targeted") or {}).items():
        for p in pts:
            _nested(mlflow, f"{name}@{format_epsilon(p['epsilon'])}", p, "targeted", p["target_mode"],
                    TARGETED_FIELDS[6:])
    if sweeps.get("sanity"):
        mlflow.log_metrics({f"sanity_{k}": float(v["flag"]) for k, v in sweeps["sanity"]["flags"].items()})
        mlflow.set_tags({f"sanity.{k}": v["detail"][:500] for k, v in sweeps["sanity"]["flags"].items()})
    for r in sweeps.get("perceptibility") or []:
        e = r["epsilon"] if isinstance(r["epsilon"], str) else format_epsilon(r["epsilon"]).replace("/", "_")
        mlflow.log_metrics({f"perceptibility.{r['attack']}.{e}.{k}": r[k] for k in PERCEPTIBILITY_FIELDS[4:]
                            if r[k] is not None and r[k] == r[k] and abs(r[k]) != float("inf")})
    for f in sorted(Path(out_dir).iterdir()):
        if f.suffix in (".png", ".csv", ".md", ".json"):
            mlflow.log_artifact(str(f), "attack")


def _nested(mlflow, run_name, p, grid, target_mode, fields):
    with mlflow.start_run(run_name=run_name, nested=True,
                          tags={"attack": p["attack"], "grid": grid, "target_mode": target_mode}):
        conf = p.get("config", {"attack": p["attack"], "norm": "Linf", "epsilon": p["epsilon"]})
        mlflow.log_params({**conf, "target_mode": target_mode})
        mlflow.log_metrics({k: p[k] for k in fields if isinstance(p.get(k), (int, float)) and p[k] == p[k]})
