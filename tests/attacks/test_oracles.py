"""Oracles: closed forms and analytic worst cases."""

from __future__ import annotations

import pytest
import torch
from oracle_helpers import _interior
from torch import nn

from attacks import fgsm, pgd, pgd_targeted


def _linear(num_classes: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)).to(dtype).eval()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_on_a_linear_model_equals_its_closed_form(norm: str) -> None:
    model = _linear(5)
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.arange(30) % 5
    epsilons = [0.01, 0.1, 0.5]
    result = fgsm(model, x, y, epsilons, norm=norm, nested=False)

    weight, bias = model[1].weight, model[1].bias
    with torch.no_grad():
        probabilities = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
        # d CE / d x = W^T (softmax(z) - onehot(y)) for z = W x + b.
        grad = (probabilities - nn.functional.one_hot(y, 5).double()) @ weight
        direction = grad.sign() if norm == "linf" else grad / grad.norm(dim=1, keepdim=True)
    attacked = result.attacked[0]
    for k, eps in enumerate(epsilons):
        expected = (x.flatten(1) + eps * direction).clamp(0, 1).reshape(x.shape)
        torch.testing.assert_close(
            result.adversarial[k][attacked], expected[attacked], rtol=0, atol=1e-12
        )


def _linear_binary(norm: str):
    """A linear binary classifier, its inputs and labels, the median margin's radius ``eps``
    and the closed-form worst-case true-class margin over the ``eps`` ball."""
    torch.manual_seed(4)
    weight = torch.randn(64, dtype=torch.float64)
    x = _interior()
    bias = -(x.flatten(1) @ weight).median()

    class Binary(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            score = inputs.flatten(1) @ weight + bias
            return torch.stack([torch.zeros_like(score), score], dim=1)

    score = x.flatten(1) @ weight + bias
    y = (score > 0).long()
    dual = weight.abs().sum() if norm == "linf" else weight.norm()
    # The median margin's radius: about half the samples robust, and far from the box.
    eps = float(score.abs().median() / dual)
    worst_margin = (2.0 * y - 1.0) * score - eps * dual  # min over the ball
    return Binary(), x, y, eps, worst_margin


# From a random start, L2 PGD only approaches the boundary point, so it starts at the input.
@pytest.mark.parametrize(("norm", "random_start"), [("linf", False), ("linf", True), ("l2", False)])
def test_pgd_on_a_linear_binary_classifier_reaches_the_worst_case(
    norm: str, random_start: bool
) -> None:
    model, x, y, eps, worst_margin = _linear_binary(norm)
    result = pgd(model, x, y, [eps], norm=norm, num_steps=20, random_start=random_start)
    decided = worst_margin.abs() > 1e-9
    assert torch.equal(result.success[0][decided], (worst_margin < 0)[decided])
    robust = ~result.success[0]
    torch.testing.assert_close(result.margin[0][robust], worst_margin[robust], rtol=0, atol=1e-9)
    assert robust.any() and result.success[0].any()


def test_targeted_margin_rises_as_the_target_gains() -> None:
    from attacks.losses import objective

    # Carlini and Wagner's targeted objective by hand: z_t - max_{j != t} z_j.
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [3.0, 2.5, 0.0, -1.0], [0.5, 2.0, 1.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    targets = torch.tensor([1, 1, 1])
    value = objective("cw", targeted=True)(logits, labels, targets)
    torch.testing.assert_close(value, torch.tensor([1.0 - 3.0, 2.5 - 3.0, 2.0 - 1.0]))
    # Every targeted objective rises as the target's logit rises and the label's falls.
    for name in ("ce", "cw", "dlr"):
        function = objective(name, targeted=True)
        before = function(logits, labels, targets)
        after = function(logits + torch.tensor([-0.2, 0.2, 0.0, 0.0]), labels, targets)
        assert (after > before).all(), name


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_on_a_linear_binary_classifier_reaches_the_worst_case(
    loss: str, norm: str
) -> None:
    # With two classes the only target is the other class, so the targeted attack's exact
    # worst case is the untargeted one's.
    model, x, y, eps, worst_margin = _linear_binary(norm)
    for mode in ("next", "top"):
        result = pgd_targeted(
            model,
            x,
            y,
            [eps],
            norm=norm,
            target_mode=mode,
            loss=loss,
            num_steps=20,
            random_start=False,
        )
        decided = worst_margin.abs() > 1e-9
        assert torch.equal(result.success[0][decided], (worst_margin < 0)[decided]), mode
        assert result.success[0].any() and not result.success[0].all()
