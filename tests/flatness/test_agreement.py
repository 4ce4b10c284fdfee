"""The audit's flatness budgets against the full-batch estimates they replace, on zoo models:
every figure of the report's flatness table within three of its combined standard errors (the
top eigenvalues within their residual bounds), in eval mode and with the layers active."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from analysis.config import active_flatness_config, flatness_config
from core.flatrecords import FlatnessResult
from flatness import FlatnessConfig, measure

ZOO = Path(__file__).resolve().parents[2] / "checkpoints" / "zoo"
MODELS = ("digits-mlp-dropout", "digits-mlp-normout-spatiotemporal", "digits-mlp-qsd")
NUM_SAMPLES = 300
Z = 3.0


def full_batch(config: FlatnessConfig) -> FlatnessConfig:
    """``config`` as the audit ran it before: every observation a pass over every sample,
    pictures on every sample, Lanczos to its old tolerance of 10⁻⁵."""
    options: dict[str, dict[str, Any]] = {}
    for name, values in config.options.items():
        values = {k: v for k, v in values.items() if k not in ("sample_size", "rel_tol")}
        if name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace"):
            values = {k: v for k, v in values.items() if k not in ("max_draws",)}
            values["minibatch_size"] = None
        if name == "hessian_trace":
            values["rel_tol"] = 0.02
        if name == "hessian_eigenvalues":
            values["rel_tol"] = 1e-5
        options[name] = values
    return dataclasses.replace(config, options=options)


@pytest.fixture(scope="module", params=MODELS)
def zoo_model(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    path = ZOO / f"{request.param}.pt"
    if not path.exists():
        pytest.skip(f"zoo checkpoint {path.name} is absent; build the zoo to run this test")
    from checkpoints import load_checkpoint
    from checkpoints.datasets import load_dataset

    data = load_dataset("digits")
    return load_checkpoint(path).model, data.x[:NUM_SAMPLES], data.y[:NUM_SAMPLES]


def _close(new: Any, old: Any) -> bool:
    return abs(new.value - old.value) <= Z * math.hypot(new.stderr, old.stderr)


@pytest.mark.parametrize("active", [False, True], ids=["eval", "layers-active"])
def test_every_figure_agrees_with_the_full_batch_estimate(zoo_model, active: bool) -> None:
    model, x, y = zoo_model
    config = flatness_config("standard", 128)
    if active:
        config = active_flatness_config(config)
    new = measure(model, x, y, config, torch.Generator().manual_seed(0))
    old = measure(model, x, y, full_batch(config), torch.Generator().manual_seed(1))
    checked = 0
    for name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace"):
        ours, theirs = getattr(new, name), getattr(old, name)
        assert ours.minibatch_size == 64 and theirs.minibatch_size is None
        assert ours.stopped_by in ("target", "budget")
        assert _close(ours, theirs), (name, ours.value, ours.stderr, theirs.value, theirs.stderr)
        checked += 1
    if not active:
        _eigenvalues_agree(new, old)
        # The same estimator, unchanged and deterministic in eval mode: the same figure.
        sharp, reference = new.epsilon_sharpness, old.epsilon_sharpness
        assert (sharp.value, sharp.stderr) == (reference.value, reference.stderr)
        for landscape in ("landscape_1d", "landscape_2d"):
            ours, theirs = getattr(new, landscape), getattr(old, landscape)
            assert ours.sample_size < theirs.sample_size == NUM_SAMPLES
            # At θ itself the loss does not depend on the random direction.
            loss, error = _at_theta(ours.losses), _at_theta(ours.loss_stderrs)
            reference, reference_error = _at_theta(theirs.losses), _at_theta(theirs.loss_stderrs)
            assert abs(loss - reference) <= Z * math.hypot(error, reference_error)
        checked += 4
    assert checked == (3 if active else 7)


def _at_theta(grid: Any) -> float:
    """The value at the centre of a 1-D or 2-D grid of odd size: θ itself."""
    centre = grid[len(grid) // 2]
    return float(centre if not isinstance(centre, tuple) else centre[len(centre) // 2])


def _eigenvalues_agree(new: FlatnessResult, old: FlatnessResult) -> None:
    ours, theirs = new.hessian_eigenvalues, old.hessian_eigenvalues
    assert ours is not None and theirs is not None
    assert ours.stopped_by == "target" and ours.num_iterations <= theirs.num_iterations
    for value, bound, reference, reference_bound in zip(
        ours.eigenvalues,
        ours.residual_norms,
        theirs.eigenvalues,
        theirs.residual_norms,
        strict=True,
    ):
        # Both are within their residual bounds of an eigenvalue: of the same one.
        assert abs(value - reference) <= bound + reference_bound + 1e-9 * abs(reference)
