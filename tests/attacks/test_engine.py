"""What the engine guarantees whoever computed the examples: the budget, its own judgement,
and the step at which each sample fell."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks import apgd, geometry, pgd, random_noise, robust_after, square
from attacks.engine import Batch, BatchResult, run_attack, setup
from attacks.result import STEP_NOT_BROKEN, STEP_UNKNOWN


class _Liar:
    """A hand-written attack: returns examples far outside the ball and the box, NaN in one
    coordinate, and logits that claim the opposite of the truth."""

    def __init__(self, config, model: nn.Module) -> None:
        self.config, self.model = config, model

    def __call__(self, batch: Batch) -> BatchResult:
        generator = torch.Generator().manual_seed(batch.k)
        noise = torch.randn(batch.x0.shape, generator=generator)
        adversarial = batch.x0 + 3.0 * noise  # far outside every ball and the box
        adversarial[0, 0, 0, 0] = float("nan")
        with torch.no_grad():
            truth = self.model(adversarial.clamp(0, 1)).argmax(dim=1)
        lying = torch.nn.functional.one_hot(truth, 10).float() * -50.0  # never the argmax
        return BatchResult(
            adversarial=adversarial,
            logits=lying,
            last_success=torch.zeros_like(batch.y, dtype=torch.bool),
            loss_trace=torch.zeros(1, batch.y.numel()),
            queries=torch.ones_like(batch.y),
            success_step=torch.full_like(batch.y, 7),
        )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_out_of_budget_examples_are_projected_and_judged_again(norm, model, data) -> None:
    x, y = data
    epsilons = [0.05, 0.3] if norm == "linf" else [0.3, 1.5]
    config = setup(model, x, y, epsilons, norm=norm, bounds=(0.0, 1.0), generator=0, eot_samples=1)
    result = run_attack(
        "liar",
        model,
        x,
        y,
        config,
        _Liar(config, model),
        trace_length=1,
        objective="none",
        nested=False,
        batch_size=16,
        stochastic=False,
        params={},
        gradients=False,
    )
    geom = geometry(norm)
    with torch.no_grad():
        clean_wrong = model(x).argmax(dim=1) != y
    for k, eps in enumerate(epsilons):
        adversarial = result.adversarial[k]
        assert torch.isfinite(adversarial).all()
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        distance = geom.distance(adversarial, x)
        assert (distance <= eps * (1 + 1e-5) + 1e-6).all()
        attacked = result.attacked[k]
        # Outside the ball, so projected: the attacked examples sit on its boundary (L∞: a
        # coordinate at eps; L2: the sphere, box clipping aside, only shortens).
        if norm == "linf":
            torch.testing.assert_close(distance[attacked], torch.full_like(distance[attacked], eps))
        # Judged by the model, not by the logits the attack returned.
        with torch.no_grad():
            logits = model(adversarial)
        truth = logits.argmax(dim=1) != y
        assert torch.equal(result.success[k], truth | clean_wrong)
        expected_margin = logits.gather(1, y[:, None]).squeeze(1) - logits.scatter(
            1, y[:, None], float("-inf")
        ).amax(dim=1)
        torch.testing.assert_close(result.margin[k][attacked], expected_margin[attacked])
        # The claimed step stands only where the model confirms the success.
        steps = result.success_step[k]
        assert torch.equal(steps[attacked & truth], torch.full_like(steps[attacked & truth], 7))
        assert (steps[attacked & ~truth] == STEP_NOT_BROKEN).all()
        assert (steps[clean_wrong] == 0).all()
    # One judging pass per attacked sample beside the clean pass: counted.
    assert result.num_forward == x.shape[0] + int(result.attacked.sum())


def test_examples_inside_the_ball_are_kept_bit_for_bit(model, data) -> None:
    x, y = data
    geom = geometry("linf")
    eps = torch.full((x.shape[0],), 0.1)
    inside = geom.project(
        x + 0.3 * torch.randn(x.shape, generator=torch.Generator()), x, eps, _box()
    )
    assert torch.equal(geom.enforce(inside.clone(), x, eps, _box()), inside)


def _box():
    from attacks import Bounds

    return Bounds(0.0, 1.0)


class _Linear(nn.Module):
    """Two classes, logits ``(s, -s)`` with ``s = w . x + b``: margin of class 0 is ``2 s``."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([s, -s], dim=1)


