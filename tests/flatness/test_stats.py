"""The accumulator and the Student-t quantile against numpy and scipy."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from flatness import MeanAccumulator
from flatness.stats import student_t_quantile


@pytest.mark.parametrize("df", [1, 2, 3, 7, 29, 199, 5000])
@pytest.mark.parametrize("probability", [0.6, 0.975, 0.995, 0.025])
def test_student_t_quantile_matches_scipy(probability: float, df: int) -> None:
    expected = stats.t.ppf(probability, df)
    assert student_t_quantile(probability, df) == pytest.approx(expected, rel=1e-8)


def test_merged_shards_equal_one_pass() -> None:
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = values * 3 + 1e6  # a large offset defeats the naive sum-of-squares formula
    whole = MeanAccumulator()
    whole.update(values)
    shards = [MeanAccumulator() for _ in range(3)]
    for shard, chunk in zip(shards, values.tensor_split(3), strict=True):
        shard.update(chunk[: len(chunk) // 2])
        shard.update(chunk[len(chunk) // 2 :])
    merged = MeanAccumulator()
    for shard in shards:
        merged.merge(shard)
    assert merged.count == 1000
    assert merged.mean == pytest.approx(values.mean().item(), rel=1e-15)
    assert merged.stderr == pytest.approx((values.std() / 1000**0.5).item(), rel=1e-9)
    assert whole.stderr == pytest.approx(merged.stderr, rel=1e-9)


def test_interval_and_reset() -> None:
    accumulator = MeanAccumulator()
    accumulator.update(torch.tensor([1.0]))
    assert accumulator.stderr != accumulator.stderr  # NaN below two observations
    accumulator.update(torch.tensor([2.0, 3.0]))
    low, high = accumulator.interval(0.95)
    half = stats.t.ppf(0.975, 2) * accumulator.stderr
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half))
    accumulator.reset()
    assert (accumulator.count, accumulator.mean, accumulator.m2) == (0, 0.0, 0.0)
