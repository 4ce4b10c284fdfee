"""Hessian trace, eigenvalues and spectral density against the exact Hessian of tiny models."""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flatness_fixtures import ARCHITECTURES, build, generator, make_data, mlp_with_dropout
from torch import Tensor, nn
from torch.func import functional_call

from flatness import hessian, hessian_eigenvalues, hutchinson_trace, spectral_density
from flatness.core import FunctionalModel, Mode, rademacher
from flatness.hessian import (
    HessianOperator,
    distinct_top,
    exact_dot,
    gauss_quadrature,
    lanczos,
    ritz_pairs,
)


def exact_hessian(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Full ``[d, d]`` Hessian of the mean cross-entropy by torch.autograd.functional."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().flatten() for _, p in named])

    def loss(vector: Tensor) -> Tensor:
        pieces = vector.split([p.numel() for _, p in named])
        params = {n: v.view_as(p) for (n, p), v in zip(named, pieces, strict=True)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_hutchinson_within_three_standard_errors_of_exact_trace(name: str) -> None:
    model = build(ARCHITECTURES[name])
    x, y = make_data()
    exact = exact_hessian(model, x, y).trace().item()
    result = hutchinson_trace(
        model,
        x,
        y,
        generator=generator(),
        batch_size=25,
        max_probes=200,
        rel_tol=1e-9,
        probes_per_pass=100,
    )
    assert result.num_probes == 200 and not result.converged
    assert abs(result.value - exact) <= 3 * result.stderr
    assert result.stderr < 0.2 * abs(exact)  # the bound above is not vacuous
    assert result.ci_low < result.value < result.ci_high


def test_hutchinson_probe_variance_matches_its_closed_form() -> None:
    # For Rademacher probes Var(vᵀHv) = 2 Σ_{i≠j} H_ij²: the reported standard error must
    # estimate sqrt(that / n), not merely be small.
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    hessian = exact_hessian(model, x, y)
    variance = 2 * ((hessian**2).sum() - (hessian.diagonal() ** 2).sum()).item()
    result = hutchinson_trace(
        model, x, y, generator=generator(1), max_probes=400, rel_tol=1e-9, probes_per_pass=100
    )
    assert result.stderr == pytest.approx((variance / 400) ** 0.5, rel=0.15)


def test_hutchinson_stops_at_the_relative_tolerance() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    result = hutchinson_trace(
        model, x, y, generator=generator(), max_probes=2000, rel_tol=0.15, probes_per_pass=8
    )
    assert result.converged
    assert result.stderr <= 0.15 * abs(result.value)
    assert result.num_probes < 2000
    assert result.num_matvecs == result.num_probes


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_the_space() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    exact = exact_hessian(model, x, y).trace().item()
    dim = sum(p.numel() for p in model.parameters())
    result = hutchinson_trace(
        model,
        x,
        y,
        generator=generator(),
        method="hutch++",
        deflation_rank=dim,
        probes_per_pass=dim,
        min_probes=2,
        max_probes=4,
    )
    assert result.value == pytest.approx(exact, rel=1e-8)
    assert result.num_matvecs == 2 * dim + 4


def test_hutch_plus_plus_within_three_standard_errors() -> None:
    model = build(ARCHITECTURES["cnn_with_batch_norm"])
    x, y = make_data()
    exact = exact_hessian(model, x, y).trace().item()
    result = hutchinson_trace(
        model,
        x,
        y,
        generator=generator(2),
        method="hutch++",
        deflation_rank=8,
        rel_tol=1e-9,
        probes_per_pass=50,
    )
    assert abs(result.value - exact) <= 3 * result.stderr
    assert result.method == "hutch++"


def test_hutch_plus_plus_refuses_train_mode() -> None:
    model = build(mlp_with_dropout)
    x, y = make_data()
    with pytest.raises(ValueError, match="use method='hutchinson' in train mode"):
        hutchinson_trace(model, x, y, generator=generator(), method="hutch++", mode="train")


def dropout_trace_case() -> tuple[nn.Module, Tensor, Tensor, float]:
    """A model with a 4-unit dropout layer (p = 0.5) and 8 samples, with the trace of its
    Hessian averaged over all 16 dropout masks of each sample: an exact finite sum, computed
    without the module's own dropout."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 3))
    model = model.double().eval()
    x, y = make_data()
    x, y = x[:8], y[:8]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    masks = torch.cartesian_prod(*[torch.tensor([0.0, 2.0], dtype=torch.float64)] * 4)

    def sample_loss(vector: Tensor, i: int, mask: Tensor) -> Tensor:
        pieces = vector.split([p.numel() for p in model.parameters()])
        w1, b1, w2, b2 = (v.view_as(p) for v, p in zip(pieces, model.parameters(), strict=True))
        hidden = torch.relu(x[i] @ w1.T + b1) * mask
        return F.cross_entropy((hidden @ w2.T + b2)[None], y[i : i + 1])

    expected = sum(
        torch.autograd.functional.hessian(partial(sample_loss, i=i, mask=m), flat).trace().item()
        for i in range(8)
        for m in masks
    ) / (8 * len(masks))
    return model, x, y, expected


def test_train_mode_trace_is_unbiased_for_the_expected_hessian() -> None:
    model, x, y, expected = dropout_trace_case()
    result = hutchinson_trace(
        model, x, y, generator=generator(), mode="train", max_probes=400, rel_tol=1e-9
    )
    assert abs(result.value - expected) <= 3 * result.stderr
    assert result.stderr < 0.2 * abs(expected)
    assert result.provenance.mode == "train"


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_top_eigenvalues_equal_exact_ones(name: str) -> None:
    model = build(ARCHITECTURES[name])
    x, y = make_data()
    exact = torch.linalg.eigvalsh(exact_hessian(model, x, y)).flip(0)[:3]
    result = hessian_eigenvalues(
        model, x, y, generator=generator(), num_eigenvalues=3, batch_size=25
    )
    assert result.converged
    np.testing.assert_allclose(result.eigenvalues, exact.tolist(), rtol=1e-4)
    pairs = zip(result.residual_norms, result.eigenvalues, strict=True)
    assert all(residual <= 1e-5 * abs(value) for residual, value in pairs)


def test_eigenvalues_stop_at_an_invariant_subspace() -> None:
    # With more steps than parameters Lanczos exhausts the space and all Ritz values are exact.
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    exact = torch.linalg.eigvalsh(exact_hessian(model, x, y)).flip(0)
    result = hessian_eigenvalues(
        model, x, y, generator=generator(), num_eigenvalues=5, rel_tol=1e-14, max_iterations=500
    )
    assert result.num_iterations <= exact.numel()
    np.testing.assert_allclose(result.eigenvalues, exact[:5].tolist(), rtol=1e-8)


def test_spectral_density_integrates_to_one_and_its_mean_is_trace_over_dimension() -> None:
    model = build(ARCHITECTURES["residual_block"])
    x, y = make_data()
    hessian = exact_hessian(model, x, y)
    dim = hessian.shape[0]
    result = spectral_density(
        model, x, y, generator=generator(), max_runs=12, min_runs=12, num_steps=20, batch_size=25
    )
    grid, density = np.array(result.grid), np.array(result.density)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
    mean = np.trapezoid(grid * density, grid)
    # The smoothed density keeps the quadrature's mean, which is the Hutchinson trace / d ...
    assert mean == pytest.approx(result.trace / dim, rel=1e-6)
    # ... an unbiased estimate of the exact trace / d.
    assert abs(mean * dim - hessian.trace().item()) <= 3 * result.trace_stderr
    for weights in result.weights:
        assert sum(weights) == pytest.approx(1.0, abs=1e-10)


def test_spectral_density_nodes_cover_the_exact_spectrum_ends() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    eigenvalues = torch.linalg.eigvalsh(exact_hessian(model, x, y))
    result = spectral_density(
        model, x, y, generator=generator(), max_runs=1, min_runs=1, num_steps=40, batch_size=50
    )
    nodes = np.concatenate(result.nodes)
    assert nodes.max() == pytest.approx(eigenvalues.max().item(), rel=1e-6)
    assert nodes.min() == pytest.approx(eigenvalues.min().item(), rel=1e-4, abs=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_probes": 1}, "need 2 <= min_probes <= max_probes"),
        ({"max_probes": 5}, "need 2 <= min_probes <= max_probes"),
        ({"method": "hutch+"}, "method must be one of"),
        ({"rel_tol": 0.0}, "rel_tol must be positive"),
    ],
)
def test_trace_arguments_are_checked(kwargs: dict[str, object], message: str) -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    with pytest.raises(ValueError, match=message):
        hutchinson_trace(model, x, y, generator=generator(), **kwargs)  # type: ignore[arg-type]


def test_train_mode_probes_share_a_draw_which_is_the_observation() -> None:
    # Probes pushed through one pass share its dropout draw, so they are not independent: the
    # draw (the mean of its probes) is the observation, and the budget is spent in whole draws.
    model = build(mlp_with_dropout)
    x, y = make_data()
    result = hutchinson_trace(
        model,
        x,
        y,
        generator=generator(),
        mode="train",
        probes_per_pass=4,
        max_probes=42,
        rel_tol=1e-9,
    )
    assert (result.num_probes, result.num_draws) == (40, 10)
    assert result.stopped_by == "budget" and not result.converged


def test_a_large_network_takes_one_probe_per_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    # A draw's probes share its mini-batch, so where probes would hold more than
    # _DRAW_PROBE_NUMBERS numbers a draw takes one probe: every probe is then an observation
    # on a mini-batch of its own. Small networks keep up to 8 (an eighth of the budget here).
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    dim = sum(p.numel() for p in model.parameters())

    def draws(numbers: int) -> tuple[int, int]:
        monkeypatch.setattr(hessian, "_DRAW_PROBE_NUMBERS", numbers)
        result = hutchinson_trace(
            model, x, y, generator=generator(), minibatch_size=8, max_probes=40, rel_tol=1e-9
        )
        return result.num_probes, result.num_draws

    assert draws(2**24) == (40, 8)
    assert draws(3 * dim) == (39, 13)
    assert draws(dim) == (40, 40)
    assert draws(dim - 1) == (40, 40)


def test_too_many_eigenvalues_are_refused() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    with pytest.raises(ValueError, match="num_eigenvalues"):
        hessian_eigenvalues(model, x, y, generator=generator(), num_eigenvalues=0)


def reorthogonalised_lanczos(
    model: nn.Module, x: Tensor, y: Tensor, start: Tensor, steps: int
) -> tuple[list[float], list[float]]:
    """The tridiagonal matrix of Lanczos with full reorthogonalisation (every basis vector
    kept), on the exact Hessian: the textbook algorithm the estimators used to run."""
    hessian = exact_hessian(model, x, y)
    basis = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = hessian @ basis[j]
        alphas.append(torch.dot(w, basis[j]).item())
        stacked = torch.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        betas.append(w.norm().item())
        basis.append(w / betas[-1])
    return alphas, betas


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_top_eigenvalues_equal_those_of_full_reorthogonalisation(name: str) -> None:
    # The same start vector and budget as the estimator; both reach rel_tol, so the values
    # agree far below it (an eigenvalue's error is about the square of its residual).
    model = build(ARCHITECTURES[name])
    x, y = make_data()
    result = hessian_eigenvalues(
        model, x, y, generator=generator(), num_eigenvalues=3, batch_size=25
    )
    start = torch.randn(result.dimension, generator=generator(), dtype=torch.float64)
    ritz, _ = ritz_pairs(*reorthogonalised_lanczos(model, x, y, start, result.num_iterations))
    np.testing.assert_allclose(result.eigenvalues, ritz.flip(0)[:3].tolist(), rtol=1e-9)
    assert len(set(result.eigenvalues)) == 3


def test_ghost_copies_of_converged_eigenvalues_are_reported_once() -> None:
    # Run until the top five converge to 1e-12: by then, without reorthogonalisation, the
    # top eigenvalue has reappeared as further Ritz values, which must not fill the top five.
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    exact = torch.linalg.eigvalsh(exact_hessian(model, x, y)).flip(0)
    fmodel = FunctionalModel(model)
    eps = torch.finfo(torch.float64).eps

    def operator() -> HessianOperator:
        return HessianOperator(
            fmodel,
            x,
            y,
            batch_size=50,
            probes_per_pass=1,
            mode=Mode.EVAL,
            num_mc_samples=1,
            generator=generator(),
            fixed_draws=True,
        )

    def converged(ritz: Tensor, residuals: Tensor) -> bool:
        top = distinct_top(ritz, residuals, 5, rel_tol=1e-12, eps=eps)
        return len(top) == 5 and bool((residuals[top] <= 1e-12 * ritz[top].abs()).all())

    start = torch.randn(fmodel.dim, generator=generator(), dtype=torch.float64)
    alphas, betas, stopped = lanczos(operator(), start, 400, converged)
    ritz, residuals = ritz_pairs(alphas, betas)
    copies = (ritz - exact[0]).abs() <= 1e-12 * exact[0]
    assert stopped and copies.sum() >= 3  # the premise: λ₁ has been found several times over
    top = distinct_top(ritz, residuals, 5, rel_tol=1e-12, eps=eps)
    np.testing.assert_allclose(ritz[top].tolist(), exact[:5].tolist(), rtol=1e-12)
    result = hessian_eigenvalues(
        model, x, y, generator=generator(), num_eigenvalues=5, rel_tol=1e-12, max_iterations=400
    )
    assert result.converged and result.num_iterations == len(alphas)
    np.testing.assert_allclose(result.eigenvalues, exact[:5].tolist(), rtol=1e-12)

    # Stopped before it converges, a copy still forming may be among the top five (where it
    # is depends on rounding): it is then reported with its residual bound, which holds, and
    # every value whose bound is below the tolerance is exact and reported once.
    start = torch.randn(fmodel.dim, generator=generator(), dtype=torch.float64)
    ritz, residuals = ritz_pairs(*lanczos(operator(), start, 140, None)[:2])
    top = distinct_top(ritz, residuals, 5, rel_tol=1e-10, eps=eps)
    distance = (ritz[top, None] - exact[None, :]).abs()
    assert (distance.min(dim=1).values <= residuals[top] + 1e-12).all()
    done = residuals[top] <= 1e-10 * ritz[top].abs()
    nearest = distance.argmin(dim=1)[done]
    assert len(set(nearest.tolist())) == len(nearest)
    np.testing.assert_allclose(ritz[top][done], exact[nearest], rtol=1e-12)


def test_distinct_top_drops_only_converged_copies() -> None:
    ritz = torch.tensor([1.0, 1.0 + 1e-12, 0.5, 0.9999, 0.2], dtype=torch.float64)
    residuals = torch.tensor([1e-10, 1e-11, 1e-10, 1e-1, 1e-10], dtype=torch.float64)
    # 1 + 1e-12 and 1.0 are one eigenvalue; 0.9999, unconverged and outside the error bars,
    # may be a genuine eigenvalue and is kept.
    top = distinct_top(ritz, residuals, 3, rel_tol=1e-6, eps=2.2e-16)
    assert top.tolist() == [1, 3, 2]


def test_lanczos_inner_products_are_accumulated_in_float64() -> None:
    # Three million float32 entries (several chunks): the float64 reference, to its own
    # rounding, where a float32 accumulation errs by about sqrt(d) * eps of the terms.
    generator_ = torch.Generator().manual_seed(0)
    a = torch.rand(3_000_001, generator=generator_) + 1.0
    b = torch.rand(3_000_001, generator=generator_)
    reference = float(a.double() @ b.double())
    assert exact_dot(a, b) == pytest.approx(reference, rel=1e-13)
    assert exact_dot(a[:10], b[:10]) == pytest.approx(float(a[:10].double() @ b[:10].double()))


def test_spectral_density_quadrature_matches_full_reorthogonalisation() -> None:
    # Gauss quadrature with m nodes integrates polynomials of degree < 2m exactly. Without
    # reorthogonalisation (60 steps in 143 dimensions, long past the top eigenvalues'
    # convergence) the moments uᵀ Hᵖ u of the quadrature must still be those of the fully
    # reorthogonalised one from the same start vector.
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    steps = 60
    result = spectral_density(
        model, x, y, generator=generator(), max_runs=1, min_runs=1, num_steps=steps, batch_size=50
    )
    like = torch.empty((), dtype=torch.float64)
    start = rademacher((result.dimension,), generator(), like)
    nodes, weights = gauss_quadrature(*reorthogonalised_lanczos(model, x, y, start, steps))
    ours_nodes = torch.tensor(result.nodes[0], dtype=torch.float64)
    ours_weights = torch.tensor(result.weights[0], dtype=torch.float64)
    scale = nodes.abs().max()
    for power in range(2 * steps):
        theirs = (weights * (nodes / scale) ** power).sum().item()
        ours = (ours_weights * (ours_nodes / scale) ** power).sum().item()
        assert ours == pytest.approx(theirs, rel=1e-7, abs=1e-12), power


def large_storages(dim: int) -> dict[int, int]:
    """Every live tensor storage of at least ``dim`` float64 numbers: bytes by address (views
    of one storage count once)."""
    storages = {}
    for obj in gc.get_objects():
        # issubclass of the type, not isinstance: the latter reads ``__class__``, which some
        # of torch's deprecated module attributes answer with a warning.
        if issubclass(type(obj), Tensor):
            storage = obj.untyped_storage()
            if storage.nbytes() >= 8 * dim:
                storages[storage.data_ptr()] = storage.nbytes()
    return storages


def parameter_vectors_held(dim: int, before: dict[int, int]) -> float:
    """Bytes of the large storages alive now that were not alive ``before`` (whatever other
    tests of the session keep alive does not count), in units of one parameter vector."""
    now = large_storages(dim)
    return sum(size for address, size in now.items() if before.get(address) != size) / (8 * dim)


@pytest.mark.parametrize("estimator", ["eigenvalues", "density", "trace"])
def test_parameter_vectors_held_do_not_grow_with_the_steps(
    estimator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted after every Hessian-vector product: a kept Lanczos basis would show up as a
    # storage of (steps · d) numbers, so the count would grow from 6 steps to 24.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 40), nn.Tanh(), nn.Linear(40, 40), nn.Linear(40, 3))
    model = model.double().eval()
    x, y = make_data()
    dim = sum(p.numel() for p in model.parameters())
    assert dim > 50 * 6  # the data's storage is smaller than one parameter vector
    counts: list[float] = []
    forms = hessian.batch_quadratic_forms

    def counted_forms(*args: object) -> Tensor:
        result = forms(*args)  # type: ignore[arg-type]
        counts.append(parameter_vectors_held(dim, before))
        return result

    monkeypatch.setattr(hessian, "batch_quadratic_forms", counted_forms)
    for method in ("matvec", "quadratic_forms"):
        original = getattr(HessianOperator, method)

        def counted(
            self: HessianOperator, vectors: Tensor, original: Callable[..., Tensor] = original
        ) -> Tensor:
            result = original(self, vectors)
            counts.append(parameter_vectors_held(self.dim, before))
            return result

        monkeypatch.setattr(HessianOperator, method, counted)
    peaks = []
    for steps in (6, 24):
        counts.clear()
        before = large_storages(dim)
        if estimator == "eigenvalues":
            hessian_eigenvalues(
                model, x, y, generator=generator(), rel_tol=1e-300, max_iterations=steps
            )
        elif estimator == "density":
            spectral_density(model, x, y, generator=generator(), max_runs=2, num_steps=steps)
        else:
            hutchinson_trace(
                model,
                x,
                y,
                generator=generator(),
                max_probes=steps,
                min_probes=steps,
                probes_per_pass=1,
            )
        assert len(counts) >= steps
        peaks.append(max(counts))
    assert peaks[0] == peaks[1]
    assert peaks[1] <= 3  # the two Lanczos vectors and a product
