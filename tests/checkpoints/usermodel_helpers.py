"""Helpers shared by the tests of a model of the user's own class: its weights, and a
description that names it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from checkpoints import Description
from checkpoints.usermodel import parse_model_reference


def _random_state(width: int = 4, classes: int = 10, seed: int = 0) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    return {
        "conv1.0.weight": draw(width, 1, 3, 3),
        "conv1.0.bias": draw(width),
        "conv2.0.weight": draw(width, width, 3, 3),
        "conv2.0.bias": draw(width),
        "fc.weight": draw(classes, width * 16),
        "fc.bias": draw(classes),
    }


def _model(path: Path, text: str, **fields: object) -> Description:
    return Description(model=parse_model_reference(f"{path}:{text}"), **fields)  # type: ignore[arg-type]
