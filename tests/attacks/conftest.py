"""Fixtures for the attack tests: a tiny seeded model and data it mostly classifies right."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model
from torch import nn


@pytest.fixture
def model() -> nn.Module:
    return tiny_model()


@pytest.fixture
def data(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_data(model)
