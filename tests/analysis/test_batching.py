"""``--batch-size`` bounds memory and changes no result; out of memory halves it."""

from __future__ import annotations

import json

import pytest
import torch

import analysis.batching as batching
from analysis.batching import attack_batch, flatness_batch, measure_fitting, parse_batch_size
from checkpoints.train import ZOO_DIR
from commands.audit import main
from core.docfields import encode
from flatness import FlatnessConfig, measure
from torchutil import chosen_batch_size, make_generator


def _audit(tmp_path, batch_size: str) -> dict:
    out = tmp_path / batch_size
    argv = [str(ZOO_DIR / "digits-mlp-dropout.pt"), "--preset", "quick", "--num-samples", "32"]
    argv += ["--flatness-samples", "16", "--batch-size", batch_size, "--out", str(out)]
    assert main([*argv, "--quiet", "--no-report"]) == 0
    return json.loads((out / "digits-mlp-dropout" / "audit.json").read_text())


def test_results_do_not_depend_on_the_batch_size(tmp_path):
    """Chunks of 5 against the measured choice (the whole batch for this small MLP): every
    success, robust accuracy, finding and the eval-mode flatness are the same; examples and
    margins up to float32 rounding. (The flatness with dropout active draws its masks per
    batch, so it agrees only within its standard errors: not compared here.)"""
    auto, five = _audit(tmp_path, "auto"), _audit(tmp_path, "5")
    assert auto["provenance"]["batch_sizes"]["attacks"]["how"] == "limit"
    assert five["provenance"]["batch_sizes"]["attacks"] == {
        "size": 5,
        "how": "fixed",
        "per_sample_bytes": None,
        "fixed_bytes": None,
        "available_bytes": None,
        "halvings": 0,
    }
    assert five["provenance"]["batch_sizes"]["flatness"]["size"] == 5
    assert auto["clean_correct"] == five["clean_correct"]
    for a, b in zip(auto["robustness"]["norms"], five["robustness"]["norms"], strict=True):
        assert a["reliable_robust_accuracy"] == b["reliable_robust_accuracy"]
        for x, y in zip(a["attacks"], b["attacks"], strict=True):
            assert (x["label"], x["success"], x["queries"]) == (
                y["label"],
                y["success"],
                y["queries"],
            )
    assert [(f["code"], f["status"]) for f in auto["findings"]] == [
        (f["code"], f["status"]) for f in five["findings"]
    ]
    assert auto["verdict"] == five["verdict"]
    for name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace"):
        a, b = auto["flatness"][name], five["flatness"][name]
        assert a["value"] == pytest.approx(b["value"], rel=1e-4)
        assert a["stderr"] == pytest.approx(b["stderr"], rel=1e-3)


def test_flatness_out_of_memory_halves_and_starts_again(monkeypatch):
    """A device that holds 6 samples per pass: 24 → 12 → 6, and the result is that of a
    batch of 6 from the start."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    config = FlatnessConfig(measures=("fisher_rao_model", "hessian_trace"), batch_size=24)

    def small_memory(model, x, y, config, generator, memo=None):
        if config.batch_size > 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return measure(model, x, y, config, generator)

    monkeypatch.setattr(batching, "measure", small_memory)
    result, choice = measure_fitting(model, x, y, config, 3, chosen_batch_size(24, "estimated"))
    assert (choice.size, choice.halvings) == (6, 2)
    reference = measure(
        model, x, y, FlatnessConfig(config.measures, batch_size=6), make_generator(3)
    )
    assert encode(result) == encode(reference)


def test_choices_respect_the_flag_and_the_limits():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(30, 1, 4, 4), torch.randint(0, 3, (30,))
    assert attack_batch(model, x, y, 7, 500) == chosen_batch_size(7, "fixed")
    assert attack_batch(model, x, y, 900, 500) == chosen_batch_size(500, "fixed")
    assert flatness_batch(model, x, y, 900, 30) == chosen_batch_size(30, "fixed")
    measured = flatness_batch(model, x, y, None, 1000)
    assert measured.size == batching.FLATNESS_BATCH_LIMIT and measured.how in (
        "limit",
        "unmeasured",
    )
    assert (parse_batch_size("auto"), parse_batch_size("64")) == (None, 64)
    for bad in ("0", "-3", "big", "1.5"):
        with pytest.raises(ValueError, match="auto or a positive integer"):
            parse_batch_size(bad)


class _AlwaysTraining(torch.nn.Module):
    """A module that stays in training mode whatever ``eval()`` asks."""

    def train(self, mode: bool = True) -> _AlwaysTraining:
        return super().train(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_probes_and_activations_name_layers_as_the_model_does():
    """The audit evaluates the model through its chunking wrapper; what it names (modules left
    in training mode, the dropout-family layers) is named as in the model itself."""
    from analysis.activations import activation_statistics
    from analysis.probes import probe_model
    from attacks import ChunkedModel
    from checkpoints.layers import NormOut

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(16, 8),
        NormOut("spatial"),
        _AlwaysTraining(),
        torch.nn.Linear(8, 3),
    )
    x, y = torch.rand(12, 1, 4, 4), torch.randint(0, 3, (12,))
    chunked = ChunkedModel(model, 5)
    probes = probe_model(chunked, x, y, make_generator(0), bounds=(0.0, 1.0), batch_size=12)
    assert probes.train_mode_modules == ("3",)
    assert [a.name for a in activation_statistics(model, x, 5)] == ["2"]
