"""The document's encodings decoded afresh, beside the toolkit's own readers, which the tests
check against them: per-sample bit strings, display images and exact values."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from core.document import DocumentError


def bits(mask: Tensor) -> str | list[str]:
    """``[N]`` bool -> ``"0101..."``; ``[K, N]`` -> a list of K such strings."""
    if mask.dim() == 2:
        return [bits(row) for row in mask]  # type: ignore[misc]
    return "".join("1" if v else "0" for v in mask.tolist())


def unbits(text: str) -> list[bool]:
    """Inverse of :func:`bits` for one row."""
    return [c == "1" for c in text]


def decode_image(text: str, shape: Sequence[int]) -> list[int]:
    """Pixels (0..255) of an encoded image, flat, C×H×W order."""
    data = base64.b64decode(text)
    if len(data) != math.prod(shape):
        raise DocumentError(f"image holds {len(data)} pixels, expected shape {list(shape)}")
    return list(data)


_EXACT_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


def decode_exact(text: str, shape: Sequence[int], dtype: str) -> Tensor:
    """Inverse of ``analysis.exampleencoding.encode_exact``: the values as a tensor of
    ``shape`` and ``dtype``."""
    if dtype not in _EXACT_DTYPES:
        raise DocumentError(
            f"exact values have dtype {dtype!r}; expected one of float16, float32, float64"
        )
    data = base64.b64decode(text)
    torch_dtype = _EXACT_DTYPES[dtype]
    size = torch.finfo(torch_dtype).bits // 8
    if len(data) != math.prod(shape) * size:
        raise DocumentError(
            f"exact values hold {len(data)} bytes, expected {math.prod(shape)} {dtype} "
            f"values of shape {list(shape)}"
        )
    array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return torch.from_numpy(array.copy()).reshape(tuple(shape))
