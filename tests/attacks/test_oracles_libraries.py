"""Oracles: the reference libraries cleverhans and torchattacks (FGSM and PGD)."""

from __future__ import annotations

import math

import pytest
import torch
from attack_fixtures import mnist_test, tiny_data, tiny_model, zoo_checkpoint
from oracle_helpers import _interior, _norm
from torch import nn

from attacks import fgsm, pgd, preset


def _reference_fgsm(library: str, model: nn.Module, x, y, eps: float, norm: str):
    if library == "torchattacks":
        import torchattacks

        return torchattacks.FGSM(model, eps=eps)(x, y)
    from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method

    order = math.inf if norm == "linf" else 2
    return fast_gradient_method(model, x, eps, order, clip_min=0.0, clip_max=1.0, y=y)


def _reference_pgd(
    library: str, model: nn.Module, x, y, eps: float, step: float, steps: int, norm: str
):
    if library == "torchattacks":
        import torchattacks

        attack_class = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        return attack_class(model, eps=eps, alpha=step, steps=steps, random_start=False)(x, y)
    from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

    order = math.inf if norm == "linf" else 2
    return projected_gradient_descent(
        model,
        x,
        eps,
        step,
        steps,
        order,
        clip_min=0.0,
        clip_max=1.0,
        y=y,
        rand_init=False,
        sanity_checks=False,
    )


# cleverhans computes in float32 whatever it is given; torchattacks keeps float64. Under L2
# cleverhans clips to the box before projecting onto the ball and torchattacks after, so the
# L2 comparisons use interior points where the box is never reached.
REFERENCE_CASES = [
    ("torchattacks", "linf", torch.float64),
    ("torchattacks", "l2", torch.float64),
    ("cleverhans", "linf", torch.float32),
    ("cleverhans", "l2", torch.float32),
]


@pytest.mark.reference
@pytest.mark.parametrize(("library", "norm", "dtype"), REFERENCE_CASES)
def test_native_fgsm_and_pgd_equal_the_reference_libraries(library, norm, dtype) -> None:
    model = tiny_model(dtype)
    if norm == "l2":
        x = _interior(48, dtype)
        epsilons = [0.05, 0.2]
    else:
        x, _ = tiny_data(model, dtype=dtype)
        epsilons = [0.03, 0.1]
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every sample correct, so every sample is attacked
    if not (library == "torchattacks" and norm == "l2"):
        native = fgsm(model, x, y, epsilons, norm=norm, nested=False)
        for k, eps in enumerate(epsilons):
            reference = _reference_fgsm(library, model, x, y, eps, norm)
            torch.testing.assert_close(
                native.adversarial[k], reference.to(dtype), rtol=0, atol=1e-6
            )
    steps, rel = 7, 0.3
    native = pgd(
        model,
        x,
        y,
        epsilons,
        norm=norm,
        num_steps=steps,
        rel_step_size=rel,
        random_start=False,
        keep="last",
        early_stop=False,
        nested=False,
    )
    for k, eps in enumerate(epsilons):
        reference = _reference_pgd(library, model, x, y, eps, rel * eps, steps, norm)
        torch.testing.assert_close(native.adversarial[k], reference.to(dtype), rtol=0, atol=1e-6)
    # The selectable backend reproduces the library's numbers.
    through = pgd(
        model,
        x,
        y,
        epsilons,
        norm=norm,
        num_steps=steps,
        rel_step_size=rel,
        random_start=False,
        nested=False,
        backend=library,
    )
    assert torch.equal(through.success, native.success)


def _binomial_interval(accuracy: float, n: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1.0 / n) / n)
    return accuracy - half, accuracy + half


def _torchattacks_robust_accuracy(model, x, y, eps, step, steps, norm, seed) -> float:
    import torchattacks

    attack_class = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        adversarial = attack_class(model, eps=eps, alpha=step, steps=steps, random_start=True)(x, y)
    with torch.no_grad():
        return float((model(adversarial).argmax(dim=1) == y).double().mean())


@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_matches_torchattacks_robust_accuracy_on_a_zoo_model(norm: str) -> None:
    from checkpoints.datasets import load_dataset

    checkpoint = zoo_checkpoint("digits-mlp-none.pt")
    data = load_dataset("digits")
    x, y = data.x[:300], data.y[:300]
    eps = preset("standard", "digits").epsilons[_norm(norm)][0]
    steps = 20
    native = pgd(checkpoint.model, x, y, [eps], norm=norm, num_steps=steps, generator=11)
    reference = _torchattacks_robust_accuracy(
        checkpoint.model, x, y, eps, 2.5 / steps * eps, steps, norm, seed=11
    )
    low, high = _binomial_interval(reference, x.shape[0])
    assert low <= native.robust_accuracy[0] <= high, (native.robust_accuracy, reference)


@pytest.mark.data
@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_matches_torchattacks_on_the_mnist_lenet(norm: str) -> None:
    checkpoint = zoo_checkpoint("mnist-lenet5-dropout.pt")
    data = mnist_test()
    x, y = data.x[:500], data.y[:500]
    eps = {"linf": 0.1, "l2": 1.0}[norm]  # mid-range accuracy, where a difference would show
    native = pgd(checkpoint.model, x, y, [eps], norm=norm, num_steps=40, generator=3)
    reference = _torchattacks_robust_accuracy(
        checkpoint.model, x, y, eps, 2.5 / 40 * eps, 40, norm, seed=3
    )
    low, high = _binomial_interval(reference, x.shape[0])
    assert low <= native.robust_accuracy[0] <= high, (native.robust_accuracy, reference)
