#!/usr/bin/env bash
# The main job: environment, dataset (verified), then every DVC stage on the real data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
export PYTHONUNBUFFERED=1     # progress lines of the stages appear as they happen, not when a pipe buffer fills
robustct fetch-data "$@"      # copies ../shared/datasets/covid-ct (or --url for upstream), checks SHA256SUMS
dvc commit -f -q data.dvc     # cache data/ (so `dvc push` to a remote works); next line: still the pinned version?
git diff --quiet -- data.dvc || { echo "error: data/ differs from the version pinned in data.dvc" >&2; exit 1; }
# every line time-stamped, so the log shows each stage's wall time ("Running stage ..." to the next one)
time (dvc repro 2>&1 | while IFS= read -r line; do printf '%s %s\n' "$(date +%T)" "$line"; done)
dvc metrics show                 # the headline numbers per candidate; the whole page: docs/results/README.md
robustct gate --candidate baseline || true    # the gate's verdict per candidate (exit 1 = fails)
robustct gate --candidate defended || true
echo "Browse the runs: MLFLOW_DISABLE_TELEMETRY=true .venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db"
