"""Shared fixtures: a model of the user's own class, its code in files of the user's own and
its weights saved as a state_dict."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor
from usermodel_helpers import _random_state

# The user's code: a sibling module, and a CNN (conv, conv, max-pool, dropout, fc) whose
# forward goes through super().forward, as in the report that asked for --model.
BLOCKS = """
from torch import nn


class ConvReLU(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
"""
MYNET = """
import torch
from torch import nn

from {blocks} import ConvReLU


class Head(nn.Module):
    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class MyNet(Head):
    def __init__(self, width=4, num_classes=10):
        super().__init__()
        self.conv1 = ConvReLU(1, width)
        self.conv2 = ConvReLU(width, width)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return super().forward(self.drop(self.pool(self.conv2(self.conv1(x)))))


def make(width=4, num_classes=10):
    return MyNet(width=width, num_classes=num_classes)


WIDTH = 4


def not_a_model():
    return {{"conv": 1}}


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("the constructor fails")
"""


def _write_user_code(folder: Path, stem: str = "mynet") -> Path:
    """Write the user's files under names of their own (every test imports a fresh copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = f"{stem}_blocks"
    (folder / f"{blocks}.py").write_text(textwrap.dedent(BLOCKS))
    path = folder / f"{stem}.py"
    path.write_text(textwrap.dedent(MYNET.format(blocks=blocks)))
    return path


@pytest.fixture
def user(tmp_path: Path) -> tuple[Path, Path, dict[str, Tensor]]:
    """(the user's mynet.py, its state_dict file, the weights)."""
    code = _write_user_code(tmp_path / "code", f"mynet_{tmp_path.name.replace('-', '_')}")
    state = _random_state()
    weights = tmp_path / "mynet.pt"
    torch.save(state, weights)
    return code, weights, state
