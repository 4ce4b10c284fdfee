"""What stopped each flatness estimator, in the report's table and the command's summary, read
back against the estimates; and documents from before schema 1.8, which record less."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from report_fixtures import document

from analysis.config import active_flatness_config, flatness_config
from analysis.summary import summary_lines
from core.docfields import encode
from core.document import AuditResult
from flatness import measure
from reports import tables
from reports.html import render


@pytest.fixture(scope="module")
def drawn() -> dict[str, Any]:
    """The honest document with flatness measured as the audit does on 200 digits, so that
    the Fisher-Rao norms and the trace draw mini-batches and the pictures take samples of
    their own."""
    from checkpoints import load_checkpoint
    from checkpoints.datasets import load_dataset
    from checkpoints.train import ZOO_DIR

    model = load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt").model
    data = load_dataset("digits")
    x, y = data.x[:200], data.y[:200]
    config = flatness_config("quick", 128)
    flat = measure(model, x, y, config, torch.Generator().manual_seed(0))
    active = measure(model, x, y, active_flatness_config(config), torch.Generator().manual_seed(0))
    flat = replace(flat, active_layers=active)
    data_ = document("honest")
    data_["flatness"] = json.loads(json.dumps(encode(flat), allow_nan=False))
    return data_


def test_the_table_says_what_stopped_each_estimator(drawn: dict[str, Any]) -> None:
    result = AuditResult.from_dict(drawn)
    frame = tables.flatness_stopping_table(result)
    assert list(frame.columns) == ["eval", "layers active"]
    flat = drawn["flatness"]
    for mode, section in (("eval", flat), ("layers active", flat["active_layers"])):
        for name, label in (
            ("fisher_rao_empirical", "Fisher-Rao norm² (empirical Fisher)"),
            ("fisher_rao_model", "Fisher-Rao norm² (model Fisher)"),
            ("hessian_trace", "Hessian trace"),
        ):
            estimate = section[name]
            cell = frame.loc[label, mode]
            stopped = {"target": "target reached", "budget": "budget spent"}
            assert cell.startswith(stopped[estimate["stopped_by"]]), cell
            assert f"{estimate['num_draws']} draws of 64 samples" in cell
        assert (
            f"{section['hessian_trace']['num_probes']} probes" in frame.loc["Hessian trace", mode]
        )
    eigen = frame.loc["Hessian eigenvalues", "eval"]
    assert eigen.startswith("target reached (residuals ≤ 0.001 λ)")
    assert f"{flat['hessian_eigenvalues']['num_iterations']} Lanczos steps on all 200" in eigen
    density = flat["spectral_density"]
    assert (
        f"{density['num_runs']} runs of {density['num_steps']} steps on 64 samples"
        in (frame.loc["Spectral density", "eval"])
    )
    assert frame.loc["Loss landscape 1-D", "eval"] == "fixed: 11 points on 128 samples each"
    assert frame.loc["Loss landscape 2-D", "eval"] == "fixed: 49 points on 64 samples each"
    assert frame.loc["Loss landscape 2-D", "layers active"] == tables.NOT_AVAILABLE
    page = render(result)
    assert "How each flatness estimate ended" in page
    assert frame.loc["Hessian trace", "eval"] in page


def test_the_summary_says_what_stopped_each_estimator(drawn: dict[str, Any]) -> None:
    lines = summary_lines(Path("model.pt"), AuditResult.from_dict(drawn))
    stops = [line for line in lines if line.startswith("    stopped by: ")]
    assert len(stops) == 2  # eval and layers active
    trace = drawn["flatness"]["hessian_trace"]
    assert (
        f"trace {trace['stopped_by']} ({trace['num_probes']} probes in {trace['num_draws']} "
        "draws of 64)"
    ) in stops[0]
    assert "landscapes on 128 and 64 samples" in stops[0]
    eigen = drawn["flatness"]["hessian_eigenvalues"]
    assert f"eigenvalues target ({eigen['num_iterations']} steps)" in stops[0]


def test_a_document_of_schema_1_7_reads_and_says_what_it_does_not_record() -> None:
    old = document("honest")
    old["schema_version"] = "1.7"
    for section in (old["flatness"], old["flatness"]["active_layers"]):
        for estimate in section.values():
            if isinstance(estimate, dict):
                for key in (
                    "stopped_by",
                    "num_draws",
                    "minibatch_size",
                    "max_draws",
                    "max_probes",
                    "max_iterations",
                    "rel_stderr",
                    "sample_size",
                ):
                    estimate.pop(key, None)
                if "fisher" in estimate:
                    estimate.pop("rel_tol", None)
    result = AuditResult.from_dict(old)
    frame = tables.flatness_stopping_table(result)
    cell = frame.loc["Fisher-Rao norm² (empirical Fisher)", "eval"]
    assert cell == "one pass over all 60 samples (not recorded before 1.8)"
    trace = old["flatness"]["hessian_trace"]
    expected = "target reached" if trace["converged"] else "budget spent"
    assert frame.loc["Hessian trace", "eval"].startswith(expected)
    lines = summary_lines(Path("model.pt"), result)
    stops = next(line for line in lines if line.startswith("    stopped by: "))
    assert "Fisher-Rao (emp) not recorded" in stops
