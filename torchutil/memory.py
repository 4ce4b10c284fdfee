"""Batch sizes chosen for the machine: free memory, the measured peak of one step, and what
to do when the memory runs out anyway.

On CUDA the allocator knows its own peak and an out-of-memory error can be caught, so the
caller halves the batch and retries. On a CPU the kernel's out-of-memory killer ends the
process before Python sees an error, so the batch must fit the first time: the peak resident
memory of the step is measured at two small batch sizes (Linux's high-water mark, reset
through ``/proc/self/clear_refs``), the per-sample cost fitted, and the largest batch whose
predicted peak fits in a fraction of the free memory taken. Each choice is returned as the
result document records it, a ``core.document.BatchSize``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import Tensor

from core.document import BatchSize

__all__ = [
    "MEMORY_FRACTION",
    "PROBE_SIZES",
    "any_batch",
    "available_memory",
    "choose_batch_size",
    "chosen_batch_size",
    "empty_cache",
    "is_out_of_memory",
    "measure_peak",
]

T = TypeVar("T")

MEMORY_FRACTION = 0.5
"""Share of the free memory one step may take: the rest is for what the audit keeps (the
inputs, every attack's examples and tables) and what other processes allocate meanwhile."""

PROBE_SIZES = (8, 32)
"""Batch sizes at which one step's peak is measured to fit its per-sample cost."""

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def chosen_batch_size(
    size: int,
    how: Literal["fixed", "estimated", "limit", "unmeasured"],
    *,
    per_sample_bytes: float | None = None,
    fixed_bytes: float | None = None,
    available_bytes: int | None = None,
) -> BatchSize:
    """A batch size as just chosen (not halved yet), ``how`` as ``core.document.BatchSize``
    says; what no measurement gave is None."""
    return BatchSize(
        size=size,
        how=how,
        per_sample_bytes=per_sample_bytes,
        fixed_bytes=fixed_bytes,
        available_bytes=available_bytes,
        halvings=0,
    )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator's out-of-memory error (CUDA's, or a CPU allocation
    that failed with an error instead of the kernel's killer)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def any_batch(
    compute: Callable[[Tensor], T],
    x: Tensor,
    combine: Callable[[list[T]], T] = torch.cat,  # type: ignore[assignment]
) -> T:
    """``compute(x)``, or, where the model refuses a batch of this size (anything it raises
    but running out of memory: a TorchScript model that checks its batch raises
    ``torch.jit.Error``), ``combine`` of ``compute`` of each sample alone (by default the
    tensors concatenated). For passes whose batch size is the caller's choice, not the
    model's; a model that refuses single samples too raises what it raised on the first."""
    try:
        return compute(x)
    except Exception as error:  # noqa: BLE001 - any refusal of the batch, judged below
        if is_out_of_memory(error) or len(x) <= 1:
            raise
    return combine([compute(x[i : i + 1]) for i in range(len(x))])


def empty_cache(device: torch.device) -> None:
    """Hand the memory torch's CUDA allocator caches back to the device (nothing on a CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation on ``device`` can take now, or None where unknown.

    CUDA: free device memory plus what torch's caching allocator holds unused. CPU: the
    kernel's ``MemAvailable``, lowered to the cgroup's remaining limit inside a container.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    candidates = [_meminfo_available(), _cgroup_remaining()]
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def measure_peak(step: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory ``step()`` allocates on ``device`` beyond what was in use before it, in
    bytes; None where this machine cannot tell (no ``/proc/self/clear_refs``, another OS).

    On CUDA, torch's allocator statistics. On a CPU, the process's resident high-water mark
    (``VmHWM``), reset just before the step; memory freed but kept by the C allocator is
    handed back first (``malloc_trim``) so that the step's reuse of it is not missed.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if device.type != "cpu" or not _reset_high_water_mark():
        return None
    resident = _status_kib("VmRSS")
    step()
    high_water = _status_kib("VmHWM")
    if resident is None or high_water is None:
        return None
    return max(high_water - resident, 0) * 1024


def choose_batch_size(
    step: Callable[[int], object],
    device: torch.device,
    *,
    limit: int,
    fraction: float = MEMORY_FRACTION,
    probe_sizes: tuple[int, int] = PROBE_SIZES,
) -> BatchSize:
    """The largest batch size up to ``limit`` whose step fits in ``fraction`` of the free
    memory, from the peaks of ``step(n)`` measured at the two ``probe_sizes``.

    The peak is fitted as ``fixed + per_sample · n`` through the two measurements, with a
    slope of at least a quarter of the larger measurement's mean per sample, so that memory
    the step reuses from earlier ones cannot make the slope vanish. Where memory cannot be
    measured the limit is returned as ``"unmeasured"`` (``how`` as ``core.document.BatchSize``
    says).

    Args:
        step: one step of the work at a batch of ``n`` samples (e.g. one input gradient).
        device: where the step allocates.
        limit: the largest batch ever used (e.g. the number of samples).
        fraction: share of the free memory the step may take.
        probe_sizes: two ascending batch sizes to measure.
    """
    if limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    small, large = probe_sizes
    if not 0 < small < large:
        raise ValueError(f"probe_sizes must be two ascending positive sizes, got {probe_sizes}")
    available = available_memory(device)
    if available is None:
        return chosen_batch_size(limit, "unmeasured")
    if limit <= small:
        return chosen_batch_size(limit, "limit", available_bytes=available)
    step(small)  # first call: lazy initialisation (kernels, workspaces) is not a sample's cost
    peaks = [measure_peak(functools.partial(step, n), device) for n in (small, large)]
    if peaks[0] is None or peaks[1] is None:
        return chosen_batch_size(limit, "unmeasured", available_bytes=available)
    per_sample = max((peaks[1] - peaks[0]) / (large - small), peaks[1] / large / 4, 1.0)
    fixed = max(peaks[1] - per_sample * large, 0.0)
    budget = fraction * available - fixed
    size = int(math.floor(budget / per_sample)) if budget > 0 else 1
    how: Literal["limit", "estimated"] = "limit" if size >= limit else "estimated"
    return chosen_batch_size(
        min(max(size, 1), limit),
        how,
        per_sample_bytes=per_sample,
        fixed_bytes=fixed,
        available_bytes=available,
    )


def _reset_high_water_mark() -> bool:
    _malloc_trim()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_kib(field: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_remaining() -> int | None:
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((_CGROUP / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(name).malloc_trim(0)
