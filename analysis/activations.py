"""Statistics of what flows into each dropout-family layer, on clean data in eval mode: one
``core.document.ActivationStats`` record per layer, as the result document holds it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from checkpoints.layers import family_layers
from core.document import ActivationStats
from torchutil import any_batch, model_mode, shared_map

Kind = Literal["normout", "qsd", "dropout"]
"""The kinds of dropout-family layer a record names."""

__all__ = [
    "activation_statistics",
    "activations_note",
    "dropout_family_layers",
]


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

    def add(self, other: _Accumulator) -> None:
        """Adds the sums of ``other`` (a later batch's): the same figures as if its values had
        come through ``update`` here."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.peak = max(self.peak, other.peak)
        self.zeros += other.zeros


def dropout_family_layers(model: nn.Module) -> list[tuple[str, str]]:
    """``(qualified name, kind)`` of each dropout-family layer of ``model``, in module order:
    ours (NormOut, QSD, Dropout) and torch's dropout layers, found by type, in a TorchScript
    archive by their original class names (`checkpoints.layers.family_layers`)."""
    return family_layers(model)


_KINDS: tuple[Kind, ...] = ("normout", "qsd", "dropout")


def _kind(kind: str) -> Kind:
    """``kind`` as the record's kind; an unknown one is an error, not a record."""
    for known in _KINDS:
        if kind == known:
            return known
    raise ValueError(f"unknown dropout-family layer kind {kind!r}; known: {', '.join(_KINDS)}")


def _scripted(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.RecursiveScriptModule)


def activations_note(model: nn.Module) -> str | None:
    """Why some dropout-family layers have no statistics, or None when all have them.

    A TorchScript module takes no forward hooks, so the inputs of the layers of a TorchScript
    archive cannot be observed.
    """
    modules = dict(model.named_modules())
    unseen = [name for name, _ in dropout_family_layers(model) if _scripted(modules[name])]
    if not unseen:
        return None
    return (
        f"not measured for {', '.join(unseen)}: these layers are inside a TorchScript archive, "
        "whose modules take no forward hooks, so their inputs cannot be observed; audit a "
        "state_dict with --model to measure them"
    )


def _merged(parts: list[dict[str, _Accumulator]]) -> dict[str, _Accumulator]:
    """The sums of several passes, layer by layer."""
    out: dict[str, _Accumulator] = {}
    for part in parts:
        for name, acc in part.items():
            out.setdefault(name, _Accumulator()).add(acc)
    return out


def activation_statistics(
    model: nn.Module, x: Tensor, batch_size: int = 500
) -> list[ActivationStats]:
    """Mean, max, std and fraction of zeros of each dropout-family layer's input.

    Args:
        model: any module; its dropout-family layers are found by type
            (`dropout_family_layers`).
        x: clean inputs [N, ...] in the model's bounds.
        batch_size: evaluation batch size.

    Returns:
        One record per layer, in module order (its name, kind, the module's ``extra_repr``,
        mean, std and max over every element of every sample, the fraction of elements exactly
        zero, the elements summarised); empty when the model has none. Layers inside a
        TorchScript archive cannot be observed and are left out (`activations_note` says
        so). The model's mode is restored.
    """
    modules = dict(model.named_modules())
    layers = [
        (name, modules[name], kind)
        for name, kind in dropout_family_layers(model)
        if not _scripted(modules[name])
    ]
    if not layers:
        return []
    current: dict[str, _Accumulator] = {}
    handles = [
        module.register_forward_pre_hook(
            lambda _m, inputs, name=name: current[name].update(inputs[0])
        )
        for name, module, _ in layers
    ]

    def sums_of(part: Tensor) -> dict[str, _Accumulator]:
        current.clear()
        current.update({name: _Accumulator() for name, _, _ in layers})
        model(part)
        return dict(current)

    def batch_sums(number: int) -> dict[str, _Accumulator]:
        return any_batch(sums_of, x[number * batch_size : (number + 1) * batch_size], _merged)

    # Under torch.distributed each batch is evaluated by one process; the sums are added in
    # batch order everywhere, so the figures are those of one process.
    try:
        with model_mode(model, train=False), torch.no_grad():
            sums = shared_map(-(-x.shape[0] // batch_size), batch_sums)
    finally:
        for handle in handles:
            handle.remove()
    accumulators = _merged([{name: _Accumulator() for name, _, _ in layers}, *sums])
    out = []
    for name, module, kind in layers:
        acc = accumulators[name]
        mean = acc.total / max(acc.count, 1)
        variance = max(acc.total_sq / max(acc.count, 1) - mean * mean, 0.0)
        out.append(
            ActivationStats(
                name=name,
                kind=_kind(kind),
                description=module.extra_repr(),
                mean=mean,
                std=variance**0.5,
                max=acc.peak,
                zero_fraction=acc.zeros / max(acc.count, 1),
                num_elements=acc.count,
            )
        )
    return out
