"""Doubly stochastic estimation (fresh mini-batches per draw) against exact values computed by
brute force: unbiased for the exact Hessian trace and Fisher-Rao norm, its variance that of the
derivation in ``flatness.draws``, and its reported standard error what the derivation says."""

from __future__ import annotations

import pytest
import torch
from flatness_fixtures import ARCHITECTURES, build, generator, make_data
from test_fisher_rao import per_sample_inner_products
from test_hessian import dropout_trace_case, exact_hessian
from torch import Tensor, nn

from flatness import fisher_rao_norm, hutchinson_trace
from flatness.draws import DrawPlan

SEEDS = range(400)


def per_sample_hessians(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``[N, d, d]``: the Hessian of each sample's loss."""
    return torch.stack([exact_hessian(model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))])


def srs_variance(values: Tensor, m: int) -> Tensor:
    """Variance of the mean of a simple random sample of ``m`` of the N rows of ``values``
    (without replacement), elementwise over the remaining dimensions."""
    n = values.shape[0]
    population = ((values - values.mean(0)) ** 2).mean(0)
    return population / m * (n - m) / (n - 1)


def population_variance(values: Tensor) -> Tensor:
    return ((values - values.mean(0)) ** 2).mean(0)


def probe_variance(hessians: Tensor, m: int, probes: int) -> float:
    """E_B[Var_v(mean of P quadratic forms | B)] = E_B[(2/P) Σ_{i≠k} (H_B)_ik²], exactly:
    E (H_B)_ik² = H̄_ik² + Var((H_B)_ik) for a simple random sample B of size m."""
    mean = hessians.mean(0)
    second = mean**2 + srs_variance(hessians, m)
    off_diagonal = second.sum() - second.diagonal().sum()
    return (2 / probes * off_diagonal).item()


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    return model, x, y, per_sample_hessians(model, x, y)


def test_one_draw_is_unbiased_with_the_variance_of_its_two_sources(small) -> None:
    # One draw of m = 5 samples and P = 40 probes: the law of total variance gives its
    # variance as Hutchinson's part (given the batch) plus the batch's own part.
    model, x, y, hessians = small
    m, probes = 5, 40
    exact = hessians.mean(0).trace().item()
    assert exact == pytest.approx(exact_hessian(model, x, y).trace().item(), rel=1e-10)
    traces = hessians.diagonal(dim1=1, dim2=2).sum(1)
    variance = probe_variance(hessians, m, probes) + srs_variance(traces, m).item()
    values = torch.tensor(
        [
            hutchinson_trace(
                model,
                x,
                y,
                generator=generator(seed),
                minibatch_size=m,
                probes_per_pass=probes,
                max_probes=probes,
                min_probes=2,
            ).value
            for seed in SEEDS
        ],
        dtype=torch.float64,
    )
    spread = values.std().item()
    assert abs(values.mean().item() - exact) <= 3 * spread / len(SEEDS) ** 0.5
    # Both parts matter here (a probe-only error would miss the batch's part).
    assert min(probe_variance(hessians, m, probes), srs_variance(traces, m).item()) > 0.2 * variance
    assert values.var().item() == pytest.approx(variance, rel=0.25)


def test_reported_standard_error_is_that_of_the_derivation(small) -> None:
    # J = 5 draws of m = 5 of the N = 50 samples (half a pass, disjoint subsets). The mean's
    # true variance is the probe part over J plus the batch part of a sample of J·m without
    # replacement; the reported s²/J has expectation (probe part + σ² N / (m (N - 1))) / J,
    # the variance of independent draws, so it is conservative by the finite population.
    model, x, y, hessians = small
    m, probes, draws = 5, 40, 5
    n = x.shape[0]
    traces = hessians.diagonal(dim1=1, dim2=2).sum(1)
    sigma2 = population_variance(traces).item()
    part = probe_variance(hessians, m, probes)
    true_variance = part / draws + srs_variance(traces, m * draws).item()
    reported_expected = (part + sigma2 * n / (m * (n - 1))) / draws
    results = [
        hutchinson_trace(
            model,
            x,
            y,
            generator=generator(seed),
            minibatch_size=m,
            probes_per_pass=probes,
            max_probes=probes * draws,
            min_probes=2,
            rel_tol=1e-9,
        )
        for seed in SEEDS
    ]
    assert all(r.num_draws == draws and r.stopped_by == "budget" for r in results)
    values = torch.tensor([r.value for r in results], dtype=torch.float64)
    reported = torch.tensor([r.stderr**2 for r in results], dtype=torch.float64)
    assert reported.mean().item() == pytest.approx(reported_expected, rel=0.15)
    assert values.var().item() == pytest.approx(true_variance, rel=0.25)
    assert reported_expected >= true_variance


