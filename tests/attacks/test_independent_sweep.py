"""The independent per-epsilon sweep stops each sample once it is broken at that radius, with
the per-sample outcomes of running every step, on every zoo model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attacks import SuiteResult, preset, run_suite

ZOO = Path(__file__).resolve().parents[2] / "checkpoints" / "zoo"
DIGITS = sorted(path.stem for path in ZOO.glob("digits-*.pt"))
MNIST = sorted(path.stem for path in ZOO.glob("mnist-*.pt"))


def _suites(dataset: str) -> tuple:
    """The quick preset's attacks with the standard sweep (nine radii, the unbounded one
    included, on 100 samples) as it runs now, and the same with every step of the swept
    attack (``early_stop=False``), as the independent sweep ran before."""
    suite = preset("quick", dataset)
    sweep = preset("standard", dataset).sweep
    assert sweep is not None and suite.sweep is not None
    sweep = replace(sweep, attack=suite.sweep.attack)
    early = suite.with_options(sweep=sweep)
    every = replace(sweep.attack, params={**sweep.attack.params, "early_stop": False})
    # The main list's run of the swept attack stays shared with the sweep, as in ``early``.
    attacks = tuple(every if spec == sweep.attack else spec for spec in suite.attacks)
    return early, suite.with_options(sweep=replace(sweep, attack=every), attacks=attacks)


def _compare(name: str, x: torch.Tensor, y: torch.Tensor, dataset: str) -> None:
    from checkpoints import load_checkpoint

    model = load_checkpoint(ZOO / f"{name}.pt").model
    early, every = _suites(dataset)
    fast: SuiteResult = run_suite(model, x, y, early, generator=5)
    slow: SuiteResult = run_suite(model, x, y, every, generator=5)
    for ours, theirs in zip(fast.norms, slow.norms, strict=True):
        stopped, full = ours.independent_sweep, theirs.independent_sweep
        assert stopped is not None and full is not None
        assert stopped.result is not None and full.result is not None
        assert stopped.result.params["early_stop"] and not full.result.params["early_stop"]
        assert torch.equal(stopped.sample_index, full.sample_index)
        assert torch.equal(stopped.attacked, full.attacked)
        assert torch.equal(stopped.success, full.success), (name, ours.norm)
        # What a sample's outcome is decided by is the same iterate.
        assert torch.equal(stopped.success_step, full.success_step), (name, ours.norm)
        assert stopped.result.num_backward < full.result.num_backward
        # The nested sweep and the main list: the same outcomes either way.
        assert torch.equal(ours.robust, theirs.robust)


@pytest.mark.parametrize("name", DIGITS)
def test_digits_models(name: str) -> None:
    from checkpoints.datasets import load_dataset

    data = load_dataset("digits")
    _compare(name, data.x[:300], data.y[:300], "digits")


@pytest.mark.data
@pytest.mark.parametrize("name", MNIST)
def test_mnist_models(name: str, data_dir: Path) -> None:
    from checkpoints.datasets import load_dataset

    data = load_dataset("mnist", path=data_dir / "mnist")
    _compare(name, data.x[:200], data.y[:200], "mnist")
