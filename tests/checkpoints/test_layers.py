"""Statistical and exact tests of the dropout-family layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from checkpoints.layers import (
    QSD,
    Dropout,
    LayerSpec,
    NormOut,
    dropout,
    make_layer,
    normout,
    normout_keep_probability,
    qsd,
    qsd_coefficients,
    qsd_expected_coefficient,
    sample_beta,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------- NormOut formulas


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 2, 2)])
def test_normout_keep_probability_follows_definition(shape):
    x = torch.randn(shape, generator=_gen(1))
    a = x.abs()
    expected = {
        "temporal": a / a.amax(dim=0, keepdim=True),
        "spatial": a / a.amax(dim=1, keepdim=True),
        "spatiotemporal": a / a.amax(dim=(0, 1), keepdim=True),
    }
    for method, want in expected.items():
        got = normout_keep_probability(x, method)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    # Element by element for one case, independent of amax: temporal on a 4-D input takes the
    # max over the batch for each (c, h, w).
    if len(shape) == 4:
        p = normout_keep_probability(x, "temporal")
        n, c, h, w = shape
        for ci in range(c):
            for hi in range(h):
                for wi in range(w):
                    column = [abs(float(x[i, ci, hi, wi])) for i in range(n)]
                    for i in range(n):
                        assert math.isclose(
                            float(p[i, ci, hi, wi]), column[i] / max(column), rel_tol=1e-6
                        )


def test_normout_softmax_variant_matches_thesis_formula_and_is_stable():
    x = torch.tensor([[1.0, -3.0, 2.0], [0.5, 1.0, -0.5]])
    p = normout_keep_probability(x, "spatial", temperature=0.5)
    a = x.abs()
    torch.testing.assert_close(p, torch.exp((a - a.amax(1, keepdim=True)) / 0.5))
    huge = torch.tensor([[1e4, -2e4, 3e4]])
    q = normout_keep_probability(huge, "spatiotemporal", temperature=1e-3)
    assert torch.isfinite(q).all() and q.max() == 1.0


def test_normout_without_abs_and_zero_max_keep_nothing_without_nan():
    zeros = torch.zeros(3, 4)
    for method in ("temporal", "spatial", "spatiotemporal"):
        p = normout_keep_probability(zeros, method)
        assert torch.equal(p, torch.zeros_like(p))
        out = normout(zeros, method, generator=_gen())
        assert torch.isfinite(out).all() and not out.any()
    negative = -torch.rand(3, 4, generator=_gen()) - 0.1
    p = normout_keep_probability(negative, "spatial", use_abs=False)
    assert torch.equal(p, torch.zeros_like(p))


@pytest.mark.parametrize("method", ["temporal", "spatial", "spatiotemporal"])
def test_normout_mask_frequency_matches_probability(method):
    x = torch.randn(8, 6, generator=_gen(3))
    p = normout_keep_probability(x, method)
    draws = 4000
    gen = _gen(4)
    batch = torch.stack([normout(x, method, generator=gen) for _ in range(draws)])
    freq = (batch != 0).double().mean(0)
    # Binomial standard error, 5 sigma over 48 cells.
    tolerance = 5 * torch.sqrt(p.double() * (1 - p.double()) / draws) + 1e-9
    assert ((freq - p).abs() <= tolerance).all()


def test_normout_no_rescaling_and_gradient_only_through_kept_units():
    x = torch.randn(16, 10, generator=_gen(5), requires_grad=True)
    out = normout(x, "spatiotemporal", generator=_gen(6))
    kept = out != 0
    assert torch.equal(out[kept], x[kept])
    out.sum().backward()
    assert torch.equal(x.grad, kept.float())


# ---------------------------------------------------------------------------------------- QSD


def test_beta_sampler_matches_numpy_reference_and_moments():
    # Two-sample KS against numpy's Beta sampler (a one-sample test against the CDF is unusable
    # for beta < 1: a sizeable mass lies closer to 1 than float64 can represent).
    reference = np.random.default_rng(0)
    for a, b in [(0.2, 0.05), (2.0, 0.5), (5.0, 5.0)]:
        draws = sample_beta(a, b, (20000,), _gen(7)).numpy()
        _, p_value = scipy.stats.ks_2samp(draws, reference.beta(a, b, 20000))
        assert p_value > 1e-3, (a, b)
        mean = a / (a + b)
        assert abs(draws.mean() - mean) < 5 * draws.std() / math.sqrt(draws.size)


@pytest.mark.parametrize(
    ("variant", "unit"),
    [("full", False), ("full", True), ("dist_p", False), ("dist_q", False)],
)
@pytest.mark.parametrize(("drop_rate", "alpha"), [(0.2, 0.2), (0.5, 2.0)])
def test_qsd_coefficient_mean_matches_closed_form(variant, unit, drop_rate, alpha):
    c = qsd_coefficients((400_000,), drop_rate, alpha, variant, unit, _gen(8), torch.float64)
    beta = alpha * drop_rate / (1 - drop_rate)
    closed_form = 1 + beta / (alpha * (alpha + beta + 1)) if variant == "full" and not unit else 1.0
    assert math.isclose(
        qsd_expected_coefficient(drop_rate, alpha, variant) if not unit else 1.0, closed_form
    )
    standard_error = float(c.std()) / math.sqrt(c.numel())
    assert abs(float(c.mean()) - closed_form) < 4 * standard_error
    # Every variant drops a fraction d of the elements on average.
    dropped = float((c == 0).double().mean())
    assert abs(dropped - drop_rate) < 4 * math.sqrt(drop_rate * (1 - drop_rate) / c.numel())


def test_qsd_coefficients_follow_their_definition():
    # c = m p / p̄² takes values in [0, 1/p̄²]; dist_p takes exactly {0, 1/p̄}.
    c = qsd_coefficients((10000,), 0.2, 0.2, "full", generator=_gen(9), dtype=torch.float64)
    assert c.min() >= 0 and c.max() <= 1 / 0.8**2 + 1e-12
    d = qsd_coefficients((10000,), 0.2, 0.2, "dist_p", generator=_gen(9), dtype=torch.float64)
    assert set(d.unique().tolist()) <= {0.0, 1 / 0.8}


def test_qsd_gradient_is_the_coefficient():
    x = torch.randn(50, 20, generator=_gen(10), requires_grad=True)
    out = qsd(x, 0.3, 0.5, generator=_gen(11))
    coefficient = qsd_coefficients(x.shape, 0.3, 0.5, generator=_gen(11))
    torch.testing.assert_close(out.detach(), x.detach() * coefficient)
    out.sum().backward()
    torch.testing.assert_close(x.grad, coefficient)
    assert (x.grad[coefficient == 0] == 0).all()


# ------------------------------------------------------------------------------------ Dropout


def test_dropout_rate_and_unit_mean():
    x = torch.ones(200_000)
    out = dropout(x, 0.3, generator=_gen(12))
    assert abs(float((out == 0).float().mean()) - 0.3) < 4 * math.sqrt(0.21 / x.numel())
    assert abs(float(out.mean()) - 1.0) < 0.01
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.7))


# ------------------------------------------------------------------------------ module shells


@pytest.mark.parametrize(
    "module",
    [
        NormOut("temporal"),
        NormOut("spatial", temperature=2.0),
        QSD(0.2, 0.2),
        QSD(variant="dist_q"),
        Dropout(0.5),
    ],
)
def test_modules_are_identity_in_eval_and_stochastic_in_train(module):
    x = torch.randn(8, 3, 4, 4, generator=_gen(13))
    module.eval()
    assert module(x) is x
    module.train()
    module.generator = _gen(14)
    first = module(x)
    assert not torch.equal(first, x)
    module.generator = _gen(14)
    assert torch.equal(module(x), first)
    assert module.extra_repr()


def test_layer_spec_parse_round_trip_and_errors():
    spec = LayerSpec.parse("normout:spatiotemporal@48,51")
    assert (spec.kind, spec.params, spec.positions) == (
        "normout",
        {"method": "spatiotemporal"},
        (48, 51),
    )
    assert LayerSpec.parse(str(spec)) == spec
    assert LayerSpec.from_dict(spec.to_dict()) == spec
    q = LayerSpec.parse("qsd:drop_rate=0.2,alpha=0.2,variant=dist_p")
    assert isinstance(make_layer(q), QSD) and make_layer(q).variant == "dist_p"
    assert LayerSpec.parse("normout:temporal,temperature=0.5").params["temperature"] == 0.5
    assert LayerSpec.parse("dropout:0.3").params == {"p": 0.3}
    with pytest.raises(ValueError, match="known kinds"):
        LayerSpec.parse("normut:spatial")
    with pytest.raises(ValueError, match="NormOut method"):
        LayerSpec.parse("normout:sideways")
    with pytest.raises(ValueError, match="unknown parameter"):
        LayerSpec.parse("qsd:rate=0.2")
    with pytest.raises(ValueError, match="drop_rate"):
        LayerSpec.parse("qsd:1.5")
    with pytest.raises(ValueError, match="integers"):
        LayerSpec.parse("dropout@a,b")
