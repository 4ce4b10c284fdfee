"""Torch-only plumbing that attacks and flatness share: model modes, seeds and generators on a
device, torch's default device around library calls, and full float32 precision.

It imports nothing but torch, so both packages may use it without importing each other.
"""

from torchutil.devices import torch_default_device
from torchutil.modes import apply_mode, model_mode
from torchutil.precision import full_precision
from torchutil.seeds import (
    SEED_BOUND,
    child_generator,
    draw_seed,
    draw_seeds,
    forked_global_rng,
    make_generator,
    seeded_global_rng,
)

__all__ = [
    "SEED_BOUND",
    "apply_mode",
    "child_generator",
    "draw_seed",
    "draw_seeds",
    "forked_global_rng",
    "full_precision",
    "make_generator",
    "model_mode",
    "seeded_global_rng",
    "torch_default_device",
]
