"""Batch dependence: each sample's logits in the audit's batch against the sample apart.

One of the probes that :mod:`analysis.probes` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from torchutil import any_batch, shared_map


def batched_logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        chunks = [x[s : s + batch_size] for s in range(0, len(x), batch_size)]
        return torch.cat([any_batch(model, chunk) for chunk in chunks])


def shared_batched_logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """``batched_logits``, each batch computed by one process under torch.distributed."""

    def logits(number: int) -> Tensor:
        with torch.no_grad():
            batch = x[number * batch_size : (number + 1) * batch_size]
            return any_batch(model, batch).cpu()

    return torch.cat(shared_map(-(-len(x) // batch_size), logits)).to(x.device)


def evaluate_apart(model: nn.Module, x: Tensor) -> tuple[Tensor | None, str]:
    """Each row of ``x`` evaluated apart from the others: alone, or with its successor where
    the model refuses a batch of one (batch norm in train mode on flat features, a TorchScript
    model that checks its batch); ``(None, "refused")`` when it refuses both. Whatever a model
    raises on a batch size the probe chose is the model's quirk, not a crash of the audit."""
    with torch.no_grad():
        try:
            return torch.cat([model(x[i : i + 1]) for i in range(len(x))]), "single"
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - any refusal of a batch of one (torch.jit.Error too)
            pass
        if len(x) < 2:
            return None, "refused"
        try:
            rows = [model(x[[i, (i + 1) % len(x)]])[:1] for i in range(len(x))]
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - as above, for a batch of two
            return None, "refused"
        return torch.cat(rows), "pair"


@dataclass(frozen=True)
class BatchProbe:
    composition: str
    compared: int
    max_relative: float
    differing: int
    flips: int
    grouped: int
    grouped_compared: int


def batch_probe(
    batched: tuple[Tensor, Tensor],
    apart: tuple[Tensor] | tuple[Tensor, Tensor] | None,
    composition: str,
    tolerance: float,
) -> BatchProbe:
    """Compare a batched pass with a pass apart (relative tolerance, flips) and, for a
    stochastic model (``apart`` holds two passes), the pairing of two passes of each kind."""
    first = batched[0]
    alone = apart[0] if apart is not None else batched[1]
    finite = torch.isfinite(first).all(1) & torch.isfinite(alone).all(1)
    change = (first - alone).abs().amax(1)
    scale = first.abs().amax(1).clamp_min(torch.finfo(first.dtype).tiny)
    relative = (change / scale)[finite]
    flips = (first.argmax(1) != alone.argmax(1)) & finite
    grouped = compared = 0
    if apart is not None and len(apart) == 2:
        b1, b2, s1, s2 = (t.double() for t in (*batched, *apart))

        def distance(u: Tensor, v: Tensor) -> Tensor:
            return (u - v).norm(dim=1)

        observed = distance(b1, b2) + distance(s1, s2)
        crossed = torch.minimum(
            distance(b1, s1) + distance(b2, s2), distance(b1, s2) + distance(b2, s1)
        )
        usable = torch.isfinite(torch.stack([b1, b2, s1, s2])).all(2).all(0)
        grouped = int(((observed < crossed) & usable).sum())
        compared = int(usable.sum())
    return BatchProbe(
        composition=composition,
        compared=int(finite.sum()),
        max_relative=float(relative.max()) if relative.numel() else 0.0,
        differing=int((relative > tolerance).sum()),
        flips=int(flips.sum()),
        grouped=grouped,
        grouped_compared=compared,
    )
