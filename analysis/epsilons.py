"""Epsilons as ``--epsilons`` gives them: per norm (``linf=8/255;l2=0.5``) or bare, each a
decimal number or a fraction of two, positive, finite and ascending.

``ascending_epsilons`` is the audit's one check of the epsilons a user gives, whichever way:
``--epsilons``, a suite file's ``[epsilons]`` (``analysis.suites``) and ``audit_model``'s
``epsilons=`` (``analysis.api``). It is stricter than the attacks' own contract,
``attacks.check_epsilons`` (finite, non-negative, strictly ascending), in one way: epsilon 0
is refused, since the audit reports the clean accuracy anyway and an epsilon-0 column would
only repeat it. The attacks allow 0 because, called directly, an attack at radius 0 is a
well-defined evaluation of the clean inputs. A repeated epsilon passes here and is refused when
the suite is built (``attacks.SuiteConfig`` applies the attacks' contract, whose message names
the list without the repeat): each epsilon is one column of the results, so a repeat would
be the same column twice.
"""

from __future__ import annotations

import math

from attacks import Norm

PER_NORM_SYNTAX = "linf=8/255;l2=0.5"
"""How ``--epsilons`` gives each norm its own epsilons."""


class BareEpsilons(tuple[float, ...]):
    """Epsilons given without a norm (``--epsilons 8/255``): the values, equal to their plain
    tuple, and ``text``, what was typed, for a message about them to echo (``8/255``, not
    ``0.0313725``)."""

    text: str

    def __new__(cls, values: tuple[float, ...], text: str) -> BareEpsilons:
        bare = super().__new__(cls, values)
        bare.text = text
        return bare


def parse_epsilons(text: str) -> dict[Norm, tuple[float, ...]] | tuple[float, ...]:
    """``linf=8/255;l2=0.5`` (per norm), or ``0.1,0.2`` without a norm (only for a run of one
    norm: ``build_suite`` refuses it for more; the tuple is a ``BareEpsilons`` that keeps the
    text). Each epsilon is a decimal number (``0.5``, ``1e-3``) or a fraction of two
    (``8/255``); nothing is evaluated."""
    if "=" not in text:
        return BareEpsilons(_numbers(text, "--epsilons"), text.strip())
    out: dict[Norm, tuple[float, ...]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        out[Norm.parse(name.strip())] = _numbers(values, f"--epsilons {name.strip()}")
    return out


def parse_epsilon(text: str) -> float:
    """``0.5``, ``1e-3`` or ``8/255`` as a float (ValueError otherwise)."""
    numerator, slash, denominator = text.strip().partition("/")
    if not slash:
        return float(numerator)
    if "/" in denominator:
        raise ValueError(text)
    top, bottom = float(numerator), float(denominator)
    if not bottom > 0 or not math.isfinite(bottom):
        raise ValueError(text)
    return top / bottom


def _numbers(text: str, origin: str) -> tuple[float, ...]:
    try:
        values = tuple(parse_epsilon(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"{origin} must be comma-separated numbers or fractions (0.5, 1e-3, 8/255), got "
            f"{text!r}"
        ) from None
    return ascending_epsilons(values, origin)


def ascending_epsilons(values: tuple[float, ...], origin: str) -> tuple[float, ...]:
    """``values`` if they are a user's valid epsilons: at least one, each positive and finite,
    in ascending order (a repeat passes here; see the module docstring). ``origin`` names where
    they were given (``--epsilons``, ``epsilons.linf``, ``epsilons``) at the start of the
    message.

    Raises:
        ValueError: one line, the same for every way of giving them.
    """
    if not values:
        raise ValueError(f"{origin} is empty; give at least one epsilon")
    if any(not v > 0 or not math.isfinite(v) for v in values) or list(values) != sorted(values):
        raise ValueError(
            f"{origin}: epsilons must be positive, finite and ascending, got {list(values)} "
            "(epsilon 0 is the clean accuracy, which the audit reports anyway)"
        )
    return values
