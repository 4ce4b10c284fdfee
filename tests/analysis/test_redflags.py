"""Ground truth for the red-flag checks: models masked in known ways raise the flags their
mechanism predicts; unmodified zoo models raise none. Both claims are first confirmed by
measurements made without the audit and without this project's attacks: a plain autograd
count of zero gradients, and torchattacks' PGD-CE against pyautoattack's AutoAttack."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from audit_helpers import audit_document, quick_config
from family_reference import paired_bound, reference_attacks

from analysis.config import AuditConfig, build_suite
from analysis.masked import DropoutAtTest, QuantizedInput, SaturatedLogits, WrongGradient
from analysis.pipeline import evaluation_set
from analysis.redflags import CHECK_FUNCTIONS
from analysis.summary import summary_lines
from checkpoints import load_checkpoint, save_checkpoint
from checkpoints.train import MASKED_ZOO, ZOO_DIR, train
from checkpoints.train import ZOO as ZOO_CONFIGS
from core.document import AuditResult


@pytest.fixture(scope="session")
def reference_cache(request) -> Path:
    """AutoAttack is expensive: its per-sample results are cached in pytest's cache."""
    return Path(request.config.cache.mkdir("validation-family"))


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
        assert _statuses(document)["stochastic-model"] == "fail"
        assert document["robustness"]["eot_samples"] > 1
        assert document["verdict"] == "evaluation unreliable"
        # AutoAttack's rand version closes the chain: EOT APGD-CE and APGD-DLR over 20 passes.
        for norm in document["robustness"]["norms"]:
            closing = [(a["label"], a["params"]) for a in norm["attacks"][-2:]]
            assert [label for label, _ in closing] == ["eot-apgd-ce", "eot-apgd-dlr"]
            assert all(params["eot_samples"] == 20 for _, params in closing)
        # The summary says how many passes each attack averaged.
        result = AuditResult.from_dict(json.loads(json.dumps(document)))
        eot = [line for line in summary_lines(Path("m.pt"), result) if "EOT, forward" in line]
        assert len(eot) == len(document["robustness"]["norms"])
        assert all(line.endswith("; 20 (eot-apgd-ce, eot-apgd-dlr)") for line in eot), eot
        assert all(": 8 (pgd-ce, pgd-t, pgd-cw, fgsm)" in line for line in eot), eot
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


def _references(path, config: AuditConfig, cache: Path) -> list:
    """torchattacks' PGD-CE and pyautoattack's AutoAttack on the audit's samples, one per norm
    and epsilon of the suite, cached by the checkpoint's sha256."""
    loaded = load_checkpoint(path)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    return [
        reference_attacks(
            loaded.model, evaluation.x, evaluation.y, norm.value, epsilon, cache, loaded.sha256
        )
        for norm, epsilons in config.suite.epsilons.items()
        for epsilon in epsilons
    ]


def _pgd_ce_overstates(path, config: AuditConfig, cache: Path) -> bool:
    """Independent ground truth, from other people's code only, that PGD-CE overstates
    robustness: on the audit's samples, pyautoattack's standard AutoAttack breaks materially
    (at least 5, and a fifth of the samples PGD-CE left robust) and significantly (exact
    McNemar, alpha 0.01) more than torchattacks' PGD-CE with 100 steps of 0.1 epsilon, under
    some norm of the suite."""
    return any(reference.overstated for reference in _references(path, config, cache))


def _check_unmasked(path, config: AuditConfig, cache: Path, bound: bool = False) -> None:
    """Independent measurements find no masking, and the audit raises no red flag. With
    ``bound``, the audit's reliable robust accuracy is also at most AutoAttack's plus the
    paired 95 % interval on the same samples."""
    assert _saturated_fraction(path, config.num_samples) <= 0.05, path
    assert not _pgd_ce_overstates(path, config, cache), path
    document = audit_document(path, config)
    assert not _fails(document), (path, _fails(document))
    assert document["verdict"] == "no sign of gradient masking"
    if bound:
        robust = {
            (n["norm"], epsilon): torch.tensor([c == "1" for c in row])
            for n in document["robustness"]["norms"]
            for epsilon, row in zip(n["epsilons"], n["robust"], strict=True)
        }
        for reference in _references(path, config, cache):
            audit = robust[reference.norm, reference.epsilon]
            measured = paired_bound(audit, reference.autoattack_robust)
            assert measured.holds, (path, reference.norm, measured)


