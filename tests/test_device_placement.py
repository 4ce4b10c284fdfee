"""Every tensor, mask and generator that meets a model's outputs lives on the model's device.

CI has no GPU, so device mixing is caught another way: the model and the data stay on the CPU
while torch's default device is ``meta``. A tensor created without an explicit ``device=``
(and not with ``*_like``) then lands on ``meta`` and raises as soon as it meets a CPU tensor,
and so does reading a number out of it; a generator on the wrong device fails when it draws
for a tensor of another. What passes here passes with the model on a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model
from audit_helpers import quick_config
from torch import nn

from analysis.activations import activation_statistics
from analysis.pipeline import evaluation_set, run_audit
from analysis.probes import probe_model
from attacks import registry
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from core.docfields import encode
from flatness.suite import FlatnessConfig, Measure, measure

CPU = torch.device("cpu")


@contextlib.contextmanager
def meta_default() -> Iterator[None]:
    """Torch's default device is ``meta`` inside, and what it was before afterwards."""
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None if previous == CPU else previous)


@pytest.fixture(autouse=True)
def _default_device_restored() -> Iterator[None]:
    yield
    assert torch.get_default_device() == CPU


def test_the_strategy_catches_a_tensor_without_a_device() -> None:
    x = torch.zeros(3)
    with meta_default(), pytest.raises((RuntimeError, NotImplementedError)):
        float((x + torch.ones(3)).sum())


class _ConvHead(nn.Module):
    """Convolutions with batch norm and channel dropout on the 1×8×8 digits images."""

    def __init__(self, channel_dropout: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout2d(0.2) if channel_dropout else nn.Identity(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
        with torch.no_grad():
            self.features[1].running_mean.uniform_(-0.2, 0.2)
            self.features[1].running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ZOO_MODELS = [
    "digits-mlp-dropout",
    "digits-mlp-qsd",
    "digits-mlp-normout-temporal",
    "digits-mlp-normout-spatial",
    "digits-mlp-normout-spatiotemporal",
    "digits-mlp-normout-temporal-softmax",
]
CONV_MODELS = {"batch-norm-cnn": False, "dropout2d-cnn": True}


@pytest.mark.parametrize("name", ZOO_MODELS + list(CONV_MODELS))
def test_audit_with_flatness(name: str) -> None:
    if name in CONV_MODELS:
        loaded = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt")
        loaded = replace(loaded, model=_ConvHead(CONV_MODELS[name]).eval())
    else:
        loaded = load_checkpoint(ZOO_DIR / f"{name}.pt")
    config = quick_config(num_samples=40, flatness=True)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    with meta_default():
        document = run_audit(loaded, evaluation, config, device=CPU).to_dict()
    # A failing attack is recorded in the document, not raised: look for one.
    norms = document["robustness"]["norms"]
    failed = [
        (attack["label"], attack["messages"])
        for norm in norms
        for attack in norm["attacks"]
        if "failed" in attack["statuses"]
    ]
    assert not failed
    assert not [failure for norm in norms for failure in norm["failures"]]
    assert document["flatness"] is not None


def _attack_cases() -> list[tuple[str, str | None]]:
    cases: list[tuple[str, str | None]] = []
    for kind in registry.list_attacks():
        backends = registry.get(kind).backends
        cases += [(kind, backend) for backend in backends] if len(backends) > 1 else [(kind, None)]
    return cases


SMALL = {
    "pgd": {"num_steps": 3, "num_restarts": 2},
    "pgd-t": {"num_steps": 3, "target_mode": "top", "num_target_classes": 2},
    "square": {"num_queries": 20},
    "noise": {"num_draws": 4},
    "apgd": {"num_steps": 3},
    "autoattack": {"version": "rand"},
}
EPSILONS = {"linf": [0.0, 0.05, 0.2], "l2": [0.0, 0.3, 1.0]}


@pytest.mark.parametrize("stochastic", [False, True], ids=["eval", "stochastic"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("kind", "backend"), _attack_cases())
def test_attack(kind: str, backend: str | None, norm: str, stochastic: bool) -> None:
    attack = registry.get(kind)
    params = dict(SMALL.get(kind, {}))
    if backend is not None:
        params["backend"] = backend
        if backend != "native":
            # The libraries run one restart towards one target per sample.
            params.pop("num_restarts", None)
            if kind == "pgd-t":
                params.update(target_mode="next", num_target_classes=None)
    model = tiny_model()
    x, y = tiny_data(model, n=12)
    generator = torch.Generator().manual_seed(3)
    with meta_default():
        result = attack.function(
            model,
            x,
            y,
            EPSILONS[norm],
            norm=norm,
            stochastic=stochastic,
            generator=generator,
            **params,
        )
        robust = float(result.robust_accuracy[-1])
    assert 0.0 <= robust <= 1.0


@pytest.mark.parametrize("drawn", [False, True], ids=["whole-data", "mini-batches"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_every_flatness_measure(mode: str, drawn: bool) -> None:
    model = _ConvHead(channel_dropout=True).eval()
    x, y = tiny_data(tiny_model(), n=16)
    # Mini-batches of 6 in chunks of 4, and the pictures on samples of their own.
    size = {"minibatch_size": 6} if drawn else {"minibatch_size": None}
    sample = {"sample_size": 10} if drawn else {}
    config = FlatnessConfig(
        measures=tuple(Measure),
        batch_size=4 if drawn else 8,
        mode=mode,
        num_mc_samples=2 if mode == "train" else 1,
        options={
            "fisher_rao_empirical": {**size, "max_draws": 9},
            "fisher_rao_model": {**size, "max_draws": 9},
            "hessian_trace": {**size, "max_probes": 4, "min_probes": 2},
            "hessian_eigenvalues": {"max_iterations": 3},
            "spectral_density": {
                "num_steps": 4,
                "max_runs": 2 if drawn else 1,
                "min_runs": 1,
                "num_grid_points": 20,
                **sample,
            },
            "landscape_1d": {"num_points": 3, **sample},
            "landscape_2d": {"num_points": 3, **sample},
            "epsilon_sharpness": {"num_steps": 2},
        },
    )
    generator = torch.Generator().manual_seed(0)
    with meta_default():
        result = encode(measure(model, x, y, config, generator))
    assert set(result) >= {m.value for m in Measure}


@pytest.mark.parametrize("name", ["digits-mlp-dropout", "digits-mlp-normout-spatiotemporal"])
def test_probes_and_activations(name: str) -> None:
    loaded = load_checkpoint(ZOO_DIR / f"{name}.pt")
    evaluation = evaluation_set(loaded, None, 40, 0)
    generator = torch.Generator().manual_seed(0)
    with meta_default():
        probes = probe_model(
            loaded.model, evaluation.x, evaluation.y, generator, num_samples=16, fd_samples=16
        )
        layers = activation_statistics(loaded.model, evaluation.x, batch_size=16)
    assert probes.nonfinite_logits == 0
    assert layers and all(0.0 <= layer.zero_fraction <= 1.0 for layer in layers)
