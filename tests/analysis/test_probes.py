"""The model probes and the checks that read them, on networks trained here.

Models whose output has no input gradient, NaN outputs, or outputs that depend on the batch
or on chance must be probed without an exception and turned into findings; the probes leave
the model and its inputs as they found them, and their margins and gradient norms match the
closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from probe_helpers import _evidence, _probe, _train, one_thread  # noqa: F401 - autouse
from torch import Tensor, nn

from analysis.probes import probe_model
from analysis.redflags import (
    FindingStatus,
    batch_dependent_outputs,
    gradient_disagrees_with_finite_differences,
    stochastic_model,
    vanishing_gradients,
    verdict,
)
from checkpoints.layers import NormOut

# ------------------------------------------------------------------------------- graph cuts


class GraphCut(nn.Module):
    """A trained network behind an operation that cuts the autograd graph."""

    def __init__(self, network: nn.Module, kind: str) -> None:
        super().__init__()
        self.network = network
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "comparison":
            x = (x > 0.5).float()
        elif self.kind == "detach":
            x = x.detach()
        elif self.kind == "integer-cast":
            x = (x * 255).to(torch.uint8).float() / 255
        elif self.kind == "numpy":
            x = torch.from_numpy(np.round(x.detach().cpu().numpy(), 3)).to(x.device)
        elif self.kind == "detached-output":
            return self.network(x).detach()
        return self.network(x)


@pytest.mark.parametrize(
    "kind", ["comparison", "detach", "integer-cast", "numpy", "detached-output"]
)
def test_a_cut_graph_is_a_finding_not_an_exception(honest, digits, kind):
    _, _, x, y = digits
    probes = _probe(GraphCut(honest["max-pool"], kind), x[:200], y[:200])
    assert not probes.input_gradient_exists and probes.input_gradient_note
    assert probes.clean_zero_gradient_fraction == 1.0
    vanishing = vanishing_gradients(_evidence(probes))
    assert vanishing.status == FindingStatus.FAIL
    assert vanishing.explanation.startswith("the input gradient does not exist")
    fd = gradient_disagrees_with_finite_differences(_evidence(probes))
    assert fd.status == FindingStatus.NOT_APPLICABLE and "does not exist" in fd.explanation
    assert batch_dependent_outputs(_evidence(probes)).status == FindingStatus.PASS


def test_an_existing_gradient_is_not_reported_missing(honest, digits):
    _, _, x, y = digits
    probes = _probe(honest["max-pool"], x[:200], y[:200])
    assert probes.input_gradient_exists and probes.input_gradient_note == ""
    finding = vanishing_gradients(_evidence(probes))
    assert finding.status == FindingStatus.PASS and finding.evidence["input_gradient_exists"]


class NaNForSome(nn.Module):
    """NaN logits for images whose mean brightness is below a threshold (log of a negative)."""

    def __init__(self, network: nn.Module, threshold: float) -> None:
        super().__init__()
        self.network = network
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        brightness = x.flatten(1).mean(1, keepdim=True)
        return self.network(x) + 0 * torch.log(brightness - self.threshold)


def test_nan_outputs_for_some_inputs_are_probed(honest, digits):
    _, _, x, y = digits
    threshold = float(x.flatten(1).mean(1).median())
    model = NaNForSome(honest["max-pool"], threshold)
    with torch.no_grad():
        bad = int(model(x[:300]).isnan().any(1).sum())
    assert 50 < bad < 250  # the oracle: about half the samples give NaN
    probes = _probe(model, x[:300], y[:300], batch_size=100)
    assert probes.nonfinite_logits == bad and probes.nonfinite_gradients > 0
    assert probes.fd_nonfinite > 0 and probes.fd_informative > 0
    assert probes.fd_informative + probes.fd_nonfinite <= 256
    assert not probes.stochastic and probes.batch_differing == 0


# ----------------------------------------------------------------------- batch dependence


class BatchMax(nn.Module):
    """Hidden units divided by their maximum over the batch: deterministic, batch-dependent
    (a NormOut-style temporal normalisation left active at test time)."""

    def __init__(self, network: nn.Sequential) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.network[:2](x)
        peak = hidden.abs().amax(0, keepdim=True).clamp_min(1e-6)
        return self.network[2:](hidden / peak)


class TrainModeNormOut(nn.Module):
    """NormOut with its temporal (batch) maximum left in train mode: stochastic and
    batch-dependent."""

    def __init__(self, network: nn.Sequential) -> None:
        super().__init__()
        self.network = network
        self.normout = NormOut("temporal")

    def train(self, mode: bool = True) -> TrainModeNormOut:
        super().train(mode)
        self.normout.training = True
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.network[2:](self.normout(self.network[:2](x)))


class BatchNormTrainMode(nn.Module):
    """A batch-norm network whose normalisation layers use batch statistics at test time."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def train(self, mode: bool = True) -> BatchNormTrainMode:
        super().train(mode)
        for module in self.network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.training = True
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


