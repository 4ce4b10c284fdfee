"""A failed attack is evidence of nothing: never robustness, never a passed gate.

The oracle is by construction: a model that raises on every input more than 0.05 (L∞) away
from the evaluation images makes every attack fail (each perturbs the images by more than
that at its first step) while the clean pass and the probes (which stay within 0.01) run. The
audit must say, on stdout and stderr, that the evaluation is incomplete, print no robust
accuracy as *reliable*, give the verdict *evaluation incomplete*, and fail the gate against a
healthy baseline of the same weights.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from analysis import gate
from analysis.redflags import INCOMPLETE, Finding, FindingStatus, verdict
from checkpoints import load_checkpoint
from checkpoints.datasets import load_dataset
from checkpoints.train import ZOO_DIR
from commands.gate import main as gate_main
from core.document import read_result
from reports.compare import write_comparison
from reports.html import write_report

ROOT = Path(__file__).resolve().parents[2]
OFF_DATA = 0.05
AUDIT = ["--preset", "quick", "--no-flatness", "--num-samples", "60", "--no-report"]


class _RaisesOffData(nn.Module):
    """``net``, which raises on any input row farther than ``OFF_DATA`` (L∞) from every row
    of ``clean``."""

    def __init__(self, net: nn.Module, clean: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("clean", clean.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1).to(self.clean.dtype)
        distance = (flat[:, None, :] - self.clean[None, :, :]).abs().amax(2).amin(1)
        if bool((distance > 0.05).any()):  # OFF_DATA
            raise RuntimeError("input off the evaluation images")
        return self.net(x)


class _Plain(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _RefusesOne(nn.Module):
    """``net``, raising on a batch of exactly one sample."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:
            raise RuntimeError("this model refuses a batch of one")
        return self.net(x)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> tuple[Path, Path]:
    """The zoo's digits MLP as TorchScript, plain and raising off the data."""
    folder = tmp_path_factory.mktemp("scripted")
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt")
    traced = torch.jit.trace(loaded.model, torch.rand(2, 1, 8, 8))
    # Loading a TorchScript model runs it on a batch of zeros: those are data too.
    clean = torch.cat([load_dataset("digits", "test").x, torch.zeros(1, 1, 8, 8)])
    plain, raising = folder / "plain.pt", folder / "raising.pt"
    torch.jit.save(torch.jit.script(_Plain(traced)), plain)
    torch.jit.save(torch.jit.script(_RaisesOffData(traced, clean)), raising)
    return plain, raising


