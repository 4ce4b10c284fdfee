"""Agreement with PyHessian on a trained zoo model (trace within 3 SE, top eigenvalue 1e-3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flatness import hessian_eigenvalues, hutchinson_trace

ZOO_MODEL = Path(__file__).resolve().parents[2] / "checkpoints" / "zoo" / "digits-mlp-dropout.pt"
BATCH_SIZE = 150

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def zoo() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    if not ZOO_MODEL.exists():
        pytest.skip(f"zoo checkpoint {ZOO_MODEL.name} is absent; build the zoo to run this test")
    from checkpoints import load_checkpoint
    from checkpoints.datasets import load_dataset

    data = load_dataset("digits")
    return load_checkpoint(ZOO_MODEL).model, data.x, data.y


def pyhessian_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    pyhessian = pytest.importorskip("pyhessian")
    batches = [(x[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)]
    return pyhessian.hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=False)


@pytest.mark.parametrize(
    ("minibatch_size", "max_probes", "precision"),
    [(None, 32, 0.1), (64, 256, 0.1)],
    ids=["whole-data", "mini-batches"],
)
def test_trace_agrees_with_pyhessian(
    zoo: tuple[nn.Module, torch.Tensor, torch.Tensor],
    minibatch_size: int | None,
    max_probes: int,
    precision: float,
) -> None:
    # PyHessian sweeps all 1797 samples per probe. Ours on the whole data set does the same;
    # doubly stochastic, 256 probes in 32 draws of 64 samples cost less than a third of that.
    model, x, y = zoo
    ours = hutchinson_trace(
        model,
        x,
        y,
        generator=torch.Generator().manual_seed(0),
        batch_size=BATCH_SIZE,
        minibatch_size=minibatch_size,
        max_probes=max_probes,
        rel_tol=1e-9,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # tol=-inf disables PyHessian's stopping rule, which fires early when the running
        # mean is negative; its per-probe values then give a standard error it does not report.
        probes = np.array(pyhessian_for(model, x, y).trace(maxIter=32, tol=float("-inf")))
    theirs, theirs_stderr = probes.mean(), probes.std(ddof=1) / np.sqrt(len(probes))
    assert abs(ours.value - theirs) <= 3 * np.hypot(ours.stderr, theirs_stderr)
    assert ours.stderr < precision * abs(ours.value)


def test_top_eigenvalue_agrees_with_pyhessian(
    zoo: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = zoo
    ours = hessian_eigenvalues(
        model, x, y, generator=torch.Generator().manual_seed(0), batch_size=BATCH_SIZE
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        (theirs,), _ = pyhessian_for(model, x, y).eigenvalues(maxIter=300, tol=1e-7)
    assert ours.converged
    assert ours.eigenvalues[0] == pytest.approx(theirs, rel=1e-3)
