"""The one registry of attacks: every list of attack names (params checks, the worst-case cascade, the
suite, sanity checks, plots, output file names) is derived from ``ATTACK_SPECS``.

Each attack declares (as torchattacks and fra31/auto-attack do):

- ``kind``: ``linf`` (white-box, fixed L-inf budget epsilon), ``black_box_linf`` (query-only, fixed L-inf
  budget), or ``minimal`` (searches the smallest perturbation; read at each epsilon as an upper bound on
  robust accuracy);
- ``targeted``: whether it supports target labels;
- ``params``: a pydantic model of its parameters (unknown keys rejected, ranges checked);
- ``factory``: ``"module:Class"`` of the implementation in :mod:`robustct.attacks`, imported lazily so
  reading ``params.yaml`` does not import torch.

This module imports neither torch nor the attack implementations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .epsilon import Epsilon
from .registry import import_entry

Kind = Literal["linf", "black_box_linf", "minimal", "minimal_linf_grid"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoParams(_Strict):
    """FGSM has no parameter besides epsilon."""


class IterativeParams(_Strict):
    steps: int = Field(10, ge=1, le=100_000, description="gradient steps")
    step_size: Optional[Epsilon] = Field(None, description="per-step L-inf size; null = 2.5 * epsilon / steps")
    restarts: int = Field(1, ge=1, le=100, description="random restarts (PGD); a sample is broken if any breaks it")


class BIMParams(_Strict):
    steps: int = Field(10, ge=1, le=100_000)
    step_size: Optional[Epsilon] = Field(None, description="null = 2.5 * epsilon / steps")


class MIMParams(_Strict):
    steps: int = Field(10, ge=1, le=100_000)
    step_size: Optional[Epsilon] = Field(None, description="null = epsilon / steps (Dong et al.)")
    decay: float = Field(1.0, ge=0.0, le=10.0, description="momentum factor mu")


class APGDParams(_Strict):
    steps: int = Field(10, ge=1, le=100_000)
    restarts: int = Field(1, ge=1, le=100)


class SquareParams(_Strict):
    max_iter: int = Field(100, ge=1, le=1_000_000, description="iterations ~ queries per image")
    p_init: float = Field(0.8, gt=0.0, le=1.0, description="initial fraction of pixels changed per square")
    restarts: int = Field(1, ge=1, le=100)


class CWParams(_Strict):
    max_iter: int = Field(10, ge=1, le=100_000)
    binary_search_steps: int = Field(3, ge=1, le=100)
    learning_rate: float = Field(0.01, gt=0.0, le=10.0)
    initial_const: float = Field(0.1, gt=0.0)
    confidence: float = Field(0.0, ge=0.0)
    subset: Optional[int] = Field(16, ge=1, description="images attacked (null = all)")


class DeepFoolParams(_Strict):
    max_iter: int = Field(20, ge=1, le=100_000)
    overshoot: float = Field(0.02, ge=0.0, le=10.0)
    subset: Optional[int] = Field(24, ge=1, description="images attacked (null = all)")


class MinEpsParams(_Strict):
    epsilon_step: Epsilon = Field(1 / 255, description="grid step of the paper's Algorithm 1")
    max_epsilon: Epsilon = Field(64 / 255, description="largest epsilon tried")


@dataclass(frozen=True)
class AttackSpec:
    """What one attack is and supports."""

    name: str
    kind: Kind
    targeted: bool
    params: type[BaseModel]
    factory: str
    description: str

    def load(self):
        """The implementing class (imports :mod:`robustct.attacks`, hence torch)."""
        return import_entry(self.factory)


ATTACK_SPECS: dict[str, AttackSpec] = {s.name: s for s in (
    AttackSpec("fgsm", "linf", True, NoParams, "robustct.attacks:FGSM",
               "Fast Gradient Sign Method (Goodfellow et al. 2015), one step"),
    AttackSpec("pgd", "linf", True, IterativeParams, "robustct.attacks:PGD",
               "projected gradient descent with random start and restarts (Madry et al. 2018)"),
    AttackSpec("bim", "linf", True, BIMParams, "robustct.attacks:BIM",
               "basic iterative method, no random start (Kurakin et al. 2017)"),
    AttackSpec("mim", "linf", True, MIMParams, "robustct.attacks:MIM",
               "momentum iterative method (Dong et al. 2018)"),
    AttackSpec("apgd_ce", "linf", True, APGDParams, "robustct.attacks:APGD",
               "Auto-PGD, cross-entropy loss (Croce & Hein 2020)"),
    AttackSpec("square", "black_box_linf", False, SquareParams, "robustct.attacks:Square",
               "Square Attack, score-based black box (Andriushchenko et al. 2020; ART)"),
    AttackSpec("cw_l2", "minimal", True, CWParams, "robustct.attacks:CarliniL2",
               "Carlini & Wagner L2 (2017; ART), minimal perturbation"),
    AttackSpec("deepfool", "minimal", False, DeepFoolParams, "robustct.attacks:DeepFool",
               "DeepFool (Moosavi-Dezfooli et al. 2016; ART), minimal perturbation"),
    AttackSpec("fgsm_min_eps", "minimal_linf_grid", False, MinEpsParams, "robustct.attacks:IterativeEpsilonFGSM",
               "the reference paper's Algorithm 1: per-image minimal FGSM epsilon on a grid"),
)}
"""Attack name -> :class:`AttackSpec`."""

NOT_APPLICABLE = {
    "apgd_dlr": "DLR loss needs >= 3 classes; this is a 2-class problem, use apgd_ce",
    "apgd_t": "targeted DLR loss needs >= 3 classes; this is a 2-class problem, use apgd_ce with targeted",
}
"""Names users may expect from AutoAttack that do not apply here, with the reason."""


def load_attack(name: str):
    """The class implementing attack ``name`` (imports torch).

    Raises:
        ValueError: unknown name, or one that does not apply here (with the reason).
    """
    if name in NOT_APPLICABLE:
        raise ValueError(f"attack {name!r} does not apply: {NOT_APPLICABLE[name]}")
    if name not in ATTACK_SPECS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACK_SPECS)}")
    return ATTACK_SPECS[name].load()


def names(*kinds: str, targeted: bool | None = None) -> tuple[str, ...]:
    """Registered attack names of the given kinds (all kinds when none given), in registry order."""
    return tuple(n for n, s in ATTACK_SPECS.items()
                 if (not kinds or s.kind in kinds) and (targeted is None or s.targeted == targeted))


def fixed_budget_names() -> tuple[str, ...]:
    """Attacks with a fixed L-inf budget (white-box and black-box): the ones the worst case is taken over."""
    return names("linf", "black_box_linf")


def white_box_iterative_names() -> tuple[str, ...]:
    """White-box L-inf attacks with more than one step (must not be weaker than FGSM)."""
    return tuple(n for n in names("linf") if n != "fgsm")
