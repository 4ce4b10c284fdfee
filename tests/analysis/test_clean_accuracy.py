"""The ``low-clean-accuracy`` check: a model fed its inputs in the wrong convention never
passes in silence.

The rules are tested on hand-built evidence against scipy's exact binomial tails; the whole
check on a model built by construction: an MLP trained on digits whose inputs were normalised
with mean 0.5 and std 0.1 (it computes net((x - 0.5) / 0.1) during training), saved as a plain
state_dict, then audited through the command line without that normalisation and with it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binom

from analysis.conventions import (
    Convention,
    ConventionTrial,
    conventions_to_try,
    present,
    try_conventions,
)
from analysis.redflags import Evidence, FindingStatus, low_clean_accuracy, verdict
from checkpoints.architectures import Normalized, build_network
from checkpoints.datasets import load_dataset
from checkpoints.layers import LayerSpec
from commands import audit

# ------------------------------------------------------------------ the rules, by hand


def _evidence(correct: list[bool], **kwargs: Any) -> Evidence:
    clean = torch.tensor(correct)
    suite = SimpleNamespace(clean_correct=clean, num_samples=len(correct))
    return Evidence(suite, SimpleNamespace(), **kwargs)  # type: ignore[arg-type]


def _hits(count: int, total: int) -> list[bool]:
    return [True] * count + [False] * (total - count)


@pytest.mark.parametrize(
    ("correct", "expected"),
    [
        (15, FindingStatus.FAIL),  # P[X >= 15] = 0.073 under guessing: not above chance
        (18, FindingStatus.FAIL),  # p = 0.0100: still not below alpha = 0.01
        (19, FindingStatus.PASS),  # p = 0.0047
        (90, FindingStatus.PASS),
    ],
)
def test_near_chance_is_an_exact_binomial_test(correct, expected) -> None:
    finding = low_clean_accuracy(_evidence(_hits(correct, 100), num_classes=10))
    assert finding.status == expected and finding.kind != "masking"
    assert math.isclose(finding.evidence["chance_p_value"], binom.sf(correct - 1, 100, 0.1))
    if expected is FindingStatus.FAIL:
        assert "not significantly above chance" in finding.explanation
        assert "--normalization" in finding.explanation and "--bounds" in finding.explanation
        assert verdict([finding]) == "evaluation unreliable"


@pytest.mark.parametrize(
    ("correct", "recorded", "expected"),
    [
        (170, 0.95, FindingStatus.FAIL),  # 10 points below, p ~ 1e-7
        (186, 0.95, FindingStatus.PASS),  # 2 points below, p = 0.13: sampling
        (981, 0.99, FindingStatus.WARN),  # of 1000: 0.9 points below, p = 0.0069: real but small
        (185, 0.95, FindingStatus.PASS),  # 2.5 points below, p = 0.078
    ],
)
def test_below_the_recorded_accuracy(correct, recorded, expected) -> None:
    total = 1000 if correct > 200 else 200
    finding = low_clean_accuracy(
        _evidence(_hits(correct, total), num_classes=10, recorded_clean_accuracy=recorded)
    )
    assert finding.status == expected
    assert math.isclose(finding.evidence["recorded_p_value"], binom.cdf(correct, total, recorded))
    if expected is not FindingStatus.PASS:
        assert "below the" in finding.explanation and f"{recorded:.3f}" in finding.explanation


def _trial(name: str, flag: str, correct: list[bool]) -> ConventionTrial:
    return ConventionTrial(Convention(name, flag, None, None), torch.tensor(correct))


def test_a_better_convention_names_its_flag() -> None:
    current = _hits(60, 100)
    # The same 60, plus 20 more under imagenet's normalisation; slightly worse otherwise.
    imagenet = _hits(80, 100)
    worse = _hits(55, 100)
    finding = low_clean_accuracy(
        _evidence(
            current,
            num_classes=10,
            conventions=(
                _trial("normalisation imagenet", "--normalization imagenet", imagenet),
                _trial("no normalisation", "--normalization none", worse),
            ),
        )
    )
    assert finding.status == FindingStatus.FAIL
    assert "give --normalization imagenet" in finding.explanation
    row = finding.evidence["conventions"]["normalisation imagenet"]
    assert (row["only_this"], row["only_current"], row["accuracy"]) == (20, 0, 0.8)
    # One-sided exact McNemar: P[Bin(20, 1/2) >= 20], against alpha / 2 conventions.
    assert math.isclose(row["p_value"], binom.sf(19, 20, 0.5))
    assert finding.evidence["convention_alpha"] == 0.005


def test_a_significant_gain_fails_a_tiny_one_warns_and_noise_passes() -> None:
    current = _hits(900, 1000)
    # 3 points, as an MNIST CNN audited without its normalisation lost: significant, material.
    small = _hits(930, 1000)
    finding = low_clean_accuracy(
        _evidence(current, num_classes=10, conventions=(_trial("x", "--x", small),))
    )
    assert finding.status == FindingStatus.FAIL
    # 60 of 10000 (0.6 %): significant, below the 1 % that makes it material.
    tiny = _hits(9060, 10000)
    finding = low_clean_accuracy(
        _evidence(_hits(9000, 10000), num_classes=10, conventions=(_trial("x", "--x", tiny),))
    )
    assert finding.status == FindingStatus.WARN
    # 7 gained and 4 lost of 1000: p = 0.27, nothing.
    noisy = _hits(900, 1000)
    noisy[900:907] = [True] * 7
    noisy[:4] = [False] * 4
    finding = low_clean_accuracy(
        _evidence(current, num_classes=10, conventions=(_trial("x", "--x", noisy),))
    )
    assert finding.status == FindingStatus.PASS
    assert "no other of 1 input conventions does better" in finding.explanation


def test_no_clean_evaluation_is_not_applicable() -> None:
    finding = low_clean_accuracy(Evidence(None, SimpleNamespace()))  # type: ignore[arg-type]
    assert finding.status == FindingStatus.NOT_APPLICABLE


# ------------------------------------------------------------- the conventions, emulated


def test_a_presented_convention_is_that_normalisation_of_the_network() -> None:
    torch.manual_seed(0)
    net = build_network("mlp", (3, 4, 4), 5, LayerSpec()).eval()
    x = torch.rand(6, 3, 4, 4)
    current = ((0.1, 0.2, 0.3), (0.5, 0.4, 0.3))
    model = Normalized(net, *current).eval()
    for convention in conventions_to_try(*current, channels=3, bounds=(0.0, 1.0)):
        seen = present(x, convention, *current)
        with torch.no_grad():
            if convention.flip_channels:
                expected = model(x.flip(1))
            else:
                mean = torch.tensor(convention.mean or (0.0,)).view(1, -1, 1, 1)
                std = torch.tensor(convention.std or (1.0,)).view(1, -1, 1, 1)
                expected = net((x - mean) / std)
            torch.testing.assert_close(model(seen), expected, rtol=1e-5, atol=1e-5)


class _Picky(torch.nn.Module):
    """Classifies by the mean pixel, and raises on any input outside [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any() or (x > 1).any()):
            raise RuntimeError("input outside [0, 1]")
        mean = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([mean, 1 - mean], dim=1)


