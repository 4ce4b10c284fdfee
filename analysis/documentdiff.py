"""Whether two audits agree: where two result documents differ beyond floating-point
rounding, less what differs between any two runs of one command (clock times, the memory
measured behind the batch sizes). The tests and the benchmarks that rerun an audit another
way (on another device, spread over processes, resumed) compare its document so.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from core.attackrecords import EXACT_DTYPES, decode_floats
from core.document import DocumentError

__all__ = ["differences", "without_timings"]


def differences(
    a: Any, b: Any, rel_tol: float = 1e-5, path: str = "", abs_tol: float = 1e-6
) -> list[str]:
    """Where two decoded documents (or parts) differ: everything but floats exactly, floats
    beyond ``rel_tol`` relative and ``abs_tol`` absolute (NaN equals NaN), as ``"/path: a
    against b"`` lines. Exact values (``*_exact`` beside their ``shape`` and ``dtype``, see
    ``analysis.exampleencoding.encode_exact``) are floats too, compared element by element.

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
                if k.endswith("_exact") and "shape" in a and a.get("dtype") in EXACT_DTYPES
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


def _exact_values(example: dict[str, Any], key: str) -> np.ndarray:
    shape = tuple(example["shape"])
    values = decode_floats(example[key], example["dtype"], shape)
    return np.array(values, dtype=example["dtype"]).reshape(shape)


def _exact_differences(
    a: dict[str, Any], b: dict[str, Any], key: str, rel_tol: float, abs_tol: float, path: str
) -> list[str]:
    if a[key] == b[key] and a["dtype"] == b.get("dtype"):
        return []
    found = [f"{path}: {a[key]!r} ({a['dtype']}) against {b[key]!r} ({b.get('dtype')})"]
    try:
        p, q = (_exact_values(v, key) for v in (a, b))
    except (DocumentError, KeyError, TypeError, ValueError, struct.error):
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
