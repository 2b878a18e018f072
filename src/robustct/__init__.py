"""robustct: an MLOps-tracked lifecycle for an adversarially robust COVID-19 CT classifier."""
