"""What each process of a small gloo group computes with `torchutil.distributed`.

A module of its own (not a test file) so that processes started by
``torch.multiprocessing.spawn`` can import the worker by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

import torchutil


def join(rank: int, world_size: int, out: str) -> None:
    """Join a gloo group that meets through a store file in ``out``: no TCP port to pick, so
    none that another process can take between picking and binding it."""
    torch.set_num_threads(1)
    store = Path(out, "gloo-store").resolve().as_uri()
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world_size)


def collectives(rank: int, world_size: int, out: str) -> None:
    """Every helper once, results written to ``rank<r>.json`` in ``out``."""
    join(rank, world_size, out)
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
            "shared_map": torchutil.shared_map(5, lambda item: [item, rank]),
            "shared_map_error": _shared_map_error(),
        }
    except BaseException:
        dist.destroy_process_group()
        raise
    leave(out, rank, world_size, results)


def _failing(item: int) -> int:
    if item == 3:
        raise ValueError("item 3")
    return item


def _shared_map_error() -> str:
    try:
        torchutil.shared_map(5, _failing)
    except Exception as err:  # noqa: BLE001 - what each rank raises is the result
        return f"{type(err).__name__}: {err}"
    return "nothing raised"


def leave(out: str, rank: int, world_size: int, results: object) -> None:
    """Write this rank's results to ``rank<r>.json`` in ``out``, wait (on the file system,
    not through gloo) until every rank has written its own, and end the process without
    tearing the gloo group down: gloo's teardown sometimes aborts a process ("terminate
    called without an active exception"), and a rank that leaves while another is still in a
    collective breaks that one, either of which would fail the run for no fault of the code
    under test. Once every rank has written, none has anything left to say to another."""
    path = Path(out, f"rank{rank}.json")
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(results))
    partial.replace(path)
    deadline = time.monotonic() + 600
    done = [Path(out, f"rank{other}.json") for other in range(world_size)]
    while not all(file.exists() for file in done) and time.monotonic() < deadline:
        time.sleep(0.02)
    os._exit(0)
