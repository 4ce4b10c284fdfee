"""The NormOut thesis' VGG-16-BN (NormOut spatiotemporal at flat indices 48 and 51), written in
both of the NormOut code's checkpoint layouts, audited end to end with ``--preset thesis`` on
CIFAR-10 images."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from vgg_reference import LAYOUTS, NORMOUT_POSITIONS, reference_vgg, write_vgg_checkpoint

from analysis.pipeline import select_samples
from checkpoints.datasets import load_dataset
from checkpoints.spec import NORMOUT_CIFAR10_MEAN, NORMOUT_CIFAR10_STD
from commands.audit import main

NUM_SAMPLES = 4
SEED = 0
# The thesis' setting: L∞ 8/255 and L2 0.5, PGD for 10 steps of 3/8 epsilon (3/255 under L∞).
THESIS_EPSILONS = {"linf": [8 / 255], "l2": [0.5]}
# Square's 5000 queries on one sample that PGD leaves robust take minutes for a VGG on a CPU,
# and every attack costs tens of seconds, so the fast test runs PGD-CE (with the preset's
# sweep) and FGSM, on the flat layout (the other one's loading is tested in test_format); the
# slow one runs every attack on both.
FAST_ATTACKS = ("pgd-ce", "fgsm")
THESIS_ATTACKS = ("pgd-ce", "pgd-t", "pgd-cw", "fgsm", "noise", "square")
# The names of the NormOut layers in the loaded model (ours wraps the flat Sequential as `net`).
LAYER_NAMES = [f"net.{position}" for position in NORMOUT_POSITIONS]


def _normalise(x: Tensor) -> Tensor:
    mean = torch.tensor(NORMOUT_CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(NORMOUT_CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _briefly_trained(
    layout: str, hidden: int, x: Tensor, y: Tensor, calibration: Tensor
) -> tuple[nn.Module, list[nn.Module]]:
    """The reference VGG with batch-norm statistics of real images, trained in eval mode until
    it classifies ``x`` correctly, so that the attacks have samples to attack."""
    model, layers = reference_vgg(layout, hidden)
    # With the random running statistics the features barely depend on the image.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(_normalise(calibration))
    model.eval()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(50):
        logits = model(_normalise(x))
        if bool((logits.argmax(dim=1) == y).all()):
            return model, layers
        optimiser.zero_grad()
        nn.functional.cross_entropy(logits, y).backward()
        optimiser.step()
    raise AssertionError("the reference VGG did not learn the evaluation images in 50 steps")


def _input_statistics(layers: list[nn.Module], model: nn.Module, x: Tensor) -> dict[str, dict]:
    """Mean, std, max and zero fraction of the inputs of the layers at NORMOUT_POSITIONS."""
    inputs: dict[str, Tensor] = {}
    handles = [
        layers[position].register_forward_pre_hook(
            lambda _module, args, name=name: inputs.__setitem__(name, args[0].double())
        )
        for position, name in zip(NORMOUT_POSITIONS, LAYER_NAMES, strict=True)
    ]
    try:
        with torch.no_grad():
            model(_normalise(x))
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: {
            "mean": float(values.mean()),
            "std": float(values.std(correction=0)),
            "max": float(values.max()),
            "zero_fraction": float((values == 0).double().mean()),
            "num_elements": values.numel(),
        }
        for name, values in inputs.items()
    }


def _audit_thesis_vgg(
    tmp_path: Path, data_dir: Path, layout: str, hidden: int, extra: list[str]
) -> tuple[dict, str, dict[str, dict]]:
    """Write the briefly trained VGG in ``layout``, audit it, and return its document, its
    report and the independently computed statistics of the NormOut layers' inputs."""
    test = load_dataset("cifar10", "test", str(data_dir / "cifar10"))
    indices = select_samples(len(test), NUM_SAMPLES, SEED)
    x, y = test.x[indices], test.y[indices]
    model, layers = _briefly_trained(layout, hidden, x, y, test.x[:64])
    write_vgg_checkpoint(tmp_path / "vgg.ckpt", model, layout, hidden)
    argv = [
        str(tmp_path / "vgg.ckpt"),
        "--preset",
        "thesis",
        "--data",
        str(data_dir / "cifar10"),
        "--num-samples",
        str(NUM_SAMPLES),
        "--seed",
        str(SEED),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        *extra,
    ]
    assert main(argv) == 0
    document = json.loads((tmp_path / "out" / "vgg" / "audit.json").read_text())
    report = (tmp_path / "out" / "vgg" / "report.html").read_text()
    assert document["evaluation"]["indices"] == indices.tolist()
    return document, report, _input_statistics(layers, model, x)


