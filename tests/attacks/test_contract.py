"""One contract over every attack × norm (and backend): the promises every attack keeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from attacks import (
    AttackResult,
    apgd,
    autoattack,
    fab,
    fgsm,
    geometry,
    pgd,
    pgd_targeted,
    random_noise,
    registry,
    square,
)

EPSILONS = {"linf": [0.0, 0.05, 0.2], "l2": [0.0, 0.3, 1.0]}

CASES: list[tuple[str, Callable[..., AttackResult], dict[str, Any]]] = [
    ("fgsm", fgsm, {}),
    ("fgsm-cleverhans", fgsm, {"backend": "cleverhans"}),
    ("fgsm-torchattacks", fgsm, {"backend": "torchattacks"}),
    ("pgd", pgd, {"num_steps": 8}),
    ("pgd-cw-restarts", pgd, {"num_steps": 5, "loss": "cw", "num_restarts": 2}),
    ("pgd-dlr-last", pgd, {"num_steps": 5, "loss": "dlr", "keep": "last", "early_stop": False}),
    ("pgd-cleverhans", pgd, {"num_steps": 5, "backend": "cleverhans"}),
    ("pgd-torchattacks", pgd, {"num_steps": 5, "backend": "torchattacks"}),
    ("pgd-t-random", pgd_targeted, {"num_steps": 5, "target_mode": "random"}),
    ("pgd-t-next", pgd_targeted, {"num_steps": 5, "target_mode": "next"}),
    ("pgd-t-least-likely", pgd_targeted, {"num_steps": 5, "target_mode": "least-likely"}),
    ("pgd-t-all", pgd_targeted, {"num_steps": 3, "target_mode": "all"}),
    ("pgd-t-top", pgd_targeted, {"num_steps": 3, "target_mode": "top", "num_target_classes": 3}),
    ("pgd-t-top-cw", pgd_targeted, {"num_steps": 3, "target_mode": "top", "loss": "cw"}),
    ("pgd-eot", pgd, {"num_steps": 3, "eot_samples": 2}),
    ("square", square, {"num_queries": 30, "rescale_schedule": True}),
    ("noise", random_noise, {"num_draws": 10}),
    ("apgd-ce", apgd, {"num_steps": 5}),
    ("apgd-t", apgd, {"num_steps": 5, "targeted": True, "num_target_classes": 2}),
    ("fab-t", fab, {"num_steps": 5, "num_target_classes": 3}),
    ("fab", fab, {"num_steps": 5, "targeted": False}),
]


def _case_ids() -> list[str]:
    return [name for name, _, _ in CASES]


@pytest.fixture(params=["linf", "l2"])
def norm(request: pytest.FixtureRequest) -> str:
    return request.param


def _run(attack: Callable[..., AttackResult], model: nn.Module, x, y, norm: str, **kwargs):
    return attack(model, x, y, EPSILONS[norm], norm=norm, generator=7, **kwargs)


@pytest.mark.parametrize(("name", "attack", "kwargs"), CASES, ids=_case_ids())
def test_contract(name, attack, kwargs, norm, model, data) -> None:
    x, y = data
    x_before, y_before = x.clone(), y.clone()
    # A mixed mode (train at the top, one submodule in eval) must come back exactly.
    model.train()
    model.features[1].eval()
    modes_before = [m.training for m in model.modules()]
    seen_modes: list[bool] = []
    hook = model.register_forward_pre_hook(lambda module, args: seen_modes.append(module.training))

    result = _run(attack, model, x, y, norm, **kwargs)
    hook.remove()
    # Inputs untouched, attack in eval mode, modes restored.
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert seen_modes and not any(seen_modes)
    assert [m.training for m in model.modules()] == modes_before

    k, n = len(EPSILONS[norm]), x.shape[0]
    # Shapes.
    assert result.success.shape == (k, n) and result.success.dtype == torch.bool
    assert result.adversarial.shape == (k, *x.shape)
    assert result.margin.shape == result.last_success.shape == result.attacked.shape == (k, n)
    assert result.queries.shape == (k, n)
    assert result.loss_trace.shape[0] == k and result.loss_trace.shape[2] == n
    assert result.mean_loss_trace.shape == result.loss_trace.shape[:2]
    assert result.num_forward > 0 and result.wall_time > 0
    # Inside the ball and the bounds.
    distance = torch.stack([geometry(norm).distance(adv, x) for adv in result.adversarial])
    limits = torch.tensor(EPSILONS[norm])[:, None]
    assert (distance <= limits * (1 + 1e-5) + 1e-6).all()
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    # Success is judged on the returned (projected, clipped) example, in eval mode.
    model.eval()
    with torch.no_grad():
        for row, adv in enumerate(result.adversarial):
            predictions = model(adv).argmax(dim=1)
            assert torch.equal(result.success[row], predictions != y)
    # Epsilon 0 gives the clean accuracy.
    with torch.no_grad():
        clean_wrong = model(x).argmax(dim=1) != y
    assert torch.equal(result.success[0], clean_wrong)
    # Success only grows with epsilon when nested (the default).
    assert (result.success[1:] >= result.success[:-1]).all()
    # Same seed, same result; the caller's global RNG untouched.
    state = torch.get_rng_state()
    again = _run(attack, model, x, y, norm, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(again.success, result.success)
    assert torch.equal(again.adversarial, result.adversarial)


# Every attack function of the package, by name: a new one must be added here.
ATTACK_FUNCTIONS: list[tuple[Callable[..., AttackResult], dict[str, Any]]] = [
    (fgsm, {}),
    (pgd, {"num_steps": 3}),
    (pgd_targeted, {"num_steps": 3}),
    (square, {"num_queries": 10}),
    (random_noise, {"num_draws": 5}),
    (apgd, {"num_steps": 3}),
    (fab, {"num_steps": 3, "num_target_classes": 2}),
    (autoattack, {"version": "standard"}),
]


def test_the_scalar_table_holds_every_registered_attack_function() -> None:
    registered = {registry.get(kind).function for kind in registry.list_attacks()}
    assert registered == {function for function, _ in ATTACK_FUNCTIONS}


@pytest.mark.parametrize(
    ("attack", "kwargs"), ATTACK_FUNCTIONS, ids=[f.__name__ for f, _ in ATTACK_FUNCTIONS]
)
@pytest.mark.parametrize("epsilon", [0.1, 1, np.float32(0.1), torch.tensor(0.1)], ids=repr)
def test_a_single_epsilon_is_one_row(attack, kwargs, epsilon, model, data) -> None:
    x, y = data
    x, y = x[:6], y[:6]
    single = attack(model, x, y, epsilon, generator=3, **kwargs)
    listed = attack(model, x, y, [float(epsilon)], generator=3, **kwargs)
    assert single.epsilons == listed.epsilons == (float(epsilon),)
    assert single.success.shape == (1, x.shape[0])
    assert torch.equal(single.success, listed.success)
    assert torch.equal(single.adversarial, listed.adversarial)


@pytest.mark.parametrize("epsilons", [True, "0.1", b"0.1", None, object()], ids=repr)
def test_something_else_than_numbers_is_refused(epsilons, model, data) -> None:
    x, y = data
    with pytest.raises(TypeError, match="epsilons must be a number or a list of numbers"):
        pgd(model, x, y, epsilons, num_steps=1)


@pytest.mark.parametrize(
    "attack", [fgsm, pgd, pgd_targeted, random_noise], ids=lambda f: f.__name__
)
def test_nested_epsilons_share_work_and_independent_ones_do_not(attack, model, data) -> None:
    x, y = data
    kwargs = {"num_steps": 3} if attack in (pgd, pgd_targeted) else {}
    with torch.no_grad():
        clean_right = model(x).argmax(dim=1) == y
    independent = attack(model, x, y, [0.1, 0.2], nested=False, **kwargs)
    assert torch.equal(independent.attacked[0], clean_right)
    assert torch.equal(independent.attacked[1], clean_right)
    nested = attack(model, x, y, [0.1, 0.2], **kwargs)
    assert torch.equal(nested.attacked[1], clean_right & ~nested.success[0])
    # An inherited example is the one found at the smaller epsilon.
    inherited = nested.success[0] & clean_right
    assert torch.equal(nested.adversarial[1][inherited], nested.adversarial[0][inherited])


def test_stochastic_mode_runs_dropout_and_keeps_batch_norm_frozen(model, data) -> None:
    x, y = data
    running_mean = model.features[1].running_mean.clone()
    seen: list[tuple[bool, bool]] = []
    hook = model.register_forward_pre_hook(
        lambda module, args: seen.append((module.head[1].training, module.features[1].training))
    )
    pgd(model, x, y, [0.1], num_steps=2, stochastic=True, eot_samples=2)
    hook.remove()
    assert seen and all(dropout and not batch_norm for dropout, batch_norm in seen)
    assert torch.equal(model.features[1].running_mean, running_mean)
    assert not model.training


def test_eot_counts_passes(model, data) -> None:
    x, y = data
    single = pgd(model, x, y, [0.1], num_steps=2, early_stop=False)
    double = pgd(model, x, y, [0.1], num_steps=2, early_stop=False, eot_samples=2)
    attacked = int(single.attacked.sum())
    assert single.num_backward == 2 * attacked
    assert double.num_backward == 4 * attacked
    # One clean pass for all samples plus three passes per attacked sample, each averaged over
    # the EOT passes, and the engine's own judging pass of each returned example: one pass
    # (one draw of a stochastic model), whatever the EOT.
    assert single.num_forward == x.shape[0] + 4 * attacked
    assert double.num_forward == 2 * (x.shape[0] + 3 * attacked) + attacked


def test_pgd_costs_one_forward_per_iterate(model, data) -> None:
    x, y = data
    result = pgd(model, x, y, [0.05], num_steps=6, early_stop=False, random_start=False)
    attacked = int(result.attacked.sum())
    assert result.num_backward == 6 * attacked
    assert result.num_forward == x.shape[0] + 8 * attacked  # 7 iterates, 1 judging pass
    assert result.loss_trace.shape[1] == 7
    assert not torch.isnan(result.loss_trace[0][:, result.attacked[0]]).any()


def test_early_stop_leaves_broken_samples(model, data) -> None:
    x, y = data
    stopping = pgd(model, x, y, [0.2], num_steps=20)
    full = pgd(model, x, y, [0.2], num_steps=20, early_stop=False)
    assert stopping.num_backward < full.num_backward
    # Every success is kept at its first fooling iterate, so the trace ends where it stopped.
    assert torch.equal(stopping.success, stopping.last_success)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilons": [0.3, 0.1]}, "non-negative and ascending"),
        ({"epsilons": [-0.1]}, "non-negative"),
        ({"epsilons": []}, "at least one"),
        ({"norm": "l1"}, "norm must be one of"),
        ({"bounds": (1.0, 0.0)}, "lower < upper"),
        ({"num_steps": 0}, "num_steps"),
        ({"rel_step_size": 0.1, "abs_step_size": 0.1}, "not both"),
        ({"backend": "foolbox"}, "backend must be one of"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"keep": "worst"}, "keep must be"),
    ],
)
def test_bad_arguments_say_what_and_how(kwargs, message, model, data) -> None:
    x, y = data
    call = {"epsilons": [0.1], **kwargs}
    epsilons = call.pop("epsilons")
    with pytest.raises(ValueError, match=message):
        pgd(model, x, y, epsilons, **call)


def test_inputs_outside_bounds_are_refused(model, data) -> None:
    x, y = data
    with pytest.raises(ValueError, match="normalise inside the model"):
        fgsm(model, x * 2 - 0.5, y, [0.1])


def test_mismatched_labels_are_refused(model, data) -> None:
    x, y = data
    with pytest.raises(ValueError, match=r"labels must have shape \[N\]"):
        pgd(model, x, y[:-1], [0.1])
    with pytest.raises(TypeError, match="integer"):
        pgd(model, x, y.float(), [0.1])


def test_square_refuses_bounds_other_than_the_unit_box(model, data) -> None:
    x, y = data
    with pytest.raises(ValueError, match="clips to \\[0, 1\\]"):
        square(model, x * 0.5, y, [0.1], bounds=(0.0, 0.5))


def test_batches_give_the_same_answer(model, data) -> None:
    x, y = data
    whole = fgsm(model, x, y, [0.05, 0.1])
    batched = fgsm(model, x, y, [0.05, 0.1], batch_size=7)
    assert torch.equal(whole.success, batched.success)
    torch.testing.assert_close(whole.adversarial, batched.adversarial)
