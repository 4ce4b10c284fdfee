"""Ground truth for the red-flag checks: models masked in known ways raise the flags their
mechanism predicts; unmodified zoo models raise none."""

from __future__ import annotations

import json

import pytest
import torch
from audit_helpers import audit_document, quick_config

from analysis.config import AuditConfig, build_suite
from analysis.masked import QuantizedInput, SaturatedLogits, TestTimeDropout, WrongGradient
from analysis.redflags import CHECKS
from checkpoints.train import ZOO_DIR


def _statuses(document: dict) -> dict[str, str]:
    return {f["code"]: f["status"] for f in document["findings"]}


def _fails(document: dict) -> set[str]:
    return {code for code, status in _statuses(document).items() if status == "fail"}


EXPECTED = {
    SaturatedLogits: {
        "vanishing-gradients",
        "black-box-beats-white-box",
        "unbounded-attack-below-100",
    },
    QuantizedInput: {
        "vanishing-gradients",
        "gradient-disagrees-with-finite-differences",
        "black-box-beats-white-box",
    },
    WrongGradient: {"gradient-disagrees-with-finite-differences", "black-box-beats-white-box"},
    TestTimeDropout: {"model-in-train-mode"},
}


@pytest.mark.parametrize("masking", list(EXPECTED), ids=lambda c: c.__name__)
def test_masked_models_raise_their_flags(masking):
    document = audit_document("digits-mlp-dropout", quick_config(num_samples=150), masking)
    fails = _fails(document)
    assert EXPECTED[masking] <= fails, fails
    if masking is TestTimeDropout:
        assert _statuses(document)["stochastic-model"] == "warn"
        assert document["robustness"]["eot_samples"] > 1
        assert document["verdict"] == "evaluation unreliable"
    else:
        assert document["verdict"].startswith("suspected gradient masking")


@pytest.mark.parametrize("name", ["digits-mlp-dropout", "digits-mlp-normout-spatiotemporal"])
def test_unmodified_zoo_models_raise_no_flag_quick(name):
    document = audit_document(name, quick_config(num_samples=150))
    assert not _fails(document)
    assert document["verdict"] == "no sign of gradient masking"


ZOO = sorted(json.loads((ZOO_DIR / "manifest.json").read_text())["checkpoints"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_unmodified_zoo_models_raise_no_flag_standard(name, request):
    if name.startswith("mnist"):
        request.getfixturevalue("data_dir")
    dataset = "digits" if name.startswith("digits") else "mnist"
    config = AuditConfig(suite=build_suite("standard", dataset), flatness=None, num_samples=300)
    document = audit_document(name, config)
    assert not _fails(document), _fails(document)


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