def _check_thesis_document(
    document: dict, report: str, expected: dict[str, dict], layout: str, attacks: tuple[str, ...]
) -> None:
    source_format = {"flat": "lightning", "torchvision": "torchvision-vgg"}[layout]
    assert document["checkpoint"]["source_format"] == source_format
    assert document["checkpoint"]["layer"] == {
        "kind": "normout",
        "params": {"method": "spatiotemporal"},
        "positions": list(NORMOUT_POSITIONS),
    }
    assert document["clean_accuracy"]["count"] == NUM_SAMPLES
    suite = document["provenance"]["config"]["suite"]
    assert suite["name"] == "thesis"
    # 8/255 survives the JSON round trip exactly.
    assert suite["epsilons"] == THESIS_EPSILONS
    for attack in suite["attacks"]:
        if attack["kind"] in ("pgd", "pgd-t"):
            assert attack["params"]["num_steps"] == 10
            assert attack["params"]["rel_step_size"] == pytest.approx(3 / 8)
    norms = document["robustness"]["norms"]
    assert {n["norm"]: n["epsilons"] for n in norms} == THESIS_EPSILONS
    for norm in norms:
        assert tuple(a["label"] for a in norm["attacks"]) == attacks
        assert all(a["status"] == "ok" for a in norm["attacks"])

    activations = document["activations"]
    assert [entry["name"] for entry in activations] == LAYER_NAMES
    for entry in activations:
        assert entry["kind"] == "normout" and "spatiotemporal" in entry["description"]
        reference = expected[entry["name"]]
        assert entry["num_elements"] == reference["num_elements"] == NUM_SAMPLES * 256
        for key in ("mean", "std", "max", "zero_fraction"):
            assert math.isfinite(entry[key])
        assert entry["mean"] > 0 and entry["std"] > 0 and entry["max"] > 0
        for key in ("mean", "std", "max"):
            assert entry[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key
        # Our model and the reference differ in float rounding, which can move a value that is
        # almost zero across the ReLU: at most one element.
        assert entry["zero_fraction"] == pytest.approx(
            reference["zero_fraction"], abs=1 / entry["num_elements"]
        )

    section = re.search(r'<section id="activations".*?</section>', report, re.DOTALL)
    assert section is not None
    rows = re.findall(r'<th scope="row">([^<]*)</th>', section.group(0))
    assert rows == LAYER_NAMES


@pytest.mark.data
@pytest.mark.parametrize(
    "layout", [p if p == "flat" else pytest.param(p, marks=pytest.mark.slow) for p in LAYOUTS]
)
def test_thesis_vgg_audits_end_to_end(tmp_path, data_dir, layout):
    # Flatness with the thesis budgets takes minutes here: the slow test measures it.
    extra = ["--no-flatness", "--attacks", ",".join(FAST_ATTACKS)]
    document, report, expected = _audit_thesis_vgg(tmp_path, data_dir, layout, 256, extra)
    _check_thesis_document(document, report, expected, layout, FAST_ATTACKS)
    assert document["flatness"] is None


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_size_thesis_vgg_audits_end_to_end_with_flatness(tmp_path, data_dir, layout):
    extra = ["--flatness-samples", str(NUM_SAMPLES)]
    document, report, expected = _audit_thesis_vgg(tmp_path, data_dir, layout, 4096, extra)
    _check_thesis_document(document, report, expected, layout, THESIS_ATTACKS)
    flatness = document["flatness"]
    for measured in (flatness, flatness["active_layers"]):
        for key in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace"):
            assert math.isfinite(measured[key]["value"]), key
        assert all(math.isfinite(v) for v in measured["hessian_eigenvalues"]["eigenvalues"])
