"""Tiny seeded models and data for the attack tests, and access to the example zoo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

ZOO = Path(__file__).resolve().parents[2] / "checkpoints" / "zoo"


class TinyConvNet(nn.Module):
    """A small convolutional classifier on 1×8×8 images with a dropout layer and batch norm."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(6 * 4 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_model(dtype: torch.dtype = torch.float32, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    model = TinyConvNet(num_classes).to(dtype)
    with torch.no_grad():
        # Non-trivial running statistics, so evaluation differs visibly from training mode.
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_data(
    model: nn.Module,
    n: int = 48,
    dtype: torch.dtype = torch.float32,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [low, high]; labels are the model's predictions except for a few wrong ones."""
    generator = torch.Generator().manual_seed(1)
    x = (low + (high - low) * torch.rand(n, 1, 8, 8, generator=generator)).to(dtype)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[:4] = (y[:4] + 1) % 10  # clean misclassifications
    return x, y


def zoo_checkpoint(name: str):  # noqa: ANN201 - returns checkpoints.LoadedCheckpoint
    """Load a zoo checkpoint, or skip the test with the reason when it is absent."""
    path = ZOO / name
    if not path.exists():
        pytest.skip(f"zoo checkpoint {path} is absent; build the zoo first")
    from checkpoints import load_checkpoint

    return load_checkpoint(path)


def mnist_test():  # noqa: ANN201 - returns checkpoints.datasets.Dataset
    """MNIST test set from ROBAUDIT_DATA, or skip with the reason."""
    if not os.environ.get("ROBAUDIT_DATA"):
        pytest.skip("ROBAUDIT_DATA is not set; point it at the folder holding mnist/*.gz")
    from checkpoints.datasets import load_dataset

    return load_dataset("mnist")
