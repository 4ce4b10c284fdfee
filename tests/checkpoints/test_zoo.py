"""The example zoo: complete, small, and every checkpoint reproduces its recorded accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from checkpoints import load_checkpoint
from checkpoints.datasets import load_dataset
from checkpoints.format import file_sha256, weights_sha256
from checkpoints.train import ZOO, ZOO_DIR, evaluate_accuracy, train

MANIFEST = json.loads((ZOO_DIR / "manifest.json").read_text())["checkpoints"]


def test_zoo_is_complete_and_small():
    assert set(MANIFEST) == set(ZOO)
    assert {
        "digits-mlp-none",
        "digits-mlp-dropout",
        "digits-mlp-qsd",
        "digits-mlp-normout-temporal",
        "digits-mlp-normout-spatial",
        "digits-mlp-normout-spatiotemporal",
        "digits-mlp-normout-spatiotemporal-ce",
        "digits-mlp-normout-temporal-softmax",
        "mnist-lenet5-dropout",
        "mnist-lenet5-qsd",
        "mnist-lenet5-normout-spatiotemporal",
    } <= set(MANIFEST)
    total = sum(f.stat().st_size for f in ZOO_DIR.iterdir())
    assert total < 20 * 2**20


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_zoo_checkpoint_reproduces_manifest(name, request):
    entry = MANIFEST[name]
    path = ZOO_DIR / entry["file"]
    assert file_sha256(path) == entry["sha256"]
    loaded = load_checkpoint(path)
    assert loaded.weights_sha256 == entry["weights_sha256"]
    assert loaded.spec.training == entry["config"]
    assert loaded.spec.clean_accuracy == entry["clean_accuracy"]
    if loaded.spec.dataset != "digits":
        data_dir = request.getfixturevalue("data_dir")
        data = load_dataset(loaded.spec.dataset, "test", data_dir / loaded.spec.dataset)
    else:
        data = load_dataset("digits", "test")
    correct, total = evaluate_accuracy(loaded.model, data.x, data.y)
    assert (correct, total) == (entry["num_correct"], entry["num_test"])


def _retrain(name: str) -> torch.nn.Module:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            network, _ = train(ZOO[name])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return network.eval()


# Floating-point reductions differ between CPUs (Intel and AMD kernels sum in other orders), so
# a retrained entry matches the committed one only up to a tolerance. NormOut keeps a unit with
# probability |a| / max, a threshold that turns rounding differences into other dropout masks,
# so its training trajectories drift further apart than those of a fixed-rate dropout.
CROSS_MACHINE = {
    # name: (largest clean-accuracy difference, smallest share of identical test predictions)
    "digits-mlp-dropout": (0.005, 0.99),
    "digits-mlp-normout-spatiotemporal": (0.02, 0.95),
    "digits-mlp-normout-spatiotemporal-ce": (0.02, 0.95),
}


@pytest.mark.parametrize("name", sorted(CROSS_MACHINE))
def test_zoo_recipe_reproduces_the_committed_model(name):
    """Retraining an entry with its recorded recipe: bit-identical on one machine, and the
    committed model's accuracy and predictions within the stated tolerance on any CPU."""
    network = _retrain(name)
    if name == "digits-mlp-normout-spatiotemporal":
        again = _retrain(name)
        assert weights_sha256(again.state_dict()) == weights_sha256(network.state_dict())
    committed = load_checkpoint(ZOO_DIR / MANIFEST[name]["file"]).model.eval()
    data = load_dataset("digits", "test")
    with torch.no_grad():
        retrained = network(data.x).argmax(1)
        reference = committed(data.x).argmax(1)
    accuracy_gap, agreement = CROSS_MACHINE[name]
    accuracy = float((retrained == data.y).double().mean())
    assert abs(accuracy - MANIFEST[name]["clean_accuracy"]) <= accuracy_gap
    assert float((retrained == reference).double().mean()) >= agreement
