"""Streaming mean with standard error and Student-t intervals, without scipy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class MeanAccumulator:
    """Running mean and variance of scalar observations (per-sample values or probes).

    The state is the three declared fields; two accumulators over disjoint observations (two
    processes, two shards) combine exactly with `merge` (Chan et al.'s pairwise update), so
    the reduction across processes is the same as one pass over all observations.

    Attributes:
        count: Number of observations n.
        mean: Their mean.
        m2: Sum of squared deviations from the mean.

    Example:
        >>> acc = MeanAccumulator()
        >>> acc.update(torch.tensor([1.0, 2.0, 3.0]))
        >>> acc.mean, acc.stderr
        (2.0, 0.5773502691896257)
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, values: Tensor) -> None:
        """Adds observations ``[n]`` (any float dtype; accumulated in float64)."""
        values = values.detach().to(torch.float64).flatten()
        if values.numel() == 0:
            return
        batch = MeanAccumulator(
            count=values.numel(),
            mean=values.mean().item(),
            m2=((values - values.mean()) ** 2).sum().item(),
        )
        self.merge(batch)

    def merge(self, other: MeanAccumulator) -> None:
        """Absorbs the observations summarised by ``other``."""
        total = self.count + other.count
        if other.count == 0:
            return
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta**2 * self.count * other.count / total
        self.mean += delta * other.count / total
        self.count = total

    def reset(self) -> None:
        """Forgets all observations."""
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @property
    def stderr(self) -> float:
        """Standard error of the mean, ``sqrt(s² / n)``; NaN below two observations."""
        if self.count < 2:
            return math.nan
        return math.sqrt(self.m2 / (self.count - 1) / self.count)

    def interval(self, confidence: float) -> tuple[float, float]:
        """Two-sided Student-t confidence interval for the mean; NaNs below two observations."""
        if self.count < 2:
            return math.nan, math.nan
        half = student_t_quantile(0.5 + confidence / 2, self.count - 1) * self.stderr
        return self.mean - half, self.mean + half


def student_t_quantile(probability: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom.

    Bisection on the CDF, which is a regularised incomplete beta function; accurate to about
    1e-10, enough for confidence intervals.
    """
    if not 0.0 < probability < 1.0 or df < 1:
        raise ValueError(
            f"need 0 < probability < 1 and df >= 1, got probability={probability}, df={df}"
        )
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while _student_t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2
        if _student_t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def _student_t_cdf(t: float, df: int) -> float:
    """CDF of Student's t at ``t >= 0``."""
    return 1.0 - 0.5 * _regularized_beta(df / 2, 0.5, df / (df + t * t))


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) by its continued fraction (Numerical Recipes, section 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast only on this side of the mean; use the symmetry otherwise.
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Modified Lentz evaluation of the incomplete beta continued fraction."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result
