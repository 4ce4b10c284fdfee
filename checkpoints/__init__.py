"""Checkpoints: dropout-family layers, architectures, the checkpoint format, datasets, the zoo."""

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
