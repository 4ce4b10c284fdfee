"""The result document ``audit.json`` from tensors: bit strings, images and exact values, and
comparing two documents. Writing and reading the JSON live in ``core.docjson`` (re-exported by
``core.document``).

The document holds everything a report or a gate needs, so neither has to touch torch:
provenance, the checkpoint's description, clean accuracy, per norm the reliable (worst case
over attacks) robust accuracy and every attack's outcomes with compact per-sample bit strings,
robustness curves, mean loss per iteration, a few adversarial examples beside their originals,
flatness estimates with their grids and spectral density, activation statistics, the probes,
the findings and the verdict.

Per-sample outcomes are strings of ``0``/``1``, one character per evaluated sample in the order
of ``evaluation.indices``. Images are base64 of uint8 pixels (value × 255, rounded), C×H×W,
for display; each stored example also carries its exact values (base64 of the raw
little-endian floats in the dtype named beside them), so that the model can be evaluated on
exactly that example again.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.document import DocumentError

__all__ = [
    "bits",
    "decode_exact",
    "decode_image",
    "encode_exact",
    "encode_image",
    "unbits",
    "differences",
    "without_timings",
]


def bits(mask: Tensor) -> str | list[str]:
    """``[N]`` bool -> ``"0101..."``; ``[K, N]`` -> a list of K such strings."""
    if mask.dim() == 2:
        return [bits(row) for row in mask]  # type: ignore[misc]
    return "".join("1" if v else "0" for v in mask.tolist())


def unbits(text: str) -> list[bool]:
    """Inverse of :func:`bits` for one row."""
    return [c == "1" for c in text]


def encode_image(image: Tensor) -> str:
    """A [C, H, W] image in [0, 1] as base64 of uint8 pixels."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return base64.b64encode(pixels.numpy().tobytes()).decode("ascii")


def decode_image(text: str, shape: Sequence[int]) -> list[int]:
    """Pixels (0..255) of an encoded image, flat, C×H×W order."""
    data = base64.b64decode(text)
    if len(data) != math.prod(shape):
        raise DocumentError(f"image holds {len(data)} pixels, expected shape {list(shape)}")
    return list(data)


_EXACT_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


def encode_exact(values: Tensor) -> tuple[str, str]:
    """A floating-point tensor as ``(dtype name, base64 of its little-endian bytes)``."""
    names = {dtype: name for name, dtype in _EXACT_DTYPES.items()}
    if values.dtype not in names:
        raise TypeError(
            f"exact encoding takes float16, float32 or float64 values, got {values.dtype}"
        )
    array = values.detach().cpu().contiguous().numpy()
    return names[values.dtype], base64.b64encode(
        array.astype(array.dtype.newbyteorder("<")).tobytes()
    ).decode("ascii")


def decode_exact(text: str, shape: Sequence[int], dtype: str) -> Tensor:
    """Inverse of :func:`encode_exact`: the values as a tensor of ``shape`` and ``dtype``."""
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


def differences(
    a: Any, b: Any, rel_tol: float = 1e-5, path: str = "", abs_tol: float = 1e-6
) -> list[str]:
    """Where two decoded documents (or parts) differ: everything but floats exactly, floats
    beyond ``rel_tol`` relative and ``abs_tol`` absolute (NaN equals NaN), as ``"/path: a
    against b"`` lines. Exact values (``*_exact`` beside their ``shape`` and ``dtype``, see
    `encode_exact`) are floats too, compared element by element.

    The absolute tolerance is float32 rounding of quantities of order one: a figure that is a
    difference of two such (a margin near zero, the rise of a loss trace) keeps their
    absolute rounding error, which no relative tolerance bounds."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [
            d
            for k in a
            for d in (
                _exact_differences(a, b, k, rel_tol, abs_tol, f"{path}/{k}")
                if k.endswith("_exact") and "shape" in a and a.get("dtype") in _EXACT_DTYPES
                else differences(a[k], b[k], rel_tol, f"{path}/{k}", abs_tol)
            )
        ]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} against {len(b)} items"]
        return [
            d
            for i, (p, q) in enumerate(zip(a, b, strict=True))
            for d in differences(p, q, rel_tol, f"{path}[{i}]", abs_tol)
        ]
    if isinstance(a, float) and isinstance(b, float):
        if math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol) or (
            math.isnan(a) and math.isnan(b)
        ):
            return []
        return [f"{path}: {a!r} against {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} against {b!r}"]


def _exact_differences(
    a: dict[str, Any], b: dict[str, Any], key: str, rel_tol: float, abs_tol: float, path: str
) -> list[str]:
    if a[key] == b[key] and a["dtype"] == b.get("dtype"):
        return []
    found = [f"{path}: {a[key]!r} ({a['dtype']}) against {b[key]!r} ({b.get('dtype')})"]
    try:
        p, q = (decode_exact(v[key], v["shape"], v["dtype"]).numpy() for v in (a, b))
    except (DocumentError, KeyError, TypeError, ValueError):
        return found
    same = p.dtype == q.dtype and p.shape == q.shape
    return [] if same and np.allclose(p, q, rtol=rel_tol, atol=abs_tol, equal_nan=True) else found


def without_timings(document: dict[str, Any]) -> dict[str, Any]:
    """The document less what differs between two runs of one command: clock times and the
    memory measurements behind the batch sizes."""
    document = json.loads(json.dumps(document))
    for key in ("started", "finished"):
        document["provenance"].pop(key)
    # What memory the machine had and one step took, like the times, varies between runs.
    for choice in document["provenance"]["batch_sizes"].values():
        if isinstance(choice, dict):
            for key in ("per_sample_bytes", "fixed_bytes", "available_bytes"):
                choice.pop(key)
    document["robustness"].pop("wall_time")
    for norm in document["robustness"]["norms"]:
        for attack in norm["attacks"]:
            attack.pop("wall_time")
    return document
