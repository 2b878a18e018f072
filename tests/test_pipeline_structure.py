"""The pipeline's structure: complete DVC deps, no stage importing another, registries as the one source of names."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "src" / "robustct"
LOADERS = {"get_method(": PKG / "defences" / "__init__.py", "backbone_builder(": PKG / "backbones.py",
           "load_attack(": PKG / "attack_registry.py"}
"""A module calling a registry's loader depends on every module the registry names ("module:function")."""


def _module_file(name: str) -> Path | None:
    p = REPO / "src" / Path(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path: Path) -> set[Path]:
    """Package modules ``path`` imports (module level or inside functions), with their parent packages."""
    rel = path.relative_to(REPO / "src").with_suffix("")
    parts = list(rel.parts[:-1]) if path.name != "__init__.py" else list(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - (node.level - 1)] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("robustct"):
                bits = name.split(".")
                found |= {f for i in range(1, len(bits) + 1) if (f := _module_file(".".join(bits[:i])))}
    text = path.read_text()
    for call, registry in LOADERS.items():
        if call in text and path != registry:
            found |= {f for m in re.findall(r'"(robustct(?:\.\w+)+):\w+"', registry.read_text())
                      if (f := _module_file(m))}
    return found


def closure(*start: Path) -> set[Path]:
    seen, todo = set(), list(start)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += list(_imports(p) - seen)
    return seen


def _dvc_stages() -> dict:
    from robustct.params import read_yaml

    return read_yaml(REPO / "dvc.yaml")["stages"]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def stage_closure(stage: str) -> set[Path]:
    """Every package file the command ``robustct <stage>`` executes: the CLI (which loads and checks the params
    schema, then runs the stage module), the schema's closure and the stage module's closure."""
    return {PKG / "__init__.py", PKG / "cli.py"} | closure(PKG / "params.py", PKG / "stages" / f"{stage}.py")


@pytest.mark.parametrize("stage", list(_dvc_stages()))
def test_dvc_deps_cover_the_import_closure(stage):
    spec = _dvc_stages()[stage]
    spec = spec.get("do", spec)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    missing = sorted(p.relative_to(REPO).as_posix() for p in stage_closure(stage) if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} does not declare code it runs: {missing}"


def test_closure_sees_lazy_and_registry_imports():
    c = closure(PKG / "stages" / "defend.py")
    assert PKG / "defences" / "adversarial.py" in c  # via the defence registry's loader
    assert PKG / "models.py" in c
    assert PKG / "data" / "images.py" in closure(PKG / "io.py")  # a function-level import


def test_no_stage_module_imports_another():
    stages = {p for p in (PKG / "stages").glob("*.py") if p.name != "__init__.py"}
    for p in stages:
        bad = (_imports(p) & stages) - {p}
        assert not bad, f"{p.name} imports stage modules {[b.name for b in bad]}"


def test_no_private_names_imported_across_modules():
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("robustct")):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{p.relative_to(REPO)} imports private names {private}"


def test_foreach_stages_iterate_over_the_candidate_registry():
    from robustct.params import load_params

    stages = _dvc_stages()
    cands = load_params(REPO / "params.yaml")["candidates"]
    for name in ("evaluate", "attack"):
        assert stages[name]["foreach"] == "${candidates}"
    promote_deps = stages["promote"]["deps"]
    for c in cands:
        for f in (f"outputs/{c}/evaluate", f"outputs/{c}/attack"):
            assert f in promote_deps, f"promote does not depend on {f}"


def test_promote_is_never_restored_from_the_cache():
    stages = _dvc_stages()
    assert stages["promote"].get("always_changed") is True
    assert list(stages)[-1] == "report"


def test_attack_names_come_from_the_registry():
    from robustct import attacks, sanity
    from robustct.attack_registry import ATTACK_SPECS, fixed_budget_names
    from robustct.params import AttackParams

    assert set(attacks.ATTACKS) == set(ATTACK_SPECS)
    for name, spec in ATTACK_SPECS.items():
        assert spec.load() is attacks.ATTACKS[name]
    assert set(sanity.WHITE_BOX_ITERATIVE) < set(fixed_budget_names())
    assert set(AttackParams.model_fields["profiles"].annotation.model_fields["cpu"].annotation.model_fields) \
        == set(ATTACK_SPECS)


def test_every_lock_entry_is_a_stage_of_the_pipeline():
    """dvc.lock holds only stages dvc.yaml defines (foreach stages as ``name@candidate``). DVC never prunes the
    entry of a removed or renamed stage (treeverse/dvc#5293), and such an entry names models that no longer exist."""
    from robustct.params import load_params, read_yaml

    cands = load_params(REPO / "params.yaml")["candidates"]
    expected = set()
    for name, spec in _dvc_stages().items():
        expected |= {f"{name}@{c}" for c in cands} if "foreach" in spec else {name}
    locked = set(read_yaml(REPO / "dvc.lock")["stages"])
    assert locked <= expected, f"dvc.lock has entries of no stage: {sorted(locked - expected)}"
