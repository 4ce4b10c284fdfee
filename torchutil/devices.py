"""Torch's default device, for code we do not control, and results moved between devices."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

CPU = torch.device("cpu")


@contextlib.contextmanager
def torch_default_device() -> Iterator[None]:
    """Torch's own default device (the CPU) for the duration, the caller's afterwards.

    For a library call only: our code names the device of every tensor it creates, but some
    libraries create a tensor on the default device and then move it where it belongs, which
    works only while the default device is torch's own.
    """
    previous = torch.get_default_device()
    torch.set_default_device(None)
    try:
        yield
    finally:
        torch.set_default_device(None if previous == CPU else previous)


T = TypeVar("T")


def to_device(value: T, device: torch.device | str) -> T:
    """``value`` with every tensor in it detached and on ``device``: through dicts, lists,
    tuples and (frozen) dataclasses such as the attacks' and estimators' results, rebuilt
    with ``dataclasses.replace``; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [to_device(v, device) for v in value]  # type: ignore[return-value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(to_device(v, device) for v in value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes: dict[str, Any] = {
            f.name: to_device(getattr(value, f.name), device)
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)  # type: ignore[return-value]
    return value
