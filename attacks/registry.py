"""Every attack kind a suite can name, registered once with its family, backends and parameters.

A kind (``"pgd"``, ``"square"``, ...) is registered with its function, its ``Family``, the
backends that can compute it, and a declared type and range for each of its parameters. The
parameter names and defaults are read from the function's signature, so they cannot drift
from it: registering a kind whose declarations and signature disagree raises. Settings that a
suite passes to every attack (``norm``, ``bounds``, ``batch_size``, ``stochastic``,
``generator``, ``sample_ids``) are not parameters of a kind.

Each kind also declares whether its per-sample results are independent of the batch
(``batch_independent``): what a process attacking a shard of the evaluation set needs to give
each sample the result that one process over the whole set gives it.

The kinds themselves are registered in ``attacks.kinds``, which the package imports first, so
the registry is complete wherever it is read. Everything that needs to know about kinds reads
this registry: the suite calls ``get(kind)``, suite files and command-line flags are checked
with ``Attack.check`` when the configuration is built (before any model is loaded), and the
red-flag checks select attacks by family.

Example:
    >>> get("pgd").family
    <Family.ITERATIVE: 'iterative'>
    >>> list_attacks(family="black-box")
    ['square']
    >>> get("pgd").check({"num_step": 50})
    Traceback (most recent call last):
    ...
    ValueError: pgd: unknown parameter 'num_step' (did you mean 'num_steps'?); pgd takes: ...
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from attacks.backends import BACKENDS
from attacks.result import AttackResult

__all__ = [
    "SUITE_ARGUMENTS",
    "Attack",
    "Family",
    "Param",
    "ParameterTypeError",
    "batch_independent",
    "check_keys",
    "get",
    "list_attacks",
    "register",
]

SUITE_ARGUMENTS: Mapping[str, str] = MappingProxyType(
    {
        "norm": "the suite's [epsilons] table",
        "bounds": "the suite",
        "batch_size": "the suite's [options] (batch_size)",
        "stochastic": "the suite's [options] (stochastic)",
        "generator": "the audit's --seed",
        "sample_ids": "the audit (each sample's position in the evaluation set)",
    }
)
"""Arguments the suite passes to every attack, and where each is set instead."""


class Family(Enum):
    """What kind of search an attack is; the red-flag checks compare attacks by family."""

    ONE_STEP = "one-step"
    ITERATIVE = "iterative"
    TARGETED = "targeted"
    MINIMUM_NORM = "minimum-norm"
    BLACK_BOX = "black-box"
    RANDOM = "random"
    ENSEMBLE = "ensemble"

    @classmethod
    def parse(cls, value: Family | str) -> Family:
        """``"one-step"`` (any case) or a ``Family`` to a ``Family``."""
        if isinstance(value, Family):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            known = ", ".join(repr(f.value) for f in cls)
            raise ValueError(f"attack family must be one of {known}, got {value!r}") from None

    @property
    def gradient(self) -> bool:
        """Whether the attack follows the model's input gradient (white box)."""
        return self in (Family.ONE_STEP, Family.ITERATIVE, Family.TARGETED, Family.MINIMUM_NORM)


class ParameterTypeError(TypeError, ValueError):
    """A parameter of the wrong type.

    A ``TypeError``, and a ``ValueError`` too, so that a caller which treats every bad
    configuration value alike (the command line: one line, exit status 2) needs one clause.
    """


