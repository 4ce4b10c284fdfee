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


def test_zoo_recipe_reproduces_the_committed_weights():
    """Retraining a zoo entry with its recorded recipe gives bit-identical weights."""
    name = "digits-mlp-normout-spatiotemporal"
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            network, spec = train(ZOO[name])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert weights_sha256(network.state_dict()) == MANIFEST[name]["weights_sha256"]
    assert spec.clean_accuracy == MANIFEST[name]["clean_accuracy"]
