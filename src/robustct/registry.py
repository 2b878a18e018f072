"""Lazy ``"module:attribute"`` registry entries (torch-free): the one loader the backbone, defence and attack
registries share, so reading ``params.yaml`` imports no heavy module."""
from __future__ import annotations

import importlib
from typing import Any


def import_entry(path: str) -> Any:
    """The attribute named by ``"package.module:attribute"`` (imports the module)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_entry(entries: dict[str, str], name: str, what: str) -> Any:
    """The attribute registered under ``name`` in ``entries``.

    Raises:
        ValueError: unknown name, naming ``what`` it is and the valid names.
    """
    if name not in entries:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(entries)}")
    return import_entry(entries[name])
