"""Doubly stochastic estimation: fresh mini-batches drawn until the statistics are good enough.

An estimator that averages a random quantity (a Hutchinson probe's quadratic form, a sample's
Fisher-Rao value) need not sweep the whole data set for each observation. Here every *draw*
takes a fresh mini-batch of ``m`` of the ``N`` samples, its own dropout draws and its own
probes, and yields one observation z_j, the draw's average. Draws are made until the standard
error of their mean falls to a target fraction of the mean, or until a budget is spent,
whichever comes first, and the result says which.

Mini-batches are consecutive blocks of ``m`` indices of a random permutation of the ``N``
samples; when fewer than ``m`` are left, a new permutation starts (the rest is not used, so
every draw holds exactly ``m`` samples). Each draw is therefore a uniformly random
``m``-subset, and the mean of the draws is unbiased for the quantity over the ``N`` samples:
for the Hessian trace, E[vᵀ H_B v] = E_B[tr H_B] = tr H because every sample is equally
likely to be in B, and likewise for any per-sample mean.

Standard error. The observations' variance has one part per source of randomness (the law of
total variance, for a Hutchinson draw with P probes):

    Var(z) = E_B[Var_v(z | B)] + Var_B(tr H_B),   Var_v(z | B) = (2 / P) Σ_{i≠k} (H_B)_ik²

(the second, for Rademacher probes, is Hutchinson's own variance; in train mode a third part
comes from the dropout draws). The reported standard error ``s / √J``, from the sample
variance s² of the J observations, estimates all of it at once, because each observation
carries every source. Within one pass over the permutation the draws are disjoint random
subsets of samples that were themselves drawn independently from the data distribution, so
the observations are independent and ``s / √J`` is exactly the standard error about the
population's value; past one pass, samples recur, and ``s / √J`` remains a conservative
standard error about the value over the ``N`` samples (sampling without replacement only
lowers the variance of the batch part).

Under torch.distributed, draws are made ``world_size`` at a time, their mini-batches computed
in parallel (`flatness.core.sharded_sweep`) and folded in the order of one process, with the
stopping rule consulted after each one: the draws and their order are those of one process,
so every rank stops after the same draw with the result of one process, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

import torchutil
from flatness.core import TermLayout, sharded_sweep
from flatness.stats import MeanAccumulator
from torchutil import draw_seed

MIN_OBSERVATIONS = 8
"""Independent observations in hand before a stopping rule is consulted. Per-sample Fisher-Rao
values and Hessian traces are heavy-tailed (a few misclassified samples dominate), so the
sample variance of a few draws that miss them understates the error: on the MNIST LeNet-5,
five draws of 32 samples gave a standard error of 0.097 where the spread over all 500 samples
implies 0.35, and would have stopped the empirical Fisher-Rao norm at "2 %"."""


class StoppedBy(StrEnum):
    """What ended an estimator.

    ``TARGET``: its statistics reached the requested precision (the relative standard error of
    a mean, or the residual bounds of Lanczos). ``BUDGET``: its budget of draws, probes or
    iterations was spent first. ``ALL_SAMPLES``: it is a single pass over every sample, with
    nothing to stop.
    """

    TARGET = "target"
    BUDGET = "budget"
    ALL_SAMPLES = "all-samples"


@dataclass(frozen=True)
class Draw:
    """One draw: its samples, in chunks of at most the batch size, and its own seed.

    Attributes:
        number: Position in the sequence of draws, from 0.
        chunks: ``(indices [n_c], weight n_c / m)`` per chunk; the indices (on the CPU) point
            into the data set, and the weights sum to one.
        seed: Seed of the draw's own generator (its dropout draws and probes).
    """

    number: int
    chunks: tuple[tuple[Tensor, float], ...]
    seed: int


class DrawPlan:
    """The sequence of draws over ``num_samples`` samples.

    Args:
        num_samples: N.
        minibatch_size: Samples per draw m; None (or m >= N) makes every draw the whole data
            set in its own order, the full-batch estimator.
        batch_size: Samples per forward pass: a draw is computed in chunks of this size.
        generator: Source of the permutations and of each draw's seed.
    """

    def __init__(
        self,
        num_samples: int,
        minibatch_size: int | None,
        batch_size: int,
        generator: torch.Generator,
    ) -> None:
        self.num_samples = num_samples
        self.full = minibatch_size is None or minibatch_size >= num_samples
        self.size = num_samples if self.full else int(minibatch_size)  # type: ignore[arg-type]
        self._batch_size = batch_size
        self.generator = generator
        self._order = torch.empty(0, dtype=torch.long, device="cpu")
        self._next = 0
        self._count = 0

    def next(self) -> Draw:
        """The next draw (one seed, and a fresh permutation when the current one runs out)."""
        if self.full:
            indices = torch.arange(self.num_samples, device="cpu")
        else:
            if self._next + self.size > self._order.numel():
                self._order = torch.randperm(
                    self.num_samples, generator=self.generator, device=self.generator.device
                ).cpu()
                self._next = 0
            indices = self._order[self._next : self._next + self.size]
            self._next += self.size
        chunks = tuple(
            (piece, piece.numel() / self.size) for piece in indices.split(self._batch_size)
        )
        draw = Draw(self._count, chunks, draw_seed(self.generator))
        self._count += 1
        return draw

    @property
    def drawn(self) -> int:
        """Draws handed out so far."""
        return self._count


def reached(
    accumulator: MeanAccumulator, rel_tol: float, min_count: int, offset: float = 0.0
) -> bool:
    """Whether a mean of observations is precise enough: at least ``min_count`` (and
    `MIN_OBSERVATIONS`) of them, and a standard error of at most ``rel_tol`` times the
    magnitude of ``offset + mean`` (``offset``: a part of the estimate known exactly)."""
    if accumulator.count < max(min_count, MIN_OBSERVATIONS):
        return False
    return accumulator.stderr <= rel_tol * abs(offset + accumulator.mean)


def run_draws(
    plan: DrawPlan,
    max_draws: int,
    terms_per_chunk: int,
    term: Callable[[Draw, int, int], list[Tensor]],
    layout: Callable[[Draw, int], TermLayout],
    fold: Callable[[Draw, int, int, list[Tensor]], None],
    finish: Callable[[Draw], bool],
    device: torch.device,
) -> int:
    """Makes draws until ``finish`` says stop or ``max_draws`` are folded; returns how many.

    Args:
        plan: The draws.
        max_draws: The budget.
        terms_per_chunk: Terms of each chunk (its dropout draws in train mode, else 1).
        term: ``(draw, chunk, k) -> tensors``, one term, computed on one rank only.
        layout: ``(draw, chunk) -> shapes and dtypes`` of a term's tensors.
        fold: ``(draw, chunk, k, tensors)``: adds a term to the draw's state, on every rank,
            in the order of one process.
        finish: Called on every rank once all terms of a draw are folded; True stops.
        device: The model's device, where received terms go.
    """
    world = torchutil.world_size()
    folded = 0
    stop = False
    while folded < max_draws and not stop:
        draws = [plan.next() for _ in range(min(world, max_draws - folded))]
        done, stop = _round(draws, terms_per_chunk, term, layout, fold, finish, device)
        folded += done
    return folded


def _round(
    draws: list[Draw],
    terms_per_chunk: int,
    term: Callable[[Draw, int, int], list[Tensor]],
    layout: Callable[[Draw, int], TermLayout],
    fold: Callable[[Draw, int, int, list[Tensor]], None],
    finish: Callable[[Draw], bool],
    device: torch.device,
) -> tuple[int, bool]:
    """Computes ``draws`` together (one per rank) and folds them in order until one stops;
    returns how many were folded and whether one stopped."""
    entries = [(draw, chunk) for draw in draws for chunk in range(len(draw.chunks))]
    left = {draw.number: len(draw.chunks) * terms_per_chunk for draw in draws}
    folded = 0
    stop = False

    def folding(entry: int, k: int, parts: list[Tensor]) -> None:
        nonlocal folded, stop
        if stop:  # a later draw of the round, computed before an earlier one stopped it
            return
        draw, chunk = entries[entry]
        fold(draw, chunk, k, parts)
        left[draw.number] -= 1
        if left[draw.number] == 0:
            folded += 1
            stop = finish(draw)

    sharded_sweep(
        [terms_per_chunk] * len(entries),
        lambda entry, k: term(*entries[entry], k),
        folding,
        lambda entry: layout(*entries[entry]),
        device,
    )
    return folded, stop
