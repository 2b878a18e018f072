"""Loading and checking ``params.yaml``.

Every stage reads only its own section. Values are checked when a stage starts so
that a typo fails in a second with the key named, not after twenty minutes of
training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml



class ParamsError(ValueError):
    """A value in ``params.yaml`` is missing, of the wrong type or out of range."""


def parse_epsilon(value: Any, key: str = "epsilon") -> float:
    """Parse an L-infinity budget given as a number or a string such as ``"2/255"``.

    Args:
        value: float/int in [0, 1], or a string ``"a/b"`` / ``"0.1"``.
        key: name used in error messages.

    Returns:
        The epsilon as a float in [0, 1] pixel units.

    Raises:
        ParamsError: unparsable, negative, or above 1 (suggests the ``/255`` form).
    """
    try:
        if isinstance(value, str):
            num, _, den = value.strip().partition("/")
            eps = float(num) / float(den) if den else float(num)
        else:
            eps = float(value)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ParamsError(f"{key}: cannot read {value!r} as an epsilon; write e.g. 0.1 or '2/255'") from exc
    if eps < 0:
        raise ParamsError(f"{key}: epsilon {value!r} is negative")
    if eps > 1:
        raise ParamsError(
            f"{key}: epsilon {value!r} is above 1; epsilon is in [0, 1] pixel units, "
            f"did you mean '{value}/255'?"
        )
    return eps


def format_epsilon(eps: float) -> str:
    """Readable label: ``2/255`` when eps is a whole multiple of 1/255, else ``0.1``."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-6 and eps < 0.1:
        return f"{round(k)}/255"
    return f"{eps:g}"


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read ``params.yaml`` and check every section it has.

    Raises:
        FileNotFoundError: the file does not exist.
        ParamsError: one message listing every problem, each naming its key.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: parameters file not found; run from the repository root")
    with path.open() as fh:
        params = yaml.safe_load(fh) or {}
    problems = check_params(params)
    if problems:
        raise ParamsError(f"{path}: " + "; ".join(problems))
    return params


