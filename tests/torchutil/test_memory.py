"""Batch sizes for the machine: the measured peak of a step and the largest batch that fits."""

from __future__ import annotations

import pytest
import torch

import torchutil.memory as memory
from torchutil import choose_batch_size, chosen_batch_size, is_out_of_memory, measure_peak

CPU = torch.device("cpu")
MIB = 2**20


def _allocate(num_bytes: int) -> None:
    torch.ones(num_bytes // 4).sum()  # written, so every page is resident


def _measurable() -> None:
    if measure_peak(lambda: None, CPU) is None:
        pytest.skip("this machine cannot reset its resident-memory high-water mark")


@pytest.mark.parametrize("mib", [64, 256])
def test_measured_peak_is_the_allocation(mib):
    _measurable()
    peak = measure_peak(lambda: _allocate(mib * MIB), CPU)
    assert peak is not None
    # Pages only: memory already resident may serve a little of it, and the interpreter's own
    # small allocations add at most a few MiB.
    assert (mib - 2) * MIB <= peak <= (mib + 8) * MIB


def test_batch_size_from_the_fitted_per_sample_cost(monkeypatch):
    """A step of 10 MiB + 4 MiB per sample, with 1 GiB free: the largest batch whose step fits
    in half of it is (512 - 10) / 4 = 125 (the fit may err by the interpreter's noise)."""
    _measurable()
    monkeypatch.setattr(memory, "available_memory", lambda device: 1024 * MIB)
    choice = choose_batch_size(lambda n: _allocate((10 + 4 * n) * MIB), CPU, limit=1000)
    assert choice.how == "estimated" and choice.available_bytes == 1024 * MIB
    assert choice.per_sample_bytes is not None and choice.fixed_bytes is not None
    assert choice.per_sample_bytes == pytest.approx(4 * MIB, rel=0.1)
    assert choice.fixed_bytes <= 20 * MIB
    # The largest batch whose fitted peak fits in half the memory, which for a fit within 10 %
    # of the truth lies within 10 % of 125.
    assert choice.size == int((512 * MIB - choice.fixed_bytes) // choice.per_sample_bytes)
    assert 112 <= choice.size <= 139


def test_limit_when_everything_fits_and_unmeasured_without_a_measurement(monkeypatch):
    _measurable()
    fits = choose_batch_size(lambda n: _allocate(MIB * n), CPU, limit=50)
    assert (fits.size, fits.how) == (50, "limit")
    monkeypatch.setattr(memory, "measure_peak", lambda step, device: None)
    blind = choose_batch_size(lambda n: _allocate(MIB * n), CPU, limit=50)
    assert (blind.size, blind.how) == (50, "unmeasured")


def test_a_step_larger_than_the_budget_gets_one_sample(monkeypatch):
    _measurable()
    monkeypatch.setattr(memory, "available_memory", lambda device: 64 * MIB)
    choice = choose_batch_size(lambda n: _allocate(40 * MIB * n), CPU, limit=100)
    assert (choice.size, choice.how) == (1, "estimated")


def test_halving_and_bad_arguments():
    choice = chosen_batch_size(
        100, "estimated", per_sample_bytes=1.0, fixed_bytes=0.0, available_bytes=10
    )
    assert (choice.halved().size, choice.halved().halvings) == (50, 1)
    assert choice.halved().halved().halvings == 2
    with pytest.raises(ValueError, match="cannot be halved"):
        chosen_batch_size(1, "fixed").halved()
    with pytest.raises(ValueError, match="limit"):
        choose_batch_size(lambda n: None, CPU, limit=0)
    with pytest.raises(ValueError, match="probe_sizes"):
        choose_batch_size(lambda n: None, CPU, limit=10, probe_sizes=(8, 8))


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))


def test_any_batch_asks_sample_by_sample_where_a_batch_is_refused() -> None:
    from torchutil import any_batch

    x = torch.arange(6.0).reshape(3, 2)
    sizes: list[int] = []

    def doubled_unless_three(part: torch.Tensor) -> torch.Tensor:
        sizes.append(len(part))
        if len(part) == 3:
            raise RuntimeError("refused")
        return part * 2

    assert torch.equal(any_batch(doubled_unless_three, x), x * 2)
    assert sizes == [3, 1, 1, 1]
    assert any_batch(lambda part: [len(part)], x, lambda parts: sum(parts, [])) == [3]

    def refuses_everything(part: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"no batch of {len(part)}")

    with pytest.raises(ValueError, match="no batch of 1"):
        any_batch(refuses_everything, x)

    def out_of_memory(part: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):  # a memory failure is no refusal
        any_batch(out_of_memory, x)
