"""Torch-only plumbing that attacks and flatness share: model modes, seeds and generators on a
device, torch's default device around library calls, full float32 precision, batch sizes
that fit the machine's memory, the torch.distributed calls of a run over several ranks, and
the resume memo (`Memo`) that keeps their finished units.

It imports nothing but torch and ``core`` (a batch size is the result document's record), so
both packages may use it without importing each other.
"""

from torchutil.devices import to_device, torch_default_device
from torchutil.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_tensor,
    is_distributed,
    rank,
    shared_map,
    world_size,
)
from torchutil.memo import Memo, computed, rekeyed
from torchutil.memory import (
    PROBE_SIZES,
    any_batch,
    available_memory,
    choose_batch_size,
    chosen_batch_size,
    empty_cache,
    is_out_of_memory,
    measure_peak,
)
from torchutil.modes import apply_mode, model_mode
from torchutil.precision import full_precision
from torchutil.seeds import (
    SEED_BOUND,
    RngState,
    child_generator,
    draw_seed,
    draw_seeds,
    forked_global_rng,
    keyed_generators,
    make_generator,
    mix_seeds,
    seeded_global_rng,
    splitmix64,
)

__all__ = [
    "Memo",
    "PROBE_SIZES",
    "SEED_BOUND",
    "any_batch",
    "RngState",
    "all_gather_objects",
    "all_reduce_sum",
    "available_memory",
    "barrier",
    "broadcast_object",
    "broadcast_tensor",
    "choose_batch_size",
    "chosen_batch_size",
    "empty_cache",
    "is_distributed",
    "is_out_of_memory",
    "measure_peak",
    "apply_mode",
    "child_generator",
    "computed",
    "draw_seed",
    "draw_seeds",
    "forked_global_rng",
    "full_precision",
    "keyed_generators",
    "make_generator",
    "mix_seeds",
    "model_mode",
    "rank",
    "rekeyed",
    "seeded_global_rng",
    "shared_map",
    "splitmix64",
    "to_device",
    "torch_default_device",
    "world_size",
]
