"""Hessian trace, top eigenvalues and spectral density of the loss over a data set.

The Hessian is that of L(θ) = (1/N) Σ_i CE(f_θ(x_i), y_i) with respect to all trainable
parameters, accessed only through Hessian-vector products computed forward-over-reverse
(``torch.func.jvp`` of ``torch.func.grad``), batch by batch and weighted by batch size. Several
probe vectors share one pass over the data through ``torch.func.vmap``, so the forward and
backward pass of the loss itself is paid once per pass rather than once per probe.

This module holds the trace (Hutchinson and Hutch++) and names every estimator; the rest are
its parts: ``flatness.products`` (the Hessian operator and its products with vectors),
``flatness.lanczos`` (the Lanczos recurrence, its Ritz pairs and Gauss quadrature),
``flatness.eigenvalues`` (the largest eigenvalues) and ``flatness.density`` (the spectral
density).
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from torch import Tensor, nn

from core.flatrecords import TraceEstimate
from flatness.core import (
    FunctionalModel,
    Mode,
    TermLayout,
    check_data,
    check_mc_samples,
    check_positive,
    defined,
    dropout_seeds,
    in_mode,
    make_provenance,
    parse_mode,
    rademacher,
    seeded_global_rng,
)
from flatness.density import density_stderr, smoothed_density, spectral_density
from flatness.draws import MIN_OBSERVATIONS, Draw, DrawPlan, StoppedBy, reached, run_draws
from flatness.eigenvalues import distinct_top, hessian_eigenvalues
from flatness.lanczos import exact_dot, gauss_quadrature, lanczos, ritz_pairs
from flatness.products import (
    HESSIAN,
    HessianOperator,
    batch_hvp,
    batch_quadratic_forms,
    default_probes_per_pass,
    fixed_operator,
    hessian_pass,
    vectors_like,
)
from flatness.stats import MeanAccumulator
from torchutil import make_generator

__all__ = [
    "HessianOperator",
    "TraceMethod",
    "batch_hvp",
    "batch_quadratic_forms",
    "density_stderr",
    "distinct_top",
    "exact_dot",
    "gauss_quadrature",
    "hessian_eigenvalues",
    "hessian_pass",
    "hutchinson_trace",
    "lanczos",
    "ritz_pairs",
    "smoothed_density",
    "spectral_density",
    "vectors_like",
]

# Where a draw (its mini-batch) is the observation, its probes share the mini-batch's own
# variance, so a probe adds less than a draw would; they are worth sharing a pass only while
# the pass costs little more for them. On the CIFAR-10 ResNet-18 (11.2M parameters, draws of 64
# samples, one CPU thread; `python -m benchmarks.bench_trace_draws`) a pass cost about the same
# per probe whatever their number (7.3 s with 1, 46.9 s with 6) and the mini-batch's variance
# was 0.44 of a probe's, so 6 probes per draw needed 2.7x the time of 1 for the same standard
# error (2 probes 1.3x); on the MNIST LeNet-5 (62k parameters) 6 probes cost 3.2x one and 2 or
# 6 per draw needed 0.75x the time of 1. So a draw holds at most this many numbers of probes:
# one probe for networks of 8M parameters and more, up to 8 for small ones.
_DRAW_PROBE_NUMBERS = 2**24


class TraceMethod(StrEnum):
    """Trace estimator: plain Hutchinson, or Hutch++ (low-rank deflation, then Hutchinson)."""

    HUTCHINSON = "hutchinson"
    HUTCH_PLUS_PLUS = "hutch++"


def hutchinson_trace(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    max_probes: int = 200,
    rel_tol: float = 0.02,
    min_probes: int = 10,
    method: TraceMethod | str = TraceMethod.HUTCHINSON,
    deflation_rank: int = 10,
    batch_size: int = 128,
    minibatch_size: int | None = 64,
    probes_per_pass: int | None = None,
    mode: Mode | str = Mode.EVAL,
    num_mc_samples: int = 1,
    confidence: float = 0.95,
) -> TraceEstimate:
    """Trace of the loss Hessian by Hutchinson's estimator with Rademacher probes, doubly
    stochastic: every draw takes a fresh mini-batch (`flatness.draws`).

    Each draw pushes ``probes_per_pass`` probes through one pass over a fresh mini-batch of
    ``minibatch_size`` samples (with, in train mode, its own dropout draws), and its
    observation is the mean of their quadratic forms vᵀ H_B v, unbiased for tr(H). Draws are
    made until the standard error falls to ``rel_tol · |estimate|`` (consulted once
    ``min_probes`` probes and eight observations are in, so that an early lucky streak cannot
    stop it) or until ``max_probes`` probes are spent; ``stopped_by`` says which.

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        generator: Source of the mini-batches, probes (and dropout draws in train mode).
        max_probes: Budget of Hutchinson probes (Hutch++ spends ``2 · deflation_rank`` more).
        rel_tol: Target relative standard error.
        min_probes: Probes drawn before the stopping rule is consulted (at least 2).
        method: ``"hutchinson"`` or ``"hutch++"`` (Meyer et al. 2021: the trace of the top
            ``deflation_rank``-dimensional sketch of H over the whole data set exactly,
            Hutchinson on the rest; eval mode only, since it needs a fixed matrix).
        deflation_rank: Sketch size for Hutch++.
        batch_size: Samples per forward-over-reverse pass (a mini-batch larger than this is
            computed in several; memory only).
        minibatch_size: Samples per draw, m; None (or m >= N) makes every draw the whole data
            set (the full-batch estimator, whose standard error counts the probes only).
        probes_per_pass: Probes sharing one draw. Default: up to 8, fewer when 8 probes would
            exceed 2²⁶ numbers (1 for a 10⁸-parameter network); where draws are the
            observations, fewer when they would exceed 2²⁴ numbers (1 for a network of 8M
            parameters or more: a draw's probes share its mini-batch's variance, so on a large
            network a further draw costs little more than a further probe and adds more), and
            no more than an eighth of ``max_probes``, so that the budget holds eight draws.
        mode: ``"eval"`` or ``"train"`` (dropout-family layers active, batch norm frozen).
        num_mc_samples: Dropout draws averaged per draw and chunk in train mode.
        confidence: Level of the reported t-interval.

    Returns:
        The estimate of tr(H) (``value``) with its standard error (``stderr``, over the
        observations: a draw with mini-batches, counting every source of randomness (see
        `flatness.draws`), each probe on the whole data set in eval mode; for Hutch++ of the
        residual part, the deflated part being exact; None when undefined) and Student-t
        interval, the probes and draws used (``num_matvecs`` includes Hutch++'s deflation, on
        the whole data set; ``minibatch_size`` None when every draw was the whole data set),
        and what stopped it (``stopped_by``: ``"target"``, the relative standard error reached
        (``converged``), or ``"budget"``, ``max_probes`` spent first).
    """
    mode = parse_mode(mode)
    method = _parse_method(method)
    check_data(x, y, batch_size)
    check_mc_samples(mode, num_mc_samples)
    for name, value in (("max_probes", max_probes), ("rel_tol", rel_tol)):
        check_positive(name, value)
    if minibatch_size is not None:
        check_positive("minibatch_size", minibatch_size)
    if not 2 <= min_probes <= max_probes:
        raise ValueError(
            f"need 2 <= min_probes <= max_probes, got min_probes={min_probes}, "
            f"max_probes={max_probes}; fix: raise max_probes or lower min_probes"
        )
    if method is TraceMethod.HUTCH_PLUS_PLUS:
        check_positive("deflation_rank", deflation_rank)
        if mode is Mode.TRAIN:
            raise ValueError(
                "method='hutch++' needs a fixed Hessian, got mode='train' whose products are "
                "random; fix: use method='hutchinson' in train mode"
            )
    fmodel = FunctionalModel(model)
    plan = DrawPlan(x.shape[0], minibatch_size, batch_size, generator)
    # On the whole data set in eval mode the probes of a draw see the same fixed matrix and
    # are independent, so each is an observation; otherwise a draw's probes share its
    # mini-batch and dropout draws, and the draw is the observation.
    per_probe = plan.full and mode is Mode.EVAL
    if probes_per_pass is None:
        probes_per_pass = default_probes_per_pass(fmodel.dim)
        if not per_probe:
            probes_per_pass = max(
                1,
                min(
                    probes_per_pass,
                    _DRAW_PROBE_NUMBERS // fmodel.dim,
                    max_probes // MIN_OBSERVATIONS,
                ),
            )
    check_positive("probes_per_pass", probes_per_pass)
    accumulator = MeanAccumulator()
    states: dict[int, tuple[Tensor, list[list[int | None]]]] = {}
    sums: dict[int, Tensor] = {}
    used, converged = 0, False
    like = vectors_like(fmodel)

    def count(draw: Draw) -> int:
        """Probes of a draw: ``probes_per_pass``, fewer in a last draw that ends the budget."""
        return min(probes_per_pass, max_probes - draw.number * probes_per_pass)

    with in_mode(model, mode):
        basis, exact_part, deflation = None, 0.0, 0
        if method is TraceMethod.HUTCH_PLUS_PLUS:
            operator = fixed_operator(fmodel, x, y, batch_size, mode, num_mc_samples, generator)
            basis, exact_part = _deflate(operator, min(deflation_rank, fmodel.dim), generator)
            deflation = operator.num_matvecs

        def randomness(draw: Draw) -> tuple[Tensor, list[list[int | None]]]:
            """The draw's probes ``[P, d]`` and per-chunk dropout seeds, made once per draw
            (on the rank that computes it) from the draw's own generator."""
            if draw.number not in states:
                own = make_generator(draw.seed, generator.device)
                seeds = [dropout_seeds(own, mode, num_mc_samples) for _ in draw.chunks]
                probes = rademacher((count(draw), fmodel.dim), own, like)
                if basis is not None:
                    probes = probes - (probes @ basis.T) @ basis
                states[draw.number] = probes, seeds
            return states[draw.number]

        def term(draw: Draw, chunk: int, k: int) -> list[Tensor]:
            probes, seeds = randomness(draw)
            indices = draw.chunks[chunk][0].to(x.device)
            x_b = x[indices].to(device=fmodel.device, dtype=_float(x, fmodel))
            y_b = y[indices].to(device=fmodel.device, dtype=torch.long)
            with seeded_global_rng(seeds[chunk][k], fmodel.device):
                return [batch_quadratic_forms(fmodel, x_b, y_b, probes)]

        def layout(draw: Draw, chunk: int) -> TermLayout:
            return [((count(draw),), fmodel.dtype)]

        def fold(draw: Draw, chunk: int, k: int, parts: list[Tensor]) -> None:
            weight = draw.chunks[chunk][1] / num_mc_samples
            if draw.number in sums:
                sums[draw.number].add_(parts[0], alpha=weight)
            else:
                sums[draw.number] = parts[0] * weight

        def finish(draw: Draw) -> bool:
            nonlocal used, converged
            forms = sums.pop(draw.number)
            states.pop(draw.number, None)
            used += count(draw)
            accumulator.update(forms if per_probe else forms.mean()[None])
            needed = min_probes if per_probe else math.ceil(min_probes / probes_per_pass)
            converged = used >= min_probes and reached(accumulator, rel_tol, needed, exact_part)
            return converged

        # Every draw carries probes_per_pass probes; on the whole data set in eval mode a last
        # one may carry fewer, since there probes are the observations.
        num_draws = run_draws(
            plan,
            math.ceil(max_probes / probes_per_pass) if per_probe else max_probes // probes_per_pass,
            num_mc_samples,
            term,
            layout,
            fold,
            finish,
            fmodel.device,
        )
    ci_low, ci_high = accumulator.interval(confidence)
    definition = f"trace of the {HESSIAN}"
    if mode is Mode.TRAIN:
        definition = f"trace of the expected {HESSIAN} over dropout draws (fresh per draw)"
    return TraceEstimate(
        value=float(exact_part + accumulator.mean),
        stderr=defined(accumulator.stderr),
        ci_low=defined(exact_part + ci_low),
        ci_high=defined(exact_part + ci_high),
        confidence=defined(confidence),
        num_probes=used,
        num_draws=num_draws,
        minibatch_size=None if plan.full else plan.size,
        num_matvecs=deflation + used,
        converged=converged,
        stopped_by=(StoppedBy.TARGET if converged else StoppedBy.BUDGET).value,
        rel_tol=defined(rel_tol),
        max_probes=max_probes,
        method=method.value,
        dimension=fmodel.dim,
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )


def _float(x: Tensor, fmodel: FunctionalModel) -> torch.dtype:
    """The dtype inputs are evaluated in: the parameters' floating dtype (see `batches`)."""
    return fmodel.dtype if x.dtype.is_floating_point else x.dtype


def _deflate(
    operator: HessianOperator, rank: int, generator: torch.Generator
) -> tuple[Tensor, float]:
    """Hutch++'s first stages: an orthonormal basis Q ``[rank, d]`` of the range of H S for a
    Rademacher sketch S, and tr(Qᵀ H Q), the part of the trace it captures exactly."""
    sketch = operator.matvec(
        rademacher((rank, operator.dim), generator, vectors_like(operator.fmodel))
    )
    basis = torch.linalg.qr(sketch.T).Q.T
    return basis, operator.quadratic_forms(basis).sum().item()


def _parse_method(method: TraceMethod | str) -> TraceMethod:
    try:
        return TraceMethod(method)
    except ValueError:
        known = ", ".join(repr(m.value) for m in TraceMethod)
        raise ValueError(f"method must be one of {known}, got {method!r}") from None
