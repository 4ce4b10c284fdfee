"""The few ``torch.distributed`` calls the audit and the estimators make, each of them the
identity in a single process (torch.distributed unavailable or not initialised).

Tensors are communicated on a device the backend supports (CPU for gloo, the current CUDA
device for NCCL) and copied back to their own device, so callers need not know the backend.
Every rank must make the same calls in the same order, as with any collective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether torch.distributed is available and its default process group initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sums ``tensor`` over all ranks, in place, and returns it.

    The sum is computed once and sent to every rank, so all ranks hold the same bits; its
    order differs from a single process's, so a floating-point sum may differ from one in
    the last bits.
    """
    if not is_distributed():
        return tensor
    moved = tensor.to(_communication_device(tensor.device)).contiguous()
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    if moved is not tensor:
        tensor.copy_(moved)
    return tensor


def broadcast_tensor(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrites ``tensor`` on every rank with its value on rank ``src`` and returns it.

    Every rank passes a tensor of the same shape and dtype; on the other ranks only its
    storage is used.
    """
    if not is_distributed():
        return tensor
    moved = tensor.to(_communication_device(tensor.device)).contiguous()
    dist.broadcast(moved, src=src)
    if moved is not tensor:
        tensor.copy_(moved)
    return tensor


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), indexed by rank; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    gathered: list[T | None] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered  # type: ignore[return-value]


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` when not distributed."""
    if not is_distributed():
        return obj
    holder: list[T | None] = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]  # type: ignore[return-value]


def shared_map(count: int, compute: Callable[[int], T]) -> list[T]:
    """``[compute(0), ..., compute(count - 1)]`` on every rank, each item computed by one rank
    only (item ``i`` by rank ``i mod world_size``) and gathered: work that every process
    needs, done once. Items must be picklable and on the CPU; ``compute`` must not itself make
    collective calls. In a single process, the items one by one, in order.

    An error raised by ``compute`` on one rank is raised on every rank (the others raise a
    ``RuntimeError`` that names it), so that no rank waits for one that has left."""
    if not is_distributed() or world_size() == 1:
        return [compute(item) for item in range(count)]
    mine: dict[int, T] = {}
    error: Exception | None = None
    for item in range(rank(), count, world_size()):
        try:
            mine[item] = compute(item)
        except Exception as err:  # noqa: BLE001 - raised again below, on every rank
            error = err
            break
    told = None if error is None else f"{type(error).__name__}: {error}"
    merged: dict[int, T] = {}
    failures = []
    for other, (part, message) in enumerate(all_gather_objects((mine, told))):
        merged.update(part)
        if message is not None:
            failures.append(f"process {other}: {message}")
    if error is not None:
        raise error
    if failures:
        raise RuntimeError(f"another process failed ({failures[0]})")
    return [merged[item] for item in range(count)]


def barrier() -> None:
    """Waits until every rank has arrived; nothing when not distributed."""
    if is_distributed():
        dist.barrier()


def _communication_device(device: torch.device) -> torch.device:
    """``device`` when the default group's backend can send its tensors, else one it can."""
    types = _backend_device_types()
    if types is None or device.type in types:
        return device
    if "cuda" in types:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _backend_device_types() -> set[str] | None:
    """Device types the default group's backend handles; None for a backend we do not know
    (its tensors are then passed as they are)."""
    backend = str(dist.get_backend())
    if ":" in backend:  # a per-device backend such as "cpu:gloo,cuda:nccl"
        return {part.split(":")[0] for part in backend.split(",")}
    return {"gloo": {"cpu"}, "nccl": {"cuda"}}.get(backend)
