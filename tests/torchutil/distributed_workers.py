"""What each process of a small gloo group computes with `torchutil.distributed`.

A module of its own (not a test file) so that processes started by
``torch.multiprocessing.spawn`` can import the worker by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

import torchutil


def collectives(rank: int, world_size: int, port: int, out: str) -> None:
    """Every helper once, results written to ``rank<r>.json`` in ``out``."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        summed = torch.tensor([1.0, 2.0], dtype=torch.float64) * (rank + 1)
        returned = torchutil.all_reduce_sum(summed)
        # A strided tensor is sent through a contiguous copy and written back in place.
        strided = torch.zeros(2, 3)[:, 0]
        if rank == 1:
            strided.copy_(torch.tensor([5.0, 6.0]))
        torchutil.broadcast_tensor(strided, src=1)
        torchutil.barrier()
        results = {
            "rank": torchutil.rank(),
            "world_size": torchutil.world_size(),
            "distributed": torchutil.is_distributed(),
            "all_reduce_sum": summed.tolist(),
            "in_place": returned is summed,
            "broadcast_tensor": strided.tolist(),
            "all_gather_objects": torchutil.all_gather_objects({"rank": rank}),
            "broadcast_object": torchutil.broadcast_object(f"from {rank}", src=1),
        }
    except BaseException:
        dist.destroy_process_group()
        raise
    leave(Path(out, f"rank{rank}.json"), results)


def leave(path: Path, results: object) -> None:
    """Write this rank's results and end the process without tearing the gloo group down:
    gloo's teardown sometimes aborts a process ("terminate called without an active
    exception"), which would fail the run for no fault of the code under test."""
    dist.barrier()
    path.write_text(json.dumps(results))
    os._exit(0)
