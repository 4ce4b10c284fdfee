"""The small exact statistics against scipy and closed forms."""

from __future__ import annotations

import math

import pytest
import scipy.stats

from core.stats import (
    Z95,
    binomial_tail,
    mcnemar_exact,
    paired_drop_interval,
    unpaired_drop_interval,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (480, 1000), (1, 1000)])
def test_wilson_interval_matches_closed_form(k, n):
    z = scipy.stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert low <= p <= high


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 5, 0.3), (3, 10, 0.5), (7, 1000, 0.01), (600, 1000, 0.5), (11, 10, 0.5)]
)
def test_binomial_tail_matches_scipy(k, n, p):
    assert binomial_tail(k, n, p) == pytest.approx(
        scipy.stats.binom.sf(k - 1, n, p), rel=1e-9, abs=1e-300
    )


def test_mcnemar_is_one_sided_exact_binomial_on_discordant():
    assert mcnemar_exact(8, 2) == pytest.approx(
        scipy.stats.binomtest(8, 10, 0.5, alternative="greater").pvalue
    )
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_drop_interval_covers_zero_for_balanced_noise():
    low, high = paired_drop_interval(5, 5, 1000)
    assert low < 0 < high
    low, _ = paired_drop_interval(60, 2, 1000)
    assert low > 0


def test_z95_is_the_normal_quantile():
    assert scipy.stats.norm.ppf(0.975) == pytest.approx(Z95, abs=1e-12)


def test_unpaired_drop_interval_is_the_widened_two_proportion_interval():
    z = scipy.stats.norm.ppf(0.975)
    p0, p1 = 900 / 1000, 400 / 500
    half = z * math.sqrt(p0 * (1 - p0) / 1000 + p1 * (1 - p1) / 500) + 1 / 500
    low, high = unpaired_drop_interval(900, 1000, 400, 500)
    assert (low, high) == pytest.approx((p0 - p1 - half, p0 - p1 + half), abs=1e-12)
    low, high = unpaired_drop_interval(450, 500, 905, 1000)
    assert low < 0 < high
    # No samples on one side: that proportion counts as 0, the interval stays finite.
    assert all(math.isfinite(v) for v in unpaired_drop_interval(0, 0, 3, 10))
