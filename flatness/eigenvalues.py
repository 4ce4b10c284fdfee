"""Largest eigenvalues of the loss Hessian by Lanczos, with the residual bound of each."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.flatrecords import Eigenvalues
from flatness.core import (
    FunctionalModel,
    Mode,
    check_data,
    check_mc_samples,
    check_positive,
    defined,
    gaussian,
    in_mode,
    make_provenance,
    parse_mode,
)
from flatness.draws import StoppedBy
from flatness.lanczos import lanczos, ritz_pairs
from flatness.products import FIXED_DRAWS, HESSIAN, fixed_operator, vectors_like


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
) -> Eigenvalues:
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
        The ``num_eigenvalues`` largest eigenvalues, descending (fewer only when the Krylov
        space of the start vector is an invariant subspace of smaller dimension), with the
        residual norm ‖H v_i - λ_i v_i‖ of
        each (an eigenvalue of H lies within this distance, up to rounding in the products,
        even with orthogonality lost: Paige 1980), the Lanczos steps taken, and what stopped
        it (``stopped_by``: ``"target"``, every residual at most ``rel_tol · |λ_i|`` or an
        invariant subspace found, or ``"budget"``, ``max_iterations`` spent first).
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
    with in_mode(model, mode):
        operator = fixed_operator(fmodel, x, y, batch_size, mode, num_mc_samples, generator)
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
    definition = f"largest eigenvalues of the {HESSIAN}" + (
        FIXED_DRAWS if mode is Mode.TRAIN else ""
    )
    return Eigenvalues(
        eigenvalues=tuple(ritz[top].tolist()),
        residual_norms=tuple(residuals[top].tolist()),
        num_iterations=len(alphas),
        converged=done,
        stopped_by=(StoppedBy.TARGET if done else StoppedBy.BUDGET).value,
        rel_tol=defined(rel_tol),
        max_iterations=max_iterations,
        dimension=fmodel.dim,
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )


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
    return torch.tensor(kept[:count], dtype=torch.long, device=ritz.device)
