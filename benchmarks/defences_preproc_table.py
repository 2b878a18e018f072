"""Markdown tables from the JSON files written by benchmarks/defences_preproc.py.

Usage: python benchmarks/defences_preproc_table.py results/*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

EPS = ("0.5/255", "1/255", "2/255", "4/255")


def main(paths):
    runs = [json.loads(Path(p).read_text()) for p in paths]
    print("| defence | clean acc | AUC | pred. COVID rate | honest worst case @ " + " / ".join(EPS)
          + " | naive worst case @ " + " / ".join(EPS) + " | zero-gradient fraction honest / naive | train s | total s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        hon = " / ".join(f"{r['honest'][e]['apgd_ce']:.3f}" for e in EPS)
        nai = " / ".join(f"{r['naive'][e]['apgd_ce']:.3f}" for e in EPS) if r["naive"] else "n/a"
        z = r["zero_gradient_fraction"]
        zs = f"{z['honest']:.2f} / {z['naive']:.2f}" if "naive" in z else f"{z['honest']:.2f}"
        print(f"| {r['name']} | {r['clean_accuracy']:.3f} | {r['auc']:.3f} | {r['predicted_covid_rate']:.2f} | {hon} | {nai} "
              f"| {zs} | {r['train_s']:.0f} | {r['total_s']:.0f} |")
    print()
    print("Per attack (honest, cumulative robust accuracy after FGSM -> PGD -> APGD-CE):")
    print()
    print("| defence | epsilon | clean | after FGSM | after PGD | after APGD-CE |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        for e in EPS:
            h = r["honest"][e]
            print(f"| {r['name']} | {e} | {h['clean']:.3f} | {h['fgsm']:.3f} | {h['pgd']:.3f} | {h['apgd_ce']:.3f} |")
    for r in runs:
        c = r.get("certify")
        if not c:
            continue
        print()
        print(f"Certificate of {r['name']}: sigma {c['sigma']}, n0 {c['n0']}, n {c['n']}, alpha {c['alpha']}, "
              f"{c['num_images']} test images, {c['num_pixels']} input pixels, abstain rate {c['abstain_rate']:.3f}, "
              f"smoothed accuracy {c['smoothed_accuracy']:.3f}, largest certifiable radius {c['max_certifiable_radius']:.3f}, "
              f"median radius (correct) {c['median_radius_correct']:.3f}, runtime {c['runtime_s']:.0f} s.")
        print()
        print("| L2 radius | " + " | ".join(f"{x:g}" for x in c["radii"]) + " |")
        print("|---|" + "---|" * len(c["radii"]))
        print("| certified accuracy | " + " | ".join(f"{a:.3f}" for a in c["certified_accuracy"]) + " |")
        print()
        print("| L-inf epsilon | L2 radius needed (eps * sqrt(pixels)) | reachable with this n, alpha, sigma | certified accuracy |")
        print("|---|---|---|---|")
        for row in c["linf"]:
            print(f"| {row['epsilon'] * 255:g}/255 | {row['l2_radius_needed']:.3f} | {'yes' if row['covered_possible'] else 'no'} "
                  f"| {row['certified_accuracy']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
