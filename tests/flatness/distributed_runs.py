"""Flatness runs repeated by several gloo processes: the cases and the worker they run in.

A module of its own (not a test file) so that processes started by
``torch.multiprocessing.spawn`` can import the worker by name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from distributed_workers import join, leave
from torch import nn

import torchutil
from analysis.config import active_flatness_config, flatness_config
from core.docfields import encode
from flatness import FlatnessConfig, measure
from flatness.core import TermLayout, sharded_sweep


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Dropout(0.3), nn.Linear(10, 3))


class _ToImage(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], 1, 2, 3)


def _conv() -> nn.Module:
    return nn.Sequential(
        _ToImage(),
        nn.Conv2d(1, 4, 2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 4, 3),
    )


@dataclass(frozen=True)
class Case:
    """One flatness run: a float32 model, ``num_samples`` inputs, and a configuration."""

    architecture: Callable[[], nn.Module]
    num_samples: int
    config: FlatnessConfig


_QUICK = flatness_config("quick", 16)
_STANDARD = flatness_config("standard", 16)
_MC = FlatnessConfig(
    measures=("fisher_rao_model", "hessian_trace", "hessian_eigenvalues", "epsilon_sharpness"),
    batch_size=16,
    mode="train",
    num_mc_samples=2,
    options={
        "hessian_trace": {"max_probes": 6, "min_probes": 3},
        "hessian_eigenvalues": {"max_iterations": 8},
        "epsilon_sharpness": {"num_steps": 2},
    },
)
_HUTCH_PLUS_PLUS = FlatnessConfig(
    measures=("hessian_trace",),
    batch_size=16,
    options={
        "hessian_trace": {
            "method": "hutch++",
            "deflation_rank": 4,
            "max_probes": 8,
            "min_probes": 4,
        }
    },
)


def _small_draws(config: FlatnessConfig) -> FlatnessConfig:
    """``config`` with mini-batches of 12 and own samples of 24, so that the doubly
    stochastic estimators draw mini-batches (two chunks of a 6-sample batch each) and the
    pictures take samples of their own, as they do on the audit's 500 samples."""
    options = {}
    for name, values in config.options.items():
        values = dict(values)
        if "minibatch_size" in values:
            values["minibatch_size"] = 12
        if "sample_size" in values:
            values["sample_size"] = 24
        options[name] = values
    return dataclasses.replace(config, batch_size=6, options=options)


# A Fisher-Rao norm that stops at its target after an odd number of draws: with two ranks, the
# draw computed beside the last one is dropped.
_STOPS_MID_ROUND = FlatnessConfig(
    measures=("fisher_rao_empirical", "hessian_trace"),
    batch_size=16,
    mode="train",
    options={
        "fisher_rao_empirical": {"minibatch_size": 8, "rel_tol": 10.0, "min_draws": 9},
        "hessian_trace": {
            "minibatch_size": 8,
            "rel_tol": 10.0,
            "max_probes": 60,
            "min_probes": 27,
            "probes_per_pass": 3,
        },
    },
)

# 64 samples are four batches of 16; 40 are three (an odd count), the last one of 8.
CASES = {
    "quick-eval-64": Case(_mlp, 64, _QUICK),
    "quick-train-64": Case(_mlp, 64, active_flatness_config(_QUICK)),
    "standard-eval-40": Case(_mlp, 40, _STANDARD),
    "standard-train-40": Case(_mlp, 40, active_flatness_config(_STANDARD)),
    "conv-quick-eval-40": Case(_conv, 40, _QUICK),
    "conv-mc-train-64": Case(_conv, 64, _MC),
    "conv-hutch++-40": Case(_conv, 40, _HUTCH_PLUS_PLUS),
    "standard-draws-eval-40": Case(_mlp, 40, _small_draws(_STANDARD)),
    "standard-draws-train-40": Case(_mlp, 40, _small_draws(active_flatness_config(_STANDARD))),
    "conv-stops-mid-round-64": Case(_conv, 64, _STOPS_MID_ROUND),
}


def run_case(name: str) -> dict[str, object]:
    """The case's ``encode(measure(...))``, through JSON (as the audit stores it)."""
    case = CASES[name]
    torch.manual_seed(0)
    model = case.architecture().eval()
    data = torch.Generator().manual_seed(1)
    x = torch.rand(case.num_samples, 6, generator=data)
    y = torch.randint(0, 3, (case.num_samples,), generator=data)
    result = measure(model, x, y, case.config, torch.Generator().manual_seed(7))
    return json.loads(json.dumps(encode(result), allow_nan=False))


def sweep_record() -> dict[str, list[list[float]]]:
    """Which terms this rank computes and what it folds, in a sweep over three batches with
    2, 1 and 3 draws whose terms are two float32 tensors (sent packed) and one int64."""
    computed: list[list[float]] = []
    folded: list[list[float]] = []

    def term(batch: int, draw: int) -> list[torch.Tensor]:
        computed.append([batch, draw])
        value = 10.0 * batch + draw
        return [torch.full((2,), value), torch.full((batch + 1,), -value), torch.tensor([batch])]

    def fold(batch: int, draw: int, parts: list[torch.Tensor]) -> None:
        folded.append([batch, draw, *(v for part in parts for v in part.tolist())])

    def layout(batch: int) -> TermLayout:
        return [((2,), torch.float32), ((batch + 1,), torch.float32), ((1,), torch.int64)]

    sharded_sweep([2, 1, 3], term, fold, layout, torch.device("cpu"))
    return {"computed": computed, "folded": folded}


def _mismatch(rank: int) -> str:
    """The error of a run whose data differ on rank 1."""
    torch.manual_seed(0)
    model = _mlp().eval()
    x, y = torch.zeros(8, 6) + rank, torch.zeros(8, dtype=torch.long)
    try:
        measure(model, x, y, FlatnessConfig(measures=("fisher_rao_model",)), torch.Generator())
    except ValueError as error:
        return str(error)
    return "no error"


def worker(rank: int, world_size: int, names: list[str], out: str) -> None:
    """One process of a gloo group: every case, the sweep record and the mismatched run,
    written to ``rank<r>.json`` in ``out``."""
    join(rank, world_size, out)
    try:
        results = {
            "world_size": torchutil.world_size(),
            "cases": {name: run_case(name) for name in names},
            "sweep": sweep_record(),
            "mismatch": _mismatch(rank),
        }
    except BaseException:
        dist.destroy_process_group()
        raise
    leave(out, rank, world_size, results)