def _audit(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.audit",
            str(path),
            "--trust-checkpoint",
            "--dataset",
            "digits",
            *AUDIT,
            "--out",
            str(out),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_attack_failing_is_incomplete_and_fails_the_gate(scripted, tmp_path):
    plain, raising = scripted
    healthy = _audit(plain, tmp_path / "healthy")
    assert healthy.returncode == 0, healthy.stderr
    baseline = tmp_path / "baseline.json"
    healthy_document = tmp_path / "healthy" / "plain" / "audit.json"
    gate_main([str(healthy_document), str(baseline), "--update-baseline"])

    done = _audit(
        raising,
        tmp_path / "broken",
        "--baseline",
        str(baseline),
        "--allow-different-checkpoint",
        "--junit",
        str(tmp_path / "gate.xml"),
    )
    # Expected before running: the gate fails (1), never passes (0).
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "gate: FAILED" in done.stdout
    assert "every attack ran" in done.stdout
    # No robust accuracy reads as reliable; every one is the clean accuracy, untested.
    rows = [line for line in done.stdout.splitlines() if line.startswith(("  linf", "  l2"))]
    assert len(rows) == 2, rows
    for row in rows:
        assert "reliable" not in row and "untested" in row and "pgd-ce failed" in row, row
    assert f"verdict: {INCOMPLETE}" in done.stdout
    assert "warning: pgd-ce failed at linf" in done.stderr
    assert "input off the evaluation images" in done.stderr

    result = read_result(tmp_path / "broken" / "raising" / "audit.json")
    assert result.verdict.startswith(INCOMPLETE)
    finding = next(f for f in result.findings if f.code == "attack-failed")
    assert finding.status == "fail"
    for norm in result.robustness.norms:
        assert all(not norm.tested(k) for k in range(len(norm.epsilons)))
        assert {a.status for a in norm.attacks} == {"failed"}

    # The report and the comparison show no reliable figure either.
    page = write_report(result, tmp_path / "report.html").read_text()
    assert page.count("untested: no attack ran") >= 2
    broken_document = tmp_path / "broken" / "raising" / "audit.json"
    write_comparison([healthy_document, broken_document], tmp_path / "c.html", ["csv"])
    rows = list(csv.DictReader((tmp_path / "c.verdicts.csv").open()))
    reliable = [key for key in rows[0] if key.endswith("reliable")]
    assert reliable and all(rows[0][key] for key in reliable), rows[0]
    assert not any(rows[1][key] for key in reliable), rows[1]

    # The same with --quiet: the gate's failure and the failed attacks are still said.
    quiet = _audit(
        raising,
        tmp_path / "quiet",
        "--baseline",
        str(baseline),
        "--allow-different-checkpoint",
        "--quiet",
    )
    assert quiet.returncode == 1
    assert "failed at linf" in quiet.stderr


def test_a_failed_sweep_makes_its_norm_s_figures_upper_bounds(tmp_path):
    # The nested sweep supplies PGD-CE's outcome at the norm's epsilon; where it fails (here
    # on a batch of one), PGD-CE runs on its own there, a weaker attack than the sweep's, so
    # the figures at that norm are upper bounds (0.50 where the complete audit gives 0.48).
    # A failed independent sweep (on a subsample, for the sweep checks only) leaves them be.
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt")
    traced = torch.jit.trace(loaded.model, torch.rand(2, 1, 8, 8))
    path = tmp_path / "refuses.pt"
    torch.jit.save(torch.jit.script(_RefusesOne(traced)), path)
    done = _audit(path, tmp_path / "out", "--num-samples", "50")
    assert done.returncode == 0, done.stderr
    document = tmp_path / "out" / "refuses" / "audit.json"
    result = read_result(document)
    assert result.verdict.startswith(INCOMPLETE)
    stages = {
        norm.norm: {f.stage for f in norm.failures or () if f.status == "failed"}
        for norm in result.robustness.norms
    }
    assert any("sweep" in found for found in stages.values()), stages
    rows = {
        line.split()[0]: line
        for line in done.stdout.splitlines()
        if line.startswith(("  linf", "  l2"))
    }
    assert set(rows) == set(stages), rows
    for norm in result.robustness.norms:
        row, failed = rows[norm.norm], norm.failed_attacks(0)
        if "sweep" in stages[norm.norm]:
            assert "pgd-ce sweep" in failed
            assert "reliable" not in row and "at most" in row, row
            assert "upper bound: pgd-ce sweep failed" in row, row
        elif "attack" not in stages[norm.norm]:
            assert not failed and "reliable" in row, row
    # The report and the comparison show the same: an upper bound, no reliable figure.
    page = write_report(result, tmp_path / "report.html").read_text()
    assert "(upper bound: pgd-ce sweep failed)" in page
    write_comparison([document], tmp_path / "c.html", ["csv"])
    (row,) = csv.DictReader((tmp_path / "c.verdicts.csv").open())
    for norm in result.robustness.norms:
        label = "L∞" if norm.norm == "linf" else "L2"
        assert bool(row[f"{label} reliable"]) == (not norm.failed_attacks(0)), row
    # Nor does the gate take it as a complete evaluation.
    outcome = gate.compare(result, result)
    assert not outcome.passed
    assert any(
        case.name.startswith("every attack ran") and "pgd-ce sweep failed" in case.message
        for case in outcome.cases
    )


def test_a_baseline_with_a_failed_attack_fails_the_gate(scripted, tmp_path):
    _, raising = scripted
    done = _audit(raising, tmp_path / "broken")
    assert done.returncode == 0, done.stderr
    document = tmp_path / "broken" / "raising" / "audit.json"
    baseline = tmp_path / "baseline.json"
    gate_main([str(document), str(baseline), "--update-baseline"])
    kept = json.loads(baseline.read_text())
    assert kept["robustness"]["norms"][0]["attacks"][0]["statuses"][0] == "failed"
    outcome = gate.compare(read_result(document), gate.read_baseline(baseline))
    failed = [case for case in outcome.cases if not case.passed]
    assert not outcome.passed
    assert any(case.name.startswith("every attack ran") for case in failed)


def test_each_failed_run_is_one_line_naming_its_error(scripted, tmp_path):
    """TorchScript's message of the model's error spans many lines (its preamble, its own
    traceback, the error last): each failed run is one line on stderr and in the finding, the
    line that names the error; the document's record of the run keeps the whole message."""
    _, raising = scripted
    done = _audit(raising, tmp_path / "out", "--quiet")
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path / "out" / "raising" / "audit.json")
    runs = [
        f for norm in result.robustness.norms for f in norm.failures or () if f.status == "failed"
    ]
    assert runs and all("Traceback of TorchScript" in run.message for run in runs)
    error = "RuntimeError: input off the evaluation images"
    lines = done.stderr.splitlines()
    # One line per failed run, then the verdict's.
    assert len(lines) == len(runs) + 1, done.stderr
    assert all(
        line.startswith(f"{raising}: warning: ")
        and " failed at " in line
        and line.endswith(f": {error}")
        for line in lines[:-1]
    )
    finding = next(f for f in result.findings if f.code == "attack-failed")
    assert "\n" not in finding.explanation and "TorchScript" not in finding.explanation
    assert f"raised {error} and {len(runs) - 1} more" in finding.explanation
    assert {row["message"] for row in finding.evidence["failed"]} == {error}


def test_the_verdict_of_a_failed_attack_outranks_every_other():
    def finding(
        code: str, status: FindingStatus, kind: str, evidence: dict | None = None
    ) -> Finding:
        return Finding(
            code=code,
            title="x",
            status=status.value,
            evidence=evidence or {},
            explanation="",
            remedy="",
            kind=kind,
        )

    failed = finding("attack-failed", FindingStatus.FAIL, "reliability", {"failed": [{}, {}]})
    masking = finding("black-box-beats-white-box", FindingStatus.FAIL, "masking")
    unreliable = finding("model-in-train-mode", FindingStatus.FAIL, "reliability")
    assert verdict([masking, unreliable, failed]) == (
        f"{INCOMPLETE}: 2 attack runs failed, robust accuracy is an upper bound"
    )
    warned = finding("attack-failed", FindingStatus.WARN, "reliability")
    assert verdict([warned]) == "no sign of gradient masking"