@dataclass(frozen=True)
class Param:
    """The declared type and range of one parameter.

    Attributes:
        value_type: ``int``, ``float``, ``bool`` or ``str``; a float parameter accepts an int, no
            parameter accepts a bool unless it is one.
        minimum: the smallest allowed value (numbers), or None.
        maximum: the largest allowed value (numbers), or None.
        exclusive_minimum: the minimum itself is not allowed (``> minimum``).
        choices: the allowed strings (``str`` parameters).
        optional: None is allowed too.
        why: why the maximum is where it is (the memory or time a larger value would take),
            said when a value exceeds it.
    """

    value_type: type
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] | None = None
    optional: bool = False
    why: str = ""

    def __post_init__(self) -> None:
        if self.value_type not in (int, float, bool, str):
            raise TypeError(
                f"a parameter's type is int, float, bool or str, got {self.value_type!r}"
            )
        if self.choices is not None and self.value_type is not str:
            raise TypeError(f"choices need a str parameter, got type {self.value_type.__name__}")

    def describe(self) -> str:
        """What is expected, e.g. ``int >= 1``, ``float in (0, 1]``, ``one of 'ce', 'cw'``."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = self.value_type.__name__
            show = (lambda v: str(int(v))) if self.value_type is int else (lambda v: f"{v:g}")
            low = None if self.minimum is None else show(self.minimum)
            high = None if self.maximum is None else show(self.maximum)
            if low is not None and high is not None:
                text += f" in {'(' if self.exclusive_minimum else '['}{low}, {high}]"
            elif low is not None:
                text += f" {'>' if self.exclusive_minimum else '>='} {low}"
            elif high is not None:
                text += f" <= {high}"
        return text + (" or None" if self.optional else "")

    def check(self, name: str, value: Any) -> None:
        """Raise unless ``value`` is of this type and in this range.

        Raises:
            ParameterTypeError: for a value of another type.
            ValueError: for a value out of range or not among the choices.
        """
        if value is None and self.optional:
            return
        got = f"got {value!r} ({type(value).__name__})"
        if self.value_type is bool:
            right = isinstance(value, bool)
        elif self.value_type is int:
            right = isinstance(value, int) and not isinstance(value, bool)
        elif self.value_type is float:
            right = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            right = isinstance(value, str)
        if not right:
            raise ParameterTypeError(f"{name}: expected {self.describe()}, {got}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name}: expected {self.describe()}, got {value!r}")
        if self.value_type in (int, float) and not self._in_range(value):
            above = self.maximum is not None and math.isfinite(value) and value > self.maximum
            why = f" ({self.why})" if above and self.why else ""
            raise ValueError(f"{name}: expected {self.describe()}, got {value!r}{why}")

    def _in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (
            value <= self.minimum if self.exclusive_minimum else value < self.minimum
        ):
            return False
        return self.maximum is None or value <= self.maximum


Rule = Callable[[Mapping[str, Any]], str | None]
"""A cross-parameter rule: the full parameters (defaults filled in) to an error, or None."""

Independence = Callable[[Mapping[str, Any]], bool]
"""The full parameters (defaults filled in) to whether per-sample results are independent of
the batch (see ``batch_independent``)."""


def _never(params: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class Attack:
    """One registered attack kind.

    Attributes:
        kind: its name in suites (``AttackSpec.kind``).
        function: ``function(model, x, y, epsilons, **params, **suite_arguments)``.
        family: what kind of search it is.
        backends: the backends that can compute it; the first is the default. Kinds with more
            than one take a ``backend`` parameter.
        params: per parameter name, its declared type and range, in signature order.
        defaults: per parameter name, the function's default.
        rules: cross-parameter rules, each returning an error message or None.
        independence: whether given parameters make per-sample results independent of the
            batch (``batch_independent``).
    """

    kind: str
    function: Callable[..., AttackResult]
    family: Family
    backends: tuple[str, ...]
    params: Mapping[str, Param]
    defaults: Mapping[str, Any]
    rules: tuple[Rule, ...] = field(default=())
    independence: Independence = _never

    @property
    def eot(self) -> bool:
        """Whether the attack averages gradients over forward passes (``eot_samples``)."""
        return "eot_samples" in self.params

    @property
    def accepts(self) -> frozenset[str]:
        """Every keyword the function takes: its parameters and the suite's arguments."""
        return frozenset(self.params) | frozenset(SUITE_ARGUMENTS)

    def check(self, params: Mapping[str, Any], *, context: str | None = None) -> None:
        """Raise unless every name of ``params`` is a parameter of this kind with a valid value.

        Args:
            params: parameter names to values, as in ``AttackSpec.params``.
            context: prefix of the message (default: the kind), e.g. ``"attack 'pgd-ce' (pgd)"``.

        Raises:
            ParameterTypeError: for a value of the wrong type.
            ValueError: for an unknown name (the message names the closest valid one and lists
                all), a value out of range, or a combination a rule refuses.
        """
        where = context or self.kind
        if not isinstance(params, Mapping):
            raise ParameterTypeError(
                f"{where}: parameters must be a mapping of names to values, "
                f"got {type(params).__name__}"
            )
        for name in params:
            if not isinstance(name, str) or name not in self.params:
                raise ValueError(f"{where}: {self._unknown(name)}")
        for name, value in params.items():
            try:
                self.params[name].check(name, value)
            except ValueError as err:
                raise type(err)(f"{where}: {err}") from None
        full = {**self.defaults, **params}
        for rule in self.rules:
            problem = rule(full)
            if problem is not None:
                raise ValueError(f"{where}: {problem}")

    def allows(self, params: Mapping[str, Any]) -> bool:
        """Whether ``check(params)`` passes."""
        try:
            self.check(params)
        except ValueError:
            return False
        return True

    def _unknown(self, name: object) -> str:
        if name in SUITE_ARGUMENTS:
            return (
                f"{name!r} is not a parameter of an attack; it is set by "
                f"{SUITE_ARGUMENTS[str(name)]}"
            )
        valid = ", ".join(self.params) or "none"
        close = difflib.get_close_matches(str(name), list(self.params), n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown parameter {name!r}{hint}; {self.kind} takes: {valid}"


_REGISTRY: dict[str, Attack] = {}


def register(
    kind: str,
    function: Callable[..., AttackResult],
    *,
    family: Family | str,
    params: Mapping[str, Param],
    backends: Iterable[str] = ("native",),
    rules: Iterable[Rule] = (),
    independence: Independence = _never,
) -> Attack:
    """Register ``function`` as the attack ``kind``.

    Args:
        kind: the name suites use; registered once.
        function: takes ``(model, x, y, epsilons)`` and keyword-only parameters.
        family: a ``Family`` or its name.
        params: the declared type and range of every keyword-only parameter of ``function``
            except the suite's arguments (``SUITE_ARGUMENTS``); exactly those names.
        backends: the backends that can compute it (the first is the default); more than one
            needs a ``backend`` parameter, whose choices are then these backends.
        rules: cross-parameter rules.
        independence: the full parameters to whether the kind's per-sample results are
            independent of the batch (default: never).

    Returns:
        the registered ``Attack``.

    Raises:
        ValueError: for a kind registered twice, or declarations that disagree with the
            function's signature (names, defaults, backends).
    """
    if kind in _REGISTRY:
        raise ValueError(f"attack kind {kind!r} is already registered")
    signature = inspect.signature(function)
    keywords = {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    missing = sorted(set(SUITE_ARGUMENTS) - set(keywords))
    if missing:
        raise ValueError(f"{kind}: the function must take the suite's arguments {missing}")
    names = [name for name in keywords if name not in SUITE_ARGUMENTS]
    if set(names) != set(params):
        raise ValueError(
            f"{kind}: declared parameters {sorted(params)} differ from the function's "
            f"{sorted(names)}"
        )
    backends = tuple(backends)
    unknown = [b for b in backends if b not in (*BACKENDS, "pyautoattack")]
    if not backends or unknown:
        raise ValueError(f"{kind}: backends must be among {BACKENDS} or pyautoattack")
    if (len(backends) > 1) != ("backend" in params):
        raise ValueError(f"{kind}: a backend parameter goes with more than one backend")
    if "backend" in params and params["backend"].choices != backends:
        raise ValueError(f"{kind}: the backend parameter's choices must be {backends}")
    ordered = {name: params[name] for name in names}
    defaults = {name: keywords[name] for name in names}
    for name, default in defaults.items():
        if default is inspect.Parameter.empty:
            raise ValueError(f"{kind}: parameter {name!r} needs a default")
        ordered[name].check(f"{kind}: the default of {name}", default)
    attack = Attack(
        kind=kind,
        function=function,
        family=Family.parse(family),
        backends=backends,
        params=MappingProxyType(ordered),
        defaults=MappingProxyType(defaults),
        rules=tuple(rules),
        independence=independence,
    )
    _REGISTRY[kind] = attack
    return attack


def get(kind: str) -> Attack:
    """The attack registered as ``kind``.

    Raises:
        ValueError: for an unknown kind; the message lists the known ones.
    """
    if isinstance(kind, str) and kind in _REGISTRY:
        return _REGISTRY[kind]
    close = difflib.get_close_matches(str(kind), list(_REGISTRY), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown attack kind {kind!r}{hint}; known kinds: {', '.join(_REGISTRY)}")


def batch_independent(kind: str, params: Mapping[str, Any]) -> bool:
    """Whether ``kind`` with ``params`` gives each sample a result independent of the batch.

    True means: a sample's result does not depend on the batch it falls in, its position there,
    the batch size or the other samples of the call, given its id (``sample_ids``) and the
    call's generator. So an evaluation set split across calls or processes, each passing its
    samples' ids, gives every sample what one call over the whole set gives it, up to float
    rounding of the model's outputs (a model's float result can change with batch
    composition). It holds for a deterministic model; a stochastic one (dropout active,
    ``stochastic=True``, EOT) draws from torch's global RNG per batch, and its results agree
    with one call only in distribution, whatever this says.

    Per kind:

    - ``fgsm``, native: True (nothing random; each sample's own gradient). Through
      torchattacks or cleverhans: False; both differentiate the batch's mean loss, and their
      L2 step divides the gradient (``1/n`` of the sample's) by its norm plus ``1e-10``
      (torchattacks) or by at least ``1e-6`` (cleverhans), so the step depends on the batch
      size wherever the gradient is small.
    - ``pgd`` and ``pgd-t``, native: True (random starts and random targets from each
      sample's own stream). Through a library: False (random starts drawn per batch from
      the global RNG, and the L2 step as for FGSM); a random target is still the sample's own.
    - ``noise``: True (each sample's draws from its own stream).
    - ``apgd``: True (pyautoattack's iteration, with each run's start from the sample's own
      stream).
    - ``square``, native: True (each sample's windows and signs from its own stream). Through
      pyautoattack: False (one window per iteration for the whole batch, from the global RNG).
    - ``fab``: True with one run per target (``num_restarts=1``, AutoAttack's FAB-T): it
      draws nothing, every step is the sample's own. With more runs False (their random starts
      are drawn per batch from the global RNG).
    - ``autoattack``: False (pyautoattack draws per batch from the global RNG).

    Args:
        kind: a registered kind.
        params: its parameters, as in ``AttackSpec.params`` (defaults fill the rest).

    Raises:
        ValueError: for an unknown kind or invalid parameters (as ``Attack.check``).

    Example:
        >>> batch_independent("pgd", {"num_restarts": 3})
        True
        >>> batch_independent("pgd", {"backend": "torchattacks"})
        False
    """
    attack = get(kind)
    attack.check(params)
    return attack.independence({**attack.defaults, **params})


def list_attacks(
    family: Family | str | Iterable[Family | str] | None = None,
    *,
    backend: str | None = None,
    gradient: bool | None = None,
    eot: bool | None = None,
) -> list[str]:
    """The registered kinds, in registration order, optionally filtered.

    Args:
        family: keep kinds of this family (or of any of these families).
        backend: keep kinds this backend can compute.
        gradient: keep kinds whose family follows the input gradient (True) or not (False).
        eot: keep kinds that support EOT (True) or not (False).

    Example:
        >>> list_attacks(gradient=True)
        ['fgsm', 'pgd', 'pgd-t', 'apgd', 'fab']
    """
    if family is None:
        families = None
    elif isinstance(family, Family | str):
        families = {Family.parse(family)}
    else:
        families = {Family.parse(f) for f in family}
    return [
        attack.kind
        for attack in _REGISTRY.values()
        if (families is None or attack.family in families)
        and (backend is None or backend in attack.backends)
        and (gradient is None or attack.family.gradient is gradient)
        and (eot is None or attack.eot is eot)
    ]


def check_keys(given: Iterable[object], valid: Iterable[str], what: str) -> None:
    """Raise for the first of ``given`` not in ``valid``, naming the closest valid one.

    Args:
        given: the keys found, e.g. of a ``[sweep]`` table.
        valid: the keys allowed.
        what: what they are, e.g. ``"[sweep] key"``.
    """
    allowed = list(valid)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {what} {key!r}{hint}; valid: {', '.join(allowed)}")
