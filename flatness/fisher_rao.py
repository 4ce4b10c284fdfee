"""Fisher-Rao norm (Liang et al. 2019) by one forward-mode JVP per batch.

For cross-entropy ``ℓ(f, c) = logsumexp(f) - f_c`` the chain rule gives, for every class c,

    ⟨θ, ∇_θ ℓ(f_θ(x), c)⟩ = Σ_k (softmax(f)_k - 1[k = c]) · u_k,   u = J_θ f_θ(x) · θ,

so a single JVP of the logits along θ itself yields the inner product for all classes at
once. This is exact for any architecture (biases, batch norm, residual connections); the
closed form ``(L+1)·⟨∂ℓ/∂f, f⟩`` only holds for bias-free ReLU networks.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from torch import Tensor, nn
from torch.func import jvp

from core.flatrecords import FisherRaoEstimate
from flatness.core import (
    FunctionalModel,
    Mode,
    TermLayout,
    batches,
    check_data,
    check_mc_samples,
    check_positive,
    defined,
    dropout_seeds,
    in_mode,
    make_provenance,
    parse_mode,
    seeded_global_rng,
    sharded_sweep,
)
from flatness.draws import Draw, DrawPlan, StoppedBy, reached, run_draws
from flatness.stats import MeanAccumulator
from torchutil import make_generator


class Fisher(StrEnum):
    """Which distribution of labels the Fisher-Rao expectation is over.

    ``EMPIRICAL``: the true labels. ``MODEL``: y ~ softmax(f_θ(x)), summed exactly over all
    classes.
    """

    EMPIRICAL = "empirical"
    MODEL = "model"


_DEFINITIONS = {
    Fisher.EMPIRICAL: "E_(x,y)[(θᵀ ∇_θ CE(f_θ(x), y))²] over the data with its true labels, "
    "θ = all trainable parameters",
    Fisher.MODEL: "E_x Σ_c softmax(f_θ(x))_c (θᵀ ∇_θ CE(f_θ(x), c))², exact over all classes, "
    "θ = all trainable parameters",
}


def parameter_directional_derivative(fmodel: FunctionalModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and their derivative along the parameters themselves.

    Args:
        fmodel: The model as a function of its trainable parameters θ.
        x: Inputs ``[B, ...]`` on the model's device and dtype.

    Returns:
        ``(logits, u)``, both ``[B, K]``, with ``u = d/dt f_{θ + tθ}(x)`` at t = 0.
    """
    logits, u = jvp(lambda params: fmodel(params, x), (fmodel.params,), (fmodel.params,))[:2]
    return logits, u


def fisher_rao_per_sample(logits: Tensor, u: Tensor, y: Tensor, fisher: Fisher) -> Tensor:
    """Per-sample ``(θᵀ∇ℓ)²`` from the logits and their derivative along θ.

    Args:
        logits: ``[B, K]``.
        u: ``[B, K]``, the JVP of the logits along θ.
        y: Labels ``[B]`` in ``[0, K)``; unused for the model Fisher.
        fisher: Empirical (true labels) or model (exact expectation over classes).

    Returns:
        ``[B]``: for the empirical Fisher ``(softmaxᵀu - u_y)²``; for the model Fisher
        ``Σ_c softmax_c (softmaxᵀu - u_c)²``, the variance of u under the softmax.
    """
    probs = logits.softmax(dim=-1)
    mean_u = (probs * u).sum(dim=-1, keepdim=True)
    if fisher is Fisher.EMPIRICAL:
        return (mean_u[:, 0] - u.gather(1, y[:, None])[:, 0]) ** 2
    return (probs * (mean_u - u) ** 2).sum(dim=-1)


