#!/usr/bin/env bash
# The test suite: unit tests plus one end-to-end `dvc repro` on a 40-image real subset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest "$@"
