"""Flatness under torch.distributed: two gloo processes return, each of them, the result of one
process over the whole set, bit for bit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from distributed_runs import CASES, run_case, sweep_record, worker

import torchutil
from analysis.config import active_flatness_config, flatness_config


def differences(left: object, right: object, path: str = "") -> Iterator[str]:
    """Where two JSON documents differ, with the relative size of a numeric difference."""
    if isinstance(left, dict) and isinstance(right, dict):
        if left.keys() != right.keys():
            yield f"{path}: keys {sorted(left)} != {sorted(right)}"
            return
        for key in left:
            yield from differences(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            yield f"{path}: length {len(left)} != {len(right)}"
            return
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            yield from differences(a, b, f"{path}[{index}]")
    elif type(left) is not type(right) or left != right:
        if isinstance(left, float) and isinstance(right, float):
            scale = max(abs(left), abs(right))
            yield f"{path}: {left!r} != {right!r} (relative {abs(left - right) / scale:.1e})"
        else:
            yield f"{path}: {left!r} != {right!r}"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of two gloo processes computed (`distributed_runs.worker`), by rank."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(worker, args=(2, sorted(CASES), str(out)), nprocs=2, join=True)
    return [json.loads(Path(out, f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_rank_returns_the_single_process_result(
    name: str, two_ranks: list[dict[str, Any]]
) -> None:
    # Batches, seeds and the order of every sum are those of one process, so the results are
    # equal, not merely close: Lanczos and the ghost filter then branch alike, too.
    single = run_case(name)
    for rank, results in enumerate(two_ranks):
        assert results["world_size"] == 2
        found = list(differences(results["cases"][name], single))
        assert not found, f"rank {rank} differs from one process:\n" + "\n".join(found[:20])


def test_each_batch_is_computed_by_one_rank_and_folded_by_all(
    two_ranks: list[dict[str, Any]],
) -> None:
    alone = sweep_record()
    assert [r["sweep"]["computed"] for r in two_ranks] == [
        [[0, 0], [0, 1], [2, 0], [2, 1], [2, 2]],
        [[1, 0]],
    ]
    assert alone["computed"] == [[0, 0], [0, 1], [1, 0], [2, 0], [2, 1], [2, 2]]
    assert all(r["sweep"]["folded"] == alone["folded"] for r in two_ranks)


def test_ranks_given_different_data_are_refused_on_every_rank(
    two_ranks: list[dict[str, Any]],
) -> None:
    for results in two_ranks:
        assert "got a different data on rank 1 than on rank 0" in results["mismatch"]


def test_the_cases_cover_every_measure_the_audit_runs() -> None:
    for preset in ("quick", "standard"):
        audit = flatness_config(preset, 16)
        for config in (audit, active_flatness_config(audit)):
            assert any(case.config == config for case in CASES.values()), (preset, config.mode)
    batch_counts = {-(-case.num_samples // 16) for case in CASES.values()}
    assert batch_counts == {3, 4}  # an odd count, and one whose last batch is short
    assert {case.num_samples % 16 for case in CASES.values()} == {0, 8}
    # Mini-batches smaller than the data, in both modes, and pictures on samples of their own.
    drawn = {
        case.config.mode
        for case in CASES.values()
        if case.config.options.get("hessian_trace", {}).get("minibatch_size", 64) < case.num_samples
    }
    assert drawn == {"eval", "train"}
    assert any(
        case.config.options.get("spectral_density", {}).get("sample_size", 64) < case.num_samples
        for case in CASES.values()
    )


@contextmanager
def one_rank_group(folder: Path) -> Iterator[None]:
    """An initialised gloo group of one process (its store a file in ``folder``), destroyed
    afterwards."""
    store = (folder / "gloo-store").resolve().as_uri()
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_group_of_one_computes_as_without_torch_distributed(tmp_path: Path) -> None:
    alone = run_case("quick-train-64")
    with one_rank_group(tmp_path):
        assert torchutil.is_distributed() and torchutil.world_size() == 1
        grouped = run_case("quick-train-64")
    assert not list(differences(grouped, alone))