def _no_running_stats(network: nn.Module) -> nn.Module:
    """Batch norm that never updates running statistics (so probing changes nothing)."""
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
    return network


def _flat_batch_norm(x: Tensor, y: Tensor) -> nn.Module:
    network = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )
    return _train(network, x, y, epochs=5)


def test_batch_dependent_models_fail(honest, digits):
    x_train, y_train, x, y = digits
    models = {
        "batch-norm-train-mode": BatchNormTrainMode(_no_running_stats(honest["batch-norm"])),
        "batch-max": BatchMax(honest["max-pool"]),
        "flat-batch-norm-train-mode": BatchNormTrainMode(
            _no_running_stats(_flat_batch_norm(x_train, y_train))
        ),
        "normout-temporal-train-mode": TrainModeNormOut(honest["max-pool"]),
    }
    for name, model in models.items():
        probes = _probe(model, x, y, batch_size=256, fd_samples=64)
        finding = batch_dependent_outputs(_evidence(probes))
        assert finding.status == FindingStatus.FAIL and finding.kind != "masking", (name, finding)
        expected = "pair" if name.startswith("flat") else "single"
        assert probes.batch_composition == expected, name
        assert probes.stochastic == name.startswith("normout"), name


def test_honest_models_are_not_batch_dependent(honest, digits):
    _, _, x, y = digits
    for name, network in honest.items():
        probes = _probe(network, x, y, batch_size=256, fd_samples=16)
        finding = batch_dependent_outputs(_evidence(probes))
        assert finding.status == FindingStatus.PASS, (name, finding.explanation)
        assert probes.batch_compared == 64 and probes.batch_max_relative_difference < 1e-5


def test_stochastic_batch_independent_model_passes(honest, digits):
    """Dropout at test time is random but batch-independent: the sign test against the
    variation between repeats must not call it batch-dependent."""

    class TestTimeDropout(nn.Module):
        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: Tensor) -> Tensor:
            return self.network(F.dropout(x, 0.2, training=True))

    _, _, x, y = digits
    probes = _probe(TestTimeDropout(honest["max-pool"]), x, y, num_samples=200, fd_samples=16)
    assert probes.stochastic and probes.batch_grouped_compared >= 190
    assert batch_dependent_outputs(_evidence(probes)).status == FindingStatus.PASS
    assert (
        gradient_disagrees_with_finite_differences(_evidence(probes)).status
        == FindingStatus.NOT_APPLICABLE
    )


class _RandomShift(nn.Module):
    """Adds one random constant to every logit of a row: the logits are random, the decisions
    are not (by construction)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        logits = self.network(x)
        return logits + torch.randn(len(x), 1, device=x.device)


class _HardWiredDropout(nn.Module):
    """Functional dropout on the input whatever the mode: invisible to ``model.training``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(F.dropout(x, 0.3, training=True))


def test_stochastic_model_fails_when_decisions_are_random(honest, digits):
    _, _, x, y = digits
    torch.manual_seed(0)
    probes = _probe(_HardWiredDropout(honest["max-pool"]), x, y, batch_size=256, fd_samples=16)
    finding = stochastic_model(_evidence(probes))
    assert probes.repeat_samples == 256 and probes.prediction_flips > 0
    assert finding.status == FindingStatus.FAIL and finding.kind != "masking", finding
    assert verdict([finding]) == "evaluation unreliable"


