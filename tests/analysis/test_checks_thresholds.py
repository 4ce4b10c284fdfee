"""The checks compare against the numbers ``core.checks`` declares, and the settings their
words state are the audit's."""

from __future__ import annotations

import inspect

import pytest

from analysis import probes
from analysis.cleanchecks import MATERIAL_ACCURACY_GAP, MATERIAL_CONVENTION_GAIN, MATERIAL_SAMPLES
from analysis.comparechecks import PAIRWISE_CHECKS
from analysis.config import EOT_SAMPLES
from analysis.gradientchecks import FD_MATERIAL_RATE, FD_MINIMUM, FD_TOLERATED_RATE
from attacks import engine
from core.checks import CHECKS


@pytest.mark.parametrize("row", PAIRWISE_CHECKS, ids=lambda row: row[0])
def test_pairwise_checks_read_their_declared_thresholds(row: tuple) -> None:
    code, _later, _earlier, tolerated, minimum, material = row
    declared = CHECKS[code].thresholds
    assert (tolerated, minimum, material) == (
        declared["tolerated_rate"],
        declared["minimum"],
        declared["material_share"],
    )


def test_named_thresholds_are_the_declared_ones() -> None:
    clean = CHECKS["low-clean-accuracy"].thresholds
    assert (
        clean["accuracy_gap"],
        clean["material_samples"],
        clean["convention_gain"],
    ) == (MATERIAL_ACCURACY_GAP, MATERIAL_SAMPLES, MATERIAL_CONVENTION_GAIN)
    fd = CHECKS["gradient-disagrees-with-finite-differences"].thresholds
    assert (
        fd["tolerated_rate"],
        fd["material_rate"],
        fd["minimum"],
    ) == (FD_TOLERATED_RATE, FD_MATERIAL_RATE, FD_MINIMUM)
    assert CHECKS["vanishing-gradients"].thresholds["vanishing_norm"] == engine.VANISHING_THRESHOLD


def test_the_probes_measure_at_the_declared_tolerances() -> None:
    defaults = inspect.signature(probes.probe_model).parameters
    fd = CHECKS["gradient-disagrees-with-finite-differences"]
    batch = CHECKS["batch-dependent-outputs"]
    assert defaults["fd_tolerance"].default == fd.thresholds["tolerance"]
    assert defaults["batch_tolerance"].default == batch.thresholds["tolerance"]


def test_the_settings_the_words_state_are_the_audits() -> None:
    defaults = inspect.signature(probes.probe_model).parameters
    assert defaults["num_repeats"].default == 4
    assert CHECKS["stochastic-model"].statistic.startswith("Four forward passes")
    assert f"On {defaults['fd_samples'].default} samples" in (
        CHECKS["gradient-disagrees-with-finite-differences"].statistic
    )
    assert CHECKS["batch-dependent-outputs"].statistic.startswith(
        f"{defaults['num_samples'].default} samples"
    )
    assert f"averaged over {EOT_SAMPLES} passes (EOT)" in CHECKS["stochastic-model"].fails_when
