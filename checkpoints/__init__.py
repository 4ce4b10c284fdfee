"""Checkpoints: dropout-family layers, architectures, the checkpoint format, datasets, the zoo.

The names below load on first use, so that torch-free modules of this package (the command
lines' error boundary, ``checkpoints.boundary``) import without torch, as ``reports`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checkpoints.format import (
        CheckpointError,
        LoadedCheckpoint,
        build_model,
        load_checkpoint,
        save_checkpoint,
    )
    from checkpoints.spec import CheckpointSpec, Description

__all__ = [
    "CheckpointError",
    "CheckpointSpec",
    "Description",
    "LoadedCheckpoint",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]

_HOMES = {
    "CheckpointError": "checkpoints.format",
    "LoadedCheckpoint": "checkpoints.format",
    "build_model": "checkpoints.format",
    "load_checkpoint": "checkpoints.format",
    "save_checkpoint": "checkpoints.format",
    "CheckpointSpec": "checkpoints.spec",
    "Description": "checkpoints.spec",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'checkpoints' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