def test_fisher_rao_draws_are_unbiased_and_their_error_is_that_of_the_derivation(small) -> None:
    model, x, y, _ = small
    values = per_sample_inner_products(model, x, y) ** 2
    exact = values.mean().item()
    m, draws, n = 4, 6, x.shape[0]
    sigma2 = population_variance(values).item()
    true_variance = srs_variance(values, m * draws).item()
    reported_expected = sigma2 * n / (m * (n - 1)) / draws
    results = [
        fisher_rao_norm(
            model,
            x,
            y,
            generator=generator(seed),
            minibatch_size=m,
            min_draws=2,
            max_draws=draws,
            rel_tol=1e-9,
        )
        for seed in SEEDS
    ]
    assert all(r.num_draws == draws and r.stopped_by == "budget" for r in results)
    estimates = torch.tensor([r.value for r in results], dtype=torch.float64)
    reported = torch.tensor([r.stderr**2 for r in results], dtype=torch.float64)
    assert abs(estimates.mean().item() - exact) <= 3 * estimates.std().item() / len(SEEDS) ** 0.5
    assert estimates.var().item() == pytest.approx(true_variance, rel=0.25)
    assert reported.mean().item() == pytest.approx(reported_expected, rel=0.15)


def test_train_mode_draws_are_unbiased_for_the_expected_hessian_trace() -> None:
    # Mini-batches of 3 of 8 samples with fresh dropout draws: unbiased for the trace of the
    # Hessian averaged over all 16 masks of each sample.
    model, x, y, expected = dropout_trace_case()
    result = hutchinson_trace(
        model,
        x,
        y,
        generator=generator(),
        mode="train",
        minibatch_size=3,
        probes_per_pass=2,
        max_probes=800,
        rel_tol=1e-9,
    )
    assert result.minibatch_size == 3 and result.num_draws == 400
    assert abs(result.value - expected) <= 3 * result.stderr
    assert result.stderr < 0.1 * abs(expected)


def test_the_trace_stops_at_its_target_or_its_budget(small) -> None:
    model, x, y, _ = small
    target = hutchinson_trace(
        model, x, y, generator=generator(), minibatch_size=10, max_probes=4000, rel_tol=0.1
    )
    assert target.stopped_by == "target" and target.converged
    assert target.stderr <= 0.1 * abs(target.value)
    assert target.num_probes < 4000 and target.num_draws >= 4
    budget = hutchinson_trace(
        model, x, y, generator=generator(), minibatch_size=10, max_probes=40, rel_tol=1e-3
    )
    assert budget.stopped_by == "budget" and not budget.converged
    assert budget.num_probes <= 40 and budget.stderr > 1e-3 * abs(budget.value)
    # The budget holds four draws at least: the default shares fewer probes per draw.
    assert budget.num_draws >= 4


def test_fisher_rao_stops_at_its_target_or_its_budget(small) -> None:
    model, x, y, _ = small
    target = fisher_rao_norm(model, x, y, generator=generator(), minibatch_size=10, rel_tol=0.3)
    assert target.stopped_by == "target"
    assert target.stderr <= 0.3 * target.value and 4 <= target.num_draws < 32
    budget = fisher_rao_norm(
        model,
        x,
        y,
        generator=generator(),
        minibatch_size=10,
        rel_tol=1e-4,
        min_draws=2,
        max_draws=7,
    )
    assert (budget.stopped_by, budget.num_draws) == ("budget", 7)
    whole = fisher_rao_norm(model, x, y, generator=generator(), minibatch_size=None)
    assert (whole.stopped_by, whole.num_draws, whole.minibatch_size) == ("all-samples", 1, None)


def test_draws_are_disjoint_within_a_pass_and_a_pass_uses_whole_draws_only() -> None:
    plan = DrawPlan(10, 3, batch_size=2, generator=generator(4))
    draws = [plan.next() for _ in range(6)]
    indices = [torch.cat([chunk for chunk, _ in d.chunks]).tolist() for d in draws]
    assert all(len(i) == 3 for i in indices)
    for first in (0, 3):  # three draws of three per permutation of ten: one index unused
        used = [v for i in indices[first : first + 3] for v in i]
        assert len(set(used)) == 9
    assert [w for _, w in draws[0].chunks] == [2 / 3, 1 / 3]
    assert len({d.seed for d in draws}) == 6
    whole = DrawPlan(10, 10, batch_size=4, generator=generator(4))
    assert whole.full and torch.cat([c for c, _ in whole.next().chunks]).tolist() == list(range(10))