def fisher_rao_norm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    fisher: Fisher | str = Fisher.EMPIRICAL,
    batch_size: int = 128,
    minibatch_size: int | None = 64,
    rel_tol: float = 0.02,
    min_draws: int = 8,
    max_draws: int = 32,
    mode: Mode | str = Mode.EVAL,
    num_mc_samples: int = 1,
    confidence: float = 0.95,
) -> FisherRaoEstimate:
    """Squared Fisher-Rao norm ‖θ‖²_fr = E[(θᵀ ∇_θ ℓ(f_θ(x), y))²] over a data set.

    Doubly stochastic (`flatness.draws`): each draw takes a fresh mini-batch of
    ``minibatch_size`` samples (with, in train mode, its own dropout draws), and its
    observation is the mean of the per-sample values. Draws are made until the standard error
    of their mean falls to ``rel_tol`` times the estimate (consulted from ``min_draws`` draws
    on) or until ``max_draws`` are spent. With ``minibatch_size=None``, or at least N, it is
    one pass over every sample, with the standard error over the N per-sample values.

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``.
        x: Inputs ``[N, ...]`` (for images, pixels in [0, 1]).
        y: Labels ``[N]`` in ``[0, K)``.
        generator: Source of the mini-batches and of the dropout draws in train mode; its seed
            is recorded.
        fisher: ``"empirical"`` (true labels) or ``"model"`` (y ~ softmax, exact).
        batch_size: Samples per JVP; bounds memory, not the result.
        minibatch_size: Samples per draw, m (None: the whole data set, once).
        rel_tol: Target relative standard error.
        min_draws: Draws made before the stopping rule is consulted (at least 2; it is never
            consulted before eight).
        max_draws: Budget of draws.
        mode: ``"eval"`` or ``"train"`` (dropout-family layers active, batch norm frozen).
        num_mc_samples: Dropout draws averaged per sample in train mode; must be 1 in eval.
        confidence: Level of the reported t-interval.

    Returns:
        The estimate (``value``, the mean of the per-sample values over the samples used) with
        its standard error (``stderr``: over the draws' means with mini-batches, counting every
        source of randomness, see `flatness.draws`; over the N per-sample values on the whole
        data set; None when undefined), the Student-t interval at ``confidence``
        (``ci_low``, ``ci_high``), ``norm`` = sqrt(value), the draws used (``num_draws``;
        ``minibatch_size`` None for one pass over the whole data) and what stopped it
        (``stopped_by``: ``"target"``, ``"budget"`` or ``"all-samples"``).

    Example:
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        >>> result = fisher_rao_norm(model, x, y, generator=torch.Generator().manual_seed(0))
        >>> result.value > 0, result.stopped_by
        (True, 'all-samples')
    """
    fisher = _parse_fisher(fisher)
    mode = parse_mode(mode)
    check_data(x, y, batch_size)
    check_mc_samples(mode, num_mc_samples)
    check_positive("rel_tol", rel_tol)
    if minibatch_size is not None:
        check_positive("minibatch_size", minibatch_size)
    if not 2 <= min_draws <= max_draws:
        raise ValueError(
            f"need 2 <= min_draws <= max_draws, got min_draws={min_draws}, "
            f"max_draws={max_draws}; fix: raise max_draws or lower min_draws"
        )
    fmodel = FunctionalModel(model)
    plan = DrawPlan(x.shape[0], minibatch_size, batch_size, generator)
    with in_mode(model, mode), torch.no_grad():
        if plan.full:
            accumulator = _whole_data(
                fmodel, x, y, batch_size, fisher, mode, num_mc_samples, generator
            )
            num_draws, stopped_by = 1, StoppedBy.ALL_SAMPLES
        else:
            accumulator, num_draws, stopped_by = _drawn(
                fmodel, x, y, plan, fisher, mode, num_mc_samples, rel_tol, min_draws, max_draws
            )
    ci_low, ci_high = accumulator.interval(confidence)
    return FisherRaoEstimate(
        value=float(accumulator.mean),
        stderr=defined(accumulator.stderr),
        ci_low=defined(ci_low),
        ci_high=defined(ci_high),
        confidence=defined(confidence),
        norm=defined(math.sqrt(max(accumulator.mean, 0.0))),
        fisher=fisher.value,
        num_draws=num_draws,
        minibatch_size=None if plan.full else plan.size,
        stopped_by=stopped_by.value,
        rel_tol=defined(rel_tol),
        max_draws=max_draws,
        provenance=make_provenance(
            x, y, batch_size, mode, num_mc_samples, generator, _DEFINITIONS[fisher]
        ),
    )


