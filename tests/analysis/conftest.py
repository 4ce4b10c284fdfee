"""Shared fixtures: a small, fast audit of a zoo model, the quick audit whose document the bad
input tests edit, and the digits networks that the probe tests train."""

from __future__ import annotations

import json

import pytest
import torch
from audit_helpers import audit_document, quick_config
from bad_input_builders import FAST, ZOO
from probe_helpers import ARCHITECTURES, _build, _train
from torch import Tensor, nn

from checkpoints.datasets import load_dataset
from commands import audit


@pytest.fixture(scope="session")
def quick_document() -> dict:
    """A quick audit (with flatness) of a digits zoo model."""
    return audit_document("digits-mlp-dropout", quick_config(flatness=True))


@pytest.fixture(scope="module")
def result_document(tmp_path_factory) -> dict:
    """A real quick audit of the zoo model on the first samples, the source of the baselines."""
    out = tmp_path_factory.mktemp("result")
    assert audit.main([str(ZOO), *FAST, "--out", str(out)]) == 0
    return json.loads((out / ZOO.stem / "audit.json").read_text())


@pytest.fixture(scope="session")
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train split, and 1000 probe samples: the 450 test images and the last 550 of train."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    x_probe = torch.cat([test.x, train.x[-550:]])
    y_probe = torch.cat([test.y, train.y[-550:]])
    return train.x[:-550], train.y[:-550], x_probe, y_probe


# ``one_thread`` is the requesting probe test module's own (module-scoped, autouse).
@pytest.fixture(scope="module")
def honest(one_thread, digits) -> dict[str, nn.Module]:
    """Each architecture trained on digits with plain cross-entropy (seconds each)."""
    x, y, x_probe, y_probe = digits
    networks = {name: _train(_build(name, 8), x, y, epochs=30) for name in ARCHITECTURES}
    for name, network in networks.items():
        with torch.no_grad():
            accuracy = float((network(x_probe).argmax(1) == y_probe).double().mean())
        assert accuracy > 0.85, (name, accuracy)
    return networks
