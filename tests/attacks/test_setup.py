"""The set-up every attack shares: checking a call, running it in the engine, and the batches
of the attacks that call pyautoattack."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attacks import apgd, autoattack, fab, square
from attacks.call import library_batch, library_seed, prepare
from attacks.engine import Batch, BatchResult, run_attack, setup
from attacks.threat import Norm


def _still(batch: Batch) -> BatchResult:
    """A hand-written attack that returns the clean inputs."""
    return BatchResult(
        adversarial=batch.x0.clone(),
        logits=batch.clean_logits,
        last_success=torch.zeros_like(batch.y, dtype=torch.bool),
        loss_trace=torch.zeros(1, batch.y.numel()),
        queries=torch.ones_like(batch.y),
    )


@pytest.mark.parametrize(
    ("attack", "name"),
    [(apgd, "APGD"), (fab, "FAB"), (autoattack, "AutoAttack"), (square, "Square")],
)
def test_the_library_attacks_refuse_bounds_other_than_the_unit_box(
    attack, name: str, model, data
) -> None:
    x, y = data
    with pytest.raises(ValueError, match=f"^{name} runs through pyautoattack, which clips to"):
        attack(model, x * 0.5, y, [0.1], bounds=(0.0, 0.5))


def test_prepare_checks_as_setup_does(model, data) -> None:
    x, y = data
    call = prepare(model, x, y, [0.1, 0.2], ("l2", (0.0, 1.0)), (7, None), eot_samples=3)
    config = setup(model, x, y, [0.1, 0.2], norm="l2", bounds=(0, 1), generator=7, eot_samples=3)
    assert call.x is x and call.y is y and call.model is model
    assert (call.config.norm, call.config.epsilons) == (Norm.L2, (0.1, 0.2))
    assert call.config.bounds == config.bounds
    assert call.config.stage_seed == config.stage_seed
    assert call.config.evaluator.eot_samples == 3
    assert torch.equal(call.config.sample_ids, torch.arange(x.shape[0]))
    with pytest.raises(ValueError, match="ascending"):
        prepare(model, x, y, [0.2, 0.1], ("linf", (0.0, 1.0)), (None, None))


def test_a_call_runs_as_run_attack_does(model, data) -> None:
    x, y = data
    settings = {"trace_length": 1, "objective": "cw", "params": {"a": 1}, "backend": "native"}
    call = prepare(model, x, y, [0.0, 0.1], ("linf", (0.0, 1.0)), (3, None))
    ours = call.run("still", _still, engine=(False, 5, False), gradients=False, **settings)
    config = setup(model, x, y, [0.0, 0.1], norm="linf", bounds=(0, 1), generator=3, eot_samples=1)
    theirs = run_attack(
        "still",
        model,
        x,
        y,
        config,
        _still,
        nested=False,
        batch_size=5,
        stochastic=False,
        gradients=False,
        **settings,
    )
    for field in dataclasses.fields(ours):
        if field.name == "wall_time":
            continue
        mine, other = getattr(ours, field.name), getattr(theirs, field.name)
        if isinstance(mine, torch.Tensor):
            torch.testing.assert_close(mine, other, rtol=0, atol=0, equal_nan=True)
        else:
            assert mine == other, field.name


def test_a_library_batch_forks_the_global_rng_and_judges_its_examples(model, data) -> None:
    x, y = data
    config = prepare(model, x, y, [0.1], ("linf", (0.0, 1.0)), (0, None)).config
    logits = model(x).detach()
    batch = Batch(torch.arange(x.shape[0]), x, y, torch.full_like(y, 0.1, dtype=x.dtype), 0, logits)
    _, seed = library_seed(config)
    assert seed == library_seed(prepare(model, x, y, [0.1], ("linf", (0, 1)), (0, None)).config)[1]
    before = torch.get_rng_state()

    def perturb() -> torch.Tensor:
        torch.manual_seed(seed)  # a library that seeds and draws from the global RNG
        return (x + 0.01 * torch.randn(x.shape)).double()

    outcome = library_batch(config, batch, perturb)
    assert torch.equal(torch.get_rng_state(), before)
    assert outcome.adversarial.dtype == x.dtype
    assert torch.equal(outcome.logits, config.evaluator.logits(outcome.adversarial))
    assert outcome.loss_trace.shape == (1, x.shape[0])
    assert torch.equal(outcome.queries, torch.zeros_like(y))