def _whole_data(
    fmodel: FunctionalModel,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    fisher: Fisher,
    mode: Mode,
    num_mc_samples: int,
    generator: torch.Generator,
) -> MeanAccumulator:
    """The per-sample values of every sample, in one pass over the data."""
    accumulator = MeanAccumulator()
    data = list(batches(x, y, batch_size, fmodel))
    seeds = [dropout_seeds(generator, mode, num_mc_samples) for _ in data]
    per_sample = [
        torch.zeros(x_b.shape[0], dtype=fmodel.dtype, device=fmodel.device) for x_b, *_ in data
    ]

    def term(index: int, draw: int) -> list[Tensor]:
        x_b, y_b, _ = data[index]
        with seeded_global_rng(seeds[index][draw], fmodel.device):
            logits, u = parameter_directional_derivative(fmodel, x_b)
        return [fisher_rao_per_sample(logits, u, y_b, fisher)]

    def fold(index: int, draw: int, parts: list[Tensor]) -> None:
        per_sample[index] += parts[0] / num_mc_samples
        if draw + 1 == len(seeds[index]):
            accumulator.update(per_sample[index])

    def layout(index: int) -> TermLayout:
        return [((data[index][0].shape[0],), fmodel.dtype)]

    sharded_sweep([len(s) for s in seeds], term, fold, layout, fmodel.device)
    return accumulator


def _drawn(
    fmodel: FunctionalModel,
    x: Tensor,
    y: Tensor,
    plan: DrawPlan,
    fisher: Fisher,
    mode: Mode,
    num_mc_samples: int,
    rel_tol: float,
    min_draws: int,
    max_draws: int,
) -> tuple[MeanAccumulator, int, StoppedBy]:
    """Mini-batch draws until the relative standard error or the budget is reached."""
    accumulator = MeanAccumulator()
    seeds: dict[int, list[list[int | None]]] = {}
    sums: dict[int, Tensor] = {}
    reached_target = False

    def term(draw: Draw, chunk: int, k: int) -> list[Tensor]:
        if draw.number not in seeds:
            own = make_generator(draw.seed, plan.generator.device)
            seeds[draw.number] = [dropout_seeds(own, mode, num_mc_samples) for _ in draw.chunks]
        indices = draw.chunks[chunk][0].to(x.device)
        dtype = fmodel.dtype if x.dtype.is_floating_point else x.dtype
        x_b = x[indices].to(device=fmodel.device, dtype=dtype)
        y_b = y[indices].to(device=fmodel.device, dtype=torch.long)
        with seeded_global_rng(seeds[draw.number][chunk][k], fmodel.device):
            logits, u = parameter_directional_derivative(fmodel, x_b)
        return [fisher_rao_per_sample(logits, u, y_b, fisher).sum()[None]]

    def layout(draw: Draw, chunk: int) -> TermLayout:
        return [((1,), fmodel.dtype)]

    def fold(draw: Draw, chunk: int, k: int, parts: list[Tensor]) -> None:
        share = parts[0] / (plan.size * num_mc_samples)
        sums[draw.number] = sums[draw.number] + share if draw.number in sums else share

    def finish(draw: Draw) -> bool:
        nonlocal reached_target
        seeds.pop(draw.number, None)
        accumulator.update(sums.pop(draw.number))
        reached_target = reached(accumulator, rel_tol, min_draws)
        return reached_target

    num_draws = run_draws(
        plan, max_draws, num_mc_samples, term, layout, fold, finish, fmodel.device
    )
    return accumulator, num_draws, StoppedBy.TARGET if reached_target else StoppedBy.BUDGET


def _parse_fisher(fisher: Fisher | str) -> Fisher:
    try:
        return Fisher(fisher)
    except ValueError:
        known = ", ".join(repr(f.value) for f in Fisher)
        raise ValueError(f"fisher must be one of {known}, got {fisher!r}") from None
