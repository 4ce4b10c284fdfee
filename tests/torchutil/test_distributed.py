"""The torch.distributed helpers: the identity alone, collectives in a gloo group of two."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.multiprocessing as mp
from distributed_workers import collectives

import torchutil


def test_without_torch_distributed_every_helper_is_the_identity() -> None:
    assert not torchutil.is_distributed()
    assert (torchutil.rank(), torchutil.world_size()) == (0, 1)
    tensor = torch.arange(3.0)
    assert torchutil.all_reduce_sum(tensor) is tensor and tensor.tolist() == [0.0, 1.0, 2.0]
    assert torchutil.broadcast_tensor(tensor, src=0) is tensor
    assert torchutil.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert torchutil.broadcast_object("x") == "x"
    assert torchutil.shared_map(3, lambda item: item * item) == [0, 1, 4]
    torchutil.barrier()


def test_two_gloo_processes_reduce_gather_and_broadcast(tmp_path: Path) -> None:
    mp.spawn(collectives, args=(2, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert results == {
            "rank": rank,
            "world_size": 2,
            "distributed": True,
            "all_reduce_sum": [3.0, 6.0],
            "in_place": True,
            "broadcast_tensor": [5.0, 6.0],
            "all_gather_objects": [{"rank": 0}, {"rank": 1}],
            "broadcast_object": "from 1",
            # Item i computed by rank i mod 2, the same list everywhere.
            "shared_map": [[0, 0], [1, 1], [2, 0], [3, 1], [4, 0]],
            # Item 3 fails on rank 1: rank 1 raises it, rank 0 a RuntimeError naming it.
            "shared_map_error": (
                "RuntimeError: another process failed (process 1: ValueError: item 3)"
                if rank == 0
                else "ValueError: item 3"
            ),
        }