def _need(section: dict, key: str, kind, where: str, problems: list, lo=None, hi=None):
    if key not in section:
        problems.append(f"{where}.{key} is missing")
        return None
    value = section[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        problems.append(f"{where}.{key} must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return None
    if lo is not None and value < lo or hi is not None and value > hi:
        problems.append(f"{where}.{key}={value!r} is outside [{lo}, {hi}]")
    return value


VALIDATE_KEYS = {"on_error", "min_width", "min_height", "max_pixels", "expected_counts", "near_duplicates", "shortcut"}
SPLIT_KEYS = {"scheme", "ratios", "seed"}


def _known_keys(section: dict, known: set, where: str, problems: list) -> None:
    for key in sorted(set(section) - known):
        problems.append(f"{where}.{key} is unknown; valid: {', '.join(sorted(known))}")


def _check_validate(v, problems: list) -> None:
    if not isinstance(v, dict):
        problems.append(f"validate must be a mapping, got {v!r}")
        return
    _known_keys(v, VALIDATE_KEYS, "validate", problems)
    if v.get("on_error", "fail") not in ("fail", "quarantine"):
        problems.append(f"validate.on_error {v.get('on_error')!r} is unknown; valid: fail, quarantine")
    _need(v, "min_width", int, "validate", problems, 1, 100_000)
    _need(v, "min_height", int, "validate", problems, 1, 100_000)
    if "max_pixels" in v:
        _need(v, "max_pixels", int, "validate", problems, 1, 10**10)
    counts = v.get("expected_counts")
    if not isinstance(counts, dict) or not counts:
        problems.append("validate.expected_counts must map labels to image counts, e.g. {covid: 349, non_covid: 397}")
    else:
        for label in counts:
            if label not in ("covid", "non_covid"):
                problems.append(f"validate.expected_counts.{label} is unknown; valid: covid, non_covid")
            else:
                _need(counts, label, int, "validate.expected_counts", problems, 0, 10**9)
    for name, spec in (("near_duplicates", {"max_hash_distance": (int, 0, 64), "min_ssim": (float, -1, 1)}),
                       ("shortcut", {"max_auc": (float, 0.5, 1), "folds": (int, 2, 20), "seed": (int, None, None),
                                     "image_size": (int, 8, 1024)})):
        sub = v.get(name, {})
        if not isinstance(sub, dict):
            problems.append(f"validate.{name} must be a mapping, got {sub!r}")
            continue
        _known_keys(sub, set(spec), f"validate.{name}", problems)
        for key, (kind, lo, hi) in spec.items():
            if key in sub:
                _need(sub, key, kind, f"validate.{name}", problems, lo, hi)


def _check_split(split, problems: list) -> None:
    if not isinstance(split, dict):
        problems.append(f"split must be a mapping, got {split!r}")
        return
    _known_keys(split, SPLIT_KEYS, "split", problems)
    if split.get("scheme") not in ("patient", "random"):
        problems.append(f"split.scheme must be 'patient' or 'random', got {split.get('scheme')!r}")
    ratios = split.get("ratios", {})
    if not isinstance(ratios, dict) or set(ratios) != {"train", "val", "test"}:
        problems.append("split.ratios must have exactly train, val, test")
    elif any(isinstance(r, bool) or not isinstance(r, (int, float)) for r in ratios.values()):
        problems.append(f"split.ratios must be numbers, got {ratios!r}")
    elif any(float(r) <= 0 for r in ratios.values()):
        problems.append("split.ratios must all be positive")
    elif abs(sum(float(r) for r in ratios.values()) - 1) > 1e-6:
        problems.append(f"split.ratios must sum to 1, got {sum(float(r) for r in ratios.values()):g}")
    _need(split, "seed", int, "split", problems)


def check_params(params: dict) -> list[str]:
    """Return a list of problems (empty when the parameters are valid), one message per problem naming its key."""
    problems: list[str] = []
    if params.get("validate") is not None:
        _check_validate(params["validate"], problems)
    if params.get("split") is not None:
        _check_split(params["split"], problems)
    for name in ("train", "defend"):
        sec = params.get(name)
        if sec is None:
            continue
        _need(sec, "lr", float, name, problems, 0, 10)
        _need(sec, "epochs", int, name, problems, 1, 10_000)
        _need(sec, "batch_size", int, name, problems, 1, 4096)
        _need(sec, "seed", int, name, problems)
    train = params.get("train")
    if train is not None:
        from .models import BACKBONES  # noqa: PLC0415

        if train.get("backbone") not in BACKBONES:
            problems.append(f"train.backbone {train.get('backbone')!r} is unknown; valid: {', '.join(BACKBONES)}")
        _need(train, "image_size", int, "train", problems, 32, 1024)
        _need(train, "dropout", float, "train", problems, 0, 1)
        _need(train, "freeze_backbone", bool, "train", problems)
    eps_keys = {
        "attack": ("fgsm_paper_epsilons", "standard_epsilons"),
        "defend": ("epsilon",),
        "gate": ("epsilon",),
    }
    for section, keys in eps_keys.items():
        sec = params.get(section)
        if sec is None:
            continue
        for key in keys:
            if key not in sec:
                problems.append(f"{section}.{key} is missing")
                continue
            values = sec[key] if isinstance(sec[key], list) else [sec[key]]
            for v in values:
                try:
                    parse_epsilon(v, f"{section}.{key}")
                except ParamsError as exc:
                    problems.append(str(exc))
    attack = params.get("attack")
    if attack is not None:
        pgd = attack.get("pgd", {})
        _need(pgd, "steps", int, "attack.pgd", problems, 1, 10_000)
        _need(pgd, "restarts", int, "attack.pgd", problems, 1, 100)
        problems += check_attack_suite(attack)
    defend = params.get("defend")
    if defend is not None:
        if defend.get("method") not in ("pgd_at", "trades", "fast_at"):  # = defences.METHODS (adversarial ones)
            problems.append(f"defend.method {defend.get('method')!r} is unknown; valid: pgd_at, trades, fast_at")
        _need(defend, "steps", int, "defend", problems, 1, 1000)
        if defend.get("batchnorm") not in ("eval", "train", "dual"):
            problems.append("defend.batchnorm must be 'eval' (freeze statistics), 'train' or 'dual' "
                            "(separate clean/adversarial statistics)")
        if defend.get("attack_suite", "standard") not in ("standard", "full"):
            problems.append(f"defend.attack_suite {defend.get('attack_suite')!r} is unknown; valid: standard, full")
    gate = params.get("gate")
    if gate is not None:
        _need(gate, "min_clean_accuracy", float, "gate", problems, 0, 1)
        _need(gate, "min_robust_accuracy", float, "gate", problems, 0, 1)
        if gate.get("attack") not in ("fgsm", "pgd"):
            problems.append(f"gate.attack {gate.get('attack')!r} is unknown; valid: fgsm, pgd")
    return problems


ATTACK_NAMES = ("fgsm", "pgd", "bim", "mim", "apgd_ce", "square", "cw_l2", "deepfool", "fgsm_min_eps")
"""Attack names valid in ``attack.suite`` and ``attack.targeted.attacks`` (see robustct.attacks.ATTACKS)."""
NOT_APPLICABLE_ATTACKS = {
    "apgd_dlr": "DLR loss needs >= 3 classes; this is a 2-class problem, use apgd_ce",
    "apgd_t": "targeted DLR loss needs >= 3 classes; this is a 2-class problem, use apgd_ce with targeted",
}
TARGETABLE = ("fgsm", "pgd", "bim", "mim", "apgd_ce", "cw_l2")
SCENARIO_NAMES = ("fraud", "missed_diagnosis")


def check_attack_suite(attack: dict) -> list[str]:
    """Problems in the attack-suite keys of the ``attack`` section (names, sections, epsilons)."""
    problems: list[str] = []
    suite = attack.get("suite", [])
    if not isinstance(suite, list):
        return [f"attack.suite must be a list of attack names, got {suite!r}"]
    for name in suite:
        if name in NOT_APPLICABLE_ATTACKS:
            problems.append(f"attack.suite: {name!r} does not apply ({NOT_APPLICABLE_ATTACKS[name]})")
        elif name not in ATTACK_NAMES:
            problems.append(f"attack.suite: unknown attack {name!r}; valid: {', '.join(ATTACK_NAMES)}")
    for name in ATTACK_NAMES:
        sec = attack.get(name)
        if sec is None or name == "pgd":
            continue
        if not isinstance(sec, dict):
            problems.append(f"attack.{name} must be a mapping, got {sec!r}")
            continue
        for key in ("steps", "restarts", "max_iter", "binary_search_steps"):
            if key in sec:
                _need(sec, key, int, f"attack.{name}", problems, 1, 100_000)
        if sec.get("subset") is not None:
            _need(sec, "subset", int, f"attack.{name}", problems, 1, 10_000_000)
        for key in ("step_size", "epsilon_step", "max_epsilon"):
            if sec.get(key) is not None:
                try:
                    parse_epsilon(sec[key], f"attack.{name}.{key}")
                except ParamsError as exc:
                    problems.append(str(exc))
    targeted = attack.get("targeted") or {}
    for name in targeted.get("attacks", []):
        if name not in TARGETABLE:
            problems.append(f"attack.targeted.attacks: {name!r} cannot run targeted; valid: {', '.join(TARGETABLE)}")
    for name in targeted.get("scenarios", []):
        if name not in SCENARIO_NAMES:
            problems.append(f"attack.targeted.scenarios: unknown scenario {name!r}; valid: {', '.join(SCENARIO_NAMES)}")
    if "perceptibility_epsilon" in attack:
        try:
            parse_epsilon(attack["perceptibility_epsilon"], "attack.perceptibility_epsilon")
        except ParamsError as exc:
            problems.append(str(exc))
    return problems
