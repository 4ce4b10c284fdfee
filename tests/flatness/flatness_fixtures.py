"""Tiny seeded float64 models and data shared by the flatness tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

NUM_CLASSES = 3


def mlp_with_biases() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 3))


def bias_free_relu_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 9, bias=False),
        nn.ReLU(),
        nn.Linear(9, 7, bias=False),
        nn.ReLU(),
        nn.Linear(7, 3, bias=False),
    )


class _ToImage(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], 1, 2, 3)


def cnn_with_batch_norm() -> nn.Module:
    model = nn.Sequential(
        _ToImage(),
        nn.Conv2d(1, 4, 2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 4, 3),
    )
    # Running statistics away from (0, 1), so a test notices if they are not the ones used.
    batch_norm = model[2]
    batch_norm.running_mean.uniform_(-0.5, 0.5)
    batch_norm.running_var.uniform_(0.5, 2.0)
    return model


class ResidualBlock(nn.Module):
    """x + W₂ relu(W₁ x), then a linear head: a skip connection that is not homogeneous."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(x + self.inner(x)))


def mlp_with_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Dropout(0.3), nn.Linear(10, 3))


ARCHITECTURES = {
    "mlp_with_biases": mlp_with_biases,
    "cnn_with_batch_norm": cnn_with_batch_norm,
    "residual_block": ResidualBlock,
}


def build(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return factory().double().eval()


def make_data() -> tuple[Tensor, Tensor]:
    """50 inputs of 6 features (float64) with labels in {0, 1, 2}: four uneven batches of 16."""
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(50, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (50,), generator=generator)
    return x, y


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
