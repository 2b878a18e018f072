"""robustct: an MLOps-tracked lifecycle for an adversarially robust COVID-19 CT classifier.

Importing the package turns off the usage telemetry of the libraries it drives, before any of them is imported:
a pipeline over medical images makes no outbound connection by default (docs/operations.md, "No outbound
calls"). MLflow (3.x) otherwise looks up ``config.mlflow-telemetry.io`` and sends usage events from every
process that imports it; Great Expectations has its own analytics. The values are set with
``os.environ.setdefault``, so a user who exports ``MLFLOW_DISABLE_TELEMETRY=false`` (or
``GX_ANALYTICS_ENABLED=true``) opts back in, and child processes (``mlflow server`` started by
:mod:`robustct.team_store`) inherit them.
"""
import os as _os

OFFLINE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false"}
"""Environment variables set (unless already set) when the package is imported: no usage telemetry."""

for _key, _value in OFFLINE_ENV.items():
    _os.environ.setdefault(_key, _value)
