"""Torch's default device, for code we do not control."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
