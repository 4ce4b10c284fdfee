"""What every reader of a checkpoint file shares: the one error a bad file ends in, opening
the file within its limit, its hashes, and quoting what was found in it in one line.

Every bad file ends in one :class:`CheckpointError` whose one-line message names the file,
what was expected, what arrived and the fix; the helpers here render the pieces of those
messages (a value found in the file, the first or last line of an error from torch).

Beyond :class:`CheckpointError`, this module serves the checkpoint readers beside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from core.boundary import open_input
from core.errors import error_line


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as described; the message says how to fix it.

    The message is always one line (values quoted from a file may hold line breaks)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


FILE_KINDS = {
    "state_dict": "a plain state_dict",
    "lightning": "a PyTorch Lightning checkpoint",
    "torchscript": "a TorchScript archive",
    "pickled-module": "a pickled module",
}
"""What a file of each container format is, in words, for messages."""


def open_checkpoint(path: str | Path) -> IO[bytes]:
    """The checkpoint, open for reading once known to be a regular file within the limit of
    a checkpoint (``core.boundary.INPUT_LIMITS``)."""
    return open_input(path, "checkpoint", CheckpointError)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open_checkpoint(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 over the sorted names, dtypes, shapes and raw bytes of a state_dict."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def show_value(value: Any) -> str:
    """A short one-line rendering of a value found in a file, with its type."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value).replace("\n", " ")
    if len(text) > 60 and isinstance(value, list | tuple | Mapping):
        kinds = sorted(
            {type(v).__name__ for v in (value.values() if isinstance(value, Mapping) else value)}
        )
        return f"a {type(value).__name__} of {len(value)} items ({', '.join(kinds[:4])})"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


# Boilerplate that torch appends to its reader errors; the file name and our fix say more.
_TORCH_BOILERPLATE = (
    " In PyTorch 2.6",
    " This is an internal miniz error",
    " Re-running `torch.load`",
)


def error_summary(err: BaseException) -> str:
    """``Type: line``: the line of an exception's message that says what failed
    (``core.errors.error_line``: its first, or TorchScript's original error), torch's advice
    cut off, at most 160 characters; its type alone when it has no message."""
    if not str(err).strip():
        return type(err).__name__
    text = error_line(err)
    for marker in _TORCH_BOILERPLATE:
        text = text.split(marker, 1)[0]
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}: {text}"


def tensor_mapping(obj: Any) -> dict[str, Tensor] | None:
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        return dict(obj)
    return None


def check_tensors(weights: Mapping[str, Tensor], path: Path, where: str) -> None:
    """Every weight a dense real tensor (sparse, quantised or complex ones cannot be loaded)."""
    for name, tensor in weights.items():
        if (
            tensor.layout != torch.strided
            or tensor.is_quantized
            or tensor.is_complex()
            or tensor.device.type == "meta"
        ):
            raise CheckpointError(
                f"{path}: {where}{name!r} must be a dense real tensor, got "
                f"layout {tensor.layout}, dtype {tensor.dtype}, device {tensor.device.type}; "
                "re-save the weights from the trained model (model.state_dict())"
            )
