"""One contract over every estimator: state untouched, seeded, JSON-ready, provenance stated."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from flatness_fixtures import build, generator, make_data
from torch import Tensor, nn

from core.docfields import encode
from flatness import (
    epsilon_sharpness,
    fisher_rao_norm,
    hessian_eigenvalues,
    hutchinson_trace,
    loss_landscape,
    spectral_density,
)

ESTIMATORS: dict[str, Callable[..., Any]] = {
    "fisher_rao_empirical": lambda *a, **k: fisher_rao_norm(*a, fisher="empirical", **k),
    "fisher_rao_model": lambda *a, **k: fisher_rao_norm(*a, fisher="model", **k),
    "hutchinson": lambda *a, **k: hutchinson_trace(*a, max_probes=6, min_probes=2, **k),
    "hutch++": lambda *a, **k: hutchinson_trace(
        *a, method="hutch++", deflation_rank=3, max_probes=4, min_probes=2, **k
    ),
    "eigenvalues": lambda *a, **k: hessian_eigenvalues(
        *a, num_eigenvalues=2, max_iterations=8, **k
    ),
    "density": lambda *a, **k: spectral_density(*a, max_runs=2, num_steps=5, **k),
    "landscape_1d": lambda *a, **k: loss_landscape(*a, num_points=3, **k),
    "landscape_2d": lambda *a, **k: loss_landscape(*a, num_directions=2, num_points=3, **k),
    "sharpness": lambda *a, **k: epsilon_sharpness(*a, num_steps=2, **k),
}


def model_with_dropout_and_batch_norm() -> nn.Module:
    model = nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3)
    )
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}


# Hutch++ needs a fixed matrix and refuses train mode (tested in test_hessian.py).
CASES = [
    (n, m) for n in sorted(ESTIMATORS) for m in ("eval", "train") if (n, m) != ("hutch++", "train")
]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_estimator_contract(name: str, mode: str) -> None:
    estimator = ESTIMATORS[name]
    model = build(model_with_dropout_and_batch_norm)
    # A mixed state (training model, one frozen submodule) that must survive exactly.
    model.train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    before = snapshot(model)
    global_rng = torch.get_rng_state()
    x, y = make_data()
    x_before = x.clone()
    num_mc_samples = 2 if mode == "train" else 1
    kwargs = {"mode": mode, "num_mc_samples": num_mc_samples, "batch_size": 16}

    result = estimator(model, x, y, generator=generator(7), **kwargs)
    repeat = estimator(model, x, y, generator=generator(7), **kwargs)

    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "parameters or buffers changed"
    assert [m.training for m in model.modules()] == flags, "mode changed"
    assert all(p.grad is None for p in model.parameters()), "gradients left on parameters"
    assert torch.equal(torch.get_rng_state(), global_rng), "global RNG state changed"
    assert torch.equal(x, x_before)
    assert result == repeat, "same seed, different result"
    provenance = result.provenance
    assert (provenance.mode, provenance.num_mc_samples) == (mode, num_mc_samples)
    assert (provenance.num_samples, provenance.batch_size, provenance.seed) == (50, 16, 7)
    assert provenance.definition
    json.dumps(encode(result), allow_nan=False)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_result_depends_on_the_data_not_on_the_batch_size(name: str) -> None:
    model = build(model_with_dropout_and_batch_norm)
    x, y = make_data()
    whole = ESTIMATORS[name](model, x, y, generator=generator(3), mode="eval", batch_size=50)
    split = ESTIMATORS[name](model, x, y, generator=generator(3), mode="eval", batch_size=7)
    first, second = encode(whole), encode(split)
    for result in (first, second):
        result.pop("provenance")
    assert _close(first, second)


def _close(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-7, abs=1e-12)
    return a == b
