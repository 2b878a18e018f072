#!/usr/bin/env bash
# The real-data measurements of docs/defences.md (pre-processing defences and randomized smoothing), one at a time.
# Run from a folder holding data/ and outputs/split/*.csv (official patient-level split) and outputs/train/model.pt.
# Usage: bash /path/to/benchmarks/run_defences_preproc.sh /path/to/repo/src results
set -euo pipefail
SRC=${1:?path to the repository src/}; OUT=${2:-results}
mkdir -p "$OUT"
B="$(dirname "$0")/defences_preproc.py"
run() { local name=$1; shift; OMP_NUM_THREADS=1 PYTHONPATH="$SRC" ${PYTHON:-python} "$B" --name "$name" --out "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1; }
S="--subset 100"  # attacks and certificates on a seeded subset of the 201 test images (CPU budget)
run denoiser --method denoiser $S --cfg '{"denoiser": {"depth": 5, "width": 16, "loss": "logits", "epsilons": ["1/255", "2/255", "4/255"], "attack_steps": 5, "epochs": 6}}'
run smooth025 --method gaussian_smoothing $S --steps 5 --cfg '{"smoothing": {"sigma": 0.25, "samples": 4, "trainable_stages": 2, "epochs": 5, "lr": 3e-4}}' --certify '{"n0": 64, "n": 500, "alpha": 0.001, "subset": 40, "batch_size": 100}'
run jpeg75 --method input_transform $S --cfg '{"input_transform": {"kind": "jpeg", "quality": 75}}'
run bit4 --method input_transform $S --cfg '{"input_transform": {"kind": "bit_depth", "bits": 4}}'
run median3 --method input_transform $S --cfg '{"input_transform": {"kind": "median", "size": 3}}'
run jpeg_random_eot4 --method input_transform $S --steps 5 --cfg '{"input_transform": {"kind": "jpeg", "quality_range": [50, 90], "eot_samples": 4}}'
run baseline --method baseline $S
