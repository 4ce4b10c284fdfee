"""Fixtures for the attack tests: a tiny seeded model and data it mostly classifies right."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model
from torch import nn


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run each test on one intra-op thread, then restore the caller's setting.

    The fixtures' models are tiny: a second thread only adds synchronisation to every
    operation, and on a busy machine it waits for a core (ten times slower per call).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def model() -> nn.Module:
    return tiny_model()


@pytest.fixture
def data(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_data(model)
