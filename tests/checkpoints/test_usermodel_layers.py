"""The dropout-family layers of a model of the user's own class, found by type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from checkpoints.layers import (
    QSD,
    Dropout,
    LayerSpec,
    NormOut,
    family_kind,
    family_layers,
    found_layer_spec,
    make_layer,
)


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.Dropout(0.1), "dropout"),
        (nn.Dropout1d(), "dropout"),
        (nn.Dropout2d(), "dropout"),
        (nn.Dropout3d(), "dropout"),
        (nn.AlphaDropout(), "dropout"),
        (nn.FeatureAlphaDropout(), "dropout"),
        (Dropout(0.3), "dropout"),
        (NormOut("spatial"), "normout"),
        (QSD(), "qsd"),
        (nn.Identity(), None),
        (nn.ReLU(), None),
    ],
)
def test_layers_are_found_by_type_also_when_scripted(module, kind):
    assert family_kind(module) == kind
    holder = nn.Sequential(nn.Flatten(), module)
    if not isinstance(module, NormOut | QSD | Dropout):  # ours are not scriptable
        scripted = torch.jit.script(holder)
        assert family_kind(dict(scripted.named_children())["1"]) == kind  # by its class name
        assert family_layers(scripted) == ([("1", kind)] if kind else [])


def test_the_layer_spec_names_what_was_found():
    assert found_layer_spec(nn.Sequential(nn.Linear(2, 2))) == LayerSpec()
    two = nn.Sequential(nn.Dropout(0.25), nn.Linear(2, 2), nn.Dropout(0.25))
    assert found_layer_spec(two) == LayerSpec("dropout", {"p": 0.25})
    differing = nn.Sequential(nn.Dropout(0.25), nn.Dropout(0.5))
    assert found_layer_spec(differing) == LayerSpec("dropout")
    assert found_layer_spec(nn.Sequential(QSD(0.3, 0.5))).params == {
        "drop_rate": 0.3,
        "alpha": 0.5,
        "variant": "full",
        "unit_expectation": False,
    }
    mixed = found_layer_spec(nn.Sequential(NormOut("spatial"), nn.Dropout()))
    assert mixed.kind == "dropout+normout" and str(mixed) == "dropout+normout"
    with pytest.raises(ValueError, match="cannot be built"):
        make_layer(mixed)
    with pytest.raises(ValueError, match="alphabetical"):
        LayerSpec("normout+dropout")
    with pytest.raises(ValueError, match="unknown layer kind"):
        LayerSpec.parse("dropout+normout")  # a found mix is not a --layers value
