"""L-infinity budgets: parsing ``"2/255"``-style strings and readable labels (no torch, no pydantic models)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


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
        if isinstance(value, bool):
            raise TypeError("a boolean is not an epsilon")
        if isinstance(value, str):
            num, _, den = value.strip().partition("/")
            eps = float(num) / float(den) if den else float(num)
        else:
            eps = float(value)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ParamsError(f"{key}: cannot read {value!r} as an epsilon; write e.g. 0.1 or '2/255'") from exc
    if eps != eps:
        raise ParamsError(f"{key}: epsilon {value!r} is not a number")
    if eps < 0:
        raise ParamsError(f"{key}: epsilon {value!r} is negative")
    if eps > 1:
        raise ParamsError(
            f"{key}: epsilon {value!r} is above 1; epsilon is in [0, 1] pixel units, "
            f"did you mean '{value}/255'?"
        )
    return eps


def format_epsilon(eps: float) -> str:
    """Readable label: ``2/255`` (or ``0.5/255``) for small multiples of 1/510, else ``0.1``."""
    k = eps * 255
    if 0 < eps < 0.1:
        if abs(k - round(k)) < 1e-6:
            return f"{round(k)}/255"
        if abs(2 * k - round(2 * k)) < 1e-6:
            return f"{round(2 * k) / 2:g}/255"
    return f"{eps:g}"


def _validate(value: Any) -> float:
    try:
        return parse_epsilon(value, "epsilon")
    except ParamsError as exc:  # pydantic reports ValueError messages with the key path
        raise ValueError(str(exc).removeprefix("epsilon: ")) from None


Epsilon = Annotated[float, BeforeValidator(_validate)]
"""A pydantic field type: an L-inf budget in [0, 1] pixel units, from a number or a ``"2/255"`` string."""
