"""Eval mode, or train mode with normalisation layers frozen, and exact restoration after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _subclass_names(cls: type) -> set[str]:
    names: set[str] = set()
    sub: type
    for sub in cls.__subclasses__():
        names |= {sub.__name__, *_subclass_names(sub)}
    return names


def _is_norm_layer(module: nn.Module) -> bool:
    """Batch norm or instance norm; in a TorchScript archive, by its original class name."""
    if isinstance(module, torch.jit.RecursiveScriptModule):
        base = nn.modules.batchnorm._NormBase
        return str(getattr(module, "original_name", "")) in _subclass_names(base)
    return isinstance(module, nn.modules.batchnorm._NormBase)


def apply_mode(model: nn.Module, *, train: bool) -> None:
    """Eval mode, or train mode for every module except normalisation layers with running
    statistics (batch norm, instance norm), which stay in eval mode so that no buffer changes
    and samples do not see each other through the batch statistics."""
    model.train(train)
    if train:
        for module in model.modules():
            if _is_norm_layer(module):
                module.eval()


@contextlib.contextmanager
def model_mode(model: nn.Module, *, train: bool) -> Iterator[None]:
    """``apply_mode(model, train=train)`` for the duration, then every submodule's own flag.

    Restoring flags one by one (rather than calling ``train(previous)``) keeps mixed states,
    such as a frozen batch norm inside a training model, exactly as they were.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        apply_mode(model, train=train)
        yield
    finally:
        for module, flag in flags:
            module.training = flag
