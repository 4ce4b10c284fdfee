"""Small exact statistics for paired per-sample outcomes (no scipy needed at run time)."""

from __future__ import annotations

import math

__all__ = [
    "Z95",
    "binomial_tail",
    "mcnemar_exact",
    "paired_drop_interval",
    "unpaired_drop_interval",
    "wilson_interval",
]

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95 % interval."""


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default).

    Returns (0, 1) when ``total`` is 0.
    """
    if total <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes}")
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # At p = 0 or p = 1 the bound is exactly 0 or 1; rounding must not move it inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return (low, high)


def binomial_tail(k: int, n: int, p: float = 0.5) -> float:
    """P[X >= k] for X ~ Binomial(n, p), summed exactly in log space."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_terms = [
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
        for i in range(k, n + 1)
    ]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """One-sided exact McNemar p-value that the first outcome is more frequent.

    ``only_first`` counts samples where only the first attack succeeded, ``only_second``
    those where only the second did. Under the null the discordant samples split 50/50, so
    the p-value is P[Binomial(b + c, 1/2) >= b].
    """
    return binomial_tail(only_first, only_first + only_second, 0.5)


def paired_drop_interval(
    only_before: int, only_after: int, total: int, z: float = Z95
) -> tuple[float, float]:
    """Approximate 95 % interval of the paired difference in proportions (before - after).

    ``only_before``: samples good before and bad after; ``only_after``: the reverse. Uses the
    standard paired-proportion (McNemar) variance with a continuity-free Wald form, widened by
    one sample's worth so that tiny discordance never gives a zero-width interval.
    """
    if total <= 0:
        return (-1.0, 1.0)
    diff = (only_before - only_after) / total
    var = ((only_before + only_after) - (only_before - only_after) ** 2 / total) / (total * total)
    half = z * math.sqrt(max(var, 0.0)) + 1.0 / total
    return (diff - half, diff + half)


def unpaired_drop_interval(
    good_before: int, total_before: int, good_after: int, total_after: int, z: float = Z95
) -> tuple[float, float]:
    """Approximate 95 % interval of the difference of two proportions measured on different
    samples (before - after): the two-proportion Wald form, widened by one sample's worth of
    the smaller set, as :func:`paired_drop_interval` is. A proportion of no samples counts as 0.
    """
    p0 = good_before / total_before if total_before else 0.0
    p1 = good_after / total_after if total_after else 0.0
    drop = p0 - p1
    half = z * math.sqrt(
        p0 * (1 - p0) / max(total_before, 1) + p1 * (1 - p1) / max(total_after, 1)
    ) + 1 / max(min(total_before, total_after), 1)
    return (drop - half, drop + half)
