"""Helpers shared by the oracle tests: points away from the box, and a norm by name."""

from __future__ import annotations

import torch


def _interior(n: int = 40, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Points in [0.3, 0.7], so that the small balls below never reach the box."""
    generator = torch.Generator().manual_seed(5)
    return (0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=generator)).to(dtype)


def _norm(name: str):  # noqa: ANN202
    from attacks import Norm

    return Norm.parse(name)
