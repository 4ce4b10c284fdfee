"""The measure() entry point: configuration, JSON document, per-measure reproducibility."""

from __future__ import annotations

import json

import pytest
import torch
from flatness_fixtures import ARCHITECTURES, build, generator, make_data

from core.docfields import encode
from core.flatrecords import MEASURES
from flatness import FlatnessConfig, Measure, fisher_rao_norm, hutchinson_trace, measure

SMALL_OPTIONS = {
    "hessian_trace": {"max_probes": 8, "min_probes": 2},
    "hessian_eigenvalues": {"max_iterations": 10},
    "spectral_density": {"max_runs": 2, "num_steps": 6, "num_grid_points": 50},
    "landscape_1d": {"num_points": 3},
    "landscape_2d": {"num_points": 3},
    "epsilon_sharpness": {"num_steps": 2},
}


def test_the_estimators_are_the_declared_measures() -> None:
    assert tuple(Measure) == MEASURES


def test_measure_runs_everything_and_the_summary_is_json() -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    config = FlatnessConfig(batch_size=25, options=SMALL_OPTIONS)
    result = measure(model, x, y, config, generator(11))
    document = json.loads(json.dumps(encode(result), allow_nan=False))
    assert set(document) == {"seed", "config", "active_layers"} | {m.value for m in Measure}
    assert document["seed"] == 11
    assert document["config"]["measures"] == [m.value for m in Measure]
    assert isinstance(document["hessian_trace"]["value"], float)
    assert len(document["landscape_2d"]["losses"]) == 3
    assert len(document["spectral_density"]["density"]) == 50


def test_each_measure_can_be_rerun_alone_from_its_recorded_seed() -> None:
    model = build(ARCHITECTURES["residual_block"])
    x, y = make_data()
    config = FlatnessConfig(
        measures=("hessian_trace", "fisher_rao_model"),
        options={"hessian_trace": {"max_probes": 8, "min_probes": 2}},
    )
    result = measure(model, x, y, config, generator(3))
    assert result.hessian_trace is not None and result.fisher_rao_model is not None
    assert result.fisher_rao_empirical is None
    seed = result.hessian_trace.provenance.seed
    alone = hutchinson_trace(
        model, x, y, generator=torch.Generator().manual_seed(seed), max_probes=8, min_probes=2
    )
    assert alone == result.hessian_trace
    fisher = fisher_rao_norm(model, x, y, generator=generator(0), fisher="model")
    assert fisher.value == result.fisher_rao_model.value


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (FlatnessConfig(measures=("hessian_spectrum",)), "measure must be one of"),
        (FlatnessConfig(measures=("hessian_trace",), options={"landscape_1d": {}}), "not run"),
        (
            FlatnessConfig(measures=("hessian_trace",), options={"hessian_trace": {"probes": 3}}),
            "unknown options for hessian_trace",
        ),
        (
            FlatnessConfig(
                measures=("landscape_1d",), options={"landscape_1d": {"num_directions": 2}}
            ),
            "unknown options",
        ),
        (FlatnessConfig(num_mc_samples=2), "num_mc_samples must be 1 in eval mode"),
    ],
)
def test_bad_configs_are_refused_before_any_work(config: FlatnessConfig, message: str) -> None:
    model = build(ARCHITECTURES["mlp_with_biases"])
    x, y = make_data()
    with pytest.raises(ValueError, match=message):
        measure(model, x, y, config, generator())