def test_a_convention_the_model_refuses_is_not_evidence() -> None:
    x = torch.rand(40, 1, 4, 4)
    y = (x.flatten(1).mean(1) < 0.5).long()  # the model is right on every sample
    trials = try_conventions(_Picky(), x, y, mean=None, std=None, bounds=(0.0, 1.0), batch_size=16)
    refused = [t for t in trials if t.correct is None]
    # Every normalisation with a positive mean sends pixels below 0, and 0..255 above 1.
    assert refused and all("input outside [0, 1]" in (t.error or "") for t in refused)
    correct = torch.ones(40, dtype=torch.bool)
    suite = SimpleNamespace(clean_correct=correct, num_samples=40)
    finding = low_clean_accuracy(
        Evidence(suite, SimpleNamespace(), num_classes=2, conventions=trials)  # type: ignore[arg-type]
    )
    assert finding.status == FindingStatus.PASS
    assert set(finding.evidence["conventions_not_run"]) == {t.convention.name for t in refused}
    assert "could not be tried (the model raised on them)" in finding.explanation


def test_the_conventions_tried() -> None:
    names = [c.name for c in conventions_to_try(None, None, channels=1, bounds=(0.0, 1.0))]
    assert "normalisation mnist" in names and "normalisation imagenet" not in names
    assert "pixels in 0..255" in names and "no normalisation" not in names
    assert "channels in BGR order" not in names
    named = conventions_to_try((0.1307,), (0.3081,), channels=1, bounds=(0.0, 1.0))
    assert "no normalisation" in [c.name for c in named]
    assert "normalisation mnist" not in [c.name for c in named]
    rgb = [c.name for c in conventions_to_try(None, None, channels=3, bounds=(0.0, 1.0))]
    assert {"normalisation imagenet", "channels in BGR order"} <= set(rgb)
    assert conventions_to_try(None, None, channels=1, bounds=(0.0, 255.0)) == []


