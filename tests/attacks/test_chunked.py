"""A model evaluated in chunks (``ChunkedModel``) gives every attack the same answer, and an
out-of-memory error halves the chunks and redoes the batch with the same random draws."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_contract import CASES, EPSILONS, _case_ids
from torch import nn

from attacks import ChunkedModel, pgd, square


def _same(whole, chunked) -> None:
    assert torch.equal(whole.success, chunked.success)
    assert torch.equal(whole.queries, chunked.queries)
    # Per-sample arithmetic is the same; a kernel may round differently for another batch size.
    torch.testing.assert_close(whole.adversarial, chunked.adversarial, rtol=0, atol=1e-5)
    torch.testing.assert_close(whole.margin, chunked.margin, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "attack", "kwargs"), CASES, ids=_case_ids())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_attack_is_unchanged_by_chunks(name, attack, kwargs, norm, model, data) -> None:
    """Chunks of 5 inside batches of 16 (and a last, smaller one): autograd and the reference
    libraries see the same outputs and gradients as from the whole batch."""
    x, y = data
    common: dict[str, Any] = {"norm": norm, "batch_size": 16, **kwargs}
    whole = attack(model, x, y, EPSILONS[norm], generator=7, **common)
    chunked = attack(ChunkedModel(model, 5), x, y, EPSILONS[norm], generator=7, **common)
    _same(whole, chunked)


def test_chunks_keep_outputs_and_input_gradients(model, data) -> None:
    x, _ = data
    chunked = ChunkedModel(model, 7)
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), model(x), rtol=1e-6, atol=1e-6)
    grads = []
    for network in (model, chunked):
        inputs = x.clone().requires_grad_(True)
        (network(inputs) ** 2).sum().backward()
        grads.append(inputs.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        ChunkedModel(model, 0)


class _SmallMemory(nn.Module):
    """The model, but any evaluation of more than ``capacity`` samples runs out of memory."""

    def __init__(self, model: nn.Module, capacity: int) -> None:
        super().__init__()
        self.model = model
        self.capacity = capacity
        self.refused = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.capacity:
            self.refused += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("attack", ["pgd", "square"])
def test_out_of_memory_halves_the_chunks_and_redoes_the_batch(attack, model, data) -> None:
    """Chunks of 16 on a device that holds 4 samples: halved twice, and the result (random
    starts, Square's draws, the query counts) is the one of chunks of 4 from the start."""
    x, y = data

    def run(network: nn.Module):
        if attack == "pgd":
            return pgd(network, x, y, [0.1], num_steps=4, num_restarts=2, batch_size=16)
        return square(network, x, y, [0.1], num_queries=20, batch_size=16, generator=3)

    small = _SmallMemory(model, capacity=4)
    retried = ChunkedModel(small, 16)
    result = run(retried)
    assert (retried.chunk_size, retried.halvings) == (4, 2) and small.refused >= 2
    reference = run(ChunkedModel(_SmallMemory(model, capacity=4), 4))
    assert torch.equal(result.success, reference.success)
    assert torch.equal(result.adversarial, reference.adversarial)
    assert torch.equal(result.queries, reference.queries)
    assert (result.num_forward, result.num_backward) == (
        reference.num_forward,
        reference.num_backward,
    )


def test_other_errors_and_unchunked_models_are_not_retried(model, data) -> None:
    x, y = data
    with pytest.raises(torch.OutOfMemoryError):
        pgd(_SmallMemory(model, capacity=4), x, y, [0.1], num_steps=2, batch_size=16)
    one = ChunkedModel(_SmallMemory(model, capacity=0), 1)
    with pytest.raises(torch.OutOfMemoryError):
        pgd(one, x, y, [0.1], num_steps=2, batch_size=16)
