"""The worst case over attacks: which samples are still robust after each attack.

One function, shared by the suite (which decides what the next attack runs on), the CI gate
(which rebuilds the masks from a result document's bit strings) and the tests. It reads plain
boolean tensors, so it needs nothing but the per-sample outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def robust_after(robust: Tensor, successes: Sequence[Tensor]) -> list[Tensor]:
    """The robust masks after each attack, worst case over the attacks and the nested balls.

    A sample is robust at the ``k``-th epsilon after an attack when it was robust before, the
    attack did not break it there, and it is robust at every smaller epsilon (the balls of
    ascending epsilons are nested, so an example found in a smaller ball lies in the larger).

    Args:
        robust: ``[N]`` bool (clean-correct samples, the same at every epsilon) or ``[K, N]``
            bool (robust before the first attack), epsilons ascending.
        successes: each attack's ``[K, N]`` bool success, in the order the attacks ran.

    Returns:
        ``len(successes)`` masks ``[K, N]`` bool: robust after the first attack, after the
        second, and so on; the last is the reliable (worst-case) mask. New tensors.

    Raises:
        ValueError: when the shapes disagree, or no epsilon count can be read.

    Example:
        >>> clean = torch.tensor([True, True, False])
        >>> robust_after(clean, [torch.tensor([[True, False, False], [False, False, False]])])
        [tensor([[False,  True, False], [False,  True, False]])]
    """
    if robust.dim() == 1:
        if not successes:
            raise ValueError("a [N] robust mask needs at least one [K, N] success to give K")
        robust = robust.unsqueeze(0).expand(successes[0].shape[0], -1)
    if robust.dim() != 2:
        raise ValueError(f"robust must have shape [N] or [K, N], got {tuple(robust.shape)}")
    current = robust.to(torch.bool)
    out = []
    for i, success in enumerate(successes):
        if success.shape != current.shape:
            raise ValueError(
                f"success of attack {i} must have shape {tuple(current.shape)} like the robust "
                f"mask, got {tuple(success.shape)}"
            )
        current = (current & ~success.to(device=current.device, dtype=torch.bool)).to(torch.uint8)
        current = current.cumprod(dim=0).to(torch.bool)
        out.append(current)
    return out