# ------------------------------------------------------ a model trained on normalised inputs

MEAN, STD = 0.5, 0.1


@pytest.fixture(scope="module")
def normalised_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP trained (seeded, on the CPU, a few seconds) on the digits training split with
    its inputs normalised by mean 0.5 and std 0.1, saved as a plain state_dict that does not
    say so."""
    torch.manual_seed(0)
    train = load_dataset("digits", "train")
    net = build_network("mlp", (1, 8, 8), 10, LayerSpec())
    model = Normalized(net, (MEAN,), (STD,))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model(train.x[batch]), train.y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    path = tmp_path_factory.mktemp("normalised") / "normalised-mlp.pt"
    torch.save(net.state_dict(), path)
    return path


def _audit(checkpoint: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = [
        str(checkpoint),
        "--arch",
        "mlp",
        "--dataset",
        "digits",
        "--preset",
        "quick",
        "--norms",
        "linf",
        "--attacks",
        "fgsm",
        "--no-flatness",
        "--no-report",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]
    assert audit.main(argv) == 0
    return json.loads((out / checkpoint.stem / "audit.json").read_text())


def _finding(document: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in document["findings"] if f["code"] == "low-clean-accuracy")


def test_audited_without_its_normalisation_the_check_fails_and_names_the_flag(
    normalised_mlp: Path, tmp_path: Path
) -> None:
    # Expected before the first run: the model sees x where it learnt (x - 0.5) / 0.1, so its
    # clean accuracy drops; presented with a normalisation near (0.5, 0.1) the same images
    # score significantly and materially better: fail, verdict "evaluation unreliable", and
    # the explanation names --normalization.
    document = _audit(normalised_mlp, tmp_path / "bare")
    finding = _finding(document)
    assert finding["status"] == "fail" and finding["kind"] == "reliability"
    assert "--normalization" in finding["explanation"]
    assert document["verdict"] == "evaluation unreliable"
    assert document["checkpoint"]["normalization_source"] == "not given"
    evidence = finding["evidence"]
    assert evidence["clean_accuracy"] == document["clean_accuracy"]["value"]
    best = max(evidence["conventions"].values(), key=lambda row: row["accuracy"])
    assert best["accuracy"] - evidence["clean_accuracy"] >= 0.05


def test_audited_with_its_normalisation_the_check_passes(
    normalised_mlp: Path, tmp_path: Path
) -> None:
    # Expected before the first run: with the normalisation it was trained with, the model
    # is accurate (well above chance) and no other convention tried does better: pass.
    document = _audit(normalised_mlp, tmp_path / "normalised", "--normalization", "0.5:0.1")
    finding = _finding(document)
    assert finding["status"] == "pass", finding["explanation"]
    assert document["checkpoint"]["mean"] == [MEAN] and document["checkpoint"]["std"] == [STD]
    assert document["checkpoint"]["normalization_source"] == "--normalization"
    assert document["verdict"] != "evaluation unreliable"
