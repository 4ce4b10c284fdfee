"""One entry point, `measure`, that runs a configured set of flatness estimators.

A `FlatnessConfig` names the measures (`Measure`: the Fisher-Rao norms, the Hessian trace, its
top eigenvalues and spectral density, the loss-landscape slices, ε-sharpness), the mode (the
model's own, or with its dropout-family layers active), the batch size and each estimator's
options: its target precision and budget (the audit's come from
``analysis.config.flatness_config``). Each estimator lives in its own module and returns its
value with its standard error, what it spent and what stopped it: `fisher_rao_norm`
(``flatness.fisher_rao``), `hutchinson_trace` (``flatness.hessian``), `hessian_eigenvalues`
(``flatness.eigenvalues``), `spectral_density` (``flatness.density``), `loss_landscape`
(``flatness.landscape``) and `epsilon_sharpness` (``flatness.sharpness``); the mini-batch draws
are in ``flatness.draws``, the Hessian's products in ``flatness.products`` and
``flatness.lanczos``. Each returns its record of the result document (``core.flatrecords``),
and `measure` a ``core.flatrecords.FlatnessResult`` holding one per measure.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

import torchutil
from core.docfields import as_read
from core.flatrecords import FlatnessResult
from flatness.core import (
    Mode,
    check_mc_samples,
    check_positive,
    draw_seeds,
    fingerprint,
    parse_mode,
)
from flatness.fisher_rao import Fisher, fisher_rao_norm
from flatness.hessian import hessian_eigenvalues, hutchinson_trace, spectral_density
from flatness.landscape import loss_landscape
from flatness.sharpness import epsilon_sharpness
from torchutil import Memo, make_generator


class Measure(StrEnum):
    """The estimators `measure` can run; the values name them in configs and JSON."""

    FISHER_RAO_EMPIRICAL = "fisher_rao_empirical"
    FISHER_RAO_MODEL = "fisher_rao_model"
    HESSIAN_TRACE = "hessian_trace"
    HESSIAN_EIGENVALUES = "hessian_eigenvalues"
    SPECTRAL_DENSITY = "spectral_density"
    LANDSCAPE_1D = "landscape_1d"
    LANDSCAPE_2D = "landscape_2d"
    EPSILON_SHARPNESS = "epsilon_sharpness"


# Each measure is an estimator with some keyword arguments pinned.
_ESTIMATORS: dict[Measure, tuple[Callable[..., Any], dict[str, Any]]] = {
    Measure.FISHER_RAO_EMPIRICAL: (fisher_rao_norm, {"fisher": Fisher.EMPIRICAL}),
    Measure.FISHER_RAO_MODEL: (fisher_rao_norm, {"fisher": Fisher.MODEL}),
    Measure.HESSIAN_TRACE: (hutchinson_trace, {}),
    Measure.HESSIAN_EIGENVALUES: (hessian_eigenvalues, {}),
    Measure.SPECTRAL_DENSITY: (spectral_density, {}),
    Measure.LANDSCAPE_1D: (loss_landscape, {"num_directions": 1}),
    Measure.LANDSCAPE_2D: (loss_landscape, {"num_directions": 2}),
    Measure.EPSILON_SHARPNESS: (epsilon_sharpness, {}),
}
_SHARED = {"generator", "mode", "num_mc_samples"}


@dataclass(frozen=True)
class FlatnessConfig:
    """What `measure` runs, and how.

    Attributes:
        measures: Names (or `Measure` members) of the estimators to run, in this order.
        batch_size: Samples per pass, for every estimator unless its options override it
            (an audit replaces it with the pass that fits the memory).
        mode: ``"eval"`` (default) or ``"train"``, for every estimator.
        num_mc_samples: Dropout draws averaged in train mode (1 in eval mode).
        options: Per measure name, extra keyword arguments of its estimator, e.g.
            ``{"hessian_trace": {"max_probes": 50, "method": "hutch++"}}``.

    Example:
        >>> FlatnessConfig(measures=("fisher_rao_model", "hessian_trace"), batch_size=64)
        ... # doctest: +ELLIPSIS
        FlatnessConfig(measures=('fisher_rao_model', 'hessian_trace'), batch_size=64, ...)
    """

    measures: tuple[Measure | str, ...] = tuple(Measure)
    batch_size: int = 128
    mode: Mode | str = Mode.EVAL
    num_mc_samples: int = 1
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    """One estimator of `measure` in one mode: the key of its ``memo`` (a ``torchutil.Memo``),
    and a unit of the audit's resume cache (``analysis.resume``).

    Attributes:
        mode: The mode the estimator runs in.
        measure: The estimator.
    """

    mode: Mode
    measure: Measure

    @property
    def name(self) -> str:
        """``<mode>-<measure>``, e.g. ``eval-hessian_trace``: the name ``measure``'s memo keeps
        it under (the audit's resume cache adds the batch size, ``analysis.batching``'s
        ``FlatnessUnit``)."""
        return f"{self.mode.value}-{self.measure.value}"

    @property
    def label(self) -> str:
        """The estimator as a person reads it, e.g. ``flatness hessian_trace (layers active)``."""
        active = " (layers active)" if self.mode is Mode.TRAIN else ""
        return f"flatness {self.measure.value}{active}"


def measure(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: FlatnessConfig,
    generator: torch.Generator,
    *,
    memo: Memo[Unit] | None = None,
) -> FlatnessResult:
    """Runs the configured flatness estimators on one model and data set.

    Every estimator gets its own generator, seeded from ``generator`` in the order of
    ``config.measures``, so adding a measure at the end leaves the others' results unchanged.

    Under torch.distributed every rank calls it with the same model, data, configuration and
    generator state (checked first: a difference is a ValueError on every rank). The batches
    of each pass over the data are split between the ranks and every rank returns exactly the
    result of one process (`flatness.core.sharded_sweep`).

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``; left in its mode, unchanged.
        x: Inputs ``[N, ...]`` (for images, pixels in [0, 1]).
        y: Labels ``[N]``.
        config: Which estimators, mode and options.
        generator: Source of every random choice.
        memo: keeps each finished estimator under its `Unit` (``torchutil.Memo``) and
            returns it instead of running it again, so that an interrupted run resumes
            (``analysis.resume``); the seeds are drawn either way.

    Returns:
        One record per requested measure (None for the others); ``active_layers`` is None
        (the audit sets it to the result in train mode, ``dataclasses.replace``).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
        ...                             torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> config = FlatnessConfig(measures=("fisher_rao_model", "hessian_trace"))
        >>> result = measure(model, x, y, config, torch.Generator().manual_seed(0))
        >>> [name.value for name in Measure if getattr(result, name) is not None]
        ['fisher_rao_model', 'hessian_trace']
    """
    measures = [_parse_measure(m) for m in config.measures]
    mode = parse_mode(config.mode)
    check_mc_samples(mode, config.num_mc_samples)
    check_positive("batch_size", config.batch_size)
    unknown = set(config.options) - {m.value for m in measures}
    if unknown:
        raise ValueError(
            f"options given for measures that are not run: {sorted(unknown)}; fix: add them "
            f"to measures {[m.value for m in measures]} or drop their options"
        )
    for name in measures:
        _check_options(name, config.options.get(name.value, {}))
    plain_config = {
        "measures": [m.value for m in measures],
        "batch_size": config.batch_size,
        "mode": mode.value,
        "num_mc_samples": config.num_mc_samples,
        "options": config.options,
    }
    _check_same_on_every_rank(model, x, y, plain_config, generator)
    seeds = draw_seeds(generator, len(measures))
    results: dict[str, Any] = {}
    for name, seed in zip(measures, seeds, strict=True):
        estimator, pinned = _ESTIMATORS[name]
        options = {"batch_size": config.batch_size} | config.options.get(name.value, {})
        compute = functools.partial(
            estimator,
            model,
            x,
            y,
            generator=make_generator(seed, generator.device),
            mode=mode,
            num_mc_samples=config.num_mc_samples,
            **pinned,
            **options,
        )
        if memo is None:
            results[name.value] = compute()
        else:
            results[name.value], _ = memo(Unit(mode, name), compute)
    return FlatnessResult(
        seed=generator.initial_seed(),
        config=as_read(plain_config),
        **(_unmeasured() | results),
    )


def _unmeasured() -> dict[str, None]:
    """Every measure of `FlatnessResult` not run, and its ``active_layers`` unset."""
    return dict.fromkeys([*(m.value for m in Measure), "active_layers"])


def _check_same_on_every_rank(
    model: nn.Module, x: Tensor, y: Tensor, config: dict[str, Any], generator: torch.Generator
) -> None:
    """Refuses, on every rank at once, ranks given different work: each would wait forever
    for terms the others never send, or return another result."""
    if not torchutil.is_distributed():
        return
    state = hashlib.sha256()
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        state.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = {
        "model": state.hexdigest()[:16],
        "data": fingerprint(x, y),
        "config": config,
        "generator state": hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest(),
    }
    everyone = torchutil.all_gather_objects(mine)
    for other_rank, other in enumerate(everyone):
        differing = [key for key in mine if other[key] != everyone[0][key]]
        if differing:
            raise ValueError(
                f"measure under torch.distributed needs the same model, data, config and "
                f"generator state on every rank, got a different {', '.join(differing)} on "
                f"rank {other_rank} than on rank 0; fix: load the same checkpoint and data and "
                "seed the generator alike on every rank"
            )


def _parse_measure(name: Measure | str) -> Measure:
    try:
        return Measure(name)
    except ValueError:
        known = ", ".join(repr(m.value) for m in Measure)
        raise ValueError(f"measure must be one of {known}, got {name!r}") from None


def _check_options(name: Measure, options: dict[str, Any]) -> None:
    estimator, pinned = _ESTIMATORS[name]
    parameters = inspect.signature(estimator).parameters
    allowed = (
        {p for p, spec in parameters.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY}
        - _SHARED
        - set(pinned)
    )
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"unknown options for {name.value}: {sorted(unknown)}; expected some of "
            f"{sorted(allowed)} (mode and num_mc_samples are set for all measures at once)"
        )