def _check_masked(path, config: AuditConfig, cache: Path) -> None:
    """Independent measurements show that PGD-CE overstates robustness, and the audit raises
    red flags; where the float32 softmax saturates outright, the vanishing-gradient one."""
    assert _pgd_ce_overstates(path, config, cache), path
    document = audit_document(path, config)
    assert document["verdict"].startswith("suspected gradient masking"), _fails(document)
    if _saturated_fraction(path, config.num_samples) > 0.05:
        assert "vanishing-gradients" in _fails(document), (path, _fails(document))


def _standard(dataset: str) -> AuditConfig:
    return AuditConfig(suite=build_suite("standard", dataset), flatness=None, num_samples=300)


@pytest.mark.parametrize("name", ["digits-mlp-dropout", "digits-mlp-normout-spatiotemporal"])
def test_zoo_models_are_not_masked_and_raise_no_flag_quick(name, reference_cache):
    _check_unmasked(ZOO_DIR / f"{name}.pt", quick_config(num_samples=150), reference_cache)


MANIFEST = sorted(json.loads((ZOO_DIR / "manifest.json").read_text())["checkpoints"])
ZOO = [name for name in MANIFEST if name not in MASKED_ZOO]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_are_not_masked_and_raise_no_flag_standard(name, request, reference_cache):
    if name.startswith("mnist"):
        request.getfixturevalue("data_dir")
    config = _standard(ZOO_CONFIGS[name].dataset)
    _check_unmasked(ZOO_DIR / f"{name}.pt", config, reference_cache, bound=True)


def _plain_cross_entropy(name: str, directory) -> Path:
    """The zoo entry ``name`` trained with plain cross-entropy (no label smoothing), as the
    NormOut reference code trains: NormOut keeps few units in training and does not rescale,
    so its eval-mode logits are inflated and the float32 softmax saturates."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng():
        network, spec = train(replace(ZOO_CONFIGS[name], label_smoothing=0.0))
    torch.use_deterministic_algorithms(deterministic)
    return save_checkpoint(directory / f"{name}-plain-ce.pt", network, spec)


def test_the_zoo_has_its_masked_counterexample_and_it_is_the_plain_recipe():
    assert {"digits-mlp-normout-spatiotemporal-ce"} == MASKED_ZOO
    masked = ZOO_CONFIGS["digits-mlp-normout-spatiotemporal-ce"]
    fixed = ZOO_CONFIGS["digits-mlp-normout-spatiotemporal"]
    assert masked == replace(fixed, label_smoothing=0.0) and fixed.label_smoothing > 0


@pytest.mark.parametrize("name", sorted(MASKED_ZOO))
def test_normout_trained_with_plain_cross_entropy_is_flagged_quick(name, reference_cache):
    _check_masked(ZOO_DIR / f"{name}.pt", quick_config(num_samples=150), reference_cache)


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
def test_normout_trained_with_plain_cross_entropy_is_flagged_standard(
    name, tmp_path, request, reference_cache
):
    if name.startswith("mnist"):
        request.getfixturevalue("data_dir")
    committed = ZOO_DIR / f"{name}-ce.pt"
    path = committed if committed.is_file() else _plain_cross_entropy(name, tmp_path)
    _check_masked(path, _standard(ZOO_CONFIGS[name].dataset), reference_cache)


def test_every_check_returns_a_documented_finding(quick_document):
    codes = [f["code"] for f in quick_document["findings"]]
    assert codes == list(CHECK_FUNCTIONS)
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
