"""Helpers shared by the tests of the model probes: the architectures users bring (max
pooling, batch norm in eval mode, residual connections, smooth activations), trained briefly
with plain cross-entropy, and the probes run on a model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.probes import probe_model
from analysis.redflags import Evidence
from core.document import Probes


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Autouse in each probe test module that imports it: small networks run fastest, and
    steadiest on a shared machine, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.second(F.relu(self.first(x))))


def max_pool_cnn(side: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (side // 4) ** 2, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def batch_norm_cnn(side: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * (side // 2) ** 2, 10),
    )


def residual_network(side: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        Residual(8),
        nn.MaxPool2d(2),
        Residual(8),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def smooth_network(side: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.GELU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(16 * (side // 2) ** 2, 32),
        nn.Softplus(),
        nn.Linear(32, 10),
    )


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "max-pool": max_pool_cnn,
    "batch-norm": batch_norm_cnn,
    "residual": residual_network,
    "gelu-softplus": smooth_network,
}


def _train(
    network: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int = 0, lr: float = 3e-3
) -> nn.Module:
    """Plain cross-entropy, Adam, seeded; returns the network in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(network(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return network.eval()


def _build(name: str, side: int, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ARCHITECTURES[name](side)


def _probe(model: nn.Module, x: Tensor, y: Tensor, **options) -> Probes:
    return probe_model(model, x, y, torch.Generator().manual_seed(0), **options)


def _evidence(probes: Probes) -> Evidence:
    return Evidence(None, probes)
