"""The results page: Markdown built from a pipeline run's outputs (pure functions, no I/O besides plots).

Every figure on the page comes from the run's own output files, so README and ``docs/`` link to the
page instead of copying numbers that drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .epsilon import format_epsilon


@dataclass
class CandidateResults:
    """What the evaluate and attack stages wrote for one candidate."""

    name: str
    evaluation: dict
    sweep: dict
    verdict: dict | None = None
    figures: dict[str, str] = field(default_factory=dict)


def _ci(m: dict) -> str:
    return f"{m['value']:.3f} ({m['ci_low']:.3f}–{m['ci_high']:.3f})"


def clean_table(cands: list[CandidateResults]) -> str:
    """Clean test metrics with 95 % intervals, predicted-COVID rate and collapse verdict."""
    method = cands[0].evaluation.get("interval_method", "percentile bootstrap over test images") if cands else ""
    if cands and cands[0].evaluation.get("n_groups"):
        method += f" ({cands[0].evaluation['n_groups']} patient groups)"
    lines = [f"95 % intervals: {method}.", "",
             "| candidate | n | accuracy | AUC | sensitivity | specificity | F1 | predicted-COVID rate | collapse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cands:
        m = c.evaluation["metrics"]
        col = (c.verdict or {}).get("collapse") or "no"
        rate = c.evaluation.get("predicted_covid_rate")
        lines.append(f"| {c.name} | {c.evaluation['n']} | {_ci(m['accuracy'])} | {_ci(m['auc'])} | "
                     f"{_ci(m['sensitivity'])} | {_ci(m['specificity'])} | {_ci(m['f1'])} | "
                     f"{'' if rate is None else f'{rate:.3f}'} | {col} |")
    return "\n".join(lines) + "\n"


def worst_case_table(cands: list[CandidateResults]) -> str:
    """Worst-case robust accuracy per candidate and epsilon, naming the attacks and the profile."""
    pts = {c.name: c.sweep.get("worst_case") or [] for c in cands}
    eps = sorted({p["epsilon"] for v in pts.values() for p in v})
    first = next((v[0] for v in pts.values() if v), None)
    if first is None:
        return "No worst-case evaluation in this run.\n"
    lines = [f"Worst case over {', '.join(first['attacks'])}, attack profile `{first.get('profile')}`: an image "
             "counts as robust only if it is classified correctly and every attack failed on it.", "",
             "| candidate | clean | " + " | ".join(format_epsilon(e) for e in eps) + " |", "|---" * (2 + len(eps)) + "|"]
    for name, v in pts.items():
        by = {round(p["epsilon"], 9): p["robust_accuracy"] for p in v}
        clean = v[0]["clean_accuracy"] if v else float("nan")
        lines.append(f"| {name} | {clean:.3f} | " + " | ".join(
            f"{by[round(e, 9)]:.3f}" if round(e, 9) in by else "" for e in eps) + " |")
    return "\n".join(lines) + "\n"


def cascade_table(c: CandidateResults) -> str:
    """Images newly broken by each attack of the cascade (and images it ran on), per epsilon."""
    pts = c.sweep.get("worst_case") or []
    if not pts:
        return ""
    attacks = pts[0]["attacks"]
    lines = ["| epsilon | " + " | ".join(attacks) + " |", "|---" * (1 + len(attacks)) + "|"]
    for p in pts:
        lines.append(f"| {format_epsilon(p['epsilon'])} | " + " | ".join(
            f"{p['broken_by'][a]} / {p['attacked'][a]}" for a in attacks) + " |")
    return "\n".join(lines) + "\n"


def suite_table(c: CandidateResults, epsilons: list[float]) -> str:
    """Robust accuracy of every individual attack of the suite (diagnostics)."""
    lines = ["| attack | n | " + " | ".join(format_epsilon(e) for e in epsilons) + " |",
             "|---" * (2 + len(epsilons)) + "|"]
    for key, v in c.sweep.items():
        if key in ("fgsm_paper", "worst_case") or not (isinstance(v, list) and v and isinstance(v[0], dict)
                                                        and "robust_accuracy" in v[0] and "epsilon" in v[0]):
            continue
        by = {round(p["epsilon"], 9): p["robust_accuracy"] for p in v}
        lines.append(f"| {key} | {v[0].get('n', '')} | " + " | ".join(
            f"{by[round(e, 9)]:.3f}" if round(e, 9) in by else "" for e in epsilons) + " |")
    return "\n".join(lines) + "\n"


def paper_table(cands: list[CandidateResults]) -> str:
    """The reference paper's FGSM table (non-COVID test images) next to each candidate's."""
    rows = {c.name: {r["epsilon"]: r for r in c.sweep.get("paper_table_non_covid", [])} for c in cands}
    eps = sorted({e for r in rows.values() for e in r})
    if not eps:
        return "No paper-grid FGSM sweep in this run.\n"
    lines = ["Epsilon in [0, 1] pixel units of the grayscale model input; accuracy on the non-COVID test images "
             "(correct / total).", "",
             "| epsilon | paper | " + " | ".join(rows) + " |", "|---" * (2 + len(rows)) + "|"]
    for e in eps:
        p = next((r[e]["paper_accuracy"] for r in rows.values() if e in r and r[e]["paper_accuracy"] is not None),
                 None)
        cells = [f"{r[e]['accuracy']:.3f} ({r[e]['correct']}/{r[e]['total']})" if e in r else "" for r in rows.values()]
        lines.append(f"| {e:g} | {'' if p is None else f'{p:.3f}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sanity_table(cands: list[CandidateResults]) -> str:
    """Carlini et al. (2019) checklist flags per candidate (YES = look here)."""
    flags = sorted({k for c in cands for k in ((c.sweep.get("sanity") or {}).get("flags") or {})})
    if not flags:
        return "No sanity checks in this run.\n"
    lines = ["| check | " + " | ".join(c.name for c in cands) + " |", "|---" * (1 + len(cands)) + "|"]
    for f in flags:
        cells = []
        for c in cands:
            v = ((c.sweep.get("sanity") or {}).get("flags") or {}).get(f)
            cells.append("" if v is None else (f"YES: {v['detail']}" if v["flag"] else "no"))
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict_section(verdict: dict) -> str:
    """Gate verdicts (every check with its measured value) and the registry state after promote."""
    lines = []
    g = verdict.get("gate", {})
    lines.append(f"Gate: clean accuracy >= {g.get('min_clean_accuracy')}, AUC >= {g.get('min_auc')}, robust accuracy "
                 f"({g.get('attack')} @ {format_epsilon(g['epsilon']) if 'epsilon' in g else '?'}) >= "
                 f"{g.get('min_robust_accuracy')}, no collapse, no vetoing sanity flag.")
    lines += ["", "| candidate | verdict | failed checks |", "|---|---|---|"]
    for v in verdict.get("candidates", []):
        failed = "; ".join(f"{c['name']}: {c['measured'] if not isinstance(c['measured'], float) else round(c['measured'], 4)}"
                           for c in v["checks"] if not c["passed"]) or "none"
        lines.append(f"| {v['name']} | {'PASS' if v['passed'] else 'FAIL'} | {failed} |")
    reg = verdict.get("registry")
    lines.append("")
    if reg is None:
        lines.append("Registry: not updated (promote ran without tracking).")
    else:
        champ = (f"version {reg['champion_version']} ({reg['champion_candidate']})" if reg.get("champion_version")
                 else "none")
        lines.append(f"Registry `{verdict.get('model_name')}`: champion = {champ}; challenger = version "
                     f"{reg.get('challenger_version')}; champion action: {reg.get('champion_action') or 'none'}"
                     + (f" ({reg['champion_removed_reason']})" if reg.get("champion_removed_reason") else "")
                     + f"; versions of this run: {reg.get('versions')}.")
    return "\n".join(lines) + "\n"


def results_page(cands: list[CandidateResults], verdict: dict, context: dict, epsilons: list[float]) -> str:
    """The whole page.

    Args:
        cands: one entry per candidate; verdict: ``promote/verdict.json``;
        context: ``{"git_commit", "data_version", "split": split summary dict}``;
        epsilons: the standard grid (for the suite tables).
    """
    split = context.get("split", {})
    parts = ["# Results of the last `dvc repro`", "",
             "Generated by the `report` stage from this run's outputs; do not edit by hand.", "",
             f"- code: `{context.get('git_commit')}`; data: `{context.get('data_version')}`",
             f"- split: scheme `{split.get('scheme')}`; " + ", ".join(
                 f"{k} {split[k]['images']} images / {split[k]['patients']} patients"
                 for k in ("train", "val", "test") if isinstance(split.get(k), dict)), "",
             "## Clean test metrics", "", clean_table(cands),
             "## Worst-case robust accuracy (the gate reads this)", "", worst_case_table(cands)]
    if any("worst_case" in c.figures for c in cands) or "worst_case" in context.get("figures", {}):
        parts += [f"![worst case]({context['figures']['worst_case']})", ""]
    parts += ["## Gate and registry", "", verdict_section(verdict),
              "## The reference paper's FGSM table", "", paper_table(cands)]
    if context.get("paper_readings"):
        parts += [context["paper_readings"], ""]
    parts += ["## Sanity checks (Carlini et al. 2019) per candidate", "", sanity_table(cands)]
    for c in cands:
        parts += [f"## Candidate `{c.name}`", "", "Worst-case cascade: images newly broken by each attack / images "
                  "it ran on.", "", cascade_table(c), "Individual attacks (diagnostics):", "",
                  suite_table(c, epsilons)]
        parts += [f"![{k}]({v})" for k, v in c.figures.items()] + [""]
    return "\n".join(parts).rstrip() + "\n"