def test_pgd_success_step_equals_the_closed_form_on_a_linear_model() -> None:
    # Sign steps of alpha lower s by exactly alpha * ||w||_1 per step while neither the ball
    # (8 steps of eps / 8) nor the box (x in [0.3, 0.7], eps 0.04) clips: the sample falls at
    # the first t with s_0 - t * alpha * ||w||_1 < 0.
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=generator, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(40, 1, 4, 4, generator=generator, dtype=torch.float64)
    bias = -0.5 * float(w.sum())  # s = w . (x - 0.5): either sign at the start
    model = _Linear(w, bias)
    s0 = x.flatten(1) @ w + bias
    x, s0 = x[s0 > 0], s0[s0 > 0]  # class 0 right at the start
    y = torch.zeros(x.shape[0], dtype=torch.long)
    eps, num_steps = 0.04, 8
    alpha = eps / num_steps
    result = pgd(
        model,
        x,
        y,
        [eps],
        num_steps=num_steps,
        rel_step_size=1 / num_steps,
        random_start=False,
        generator=0,
    )
    per_step = alpha * float(w.abs().sum())
    expected = torch.floor(s0 / per_step).long() + 1
    expected[expected > num_steps] = STEP_NOT_BROKEN
    # Away from exact ties (s_t = 0 at a step), which float rounding could put either side.
    clear = ((s0 / per_step) - torch.round(s0 / per_step)).abs() > 1e-6
    assert clear.sum() > 20 and (expected[clear] > 1).any() and (expected[clear] == -1).any()
    assert torch.equal(result.success_step[0][clear], expected[clear])


def test_iterative_attacks_report_their_steps(model, data) -> None:
    x, y = data
    with torch.no_grad():
        clean_wrong = model(x).argmax(dim=1) != y
    results = {
        "pgd": pgd(model, x, y, [0.05, 0.2], num_steps=10, generator=0),
        "pgd-restarts": pgd(model, x, y, [0.05], num_steps=4, num_restarts=3, generator=0),
        "noise": random_noise(model, x, y, [0.2], num_draws=20, generator=0),
        "square": square(model, x, y, [0.2], num_queries=40, rescale_schedule=True, generator=0),
    }
    limits = {"pgd": 10, "pgd-restarts": 4, "noise": 20, "square": 40}
    for name, result in results.items():
        steps = result.success_step
        assert steps is not None and steps.shape == result.success.shape
        broken = result.success & result.attacked
        assert (steps[~result.success] == STEP_NOT_BROKEN).all(), name
        assert (steps[:, clean_wrong] == 0).all(), name
        assert ((steps[broken] >= 0) & (steps[broken] <= limits[name])).all(), name
    # Square: pyautoattack counts one query per iteration until a sample falls.
    square_result = results["square"]
    broken = square_result.success & square_result.attacked
    assert torch.equal(square_result.success_step[broken], square_result.queries[broken] - 1)
    # A nested epsilon inherits the step with the example.
    nested = results["pgd"]
    inherited = nested.success[0] & ~nested.attacked[1] & ~clean_wrong
    assert torch.equal(nested.success_step[1][inherited], nested.success_step[0][inherited])


def test_apgd_steps_are_unknown(model, data) -> None:
    x, y = data
    result = apgd(model, x, y, [0.2], num_steps=5, generator=0)
    broken = result.success & result.attacked
    assert broken.any() and (result.success_step[broken] == STEP_UNKNOWN).all()


def test_robust_after_is_the_worst_case_over_attacks_and_nested_balls() -> None:
    clean = torch.tensor([True, True, True, False])
    first = torch.tensor([[True, False, False, True], [False, False, False, True]])
    second = torch.tensor([[False, False, False, False], [False, True, False, False]])
    after_first, after_second = robust_after(clean, [first, second])
    # Sample 0 broken at the smaller epsilon is broken at the larger one too, though the
    # attack missed it there; sample 3 was never robust.
    assert after_first.tolist() == [[False, True, True, False], [False, True, True, False]]
    assert after_second.tolist() == [[False, True, True, False], [False, False, True, False]]
    with pytest.raises(ValueError, match="shape"):
        robust_after(clean, [first[:, :3]])
    assert math.isclose(float(after_second.double().mean()), 3 / 8)


class _Flipping(nn.Module):
    """A random classifier: on every call each sample's prediction is class 0 (the label),
    flipped to class 1 with probability 0.3 (drawn from torch's global RNG). The logits depend
    on the input only through a zero term, so no attack can change the odds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], device=x.device) < 0.3
        logits = torch.zeros(x.shape[0], 10, device=x.device)
        logits[:, 0] = 1.0
        logits[:, 1] = torch.where(flip, 2.0, 0.0)
        return logits + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_a_stochastic_model_is_judged_by_one_pass(attack: str) -> None:
    """Whatever the EOT, the engine judges an example by one forward pass: one draw of a
    random model, as a user of it gets and as AutoAttack judges. A sample is then broken with
    probability 0.3 (plus the clean errors of the attack's own clean pass, averaged over the 8
    EOT passes: P(at least 5 of 8 flips) = 0.058); the average of 8 passes at the example
    would break it with probability 0.058 only. 400 samples: 0.34 ± 0.024 against 0.11."""
    model = _Flipping().eval()
    x = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(400, dtype=torch.long)
    if attack == "pgd":
        result = pgd(model, x, y, [0.1], num_steps=2, eot_samples=8, generator=0)
    else:
        result = apgd(model, x, y, [0.1], num_steps=2, eot_samples=8, generator=0)
    broken = float(result.success[0].double().mean())
    assert 0.25 < broken < 0.45, broken
