"""The architecture registry and its layer slots."""

from __future__ import annotations

import pytest
import torch

from checkpoints.architectures import architecture_names, build_network, get_architecture
from checkpoints.layers import QSD, Dropout, LayerSpec, NormOut

SHAPES = {
    "mlp": (1, 8, 8),
    "lenet5": (1, 28, 28),
    "vgg16_bn": (3, 32, 32),
    "vgg16": (3, 32, 32),
    "resnet18": (3, 32, 32),
    "wrn16": (3, 32, 32),
}


def test_registry_lists_known_names_on_error():
    assert set(architecture_names()) == set(SHAPES)
    with pytest.raises(ValueError, match="known architectures: lenet5, mlp"):
        get_architecture("alexnet")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_architecture_maps_images_to_logits(name):
    kwargs = {"widen_factor": 1} if name == "wrn16" else {}
    network = build_network(name, SHAPES[name], 7, LayerSpec.parse("qsd"), **kwargs).eval()
    with torch.no_grad():
        assert network(torch.rand(2, *SHAPES[name])).shape == (2, 7)
    assert any(isinstance(m, QSD) for m in network.modules())


@pytest.mark.parametrize(
    ("name", "default", "count"),
    [
        ("mlp", None, 3),
        ("lenet5", None, 4),
        ("vgg16_bn", None, 2),
        ("resnet18", None, 1),
        ("wrn16", None, 6),
        ("resnet18", (0, 3, 8), 3),
        ("vgg16_bn", (2, 48), 2),
    ],
)
def test_layer_slots(name, default, count):
    kwargs = {"widen_factor": 1} if name == "wrn16" else {}
    spec = LayerSpec("normout", {"method": "spatial"}, default)
    network = build_network(name, SHAPES[name], 10, spec, **kwargs)
    assert sum(isinstance(m, NormOut) for m in network.modules()) == count


def test_layer_kind_never_changes_the_weights_layout():
    plain = build_network("lenet5", (1, 28, 28), 10)
    with_layers = build_network("lenet5", (1, 28, 28), 10, LayerSpec.parse("dropout:0.3@0,1,2,3"))
    assert list(plain.state_dict()) == list(with_layers.state_dict())
    assert sum(isinstance(m, Dropout) for m in with_layers.modules()) == 4


def test_bad_positions_and_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="valid positions: \\[0, 1, 2\\]"):
        build_network("mlp", (1, 8, 8), 10, LayerSpec.parse("dropout@5"))
    with pytest.raises(ValueError, match="too small"):
        build_network("lenet5", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_network("mlp", (1, 8, 8), 1)
