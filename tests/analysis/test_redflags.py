"""Ground truth for the red-flag checks: models masked in known ways raise the flags their
mechanism predicts; unmodified zoo models raise none. Both claims are first confirmed by
measurements made without the audit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from audit_helpers import audit_document, quick_config
from scipy.stats import binomtest

from analysis.audit import evaluation_set
from analysis.config import AuditConfig, build_suite
from analysis.masked import DropoutAtTest, QuantizedInput, SaturatedLogits, WrongGradient
from analysis.redflags import CHECKS
from attacks import fgsm, pgd
from checkpoints import load_checkpoint, save_checkpoint
from checkpoints.train import ZOO as ZOO_CONFIGS
from checkpoints.train import ZOO_DIR, train


def _statuses(document: dict) -> dict[str, str]:
    return {f["code"]: f["status"] for f in document["findings"]}


def _fails(document: dict) -> set[str]:
    return {code for code, status in _statuses(document).items() if status == "fail"}


EXPECTED = {
    # A saturated softmax starves the untargeted cross-entropy, not the targeted one.
    SaturatedLogits: {
        "vanishing-gradients",
        "margin-loss-beats-cross-entropy",
        "targeted-beats-untargeted",
        "unbounded-attack-below-100",
    },
    # Rounding is flat almost everywhere, so its zero gradient is locally right: the finite
    # differences agree (a straight-through gradient would not), the gradient attacks starve.
    QuantizedInput: {"vanishing-gradients", "black-box-beats-white-box"},
    WrongGradient: {"gradient-disagrees-with-finite-differences", "black-box-beats-white-box"},
    DropoutAtTest: {"model-in-train-mode"},
}


@pytest.mark.parametrize("masking", list(EXPECTED), ids=lambda c: c.__name__)
def test_masked_models_raise_their_flags(masking):
    document = audit_document("digits-mlp-dropout", quick_config(num_samples=150), masking)
    fails = _fails(document)
    assert EXPECTED[masking] <= fails, fails
    if masking is DropoutAtTest:
        assert _statuses(document)["stochastic-model"] == "warn"
        assert document["robustness"]["eot_samples"] > 1
        assert document["verdict"] == "evaluation unreliable"
    else:
        assert document["verdict"].startswith("suspected gradient masking")


def _saturated_fraction(path, num_samples: int) -> float:
    """Independent ground truth: the fraction of evaluation samples whose float32 cross-entropy
    input gradient is exactly zero (a saturated softmax), measured without the audit."""
    loaded = load_checkpoint(path)
    evaluation = evaluation_set(loaded, None, num_samples, 0)
    x = evaluation.x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(loaded.model(x), evaluation.y, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, x)
    return float((gradient.flatten(1).norm(dim=1) == 0).double().mean())


def _material(count: int, n: int) -> bool:
    return count >= max(5, 0.02 * n)


def _cw_beats_ce(cw: torch.Tensor, ce: torch.Tensor) -> bool:
    """PGD on the margin loss breaks materially (at least 5, and 2 % of all) and significantly
    (exact McNemar test at 0.01, scipy's) more samples than PGD-CE: the two are peers, so the
    samples only PGD-CE breaks count against it."""
    only_cw, only_ce = int((cw & ~ce).sum()), int((ce & ~cw).sum())
    if not _material(only_cw - only_ce, ce.numel()):
        return False
    return bool(binomtest(only_cw, only_cw + only_ce, 0.5, alternative="greater").pvalue < 0.01)


def _independent_attack_beats_pgd_ce(path, config: AuditConfig) -> bool:
    """Independent ground truth, measured by direct attack calls outside the audit, that PGD-CE
    overstates robustness: PGD on the margin (CW) loss, which a saturated softmax cannot
    starve, breaks significantly more samples than PGD-CE with the same budget, or a single
    full gradient step (FGSM/FGM), which an iterative attack should dominate, breaks a material
    number of samples that PGD-CE leaves robust."""
    loaded = load_checkpoint(path)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    x, y = evaluation.x, evaluation.y
    params = {k: v for k, v in config.suite.attacks[0].params.items() if k != "loss"}
    for norm, epsilons in config.suite.epsilons.items():
        ce = pgd(loaded.model, x, y, epsilons, norm=norm, generator=1, **params).success
        cw = pgd(loaded.model, x, y, epsilons, norm=norm, generator=1, loss="cw", **params)
        one_step = fgsm(loaded.model, x, y, epsilons, norm=norm).success
        for k in range(len(epsilons)):
            if _cw_beats_ce(cw.success[k], ce[k]):
                return True
            if _material(int((one_step[k] & ~ce[k]).sum()), len(y)):
                return True
    return False


def _check_unmasked(path, config: AuditConfig) -> None:
    """Independent measurements find no masking, and the audit raises no red flag."""
    assert _saturated_fraction(path, config.num_samples) <= 0.05, path
    assert not _independent_attack_beats_pgd_ce(path, config), path
    document = audit_document(path, config)
    assert not _fails(document), (path, _fails(document))
    assert document["verdict"] == "no sign of gradient masking"


def _check_masked(path, config: AuditConfig) -> None:
    """Independent measurements show that PGD-CE overstates robustness, and the audit raises
    red flags; where the float32 softmax saturates outright, the vanishing-gradient one."""
    assert _independent_attack_beats_pgd_ce(path, config), path
    document = audit_document(path, config)
    assert document["verdict"].startswith("suspected gradient masking"), _fails(document)
    if _saturated_fraction(path, config.num_samples) > 0.05:
        assert "vanishing-gradients" in _fails(document), (path, _fails(document))


def _standard(dataset: str) -> AuditConfig:
    return AuditConfig(suite=build_suite("standard", dataset), flatness=None, num_samples=300)


@pytest.mark.parametrize("name", ["digits-mlp-dropout", "digits-mlp-normout-spatiotemporal"])
def test_zoo_models_are_not_masked_and_raise_no_flag_quick(name):
    _check_unmasked(ZOO_DIR / f"{name}.pt", quick_config(num_samples=150))


ZOO = sorted(json.loads((ZOO_DIR / "manifest.json").read_text())["checkpoints"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_are_not_masked_and_raise_no_flag_standard(name, request):
    if name.startswith("mnist"):
        request.getfixturevalue("data_dir")
    _check_unmasked(ZOO_DIR / f"{name}.pt", _standard(ZOO_CONFIGS[name].dataset))


def _plain_cross_entropy(name: str, directory) -> Path:
    """The zoo entry ``name`` trained with plain cross-entropy (no label smoothing), as the
    NormOut reference code trains: NormOut keeps few units in training and does not rescale,
    so its eval-mode logits are inflated and the float32 softmax saturates."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng():
        network, spec = train(replace(ZOO_CONFIGS[name], label_smoothing=0.0))
    torch.use_deterministic_algorithms(deterministic)
    return save_checkpoint(directory / f"{name}-plain-ce.pt", network, spec)


def test_normout_trained_with_plain_cross_entropy_is_flagged_quick(tmp_path):
    path = _plain_cross_entropy("digits-mlp-normout-spatiotemporal", tmp_path)
    _check_masked(path, quick_config(num_samples=150))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "digits-mlp-normout-temporal",
        "digits-mlp-normout-spatial",
        "digits-mlp-normout-spatiotemporal",
        "mnist-lenet5-normout-spatiotemporal",
    ],
)
def test_normout_trained_with_plain_cross_entropy_is_flagged_standard(name, tmp_path, request):
    if name.startswith("mnist"):
        request.getfixturevalue("data_dir")
    path = _plain_cross_entropy(name, tmp_path)
    _check_masked(path, _standard(ZOO_CONFIGS[name].dataset))


def test_every_check_returns_a_documented_finding(quick_document):
    codes = [f["code"] for f in quick_document["findings"]]
    assert codes == list(CHECKS)
    for finding in quick_document["findings"]:
        assert finding["title"] and finding["status"] in ("pass", "warn", "fail", "n/a")
        if finding["status"] in ("warn", "fail"):
            assert finding["explanation"] and finding["remedy"]


def test_probability_outputs_and_nonfinite_are_reliability_failures():
    class Probabilities(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x).softmax(1)

    document = audit_document("digits-mlp-none", quick_config(num_samples=60), Probabilities)
    assert _statuses(document)["probability-outputs"] == "fail"
    assert document["verdict"] == "evaluation unreliable"
