"""Flatness with the dropout-family layers active, beside eval mode, in the audit document."""

from __future__ import annotations

import math

import pytest
from audit_helpers import audit_document, quick_config
from torch import nn

from analysis.activations import dropout_family_layers
from checkpoints.layers import Dropout


def _without_dropout(model: nn.Module) -> nn.Module:
    """The same network with p = 0: dropout is the identity, so active and eval are one
    function and the two modes must agree (by construction)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.p = 0.0
    return model


def test_identity_dropout_gives_the_eval_figures() -> None:
    data = audit_document("digits-mlp-dropout", quick_config(60, flatness=True), _without_dropout)
    flatness = data["flatness"]
    active = flatness["active_layers"]
    assert flatness["config"]["mode"] == "eval" and active["config"]["mode"] == "train"
    assert set(active["config"]["measures"]) == {
        "fisher_rao_empirical",
        "fisher_rao_model",
        "hessian_trace",
    }
    for name in ("fisher_rao_empirical", "fisher_rao_model"):
        assert math.isclose(active[name]["value"], flatness[name]["value"], rel_tol=1e-5)
        assert active[name]["provenance"]["mode"] == "train"
    # Hutchinson draws its probes differently in the two modes: equal within the errors.
    eval_trace, active_trace = flatness["hessian_trace"], active["hessian_trace"]
    spread = math.hypot(eval_trace["stderr"], active_trace["stderr"])
    assert abs(eval_trace["value"] - active_trace["value"]) <= 4 * spread


def test_active_dropout_changes_the_figures() -> None:
    data = audit_document("digits-mlp-dropout", quick_config(60, flatness=True))
    flatness, active = data["flatness"], data["flatness"]["active_layers"]
    # With p = 0.2 the layers change the function, so the figures are of another one (the
    # test above shows that the same function gives the same figures).
    for name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace"):
        assert not math.isclose(active[name]["value"], flatness[name]["value"], rel_tol=1e-3)
        assert active[name]["provenance"]["mode"] == "train"
        samples = active[name]["provenance"]["num_samples"]
        assert samples == flatness[name]["provenance"]["num_samples"]


def test_a_model_without_such_layers_has_no_active_figures() -> None:
    data = audit_document("digits-mlp-none", quick_config(60, flatness=True))
    assert data["flatness"]["hessian_trace"] is not None
    assert data["flatness"]["active_layers"] is None


@pytest.mark.parametrize(
    ("layer", "found"),
    [
        (nn.Dropout(0.1), "dropout"),
        (nn.Dropout2d(0.1), "dropout"),
        (nn.AlphaDropout(0.1), "dropout"),
        (Dropout(0.1), "dropout"),
        (nn.ReLU(), None),
    ],
)
def test_dropout_family_layers_are_found_by_type(layer: nn.Module, found: str | None) -> None:
    model = nn.Sequential(nn.Linear(3, 3), layer)
    expected = [] if found is None else [("1", found)]
    assert dropout_family_layers(model) == expected
