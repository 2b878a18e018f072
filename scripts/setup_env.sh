#!/usr/bin/env bash
# Create (or reuse) .venv with the project and its pinned dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import robustct, torch, mlflow, dvc, great_expectations, art" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch/torchvision pinned exactly (see pyproject.toml); the rest by compatible ranges
  .venv/bin/python -m pip install -q -e ".[test]"
  touch .venv/.installed
fi