def test_stochastic_model_warns_when_only_logits_move(honest, digits):
    _, _, x, y = digits
    probes = _probe(_RandomShift(honest["max-pool"]), x, y, batch_size=256, fd_samples=16)
    finding = stochastic_model(_evidence(probes))
    assert probes.stochastic and probes.prediction_flips == 0
    assert (
        finding.status == FindingStatus.WARN and verdict([finding]) == "no sign of gradient masking"
    )


def test_deterministic_models_are_not_stochastic(honest, digits):
    _, _, x, y = digits
    for name, network in honest.items():
        probes = _probe(network, x, y, batch_size=256, fd_samples=16)
        finding = stochastic_model(_evidence(probes))
        assert finding.status == FindingStatus.PASS and probes.max_repeat_difference == 0, name


def test_probing_restores_the_mode_and_leaves_inputs(honest, digits):
    _, _, x, y = digits
    network = honest["batch-norm"]
    state = {k: v.clone() for k, v in network.state_dict().items()}
    before = x.clone()
    network.train()
    _probe(network, x[:100], y[:100])
    assert network.training
    network.eval()
    assert torch.equal(x, before)
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in state.items())


def test_the_audit_probes_with_its_batch_size(quick_document):
    probes = quick_document["probes"]
    assert probes["batch_size"] == quick_document["provenance"]["config"]["batch_size"]
    assert probes["input_gradient_exists"] and probes["fd_precision"] == "float64"
    codes = {f["code"]: f["status"] for f in quick_document["findings"]}
    assert codes["batch-dependent-outputs"] == "pass"


def test_clean_margins_and_gradient_norms_match_the_closed_form() -> None:
    """For logits W x + b, the margin is read off the logits and the cross-entropy input
    gradient is Wᵀ (softmax - one_hot(y)); with W scaled up the softmax saturates and the
    gradients are exactly zero."""
    torch.manual_seed(0)
    x = torch.rand(40, 1, 2, 3)
    y = torch.randint(0, 4, (40,))
    for scale, saturated in ((1.0, False), (1e4, True)):
        linear = nn.Linear(6, 4).double()
        with torch.no_grad():
            linear.weight.mul_(scale)
        model = nn.Sequential(nn.Flatten(), linear).float()
        probes = probe_model(model, x, y, torch.Generator().manual_seed(0), batch_size=16)
        weight = linear.weight.double().detach()
        bias = linear.bias.double().detach()
        logits = x.flatten(1).double() @ weight.T + bias
        true = logits.gather(1, y[:, None])[:, 0]
        others = logits.scatter(1, y[:, None], -torch.inf).amax(1)
        np.testing.assert_allclose(probes.clean_margins, true - others, rtol=1e-4, atol=1e-3)
        residual = logits.softmax(1) - F.one_hot(y, 4).double()
        expected = (residual @ weight).norm(dim=1)
        norms = np.array(probes.clean_gradient_norms)
        assert len(norms) == 40
        if saturated:
            # float32 rounds every other class' softmax to 0 beyond a margin of about 103.
            big = (true - others).numpy() > 110
            assert big.sum() > 5 and (norms[big] == 0).all()
            # Misclassified samples keep a gradient: the closed form, within float32.
            wrong = (true - others).numpy() < 0
            np.testing.assert_allclose(norms[wrong], expected.numpy()[wrong], rtol=1e-4)
        else:
            np.testing.assert_allclose(norms, expected, rtol=1e-4)
            assert (norms > 0).all()


def test_no_input_gradient_leaves_no_norms(honest, digits) -> None:
    class Cut(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor) -> Tensor:
            return self.inner((x > 0.5).float())

    _, _, x, y = digits
    network = next(iter(honest.values()))
    probes = probe_model(Cut(network), x[:32], y[:32], torch.Generator().manual_seed(0))
    assert probes.clean_gradient_norms == () and len(probes.clean_margins) == 32
