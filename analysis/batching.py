"""Batch sizes for the machine: how many samples go through the model at once in the attacks
(and the probes and activation statistics) and in the flatness estimators.

``--batch-size auto`` (the default) measures the peak memory of one step at two small batch
sizes and takes the largest batch that fits in half the free memory
(`torchutil.choose_batch_size`); on CUDA an out-of-memory error halves it and redoes the
step. A number fixes it. Either way it bounds memory and changes no result: an attack works
on the samples of its own batch (the suite's ``batch_size``, 500 by default, which fixes its
random draws) and evaluates the model on them in chunks of this size (`attacks.ChunkedModel`);
the flatness estimators sum over batches of this size. Up to floating-point rounding, results
are the same for every batch size for a deterministic model; a stochastic one draws its
randomness per chunk, so its results are the same in distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.document import BatchSize
from core.flatrecords import FlatnessResult
from flatness import FlatnessConfig, Unit, hessian_pass, measure
from torchutil import (
    PROBE_SIZES,
    Memo,
    choose_batch_size,
    chosen_batch_size,
    empty_cache,
    is_out_of_memory,
    make_generator,
    model_mode,
    rekeyed,
)

__all__ = [
    "FLATNESS_BATCH_LIMIT",
    "FLATNESS_PROBE_SIZES",
    "FlatnessUnit",
    "attack_batch",
    "flatness_batch",
    "measure_fitting",
    "parse_batch_size",
]

FLATNESS_BATCH_LIMIT = 256
"""Largest flatness batch: the estimators' values do not depend on it, and beyond a few
hundred samples a larger one saves little time."""

FLATNESS_PROBE_SIZES = (2, 8)
"""Batch sizes at which one Hessian pass is measured: it costs several forward passes per
probe vector, so fewer samples than for the attack step."""


def parse_batch_size(text: str) -> int | None:
    """``"auto"`` -> None; a positive integer -> itself; anything else -> ValueError."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--batch-size must be auto or a positive integer, got {text!r}")
    return value


def attack_batch(
    model: nn.Module, x: Tensor, y: Tensor, requested: int | None, limit: int
) -> BatchSize:
    """Samples per model evaluation in the attacks: ``requested`` (capped at ``limit``, the
    attacks' own batch), or for None the largest that fits, measured on one cross-entropy
    input gradient in eval mode."""
    if requested is not None:
        return chosen_batch_size(min(requested, limit), "fixed")
    return _measured(functools.partial(_input_gradient, model, x, y), x.device, limit, PROBE_SIZES)


def flatness_batch(
    model: nn.Module, x: Tensor, y: Tensor, requested: int | None, num_samples: int
) -> BatchSize:
    """Samples per flatness pass: ``requested`` or the largest that fits (measured on one pass
    of Hessian-vector products, the estimators' largest step), at most
    ``FLATNESS_BATCH_LIMIT`` and ``num_samples``."""
    limit = min(FLATNESS_BATCH_LIMIT, num_samples)
    if requested is not None:
        return chosen_batch_size(min(requested, limit), "fixed")
    return _measured(
        functools.partial(_hessian_pass, model, x, y), x.device, limit, FLATNESS_PROBE_SIZES
    )


def _measured(
    step: Callable[[int], object],
    device: torch.device,
    limit: int,
    probe_sizes: tuple[int, int],
) -> BatchSize:
    try:
        return choose_batch_size(step, device, limit=limit, probe_sizes=probe_sizes)
    except Exception as err:
        if is_out_of_memory(err):
            raise
        # A model that fails here fails in the stage itself, which reports it in its own
        # terms (an attack failure, a flatness note); the measurement only sizes batches.
        return chosen_batch_size(limit, "unmeasured")


@dataclass(frozen=True)
class FlatnessUnit:
    """One flatness estimator in one mode (``flatness.Unit``) at the batch size it ran at:
    a unit of the audit, which the resume cache keeps under ``name`` (``analysis.resume``).

    Attributes:
        unit: The estimator and its mode.
        batch_size: Samples per pass.
    """

    unit: Unit
    batch_size: int

    @property
    def name(self) -> str:
        """``flatness-<mode>-<measure>-batch=<size>``: the unit's name in the resume cache."""
        return f"flatness-{self.unit.name}-batch={self.batch_size}"

    @property
    def label(self) -> str:
        """The estimator as a person reads it (``flatness.Unit.label``)."""
        return self.unit.label


def measure_fitting(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: FlatnessConfig,
    seed: int,
    choice: BatchSize,
    memo: Memo[FlatnessUnit] | None = None,
) -> tuple[FlatnessResult, BatchSize]:
    """``flatness.measure`` at the batch size of ``choice``, halved and redone from the start
    after an out-of-memory error; returns the result and the batch size it ran at. ``memo``
    keeps each estimator's result as a `FlatnessUnit`, its unit and the batch size it ran at
    (see ``flatness.measure``)."""
    while True:
        size = choice.size
        keyed = None
        if memo is not None:
            keyed = rekeyed(memo, functools.partial(FlatnessUnit, batch_size=size))
        try:
            result = measure(
                model,
                x,
                y,
                replace(config, batch_size=size),
                make_generator(seed),
                memo=keyed,
            )
            return result, choice
        except Exception as err:
            if not is_out_of_memory(err) or choice.size <= 1:
                raise
            choice = choice.halved()
        empty_cache(x.device)


def _samples(x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    index = torch.arange(n, device=x.device) % x.shape[0]
    return x[index], y[index]


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, n: int) -> None:
    inputs, labels = _samples(x, y, n)
    with model_mode(model, train=False), torch.enable_grad():
        inputs = inputs.detach().requires_grad_(True)
        loss = F.cross_entropy(model(inputs), labels)
        if loss.requires_grad:  # else the graph is cut, and the forward pass is all there is
            torch.autograd.grad(loss, inputs, allow_unused=True)


def _hessian_pass(model: nn.Module, x: Tensor, y: Tensor, n: int) -> None:
    hessian_pass(model, *_samples(x, y, n))
