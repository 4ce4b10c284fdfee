"""An adversarial example's tensors as the result document stores them.

Each stored example (``core.document.Example``) holds its original and its adversarial image
twice: as base64 of uint8 pixels (value × 255, rounded), C×H×W, for display
(:func:`encode_image`), and as its exact values, base64 of the raw little-endian floats in the
dtype named beside them (:func:`encode_exact`), so that the model can be evaluated on exactly
that example again. ``core.document.Example`` decodes both (``original_pixels``,
``original_values`` and their adversarial counterparts).
"""

from __future__ import annotations

import base64

import torch
from torch import Tensor

from core.attackrecords import EXACT_DTYPES

__all__ = ["encode_exact", "encode_image"]


def encode_image(image: Tensor) -> str:
    """A [C, H, W] image in [0, 1] as base64 of uint8 pixels."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return base64.b64encode(pixels.numpy().tobytes()).decode("ascii")


_EXACT_DTYPES = {getattr(torch, name): name for name in EXACT_DTYPES}


def encode_exact(values: Tensor) -> tuple[str, str]:
    """A floating-point tensor as ``(dtype name, base64 of its little-endian bytes)``."""
    if values.dtype not in _EXACT_DTYPES:
        raise TypeError(
            f"exact encoding takes float16, float32 or float64 values, got {values.dtype}"
        )
    array = values.detach().cpu().contiguous().numpy()
    return _EXACT_DTYPES[values.dtype], base64.b64encode(
        array.astype(array.dtype.newbyteorder("<")).tobytes()
    ).decode("ascii")
