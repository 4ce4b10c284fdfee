"""The finite-difference check of the model probes, on networks trained here.

Honest networks of the architectures users bring (max pooling, batch norm in eval mode,
residual connections, smooth activations), trained briefly with plain cross-entropy, must pass
the finite-difference check with room to spare; networks whose backward pass is wrong by
construction (written here, independently of ``analysis.masked``) must fail it.
"""

from __future__ import annotations

import pytest
import torch
from probe_helpers import (  # noqa: F401 - one_thread is an autouse fixture
    ARCHITECTURES,
    _build,
    _evidence,
    _probe,
    _train,
    one_thread,
)
from torch import Tensor, nn

from analysis.redflags import (
    FD_MATERIAL_RATE,
    FD_TOLERATED_RATE,
    FindingStatus,
    gradient_disagrees_with_finite_differences,
)
from checkpoints.datasets import load_dataset

# --------------------------------------------------------------- wrong backward passes, here


class _SignFlip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return -grad


class _Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return 3 * grad


class _Random(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return torch.randn_like(grad) * grad.norm() / grad.numel() ** 0.5


class _StraightThrough(torch.autograd.Function):
    """Rounding to 8 grey levels in the forward pass, the identity's gradient backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.round(x * 7) / 7

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class AfterFirstLayer(nn.Module):
    """``network`` with ``function`` applied after its first module (a hidden layer)."""

    def __init__(self, network: nn.Sequential, function: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.network = network
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.network[0](x)
        return self.network[1:](self.function.apply(hidden))


class OnInput(nn.Module):
    def __init__(self, network: nn.Module, function: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.network = network
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.network(self.function.apply(x))


class Float32Only(nn.Module):
    """Casts its input to float32: the float64 copy fails, the probe falls back."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x.float())


# ---------------------------------------------------------------- finite differences: honest


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_honest_networks_pass_with_room_at_1000_samples(honest, digits, name):
    _, _, x, y = digits
    probes = _probe(honest[name], x, y, fd_samples=1000)
    finding = gradient_disagrees_with_finite_differences(_evidence(probes))
    assert probes.fd_precision == "float64" and probes.fd_samples == 1000
    assert probes.fd_informative >= 990
    assert finding.status == FindingStatus.PASS, finding.explanation
    # Room to spare: the disagreeing share stays below the tolerated rate, a fifth of the
    # material rate at which the check fails.
    assert probes.fd_disagreement_fraction < FD_TOLERATED_RATE, finding.explanation


@pytest.fixture(scope="module")
def mnist(one_thread, data_dir) -> tuple[dict[str, nn.Module], Tensor, Tensor]:  # noqa: F811
    """Each architecture trained for three epochs on 4000 MNIST images, and 1000 test images."""
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    x, y = train.x[:4000], train.y[:4000]
    networks = {name: _train(_build(name, 28), x, y, epochs=3) for name in ARCHITECTURES}
    return networks, test.x[:1000], test.y[:1000]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_honest_mnist_networks_pass_with_room_at_1000_samples(mnist, name):
    """The networks users bring, at MNIST's size: the earlier single-step float32 check failed
    honest max-pool CNNs here with 11-13 % disagreeing pairs."""
    networks, x, y = mnist
    with torch.no_grad():
        assert float((networks[name](x).argmax(1) == y).double().mean()) > 0.8
    probes = _probe(networks[name], x, y, fd_samples=1000)
    finding = gradient_disagrees_with_finite_differences(_evidence(probes))
    assert finding.status == FindingStatus.PASS, finding.explanation
    assert probes.fd_informative >= 990
    assert probes.fd_disagreement_fraction < FD_TOLERATED_RATE, finding.explanation
    wrong = _probe(AfterFirstLayer(networks[name], _SignFlip), x, y)
    assert gradient_disagrees_with_finite_differences(_evidence(wrong)).status == FindingStatus.FAIL


def test_honest_network_passes_in_float32(honest, digits):
    _, _, x, y = digits
    probes = _probe(Float32Only(honest["max-pool"]), x, y, fd_samples=1000)
    assert probes.fd_precision == "float32" and "float64" in probes.fd_note
    assert probes.fd_disagreement_fraction < FD_TOLERATED_RATE
    assert (
        gradient_disagrees_with_finite_differences(_evidence(probes)).status == FindingStatus.PASS
    )


def test_torchscript_models_run_in_float64(honest, digits):
    _, _, x, y = digits
    network = honest["max-pool"]
    for scripted in (torch.jit.script(network), torch.jit.trace(network, x[:4])):
        probes = _probe(scripted, x, y)
        assert probes.fd_precision == "float64" and probes.fd_disagreeing == 0


def test_disagreement_of_a_kinked_network_shrinks_with_the_step(honest, digits):
    """ReLU and max-pool kinks inside the largest step show as disagreement that vanishes at
    smaller steps, the signature the check relies on."""
    _, _, x, y = digits
    probes = _probe(honest["max-pool"], x, y, fd_samples=1000, fd_steps=(3e-2, 1e-3, 1e-5))
    largest, _, smallest = probes.fd_step_disagreement
    assert largest > smallest and probes.fd_disagreeing <= 0.01 * probes.fd_informative


# ----------------------------------------------------------- finite differences: wrong ones


@pytest.mark.parametrize(
    "function, ratio",
    [(_SignFlip, -1.0), (_Scaled, 1 / 3), (_Random, None)],
    ids=["sign-flip", "scaled", "random"],
)
@pytest.mark.parametrize("name", ["max-pool", "residual", "gelu-softplus"])
def test_a_layer_with_a_wrong_backward_pass_fails(honest, digits, name, function, ratio):
    _, _, x, y = digits
    probes = _probe(AfterFirstLayer(honest[name], function), x, y)
    finding = gradient_disagrees_with_finite_differences(_evidence(probes))
    assert finding.status == FindingStatus.FAIL, finding.explanation
    assert probes.fd_disagreement_fraction > 0.5
    if ratio is not None:
        assert probes.fd_median_ratio == pytest.approx(ratio, rel=1e-3)


def test_straight_through_quantisation_fails(honest, digits):
    _, _, x, y = digits
    probes = _probe(OnInput(honest["max-pool"], _StraightThrough), x, y)
    finding = gradient_disagrees_with_finite_differences(_evidence(probes))
    assert finding.status == FindingStatus.FAIL, finding.explanation
    assert probes.fd_median_ratio == pytest.approx(0.0, abs=1e-6)  # the function is flat


def test_wrong_backward_pass_fails_in_float32(honest, digits):
    _, _, x, y = digits
    probes = _probe(Float32Only(AfterFirstLayer(honest["max-pool"], _SignFlip)), x, y)
    assert probes.fd_precision == "float32"
    assert (
        gradient_disagrees_with_finite_differences(_evidence(probes)).status == FindingStatus.FAIL
    )


def test_the_check_grades_by_an_exact_binomial_test():
    """p-values against scipy's exact binomial test: a share that is neither significant nor
    material passes, one that is only significant warns, one that is both fails."""
    from dataclasses import replace

    from scipy.stats import binomtest

    base = _probe(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), *_tiny_data())
    assert base.fd_informative == 16
    for disagreeing, pairs, expected in [
        (5, 256, FindingStatus.PASS),
        (8, 256, FindingStatus.WARN),
        (13, 256, FindingStatus.FAIL),
    ]:
        probes = replace(base, fd_disagreeing=disagreeing, fd_informative=pairs)
        finding = gradient_disagrees_with_finite_differences(_evidence(probes))
        p_value = binomtest(disagreeing, pairs, FD_TOLERATED_RATE, alternative="greater").pvalue
        assert finding.evidence["p_value"] == pytest.approx(p_value, rel=1e-9)
        significant, material = p_value < 0.01, disagreeing / pairs >= FD_MATERIAL_RATE
        assert (significant and material) == (expected is FindingStatus.FAIL)
        assert (significant != material) == (expected is FindingStatus.WARN)
        assert finding.status == expected


def _tiny_data(count: int = 16) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(count, 1, 8, 8, generator=generator), torch.arange(count) % 10
