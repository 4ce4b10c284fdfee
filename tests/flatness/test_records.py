"""The estimators return the document's records (``core.flatrecords``): encoded, the flatness
section is the one the audit has always written; a number that is undefined (a standard error
of one observation) is None, and a NaN an estimate has is written as the document writes NaN.
The estimators are resumed as declared units, under the names the resume cache keeps."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from flatness_fixtures import build, generator, make_data, mlp_with_biases, mlp_with_dropout

from analysis.batching import FlatnessUnit
from analysis.resume import SAFE_TYPES
from core.docfields import decode, encode
from core.flatrecords import (
    Eigenvalues,
    FisherRaoEstimate,
    FlatnessResult,
    Landscape,
    TraceEstimate,
)
from flatness import (
    FlatnessConfig,
    Measure,
    Mode,
    Unit,
    fisher_rao_norm,
    hessian_eigenvalues,
    loss_landscape,
    measure,
)

SECTION = Path(__file__).with_name("flatness_section.json")
"""The flatness section of the configuration below, as the audit wrote it (through JSON) when
the estimators returned results of their own that were turned into JSON afterwards."""

OPTIONS: dict[str, dict[str, Any]] = {
    "fisher_rao_empirical": {"minibatch_size": 16, "min_draws": 4, "max_draws": 6},
    "fisher_rao_model": {"minibatch_size": None},
    "hessian_trace": {"max_probes": 8, "min_probes": 2},
    "hessian_eigenvalues": {"num_eigenvalues": 2, "max_iterations": 10},
    "spectral_density": {"max_runs": 2, "num_steps": 6, "num_grid_points": 12, "sample_size": 30},
    # One sample: the standard error of each loss is undefined.
    "landscape_1d": {"num_points": 3, "sample_size": 1},
    "landscape_2d": {"num_points": 3},
    "epsilon_sharpness": {"num_steps": 2},
}


def _same(a: object, b: object) -> bool:
    """Equal JSON, keys in the same order, floats up to rounding."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return type(a) is type(b) and a == b


def test_the_records_encode_to_the_section_the_audit_wrote() -> None:
    model = build(mlp_with_dropout)
    x, y = make_data()
    config = FlatnessConfig(batch_size=16, options=OPTIONS)
    flat = measure(model, x, y, config, torch.Generator().manual_seed(5))
    train = replace(config, mode="train", num_mc_samples=2)
    active = measure(model, x, y, train, torch.Generator().manual_seed(5))
    flat = replace(flat, active_layers=active)
    written = json.loads(json.dumps(encode(flat), allow_nan=False))
    assert _same(written, json.loads(SECTION.read_text()))
    assert written["landscape_1d"]["loss_stderrs"] == [None, None, None]
    # What the audit reads back from it is the record itself.
    assert decode(FlatnessResult, written, "audit.json", "flatness") == flat


def test_an_undefined_standard_error_is_none() -> None:
    model = build(mlp_with_biases)
    x, y = make_data()
    one = fisher_rao_norm(model, x[:1], y[:1], generator=generator(0), minibatch_size=None)
    assert isinstance(one, FisherRaoEstimate) and math.isfinite(one.value)
    assert (one.stderr, one.ci_low, one.ci_high) == (None, None, None)
    assert encode(one)["stderr"] is None
    curve = loss_landscape(model, x, y, generator=generator(0), num_points=3, sample_size=1)
    assert isinstance(curve, Landscape) and curve.loss_stderrs == (None, None, None)


def test_a_nan_eigenvalue_is_written_as_nan_and_reads_back() -> None:
    """An eigenvalue must be a number, so a NaN one cannot be None: the document writes it as
    it writes every NaN, the string ``"NaN"``, and reads it back as NaN."""
    model = build(mlp_with_biases)
    x, y = make_data()
    found = hessian_eigenvalues(model, x, y, generator=generator(0), num_eigenvalues=2)
    assert isinstance(found, Eigenvalues) and len(found.eigenvalues) == 2
    found = replace(found, eigenvalues=(math.nan, found.eigenvalues[1]))
    section = replace(
        FlatnessResult(seed=0, config={}, **dict.fromkeys([*Measure, "active_layers"])),
        hessian_eigenvalues=found,
    )
    written = json.loads(json.dumps(encode(section), allow_nan=False))
    assert written["hessian_eigenvalues"]["eigenvalues"] == ["NaN", found.eigenvalues[1]]
    read = decode(FlatnessResult, written, "audit.json", "flatness")
    assert read.hessian_eigenvalues is not None
    assert math.isnan(read.hessian_eigenvalues.eigenvalues[0])
    assert read.hessian_eigenvalues.eigenvalues[1] == found.eigenvalues[1]


def test_the_records_load_from_the_resume_cache() -> None:
    """As the resume cache keeps a unit: saved, then loaded with only its safe types."""
    model = build(mlp_with_biases)
    x, y = make_data()
    options = {"hessian_trace": OPTIONS["hessian_trace"]}
    config = FlatnessConfig(measures=("hessian_trace",), options=options)
    trace = measure(model, x, y, config, generator(1)).hessian_trace
    buffer = io.BytesIO()
    torch.save(trace, buffer)
    with torch.serialization.safe_globals(list(SAFE_TYPES)):
        loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert isinstance(loaded, TraceEstimate) and loaded == trace


def test_units_are_named_as_the_resume_cache_keeps_them() -> None:
    unit = Unit(Mode.TRAIN, Measure.HESSIAN_TRACE)
    assert unit.name == "train-hessian_trace"
    assert unit.label == "flatness hessian_trace (layers active)"
    assert Unit(Mode.EVAL, Measure.LANDSCAPE_1D).label == "flatness landscape_1d"
    at_batch = FlatnessUnit(unit, 64)
    assert at_batch.name == "flatness-train-hessian_trace-batch=64"
    assert at_batch.label == unit.label
    model = build(mlp_with_biases)
    x, y = make_data()
    kept: list[Unit] = []

    def memo(unit: Unit, compute: Any) -> tuple[Any, bool]:
        kept.append(unit)
        return compute(), False

    config = FlatnessConfig(measures=("fisher_rao_model", "landscape_1d"), options={})
    measure(model, x, y, config, generator(2), memo=memo)
    assert [u.name for u in kept] == ["eval-fisher_rao_model", "eval-landscape_1d"]
