"""Hessian trace, top eigenvalues and spectral density of the loss over a data set.

The Hessian is that of L(θ) = (1/N) Σ_i CE(f_θ(x_i), y_i) with respect to all trainable
parameters, accessed only through Hessian-vector products computed forward-over-reverse
(``torch.func.jvp`` of ``torch.func.grad``), batch by batch and weighted by batch size. Several
probe vectors share one pass over the data through ``torch.func.vmap``, so the forward and
backward pass of the loss itself is paid once per pass rather than once per probe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from flatness.core import (
    FunctionalModel,
    Mode,
    Provenance,
    TermLayout,
    batches,
    check_data,
    check_mc_samples,
    check_positive,
    dropout_seeds,
    gaussian,
    jsonable,
    make_provenance,
    model_mode,
    own_sample,
    parse_mode,
    rademacher,
    seeded_global_rng,
    sharded_sweep,
)
from flatness.draws import MIN_OBSERVATIONS, Draw, DrawPlan, StoppedBy, reached, run_draws
from flatness.stats import MeanAccumulator
from torchutil import make_generator

_HESSIAN = "Hessian of the mean cross-entropy over the data w.r.t. all trainable parameters"
# Probes sharing a pass hold this many numbers at most when their count is left to us (256 MB
# in float32): beyond it the shared forward pass saves little and memory grows with every probe.
_AUTO_PROBE_NUMBERS = 2**26
# Where a draw (its mini-batch) is the observation, its probes share the mini-batch's own
# variance, so a probe adds less than a draw would; they are worth sharing a pass only while
# the pass costs little more for them. On the CIFAR-10 ResNet-18 (11.2M parameters, draws of 64
# samples, one CPU thread) 6 probes per pass cost 5.1x one probe's pass, and the mini-batch's
# variance was a third of a probe's, so 6 probes per draw needed 1.9x the time of 1 or 2 for
# the same standard error (benchmarks/README.md). So a draw holds at most this many numbers of
# probes: one probe for networks of 8M parameters and more, 8 for small ones.
_DRAW_PROBE_NUMBERS = 2**24
_FIXED_DRAWS = "; in train mode, of the loss averaged over fixed dropout draws per batch"


class TraceMethod(StrEnum):
    """Trace estimator: plain Hutchinson, or Hutch++ (low-rank deflation, then Hutchinson)."""

    HUTCHINSON = "hutchinson"
    HUTCH_PLUS_PLUS = "hutch++"


class HessianOperator:
    """The linear map v ↦ H v of the Hessian of the mean loss over ``(x, y)``.

    Must be used while the model is in the intended mode (see `flatness.core.model_mode`).

    Args:
        fmodel: The model as a function of its trainable parameters.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        batch_size: Samples per forward-over-reverse pass.
        probes_per_pass: Vectors pushed through one pass together (memory grows with it).
        mode: In train mode each product averages ``num_mc_samples`` dropout draws per batch.
        num_mc_samples: Dropout draws per batch (1 in eval mode).
        generator: Source of the dropout draws.
        fixed_draws: Reuse the same draws for every product, so that the operator is one fixed
            symmetric matrix (needed by Lanczos); otherwise every product draws afresh, which
            keeps Hutchinson's probes independent.
        sharded: Under torch.distributed, split the batches of every product between the
            ranks, each of which gets the whole product (`flatness.core.sharded_sweep`);
            otherwise every rank computes its products alone.

    Attributes:
        dim: Number of parameters d.
        num_matvecs: Vectors multiplied so far.
    """

    def __init__(
        self,
        fmodel: FunctionalModel,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        probes_per_pass: int,
        mode: Mode,
        num_mc_samples: int,
        generator: torch.Generator,
        fixed_draws: bool,
        sharded: bool = True,
    ) -> None:
        self.fmodel = fmodel
        self._sharded = sharded
        self.dim = fmodel.dim
        self.num_matvecs = 0
        self._data = list(batches(x, y, batch_size, fmodel))
        self._probes_per_pass = probes_per_pass
        self._mode = mode
        self._num_mc_samples = num_mc_samples
        self._generator = generator
        # Seeds drawn once here make every product use the same dropout masks.
        self._fixed_seeds = (
            [dropout_seeds(generator, mode, num_mc_samples) for _ in self._data]
            if fixed_draws
            else None
        )

    def matvec(self, vectors: Tensor) -> Tensor:
        """Hessian-vector products ``[P, d] -> [P, d]``."""
        products = [self._pass(chunk, False) for chunk in vectors.split(self._probes_per_pass)]
        self.num_matvecs += vectors.shape[0]
        # A single chunk is returned as it is: concatenating it would copy a [P, d] result.
        return products[0] if len(products) == 1 else torch.cat(products)

    def quadratic_forms(self, vectors: Tensor) -> Tensor:
        """``vᵀ H v`` for each row of ``[P, d]``, as ``[P]``.

        Sums ``vᵀ H_b v`` batch by batch, so no parameter-sized product is ever accumulated:
        the memory is that of one batch's Hessian-vector product.
        """
        values = [self._pass(chunk, True) for chunk in vectors.split(self._probes_per_pass)]
        self.num_matvecs += vectors.shape[0]
        return torch.cat(values)

    def _pass(self, vectors: Tensor, quadratic: bool) -> Tensor:
        tangents = self.fmodel.unflatten(vectors)
        total = vectors.new_zeros(vectors.shape[0]) if quadratic else torch.zeros_like(vectors)
        # Drawn for every batch on every rank, so that the generator stays in step.
        seeds = [
            self._fixed_seeds[index]
            if self._fixed_seeds is not None
            else dropout_seeds(self._generator, self._mode, self._num_mc_samples)
            for index in range(len(self._data))
        ]

        def term(index: int, draw: int) -> list[Tensor]:
            x_b, y_b, _ = self._data[index]
            with seeded_global_rng(seeds[index][draw], self.fmodel.device):
                products = self._batch_hvp(x_b, y_b, tangents)
            if quadratic:
                forms = sum(_rowwise_dot(products[n], tangents[n]) for n in products)
                return [cast(Tensor, forms)]
            return [self.fmodel.flatten(products, batch_dims=1)]

        def fold(index: int, draw: int, parts: list[Tensor]) -> None:
            total.add_(parts[0], alpha=self._data[index][2] / len(seeds[index]))

        draws = [len(batch_seeds) for batch_seeds in seeds]
        layout = [(tuple(total.shape), total.dtype)]
        sharded_sweep(
            draws, term, fold, lambda _: layout, self.fmodel.device, sharded=self._sharded
        )
        return total

    def _batch_hvp(self, x: Tensor, y: Tensor, tangents: dict[str, Tensor]) -> dict[str, Tensor]:
        return batch_hvp(self.fmodel, x, y, tangents)


def batch_hvp(
    fmodel: FunctionalModel, x: Tensor, y: Tensor, tangents: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Products of the Hessian of the mean loss over ``(x, y)`` with ``P`` tangents
    (``{name: [P, *shape]}``), forward-over-reverse, in one pass (``torch.func.vmap``)."""

    def loss(params: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(fmodel(params, x), y)

    def hvp(tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        return jvp(grad(loss), (fmodel.params,), (tangent,))[1]

    # One dropout draw per pass: the primal computation does not depend on the probe.
    return vmap(hvp, randomness="same")(tangents)


def batch_quadratic_forms(fmodel: FunctionalModel, x: Tensor, y: Tensor, vectors: Tensor) -> Tensor:
    """``vᵀ H v`` for each row of ``vectors [P, d]``, H the Hessian of the mean loss over
    ``(x, y)``: ``[P]``."""
    tangents = fmodel.unflatten(vectors)
    products = batch_hvp(fmodel, x, y, tangents)
    return cast(Tensor, sum(_rowwise_dot(products[n], tangents[n]) for n in products))


@dataclass(frozen=True)
class TraceResult:
    """Hessian trace estimate.

    Attributes:
        value: Estimate of tr(H).
        stderr: Standard error of ``value`` over the observations (for Hutch++, of the
            residual part; the deflated part is computed exactly). With mini-batches an
            observation is one draw (its mini-batch, dropout draws and probes), so the standard
            error counts every source of randomness (see `flatness.draws`); on the whole data
            set in eval mode, each probe is one.
        ci_low, ci_high: Student-t confidence interval for ``value``.
        confidence: Level of that interval.
        num_probes: Hutchinson probes averaged.
        num_draws: Draws made: mini-batches (or passes over the whole data set), each shared
            by up to ``probes_per_pass`` probes.
        minibatch_size: Samples per draw, or None when every draw was the whole data set.
        num_matvecs: Hessian-vector products spent (each on its draw's samples), including
            Hutch++'s deflation (on the whole data set).
        converged: Whether ``stderr <= rel_tol · |value|`` was reached within the budget.
        stopped_by: ``"target"`` (that relative standard error reached) or ``"budget"``
            (``max_probes`` spent first).
        rel_tol: The requested relative standard error.
        max_probes: The budget of probes.
        method: ``"hutchinson"`` or ``"hutch++"``.
        dimension: Number of parameters d.
        provenance: Data, mode, seed and definition.
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    confidence: float
    num_probes: int
    num_draws: int
    minibatch_size: int | None
    num_matvecs: int
    converged: bool
    stopped_by: str
    rel_tol: float
    max_probes: int
    method: str
    dimension: int
    provenance: Provenance

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary (numbers stay numbers; undefined errors are ``None``)."""
        return jsonable(self)  # type: ignore[return-value]


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
) -> TraceResult:
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
        The estimate, its standard error, the probes and draws used and what stopped it.
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
        probes_per_pass = _default_probes_per_pass(fmodel.dim)
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

    with model_mode(model, mode):
        basis, exact_part, deflation = None, 0.0, 0
        if method is TraceMethod.HUTCH_PLUS_PLUS:
            operator = _fixed_operator(fmodel, x, y, batch_size, mode, num_mc_samples, generator)
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
    definition = f"trace of the {_HESSIAN}"
    if mode is Mode.TRAIN:
        definition = f"trace of the expected {_HESSIAN} over dropout draws (fresh per draw)"
    return TraceResult(
        value=exact_part + accumulator.mean,
        stderr=accumulator.stderr,
        ci_low=exact_part + ci_low,
        ci_high=exact_part + ci_high,
        confidence=confidence,
        num_probes=used,
        num_draws=num_draws,
        minibatch_size=None if plan.full else plan.size,
        num_matvecs=deflation + used,
        converged=converged,
        stopped_by=(StoppedBy.TARGET if converged else StoppedBy.BUDGET).value,
        rel_tol=rel_tol,
        max_probes=max_probes,
        method=method.value,
        dimension=fmodel.dim,
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )


def _float(x: Tensor, fmodel: FunctionalModel) -> torch.dtype:
    """The dtype inputs are evaluated in: the parameters' floating dtype (see `batches`)."""
    return fmodel.dtype if x.dtype.is_floating_point else x.dtype


@dataclass(frozen=True)
class EigenvalueResult:
    """Largest Hessian eigenvalues by Lanczos (the three-term recurrence, see `lanczos`).

    Attributes:
        eigenvalues: The ``k`` largest eigenvalues, descending, as a tuple of length k (fewer
            only when the Krylov space of the start vector is an invariant subspace of smaller
            dimension). Copies of one eigenvalue (see `distinct_top`) are reported once.
        residual_norms: ‖H v_i - λ_i v_i‖ per Ritz pair (length k): an eigenvalue of H lies
            within this distance of ``eigenvalues[i]`` (up to rounding in the products, even
            with orthogonality lost: Paige 1980), so it is the error bar of each value.
        num_iterations: Lanczos steps, one Hessian-vector product each.
        converged: Whether every residual fell to ``rel_tol · |λ_i|``.
        stopped_by: ``"target"`` (converged, or an invariant subspace found: the values are
            then exact) or ``"budget"`` (``max_iterations`` spent first).
        rel_tol: The requested relative residual.
        max_iterations: The budget of Lanczos steps.
        dimension: Number of parameters d.
        provenance: Data, mode, seed and definition.
    """

    eigenvalues: tuple[float, ...]
    residual_norms: tuple[float, ...]
    num_iterations: int
    converged: bool
    stopped_by: str
    rel_tol: float
    max_iterations: int
    dimension: int
    provenance: Provenance

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary."""
        return jsonable(self)  # type: ignore[return-value]


def hessian_eigenvalues(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    num_eigenvalues: int = 1,
    rel_tol: float = 1e-5,
    max_iterations: int = 100,
    batch_size: int = 128,
    mode: Mode | str = Mode.EVAL,
    num_mc_samples: int = 1,
) -> EigenvalueResult:
    """Largest (algebraic) eigenvalues of the loss Hessian.

    Lanczos from a Gaussian start, stopped once the top ``num_eigenvalues`` Ritz residuals are
    below ``rel_tol`` times their Ritz values. Only the tridiagonal matrix is kept, not the
    Lanczos basis: besides one Hessian-vector product the memory is two parameter-sized
    vectors, whatever ``max_iterations``. Without reorthogonalisation a converged eigenvalue
    reappears as further Ritz values ("ghosts"); converged Ritz values within their error
    bars of each other are taken as one eigenvalue (`distinct_top`), so the k values are
    distinct eigenvalues, but an eigenvalue's multiplicity is not resolved (a single start
    vector cannot resolve it in exact arithmetic either).

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        generator: Source of the start vector (and of dropout draws in train mode).
        num_eigenvalues: How many of the largest eigenvalues, k.
        rel_tol: Target relative residual of each Ritz pair.
        max_iterations: Budget of Lanczos steps (capped at d).
        batch_size: Samples per pass over the data.
        mode: ``"eval"`` or ``"train"``; in train mode the Hessian is that of the loss averaged
            over ``num_mc_samples`` dropout draws per batch, fixed for the whole run.
        num_mc_samples: Dropout draws per batch in train mode.

    Returns:
        The eigenvalues with their residual bounds.
    """
    mode = parse_mode(mode)
    check_data(x, y, batch_size)
    check_mc_samples(mode, num_mc_samples)
    check_positive("rel_tol", rel_tol)
    fmodel = FunctionalModel(model)
    if not 1 <= num_eigenvalues <= min(max_iterations, fmodel.dim):
        raise ValueError(
            f"need 1 <= num_eigenvalues <= min(max_iterations, dimension) = "
            f"{min(max_iterations, fmodel.dim)}, got {num_eigenvalues}; fix: ask for fewer "
            "eigenvalues or raise max_iterations"
        )
    with model_mode(model, mode):
        operator = _fixed_operator(fmodel, x, y, batch_size, mode, num_mc_samples, generator)
        eps = torch.finfo(fmodel.dtype).eps

        def top_converged(ritz: Tensor, residuals: Tensor) -> bool:
            top = distinct_top(ritz, residuals, num_eigenvalues, rel_tol, eps)
            return len(top) == num_eigenvalues and bool(
                (residuals[top] <= rel_tol * ritz[top].abs()).all()
            )

        start = gaussian((fmodel.dim,), generator, vectors_like(fmodel))
        alphas, betas, done = lanczos(operator, start, max_iterations, top_converged)
    ritz, residuals = ritz_pairs(alphas, betas)
    top = distinct_top(ritz, residuals, num_eigenvalues, rel_tol, eps)
    definition = f"largest eigenvalues of the {_HESSIAN}" + (
        _FIXED_DRAWS if mode is Mode.TRAIN else ""
    )
    return EigenvalueResult(
        eigenvalues=tuple(ritz[top].tolist()),
        residual_norms=tuple(residuals[top].tolist()),
        num_iterations=len(alphas),
        converged=done,
        stopped_by=(StoppedBy.TARGET if done else StoppedBy.BUDGET).value,
        rel_tol=rel_tol,
        max_iterations=max_iterations,
        dimension=fmodel.dim,
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )


@dataclass(frozen=True)
class DensityResult:
    """Spectral density of the Hessian by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    Attributes:
        grid: Eigenvalue axis, G ascending points.
        density: Estimated density on ``grid`` (G values, integrating to 1): the quadrature
            below, each node smoothed by a Gaussian of width ``bandwidth``.
        nodes: Per run (R of them), the Ritz values of its Lanczos matrix. Lanczos runs without
            reorthogonalisation, so a well-separated eigenvalue can appear as several nearby
            nodes whose weights together are the weight it would have had alone.
        weights: Per run, the quadrature weight of each node (each run's weights sum to 1).
        bandwidth: Standard deviation of the Gaussian smoothing.
        trace: d × the mean of the density, i.e. the Hutchinson estimate of tr(H) implied by the
            same Rademacher start vectors (of the Hessian over ``sample_size`` samples).
        trace_stderr: Its standard error over the R runs.
        rel_stderr: The density's standard error over the runs, integrated over the grid: the
            expected L1 distance of the estimate from the mean over start vectors, relative
            to the density's mass of 1 (None below two runs).
        stopped_by: ``"target"`` (``rel_stderr <= rel_tol``) or ``"budget"`` (``max_runs``).
        rel_tol: The requested ``rel_stderr``.
        num_runs: Start vectors R.
        num_steps: Lanczos steps per run (fewer when an invariant subspace is found).
        sample_size: Samples of the Hessian: the density's own random sample of the N of the
            provenance (all N when it is as large).
        dimension: Number of parameters d.
        provenance: Data, mode, seed and definition.
    """

    grid: tuple[float, ...]
    density: tuple[float, ...]
    nodes: tuple[tuple[float, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    bandwidth: float
    trace: float
    trace_stderr: float
    rel_stderr: float | None
    stopped_by: str
    rel_tol: float
    num_runs: int
    num_steps: int
    sample_size: int
    dimension: int
    provenance: Provenance

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary."""
        return jsonable(self)  # type: ignore[return-value]


def spectral_density(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    max_runs: int = 4,
    min_runs: int = 2,
    rel_tol: float = 0.05,
    num_steps: int = 60,
    num_grid_points: int = 1000,
    rel_bandwidth: float = 0.01,
    sample_size: int | None = None,
    batch_size: int = 128,
    mode: Mode | str = Mode.EVAL,
    num_mc_samples: int = 1,
) -> DensityResult:
    """Eigenvalue density of the loss Hessian by stochastic Lanczos quadrature.

    Each run starts Lanczos from a normalised Rademacher vector v; the eigenvalues θ_j of its
    tridiagonal matrix and the squared first components τ_j of their eigenvectors form a
    Gauss quadrature of the spectral measure seen from v, whose average over runs estimates
    the density (1/d) Σ_i δ(λ - λ_i). Runs are added until the density's standard error over
    them, integrated over the grid (``rel_stderr``), falls to ``rel_tol`` (consulted from
    ``min_runs`` runs on) or until ``max_runs`` are made.

    Lanczos runs by its three-term recurrence without reorthogonalisation, keeping only the
    tridiagonal matrix, which is all the quadrature needs: besides one Hessian-vector product
    the memory is two parameter-sized vectors, whatever ``num_steps``. Lost orthogonality only
    splits converged nodes into copies whose weights add up to the node's own: the quadrature
    is still exact for the moments vᵀ Hᵖ v up to rounding (Greenbaum 1989; Ubaru, Chen and
    Saad 2017 show SLQ needs no reorthogonalisation), whereas PyHessian and Ghorbani et al.
    (2019) reorthogonalise fully and hold ``num_steps`` vectors.

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        generator: Source of the sample, the start vectors (and of dropout draws in train
            mode).
        max_runs: Budget of start vectors.
        min_runs: Runs made before the stopping rule is consulted (it needs two).
        rel_tol: Target integrated standard error of the density.
        num_steps: Lanczos steps per run (capped at d).
        num_grid_points: Points G of the returned grid.
        rel_bandwidth: Smoothing width relative to the spread of the Ritz values.
        sample_size: Samples of the Hessian, a random sample of the N drawn once (the density
            is a picture, and every step is a pass over them); None or at least N: all.
        batch_size: Samples per pass over the data.
        mode: ``"eval"`` or ``"train"`` (then of the loss averaged over fixed dropout draws).
        num_mc_samples: Dropout draws per batch in train mode.

    Returns:
        The density on a grid, with the underlying quadrature nodes and weights.
    """
    mode = parse_mode(mode)
    check_data(x, y, batch_size)
    check_mc_samples(mode, num_mc_samples)
    for name, value in (
        ("max_runs", max_runs),
        ("rel_tol", rel_tol),
        ("num_steps", num_steps),
        ("num_grid_points", num_grid_points),
        ("rel_bandwidth", rel_bandwidth),
    ):
        check_positive(name, value)
    if not 1 <= min_runs <= max_runs:
        raise ValueError(
            f"need 1 <= min_runs <= max_runs, got min_runs={min_runs}, max_runs={max_runs}; "
            "fix: raise max_runs or lower min_runs"
        )
    if sample_size is not None:
        check_positive("sample_size", sample_size)
    fmodel = FunctionalModel(model)
    sample_x, sample_y = own_sample(x, y, sample_size, generator)
    nodes: list[Tensor] = []
    weights: list[Tensor] = []
    traces = MeanAccumulator()
    rel_stderr: float | None = None
    with model_mode(model, mode):
        operator = _fixed_operator(
            fmodel, sample_x, sample_y, batch_size, mode, num_mc_samples, generator
        )
        while len(nodes) < max_runs:
            start = rademacher((fmodel.dim,), generator, vectors_like(fmodel))
            alphas, betas, _ = lanczos(operator, start, num_steps, None)
            run_nodes, run_weights = gauss_quadrature(alphas, betas)
            nodes.append(run_nodes)
            weights.append(run_weights)
            traces.update(torch.tensor([fmodel.dim * alphas[0]], device="cpu"))
            if len(nodes) >= 2:
                rel_stderr = density_stderr(nodes, weights, num_grid_points, rel_bandwidth)
                if len(nodes) >= min_runs and rel_stderr <= rel_tol:
                    break
    grid, density, bandwidth = smoothed_density(nodes, weights, num_grid_points, rel_bandwidth)
    definition = f"eigenvalue density of the {_HESSIAN}" + (
        _FIXED_DRAWS if mode is Mode.TRAIN else ""
    )
    if sample_x.shape[0] < x.shape[0]:
        definition += ", over a random sample of the data"
    stopped = rel_stderr is not None and len(nodes) >= min_runs and rel_stderr <= rel_tol
    return DensityResult(
        grid=tuple(grid.tolist()),
        density=tuple(density.tolist()),
        nodes=tuple(tuple(n.tolist()) for n in nodes),
        weights=tuple(tuple(w.tolist()) for w in weights),
        bandwidth=bandwidth,
        trace=traces.mean,
        trace_stderr=traces.stderr,
        rel_stderr=rel_stderr,
        stopped_by=(StoppedBy.TARGET if stopped else StoppedBy.BUDGET).value,
        rel_tol=rel_tol,
        num_runs=len(nodes),
        num_steps=max(len(n) for n in nodes),
        sample_size=sample_x.shape[0],
        dimension=fmodel.dim,
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )


def density_stderr(
    nodes: list[Tensor], weights: list[Tensor], num_grid_points: int, rel_bandwidth: float
) -> float:
    """The standard error over runs of the smoothed density, integrated over its grid:
    ``∫ sd_r(ρ_r(t)) / √R dt`` for the runs' own smoothed densities ρ_r (R >= 2)."""
    grid, _, bandwidth = smoothed_density(nodes, weights, num_grid_points, rel_bandwidth)
    runs = torch.stack(
        [
            _smooth(grid, run_nodes, run_weights, bandwidth)
            for run_nodes, run_weights in zip(nodes, weights, strict=True)
        ]
    )
    spread = runs.std(dim=0) / math.sqrt(len(nodes))
    return float(torch.trapezoid(spread, grid))


def lanczos(
    operator: HessianOperator,
    start: Tensor,
    max_steps: int,
    converged: Callable[[Tensor, Tensor], bool] | None,
) -> tuple[list[float], list[float], bool]:
    """Symmetric Lanczos by its three-term recurrence, holding two vectors besides a product.

    The Lanczos basis is not kept: each new vector is orthogonalised against the two it is
    built from, twice (local reorthogonalisation, at no cost in memory), and nothing else.
    Inner products and norms are accumulated in float64 (`exact_dot`). Global orthogonality
    is then lost once Ritz values converge, which leaves the tridiagonal
    matrix a faithful Gauss quadrature of the spectral measure seen from ``start`` and its
    Ritz pairs' residual bounds valid (Paige 1980), but lets converged eigenvalues reappear
    as further Ritz values (see `distinct_top`).

    Args:
        operator: The symmetric matrix, through its products.
        start: Start vector ``[d]``, normalised in place: its storage is one of the two
            vectors' buffers, so a reference the caller keeps costs nothing.
        max_steps: Step budget, capped at d.
        converged: Called after every step with the Ritz values and residual norms (both
            ascending, ``[m]``); returning True stops the iteration.

    Returns:
        ``(alphas, betas, stopped)``: the diagonal (length m) and off-diagonal (length m, the
        last entry being the norm of the final residual) of the tridiagonal matrix, and
        whether ``converged`` stopped it or an invariant subspace was found.
    """
    steps = min(max_steps, operator.dim)
    current = start.div_(math.sqrt(exact_dot(start, start)))
    previous: Tensor | None = None
    alphas: list[float] = []
    betas: list[float] = []
    stop = False
    for j in range(steps):
        w = operator.matvec(current[None])[0]
        alphas.append(exact_dot(w, current))
        w.sub_(current, alpha=alphas[-1])
        if previous is not None:
            w.sub_(previous, alpha=betas[-1])
        # A second sweep removes what cancellation left of the two directions just used.
        for vector in (current, previous):
            if vector is not None:
                w.sub_(vector, alpha=exact_dot(w, vector))
        betas.append(math.sqrt(exact_dot(w, w)))
        invariant = betas[-1] <= 1e-10 * max(abs(a) for a in alphas)
        stop = invariant or (converged is not None and converged(*ritz_pairs(alphas, betas)))
        if stop or j + 1 == steps:
            break
        if previous is None:
            previous, current = current, w.div_(betas[-1])
        else:
            # The next vector overwrites the oldest one's storage, and the product is freed
            # before the next one is allocated: two buffers, one of them the caller's start.
            torch.div(w, betas[-1], out=previous)
            previous, current = current, previous
        del w
    return alphas, betas, stop


_DOT_CHUNK = 2**20


def exact_dot(a: Tensor, b: Tensor) -> float:
    """``aᵀb`` of two vectors ``[d]``, accumulated in float64 a chunk of 2²⁰ entries at a
    time (so the copies stay small). A float32 dot product over millions of entries errs by
    about √d · eps of its terms: on a CIFAR-10 ResNet-18 (11 M parameters) that moved the top
    Hessian eigenvalue by 1.3·10⁻³ of itself and let copies of it pass for further
    eigenvalues."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, a.numel(), _DOT_CHUNK):
        piece = slice(start, start + _DOT_CHUNK)
        total += torch.dot(a[piece].double(), b[piece].double())
    return total.item()  # one host synchronisation per product, not one per chunk


def distinct_top(ritz: Tensor, residuals: Tensor, count: int, rel_tol: float, eps: float) -> Tensor:
    """Indices of the ``count`` largest Ritz values that are not copies of one another.

    Lanczos without reorthogonalisation finds a converged eigenvalue again and again. Ritz
    values are taken in order of increasing residual; one is a copy of an earlier, converged
    one (residual at most ``rel_tol`` times the value) when the two lie within the sum of
    their error bars, each capped at ``rel_tol · |θ|``, plus ``100 · eps · max |θ|`` for
    rounding in the products: both then stand for the same eigenvalue. A copy still forming
    therefore disappears only once it is inside a converged value's error bar, and a Ritz
    value far from every converged one is never dropped, so it holds back convergence
    rather than a genuine eigenvalue being lost.

    Args:
        ritz: Ritz values ``[m]``, any order.
        residuals: Their residual norms ``[m]``.
        count: How many to return, k.
        rel_tol: Relative residual under which a Ritz pair counts as converged.
        eps: Machine epsilon of the products' dtype.

    Returns:
        Indices into ``ritz`` by descending value, at most ``count`` of them (``[≤ k]``).
    """
    values, errors = ritz.tolist(), residuals.tolist()
    slack = 100 * eps * max(abs(v) for v in values)
    bars = [min(e, rel_tol * abs(v)) for v, e in zip(values, errors, strict=True)]
    kept: list[int] = []
    for index in sorted(range(len(values)), key=errors.__getitem__):
        if not any(
            errors[k] <= rel_tol * abs(values[k])
            and abs(values[index] - values[k]) <= bars[index] + bars[k] + slack
            for k in kept
        ):
            kept.append(index)
    kept.sort(key=values.__getitem__, reverse=True)
    return torch.tensor(kept[:count], dtype=torch.long)


def ritz_pairs(alphas: list[float], betas: list[float]) -> tuple[Tensor, Tensor]:
    """Ritz values (ascending, ``[m]``) and their residual norms β_m |s_{m,i}|."""
    values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
    return values, betas[-1] * vectors[-1].abs()


def gauss_quadrature(alphas: list[float], betas: list[float]) -> tuple[Tensor, Tensor]:
    """Nodes (Ritz values) and weights (squared first eigenvector components), ``[m]`` each."""
    values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
    return values, vectors[0] ** 2


def smoothed_density(
    nodes: list[Tensor], weights: list[Tensor], num_grid_points: int, rel_bandwidth: float
) -> tuple[Tensor, Tensor, float]:
    """Average of Gaussian-smoothed quadratures on a grid reaching 5 widths past the nodes."""
    all_nodes = torch.cat(nodes)
    all_weights = torch.cat(weights) / len(nodes)
    spread = (all_nodes.max() - all_nodes.min()).item()
    bandwidth = rel_bandwidth * (spread if spread > 0 else max(all_nodes.abs().max().item(), 1.0))
    grid = torch.linspace(
        all_nodes.min().item() - 5 * bandwidth,
        all_nodes.max().item() + 5 * bandwidth,
        num_grid_points,
        dtype=torch.float64,
        device=all_nodes.device,
    )
    return grid, _smooth(grid, all_nodes, all_weights, bandwidth), bandwidth


def _smooth(grid: Tensor, nodes: Tensor, weights: Tensor, bandwidth: float) -> Tensor:
    """Σ_j w_j N(t; θ_j, bandwidth²) on the grid."""
    kernel = torch.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / bandwidth) ** 2)
    return kernel @ weights / (bandwidth * math.sqrt(2 * math.pi))


def _rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    """``[P, ...] · [P, ...] -> [P]`` without an elementwise product of the full size."""
    return torch.bmm(a.reshape(a.shape[0], 1, -1), b.reshape(b.shape[0], -1, 1)).flatten()


def vectors_like(fmodel: FunctionalModel) -> Tensor:
    """A scalar carrying the dtype and device that parameter-sized vectors must have."""
    return torch.empty((), dtype=fmodel.dtype, device=fmodel.device)


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


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    # Host-side bookkeeping: the tridiagonal matrix is tiny and built from Python numbers.
    matrix = torch.diag(torch.tensor(alphas, dtype=torch.float64, device="cpu"))
    off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64, device="cpu")
    return matrix + torch.diag(off, 1) + torch.diag(off, -1)


def _fixed_operator(
    fmodel: FunctionalModel,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    mode: Mode,
    num_mc_samples: int,
    generator: torch.Generator,
) -> HessianOperator:
    return HessianOperator(
        fmodel,
        x,
        y,
        batch_size=batch_size,
        probes_per_pass=1,
        mode=mode,
        num_mc_samples=num_mc_samples,
        generator=generator,
        fixed_draws=True,
    )


def hessian_pass(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One eval-mode pass of Hessian-vector products over ``(x, y)`` as a single batch, with
    as many probes as Hutchinson's trace pushes through one pass: the largest step any
    estimator here takes, whose peak memory sets the batch size that fits (see
    ``torchutil.choose_batch_size``). Under torch.distributed every rank runs the pass
    itself: it measures the rank's own memory."""
    fmodel = FunctionalModel(model)
    with model_mode(model, Mode.EVAL):
        probes = _default_probes_per_pass(fmodel.dim)
        generator = make_generator(0)
        operator = HessianOperator(
            fmodel,
            x,
            y,
            batch_size=x.shape[0],
            probes_per_pass=probes,
            mode=Mode.EVAL,
            num_mc_samples=1,
            generator=generator,
            fixed_draws=False,
            sharded=False,
        )
        operator.quadratic_forms(rademacher((probes, fmodel.dim), generator, vectors_like(fmodel)))


def _default_probes_per_pass(dim: int) -> int:
    """Up to 8 probes per pass, fewer when they would exceed ``_AUTO_PROBE_NUMBERS``."""
    return max(1, min(8, _AUTO_PROBE_NUMBERS // dim))


def _parse_method(method: TraceMethod | str) -> TraceMethod:
    try:
        return TraceMethod(method)
    except ValueError:
        known = ", ".join(repr(m.value) for m in TraceMethod)
        raise ValueError(f"method must be one of {known}, got {method!r}") from None
