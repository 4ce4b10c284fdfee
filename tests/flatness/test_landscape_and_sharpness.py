"""Loss slices and ε-sharpness against direct evaluation and a first-order closed form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from flatness_fixtures import ARCHITECTURES, build, generator, make_data
from torch import nn
from torch.func import functional_call

from flatness import epsilon_sharpness, filter_normalized_direction, loss_landscape


def test_filter_normalized_direction_matches_filter_norms() -> None:
    model = build(ARCHITECTURES["cnn_with_batch_norm"])
    params = {n: p.detach() for n, p in model.named_parameters()}
    direction = filter_normalized_direction(params, generator())
    for name, param in params.items():
        if param.ndim <= 1:
            assert torch.equal(direction[name], torch.zeros_like(param)), name
        else:
            torch.testing.assert_close(
                direction[name].flatten(1).norm(dim=1), param.flatten(1).norm(dim=1)
            )


def test_one_dimensional_slice_equals_direct_evaluation() -> None:
    model = build(ARCHITECTURES["residual_block"])
    x, y = make_data()
    result = loss_landscape(model, x, y, generator=generator(4), num_points=5, span=0.5)
    params = {n: p.detach() for n, p in model.named_parameters()}
    direction = filter_normalized_direction(params, generator(4))
    assert result.coordinates == pytest.approx((-0.5, -0.25, 0.0, 0.25, 0.5))
    for step, loss, accuracy in zip(
        result.coordinates, result.losses, result.accuracies, strict=True
    ):
        moved = {n: p + step * direction[n] for n, p in params.items()}
        logits = functional_call(model, moved, (x,))
        assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-12)
        assert accuracy == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert len(result.loss_stderrs) == 5 and all(s > 0 for s in result.loss_stderrs)


def test_two_dimensional_slice_is_a_grid_through_theta() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    result = loss_landscape(model, x, y, generator=generator(), num_directions=2, num_points=3)
    assert len(result.losses) == 3 and all(len(row) == 3 for row in result.losses)
    centre = F.cross_entropy(model(x), y).item()
    assert result.losses[1][1] == pytest.approx(centre, rel=1e-12)  # type: ignore[index]
    # The first direction equals the one of a 1-D slice from the same seed.
    line = loss_landscape(model, x, y, generator=generator(), num_points=3)
    assert [row[1] for row in result.losses] == pytest.approx(list(line.losses))  # type: ignore[index]


def test_sharpness_equals_first_order_closed_form_for_small_epsilon() -> None:
    # For small ε the maximum of L over the box is, to first order, at the corner
    # z_i = ε (|θ_i| + 1) sign(g_i), so L_max - L = ε Σ_i (|θ_i| + 1) |g_i|.
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    loss = F.cross_entropy(model(x), y)
    params = list(model.parameters())
    gradients = torch.autograd.grad(loss, params)
    epsilon = 1e-7
    increase = epsilon * sum(
        ((p.abs() + 1) * g.abs()).sum() for p, g in zip(params, gradients, strict=True)
    )
    expected = 100 * increase.item() / (1 + loss.item())
    result = epsilon_sharpness(model, x, y, generator=generator(), epsilon=epsilon, num_steps=4)
    assert result.value == pytest.approx(expected, rel=1e-4)
    assert result.base_loss == pytest.approx(loss.item())
    assert result.epsilon == epsilon


def test_sharpness_beats_random_points_of_the_box() -> None:
    model = build(ARCHITECTURES["residual_block"])
    x, y = make_data()
    epsilon = 0.05
    result = epsilon_sharpness(model, x, y, generator=generator(), epsilon=epsilon, num_steps=10)
    params = {n: p.detach() for n, p in model.named_parameters()}
    noise = torch.Generator().manual_seed(9)
    for _ in range(30):
        corner = {
            n: p
            + epsilon
            * (p.abs() + 1)
            * (2 * torch.rand(p.shape, generator=noise, dtype=p.dtype) - 1)
            for n, p in params.items()
        }
        assert F.cross_entropy(functional_call(model, corner, (x,)), y).item() <= result.max_loss
    assert result.value > 0 and result.stderr > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, x, y: loss_landscape(m, x, y, generator=generator(), num_directions=3),
            "1 or 2",
        ),
        (
            lambda m, x, y: loss_landscape(m, x, y, generator=generator(), num_points=1),
            "at least 2",
        ),
        (
            lambda m, x, y: epsilon_sharpness(m, x, y, generator=generator(), epsilon=-1.0),
            "epsilon",
        ),
    ],
)
def test_bad_arguments_are_refused(call, message: str) -> None:  # type: ignore[no-untyped-def]
    model: nn.Module = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    with pytest.raises(ValueError, match=message):
        call(model, x, y)
