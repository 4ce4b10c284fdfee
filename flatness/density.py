"""Eigenvalue density of the loss Hessian by stochastic Lanczos quadrature."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from core.flatrecords import SpectralDensity
from flatness.core import (
    FunctionalModel,
    Mode,
    check_data,
    check_mc_samples,
    check_positive,
    defined,
    in_mode,
    make_provenance,
    own_sample,
    parse_mode,
    rademacher,
)
from flatness.draws import StoppedBy
from flatness.lanczos import gauss_quadrature, lanczos
from flatness.products import FIXED_DRAWS, HESSIAN, fixed_operator, vectors_like
from flatness.stats import MeanAccumulator


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
) -> SpectralDensity:
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
        The density on a grid of ``num_grid_points`` ascending points (integrating to 1: the
        quadrature, each node smoothed by a Gaussian of width ``bandwidth``), with each run's
        Ritz values (``nodes``; without reorthogonalisation a well-separated eigenvalue can
        appear as several nearby nodes whose weights together are the weight it would have had
        alone) and quadrature weights (summing to 1 per run); ``trace``, d times the density's
        mean (the Hutchinson estimate of tr(H) from the same start vectors), with its standard
        error over the runs; ``rel_stderr`` (None below two runs) and what stopped it
        (``stopped_by``: ``"target"`` or ``"budget"``); ``sample_size``, the samples of the
        Hessian.
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
    with in_mode(model, mode):
        operator = fixed_operator(
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
    definition = f"eigenvalue density of the {HESSIAN}" + (
        FIXED_DRAWS if mode is Mode.TRAIN else ""
    )
    if sample_x.shape[0] < x.shape[0]:
        definition += ", over a random sample of the data"
    stopped = rel_stderr is not None and len(nodes) >= min_runs and rel_stderr <= rel_tol
    return SpectralDensity(
        grid=tuple(grid.tolist()),
        density=tuple(density.tolist()),
        nodes=tuple(tuple(n.tolist()) for n in nodes),
        weights=tuple(tuple(w.tolist()) for w in weights),
        bandwidth=defined(bandwidth),
        trace=defined(traces.mean),
        trace_stderr=defined(traces.stderr),
        rel_stderr=None if rel_stderr is None else defined(rel_stderr),
        stopped_by=(StoppedBy.TARGET if stopped else StoppedBy.BUDGET).value,
        rel_tol=defined(rel_tol),
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
