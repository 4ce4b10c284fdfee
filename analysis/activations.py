"""Statistics of what flows into each dropout-family layer, on clean data in eval mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from checkpoints.layers import QSD, Dropout, NormOut
from torchutil import model_mode

__all__ = ["LayerActivations", "activation_statistics", "dropout_family_layers"]

_KINDS: dict[type[nn.Module], str] = {
    NormOut: "normout",
    QSD: "qsd",
    Dropout: "dropout",
    nn.Dropout: "dropout",
}


@dataclass(frozen=True)
class LayerActivations:
    """Summary of one layer's input over the evaluation set.

    Attributes:
        name: the module's qualified name in the model.
        kind: ``normout``, ``qsd`` or ``dropout``.
        description: the module's ``extra_repr``.
        mean, std, max: over every element of every sample.
        zero_fraction: fraction of elements exactly zero (sparsity).
        num_elements: elements summarised.
    """

    name: str
    kind: str
    description: str
    mean: float
    std: float
    max: float
    zero_fraction: float
    num_elements: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Accumulator:
    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.peak = float("-inf")
        self.zeros = 0

    def update(self, x: Tensor) -> None:
        values = x.detach().double()
        self.count += values.numel()
        self.total += float(values.sum())
        self.total_sq += float((values * values).sum())
        self.peak = max(self.peak, float(values.max())) if values.numel() else self.peak
        self.zeros += int((values == 0).sum())


def _kind(module: nn.Module) -> str | None:
    for cls, kind in _KINDS.items():
        if isinstance(module, cls):
            return kind
    # Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout.
    return "dropout" if isinstance(module, nn.modules.dropout._DropoutNd) else None


def dropout_family_layers(model: nn.Module) -> list[tuple[str, str]]:
    """``(qualified name, kind)`` of each dropout-family layer of ``model``, in module order:
    ours (NormOut, QSD, Dropout) and torch's dropout layers, found by type."""
    found = [(name, _kind(module)) for name, module in model.named_modules()]
    return [(name, kind) for name, kind in found if kind is not None]


def activation_statistics(
    model: nn.Module, x: Tensor, batch_size: int = 500
) -> list[LayerActivations]:
    """Mean, max, std and fraction of zeros of each dropout-family layer's input.

    Args:
        model: any module; its dropout-family layers are found by type
            (`dropout_family_layers`).
        x: clean inputs [N, ...] in the model's bounds.
        batch_size: evaluation batch size.

    Returns:
        One entry per layer, in module order; empty when the model has none. The model's mode
        is restored.
    """
    modules = dict(model.named_modules())
    layers = [(name, modules[name], kind) for name, kind in dropout_family_layers(model)]
    if not layers:
        return []
    accumulators = {name: _Accumulator() for name, _, _ in layers}
    handles = [
        module.register_forward_pre_hook(
            lambda _m, inputs, name=name: accumulators[name].update(inputs[0])
        )
        for name, module, _ in layers
    ]
    try:
        with model_mode(model, train=False), torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                model(x[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for name, module, kind in layers:
        acc = accumulators[name]
        mean = acc.total / max(acc.count, 1)
        variance = max(acc.total_sq / max(acc.count, 1) - mean * mean, 0.0)
        out.append(
            LayerActivations(
                name=name,
                kind=kind,
                description=module.extra_repr(),
                mean=mean,
                std=variance**0.5,
                max=acc.peak,
                zero_fraction=acc.zeros / max(acc.count, 1),
                num_elements=acc.count,
            )
        )
    return out
