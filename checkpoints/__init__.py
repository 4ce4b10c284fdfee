"""Checkpoints: dropout-family layers, architectures, the checkpoint format, datasets, the zoo.

The names below load on first use, so that importing one light module of this package (the
description of a file, ``checkpoints.spec``) does not import torch and every module at once.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any


def _drop_current_folder() -> None:
    """Take the current folder off sys.path while `python -m` locates a command of this package.

    `python -m PACKAGE.COMMAND` puts the current folder first on sys.path, where a folder
    named like one of the toolkit's packages (a `checkpoints/` of model files, a user's own
    `reports` package) would be imported instead of it. The commands import nothing from the
    current folder (their console scripts never have it on sys.path), so it goes, as with
    `python -P`; sys.argv[0] is "-m" until the module is found. analysis/__init__.py,
    checkpoints/__init__.py and reports/__init__.py hold this same function: nothing of the
    toolkit can be imported safely before it has run.
    """
    if sys.argv[:1] != ["-m"] or not any(arg.startswith(f"{__name__}.") for arg in sys.orig_argv):
        return
    here = os.getcwd()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if sys.path[:1] == [here] and os.path.realpath(here) != os.path.realpath(root):
        del sys.path[0]


_drop_current_folder()

if TYPE_CHECKING:
    from checkpoints.format import (
        CheckpointError,
        LoadedCheckpoint,
        build_model,
        load_checkpoint,
        save_checkpoint,
    )
    from checkpoints.spec import CheckpointSpec, Description
    from checkpoints.train import ZOO_DIR

__all__ = [
    "CheckpointError",
    "CheckpointSpec",
    "Description",
    "LoadedCheckpoint",
    "ZOO_DIR",
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
    # The installed zoo's folder (checkpoints/zoo/ beside this file), wherever the toolkit is.
    "ZOO_DIR": "checkpoints.train",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'checkpoints' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
