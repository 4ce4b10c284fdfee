"""Checkpoint round trips in every supported layout, and refusal of unsafe files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from vgg_reference import LAYOUTS, reference_vgg, write_vgg_checkpoint

from checkpoints import (
    CheckpointError,
    CheckpointSpec,
    Description,
    load_checkpoint,
    save_checkpoint,
)
from checkpoints.architectures import build_network
from checkpoints.format import build_model
from checkpoints.layers import LayerSpec, NormOut
from checkpoints.spec import NORMOUT_CIFAR10_MEAN, NORMOUT_CIFAR10_STD

PYAUTOATTACK_RESNET = (
    Path(__import__("pyautoattack").__file__).parent / "examples" / "model_test.pt"
)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _lenet(seed: int = 0) -> tuple[nn.Module, CheckpointSpec]:
    torch.manual_seed(seed)
    spec = CheckpointSpec(
        "lenet5",
        10,
        (1, 28, 28),
        LayerSpec.parse("qsd:drop_rate=0.2,alpha=0.2"),
        dataset="mnist",
        training={"epochs": 1},
        clean_accuracy=0.5,
    )
    network, _ = build_model(spec)
    return network, spec


def test_our_format_round_trip(tmp_path):
    network, spec = _lenet()
    path = save_checkpoint(tmp_path / "m.pt", network, spec)
    loaded = load_checkpoint(path)
    assert loaded.spec == spec
    assert not loaded.model.training
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(_outputs(loaded.model, x), _outputs(network.eval(), x))
    # Only primitives and tensors: a weights_only load of the raw file succeeds.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "robaudit-checkpoint" and raw["weights_sha256"] == loaded.weights_sha256


def test_our_format_detects_edited_weights_and_unknown_versions(tmp_path):
    network, spec = _lenet()
    path = save_checkpoint(tmp_path / "m.pt", network, spec)
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["0.bias"] += 1
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "edited.pt")
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_flags_may_not_contradict_a_self_describing_file(tmp_path):
    network, spec = _lenet()
    path = save_checkpoint(tmp_path / "m.pt", network, spec)
    with pytest.raises(CheckpointError, match="records arch lenet5, but --arch mlp"):
        load_checkpoint(path, Description(arch="mlp"))


@pytest.mark.parametrize("sidecar", ["toml", "json"])
def test_plain_state_dict_with_sidecar(tmp_path, sidecar):
    network, _ = _lenet()
    torch.save(network.state_dict(), tmp_path / "plain.pt")
    if sidecar == "toml":
        (tmp_path / "plain.toml").write_text(
            'arch = "lenet5"\ndataset = "mnist"\nlayers = "normout:spatial@2,3"\n'
        )
    else:
        (tmp_path / "plain.json").write_text(json.dumps({"arch": "lenet5", "dataset": "mnist"}))
    loaded = load_checkpoint(tmp_path / "plain.pt")
    assert loaded.spec.arch == "lenet5" and loaded.spec.source_format == "state_dict"
    assert loaded.spec.mean is None  # no normalisation outside the NormOut VGG layouts
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(
        _outputs(loaded.model, x), _outputs(network.eval(), x), rtol=0, atol=0
    )
    if sidecar == "toml":
        assert loaded.spec.layer == LayerSpec.parse("normout:spatial@2,3")


def test_flags_override_sidecar(tmp_path):
    network = build_network("mlp", (1, 8, 8), 10)
    torch.save(network.state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.toml").write_text('arch = "mlp"\ndataset = "mnist"\n')
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt", Description(dataset="digits"))
    assert loaded.spec.input_shape == (1, 8, 8)


def test_lightning_checkpoint_with_prefixes(tmp_path):
    network, _ = _lenet(1)
    ckpt = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.5.10",
        "state_dict": {f"model.{k}": v for k, v in network.state_dict().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01}]}],
        "lr_schedulers": [],
    }
    torch.save(ckpt, tmp_path / "run.ckpt")
    loaded = load_checkpoint(tmp_path / "run.ckpt", Description(arch="lenet5", dataset="mnist"))
    assert loaded.spec.source_format == "lightning"
    assert any("model." in note for note in loaded.notes)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(_outputs(loaded.model, x), _outputs(network.eval(), x))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.module."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    network = build_network("mlp", (1, 8, 8), 10)
    torch.save({prefix + k: v for k, v in network.state_dict().items()}, tmp_path / "p.pt")
    loaded = load_checkpoint(tmp_path / "p.pt", Description(arch="mlp", dataset="digits"))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(_outputs(loaded.model, x), _outputs(network.eval(), x))


# ----------------------------------------------------------- the NormOut code's VGG-16 layouts


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("hidden", [256, pytest.param(4096, marks=pytest.mark.slow)])
def test_normout_vgg16_bn_layouts(tmp_path, layout, hidden):
    reference, layers = reference_vgg(layout, hidden)
    assert (
        len(layers) == 53
        and isinstance(layers[48], nn.Dropout)
        and isinstance(layers[51], nn.Dropout)
    )
    write_vgg_checkpoint(tmp_path / "vgg.ckpt", reference, layout, hidden)
    loaded = load_checkpoint(tmp_path / "vgg.ckpt")
    assert loaded.spec.mean == NORMOUT_CIFAR10_MEAN and loaded.spec.std == NORMOUT_CIFAR10_STD
    net = loaded.model.net
    assert isinstance(net[48], NormOut) and isinstance(net[51], NormOut) and len(net) == 53
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(NORMOUT_CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(NORMOUT_CIFAR10_STD).view(1, 3, 1, 1)
    expected = _outputs(reference, (x - mean) / std)
    torch.testing.assert_close(_outputs(loaded.model, x), expected, rtol=1e-6, atol=1e-6)
    if layout == "torchvision":
        assert loaded.spec.source_format == "torchvision-vgg"


def test_mismatch_lists_keys_and_likely_cause(tmp_path):
    network = build_network("mlp", (1, 8, 8), 5)
    torch.save(network.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="number of classes") as info:
        load_checkpoint(tmp_path / "m.pt", Description(arch="mlp", dataset="digits"))
    assert "7.weight" in str(info.value) or "weight" in str(info.value)
    with pytest.raises(CheckpointError, match="missing keys") as info:
        load_checkpoint(tmp_path / "m.pt", Description(arch="lenet5", dataset="mnist"))
    assert "unexpected keys" in str(info.value)
    with pytest.raises(ValueError, match="too small"):
        load_checkpoint(tmp_path / "m.pt", Description(arch="lenet5", dataset="digits"))


def test_an_undescribed_lightning_checkpoint_is_named_in_a_sentence(tmp_path):
    network, _ = _lenet(1)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}}
    torch.save(ckpt, tmp_path / "run.ckpt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "run.ckpt")
    assert str(caught.value).startswith(
        f"{tmp_path / 'run.ckpt'} is a PyTorch Lightning checkpoint: it holds weights but does "
        "not name the architecture they belong to; describe it with --arch NAME (one of "
    )
    assert "--dataset NAME, or a sidecar file run.toml" in str(caught.value)


def test_missing_description_suggests_the_architecture(tmp_path):
    torch.save(build_network("lenet5", (1, 28, 28), 10).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="--arch lenet5 --dataset mnist"):
        load_checkpoint(tmp_path / "bare.pt")


# ---------------------------------------------------------------------- CUDA-saved, TorchScript


def test_cuda_saved_file_loads_on_cpu(tmp_path, monkeypatch):
    network = build_network("mlp", (1, 8, 8), 10)
    # Tag every storage as CUDA while saving, exactly as a GPU run writes it.
    registry = torch.serialization._package_registry
    registry.insert(0, (0, lambda storage: "cuda:0", lambda storage, location: None))
    try:
        torch.save(network.state_dict(), tmp_path / "gpu.pt")
    finally:
        registry.pop(0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    loaded = load_checkpoint(tmp_path / "gpu.pt", Description(arch="mlp", dataset="digits"))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(_outputs(loaded.model, x), _outputs(network.eval(), x))


def test_real_cuda_saved_pyautoattack_resnet_loads():
    loaded = load_checkpoint(PYAUTOATTACK_RESNET, Description(arch="resnet18", dataset="cifar10"))
    assert loaded.spec.arch == "resnet18" and loaded.spec.mean is None
    assert _outputs(loaded.model, torch.rand(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.data
def test_pyautoattack_resnet_clean_accuracy_on_cifar10(data_dir):
    from checkpoints.datasets import load_dataset
    from checkpoints.train import evaluate_accuracy

    loaded = load_checkpoint(PYAUTOATTACK_RESNET, Description(arch="resnet18", dataset="cifar10"))
    data = load_dataset("cifar10", "test", data_dir / "cifar10")
    correct, total = evaluate_accuracy(loaded.model, data.x[:1000], data.y[:1000], batch_size=250)
    assert total == 1000 and correct / total >= 0.90


def test_torchscript_archive(tmp_path):
    network = build_network("mlp", (1, 8, 8), 10).eval()
    torch.jit.script(network).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(tmp_path / "scripted.pt", Description(dataset="digits"))
    with pytest.raises(CheckpointError, match="--dataset"):
        load_checkpoint(tmp_path / "scripted.pt", trust=True)
    loaded = load_checkpoint(tmp_path / "scripted.pt", Description(dataset="digits"), trust=True)
    assert loaded.spec.source_format == "torchscript" and loaded.spec.num_classes == 10
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(_outputs(loaded.model, x), _outputs(network, x))


# ------------------------------------------------------------------------------ unsafe pickles


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, tmp_path / "evil.pt"
    )
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(tmp_path / "evil.pt", Description(arch="mlp", dataset="digits"))
    assert not marker.exists()
    # Sanity: the payload is real; an unrestricted unpickle would have run it.
    with open(tmp_path / "evil.pt", "rb"):
        pass
    assert pickle.dumps(_Payload(marker))


def test_pickled_module_needs_trust(tmp_path):
    network = build_network("mlp", (1, 8, 8), 10).eval()
    torch.save(network, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match="state_dict"):
        load_checkpoint(tmp_path / "whole.pt", Description(dataset="digits"))
    loaded = load_checkpoint(tmp_path / "whole.pt", Description(dataset="digits"), trust=True)
    assert loaded.spec.source_format == "pickled-module"
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(_outputs(loaded.model, x), _outputs(network, x))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
