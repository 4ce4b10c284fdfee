"""A model that refuses some batch sizes is a quirk, not a crash.

TorchScript models raise ``torch.jit.Error``, which is not a ``RuntimeError``. Where the audit
chooses the batch size (the probes' samples alone, the predictions on stored examples) a
refusal is worked around; where it does not (the attacks' batches) it is recorded as a failed
attack. Either way the audit finishes, exits 0 and leaves no ``.partial`` folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from analysis.resume import PARTIAL
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR

ROOT = Path(__file__).resolve().parents[2]


class _Refuses(nn.Module):
    """``net``, raising on a batch of exactly ``size`` samples."""

    def __init__(self, net: nn.Module, size: int) -> None:
        super().__init__()
        self.net = net
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == self.size:
            raise RuntimeError("this model refuses this batch size")
        return self.net(x)


@pytest.fixture(scope="module")
def traced() -> torch.jit.ScriptModule:
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt")
    return torch.jit.trace(loaded.model, torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("size", [1, 3])
def test_a_scripted_model_refusing_a_batch_size_is_audited(traced, tmp_path, size):
    path = tmp_path / f"refuses{size}.pt"
    torch.jit.save(torch.jit.script(_Refuses(traced, size)), path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.audit",
            str(path),
            "--trust-checkpoint",
            "--dataset",
            "digits",
            "--preset",
            "quick",
            "--no-flatness",
            "--num-samples",
            "40",
            "--no-report",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / path.stem
    assert not (folder / PARTIAL).exists()
    document = json.loads((folder / "audit.json").read_text())
    probes = document["probes"]
    if size == 1:
        # Compared in pairs instead of alone.
        assert probes["batch_composition"] == "pair"
        assert probes["batch_compared"] > 0
    else:
        assert probes["batch_composition"] == "single"
        # Three examples per attack and epsilon: predicted despite the refused batch of three.
        examples = [e for n in document["robustness"]["norms"] for e in n["examples"]]
        assert examples and all(e["predicted"] is not None for e in examples)
        assert any(e["fooled"] and e["predicted"] != e["label"] for e in examples)


class _RaisesOnGrad(nn.Module):
    """``net``, raising (a message of several lines) on any input that requires grad."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            raise RuntimeError("this model takes no gradients\n  (a second line of detail)")
        return self.net(x)


class _RaisesNearData(nn.Module):
    """``net``, raising on any row more than 0.001 (L∞) from every row of ``clean``: the
    probes' finite differences step farther than that."""

    def __init__(self, net: nn.Module, clean: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("clean", clean.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        distance = (x.flatten(1)[:, None, :] - self.clean[None]).abs().amax(2).amin(1)
        if bool((distance > 0.001).any()):
            raise ValueError("input off the data\n  (a second line of detail)")
        return self.net(x)


@pytest.mark.parametrize("raising", ["on-grad", "near-data"])
def test_a_model_raising_inside_a_probe_is_recorded_and_audited(raising):
    """The probe the model raised in is not measured, its finding says so with the error, and
    the audit goes on (the attacks' failures are attack-failed's)."""
    from analysis import audit_model
    from checkpoints.datasets import load_dataset

    net = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt").model
    data = load_dataset("digits", "test")
    x, y = data.x[:40], data.y[:40]
    model = _RaisesOnGrad(net) if raising == "on-grad" else _RaisesNearData(net, x)
    result = audit_model(model, x, y, preset="quick", flatness=False, progress=False)
    findings = {f.code: f for f in result.findings}
    fd = findings["gradient-disagrees-with-finite-differences"]
    vanishing = findings["vanishing-gradients"]
    assert fd.status == "n/a" and "not measur" in fd.explanation
    if raising == "on-grad":
        error = "RuntimeError: this model takes no gradients"
        assert vanishing.status == "n/a", vanishing
        assert vanishing.explanation == (
            f"input gradient not measurable: the model raised {error} when its input requires grad"
        )
        assert result.probes is not None and result.probes.input_gradient_error == error
    else:
        error = "ValueError: input off the data"
        assert vanishing.status == "pass", vanishing
    assert f"the model raised {error}" in fd.explanation, fd.explanation
    assert "second line" not in fd.explanation
    assert findings["attack-failed"].status == "fail"


def test_a_model_refusing_the_whole_set_as_one_batch_is_audited_sample_by_sample():
    """The clean pass, the probes, the activation statistics and the flatness batch are the
    audit's choice: a model refusing a batch of all 40 samples is evaluated one sample at a
    time there (the same clean accuracy as the model that takes any batch), the attacks that
    ran on that batch are failed runs, and flatness, whose passes the model also refuses, is
    said not measured with the error instead of crashing the audit."""
    from analysis import audit_model
    from checkpoints.datasets import load_dataset

    net = load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt").model
    data = load_dataset("digits", "test")
    x, y = data.x[:40], data.y[:40]
    options = dict(preset="quick", progress=False, seed=3)
    honest = audit_model(net, x, y, flatness=False, **options)
    result = audit_model(_Refuses(net, 40), x, y, flatness=True, **options)
    assert result.clean_accuracy.count == honest.clean_accuracy.count
    assert result.verdict.startswith("evaluation incomplete")
    assert result.flatness is None
    assert result.flatness_note == (
        "not measured: the model raised RuntimeError in a flatness pass (this model refuses "
        "this batch size)"
    )
    statistics = {layer.name: layer for layer in result.activations}
    assert statistics and all(layer.num_elements > 0 for layer in statistics.values())
