"""Fisher-Rao norm by one JVP against per-sample backward passes and a closed form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from flatness_fixtures import (
    ARCHITECTURES,
    NUM_CLASSES,
    bias_free_relu_mlp,
    build,
    generator,
    make_data,
    mlp_with_dropout,
)
from torch import Tensor, nn

from flatness import Fisher, fisher_rao_norm


def per_sample_inner_products(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """⟨θ, ∇_θ CE(f(x_i), labels_i)⟩ by one backward pass per sample: ``[N]``."""
    params = [p for p in model.parameters() if p.requires_grad]
    values = []
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), labels[i : i + 1])
        gradients = torch.autograd.grad(loss, params)
        values.append(sum((g * p).sum() for g, p in zip(gradients, params, strict=True)))
    return torch.stack(values).detach()


def loop_fisher_rao(model: nn.Module, x: Tensor, y: Tensor, fisher: Fisher) -> float:
    if fisher is Fisher.EMPIRICAL:
        return (per_sample_inner_products(model, x, y) ** 2).mean().item()
    with torch.no_grad():
        probs = model(x).softmax(dim=-1)
    per_class = torch.stack(
        [
            per_sample_inner_products(model, x, torch.full_like(y, c)) ** 2
            for c in range(NUM_CLASSES)
        ],
        dim=1,
    )
    return (probs * per_class).sum(dim=1).mean().item()


@pytest.mark.parametrize("fisher", list(Fisher))
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_jvp_matches_per_sample_backward_loop(name: str, fisher: Fisher) -> None:
    model = build(ARCHITECTURES[name])
    x, y = make_data()
    result = fisher_rao_norm(model, x, y, generator=generator(), fisher=fisher, batch_size=16)
    expected = loop_fisher_rao(model, x, y, fisher)
    assert result.value == pytest.approx(expected, rel=1e-5)
    assert result.fisher == fisher.value
    assert result.provenance.num_samples == 50


def test_bias_free_relu_mlp_equals_homogeneity_closed_form() -> None:
    # f is positively homogeneous of degree L + 1 = 3 in θ, so ⟨θ, ∇_θ ℓ⟩ = 3 ⟨∂ℓ/∂f, f⟩.
    model = build(bias_free_relu_mlp)
    x, y = make_data()
    logits = model(x).detach()
    dloss_dlogits = logits.softmax(dim=-1) - F.one_hot(y, NUM_CLASSES)
    closed_form = (3**2 * (dloss_dlogits * logits).sum(dim=1) ** 2).mean().item()
    result = fisher_rao_norm(model, x, y, generator=generator(), batch_size=16)
    assert result.value == pytest.approx(closed_form, rel=1e-10)


def test_model_fisher_is_the_label_average_of_the_empirical_one() -> None:
    # Relabelling every sample with class c and weighting by softmax_c must give the model Fisher.
    model = build(ARCHITECTURES["residual_block"])
    x, y = make_data()
    with torch.no_grad():
        probs = model(x).softmax(dim=-1)
    weighted = 0.0
    for c in range(NUM_CLASSES):
        labels = torch.full_like(y, c)
        per_sample = per_sample_inner_products(model, x, labels) ** 2
        weighted += (probs[:, c] * per_sample).mean().item()
    result = fisher_rao_norm(model, x, y, generator=generator(), fisher="model")
    assert result.value == pytest.approx(weighted, rel=1e-8)


def test_standard_error_is_that_of_the_per_sample_values() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    values = per_sample_inner_products(model, x, y) ** 2
    result = fisher_rao_norm(model, x, y, generator=generator(), batch_size=7)
    assert result.stderr == pytest.approx((values.std() / 50**0.5).item(), rel=1e-6)
    assert result.ci_low < result.value < result.ci_high
    assert result.norm == pytest.approx(result.value**0.5)


def test_train_mode_averages_dropout_draws_and_is_reproducible() -> None:
    model = build(mlp_with_dropout)
    x, y = make_data()
    evaluated = fisher_rao_norm(model, x, y, generator=generator())
    first = fisher_rao_norm(model, x, y, generator=generator(5), mode="train", num_mc_samples=3)
    again = fisher_rao_norm(model, x, y, generator=generator(5), mode="train", num_mc_samples=3)
    other = fisher_rao_norm(model, x, y, generator=generator(6), mode="train", num_mc_samples=3)
    assert first.value == again.value
    assert first.value != other.value
    assert first.value != evaluated.value
    assert (first.provenance.mode, first.provenance.num_mc_samples) == ("train", 3)


def test_train_mode_matches_backward_loop_under_the_same_draw() -> None:
    # With the global RNG seeded as the estimator seeds it, a batched forward pass draws the
    # same dropout mask, so per-sample gradients of that pass are the oracle.
    model = build(mlp_with_dropout)
    x, y = make_data()
    result = fisher_rao_norm(model, x, y, generator=generator(3), mode="train", batch_size=50)
    (seed,) = torch.randint(0, 2**62, (1,), generator=generator(3)).tolist()
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        losses = F.cross_entropy(model(x), y, reduction="none")
    params = list(model.parameters())
    values = []
    for i in range(50):
        gradients = torch.autograd.grad(losses[i], params, retain_graph=True)
        values.append(sum((g * p).sum() for g, p in zip(gradients, params, strict=True)) ** 2)
    model.eval()
    assert result.value == pytest.approx(torch.stack(values).mean().item(), rel=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fisher": "true"}, "fisher must be one of"),
        ({"mode": "training"}, "mode must be one of"),
        ({"num_mc_samples": 4}, "num_mc_samples must be 1 in eval mode"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs: dict[str, object], message: str) -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    with pytest.raises(ValueError, match=message):
        fisher_rao_norm(model, x, y, generator=generator(), **kwargs)  # type: ignore[arg-type]


def test_float_labels_are_refused() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    with pytest.raises(ValueError, match="integer class labels"):
        fisher_rao_norm(model, x, y.double(), generator=generator())
